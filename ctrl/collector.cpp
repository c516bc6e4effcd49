#include "ctrl/collector.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>

#include "dataplane/clock.h"

namespace ls {

namespace {
constexpr uint32_t kRandomBit = 1u << 31;
}

Collector::Collector(const CoreConfig& cfg, RecordConsumer& out)
    : cfg_(cfg),
      table_([&] {
        TableConfig t = cfg.table;
        t.payload_bytes = 0;  // exports carry no payload
        return t;
      }(), ctr_, *this),
      dec_([this](const Uniflow& u) { add(u); }),
      rate_(table_.capacity(), 1),
      hold_(out) {}

void Collector::add(const Uniflow& u) {
  uniflows++;
  ctr_.inc(Ctr::packets, u.packets);  // packets the exported flows stand for
  ctr_.inc(Ctr::bytes, u.bytes);
  PacketMeta m{};
  std::memcpy(m.src, u.src, 16);
  std::memcpy(m.dst, u.dst, 16);
  m.sport = u.sport;
  m.dport = u.dport;
  m.l4_proto = u.proto;
  m.ip_ver = u.ip_ver;
  FlowKey k;
  bool src_lo = make_key(m, cfg_.key, k);
  uint64_t h = hash_key(k, cfg_.table.hash_seed);
  table_.advance_clock(u.last_ns, 0);
  uint32_t i = table_.find(k, h);
  if (i != FlowTable::kNone) i = table_.check_expired(i, u.first_ns);
  if (i == FlowTable::kNone) {
    i = table_.insert(k, h, u.first_ns);
    if (i == FlowTable::kNone) return;  // table_full_drop counted by the table
    rate_[i] = u.sampling_interval | (u.sampling_random ? kRandomBit : 0);
  }
  table_.merge_uniflow(i, src_lo ? 0 : 1, u.first_ns, u.last_ns, u.packets, u.bytes, u.tcp_flags,
                        u.initiator);
  table_.expire();
}

void Collector::emit(const FlowEntry& e, const uint8_t*, uint16_t, EndReason why) {
  uint32_t r = rate_[uint32_t(&e - &table_.entry(0))];
  SamplingConfig s;
  s.rate = r & ~kRandomBit;
  s.mode = s.rate <= 1 ? SampleMode::OFF
                       : (r & kRandomBit) ? SampleMode::PACKET_RANDOM : SampleMode::PACKET_DET;
  if (s.rate == 0) s.rate = 1;
  hold_.slot().fill(e, nullptr, 0, why, 0, s);
  hold_.commit();
}

void Collector::finish() {
  table_.flush(EndReason::FLUSH);
  hold_.flush();
}

namespace {
std::string peer_name(const sockaddr_storage& a) {
  char host[INET6_ADDRSTRLEN] = "?";
  uint16_t port = 0;
  if (a.ss_family == AF_INET) {
    auto* s = reinterpret_cast<const sockaddr_in*>(&a);
    inet_ntop(AF_INET, &s->sin_addr, host, sizeof host);
    port = ntohs(s->sin_port);
  } else if (a.ss_family == AF_INET6) {
    auto* s = reinterpret_cast<const sockaddr_in6*>(&a);
    inet_ntop(AF_INET6, &s->sin6_addr, host, sizeof host);
    port = ntohs(s->sin6_port);
  }
  return std::string(host) + ":" + std::to_string(port);
}
}  // namespace

void serve_udp(Collector& c, const std::string& listen, const std::atomic<bool>& stop,
               uint64_t exit_idle_ns, const std::function<void()>& tick) {
  auto colon = listen.rfind(':');
  if (colon == std::string::npos) throw std::runtime_error("--listen " + listen + ": expected HOST:PORT");
  std::string host = listen.substr(0, colon), port = listen.substr(colon + 1);
  if (host.size() > 1 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  addrinfo hints{}, *res = nullptr;
  hints.ai_socktype = SOCK_DGRAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &res);
  if (rc) throw std::runtime_error("--listen " + listen + ": " + gai_strerror(rc));
  int fd = socket(res->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) != 0) {
    std::string e = std::strerror(errno);
    freeaddrinfo(res);
    if (fd >= 0) close(fd);
    throw std::runtime_error("--listen " + listen + ": " + e);
  }
  freeaddrinfo(res);
  int buf = 16 << 20;  // bursts of export datagrams must not overflow the socket
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
  // Tests and scripts wait for this line before starting exporters.
  std::fprintf(stderr, "linesight: collecting NetFlow v5 / v9 / IPFIX on %s\n", listen.c_str());
  std::vector<uint8_t> b(65536);
  uint64_t last = 0;
  while (!stop.load(std::memory_order_relaxed)) {
    pollfd p{fd, POLLIN, 0};
    int n = poll(&p, 1, 100);
    if (n > 0) {
      for (;;) {  // drain what is queued before looking at the clock again
        sockaddr_storage from{};
        socklen_t fl = sizeof from;
        ssize_t got = recvfrom(fd, b.data(), b.size(), MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&from), &fl);
        if (got < 0) break;
        c.datagram(b.data(), size_t(got), peer_name(from));
        last = mono_ns();
      }
    }
    if (tick) tick();
    if (exit_idle_ns && last && mono_ns() - last >= exit_idle_ns) break;
  }
  close(fd);
}

}  // namespace ls
