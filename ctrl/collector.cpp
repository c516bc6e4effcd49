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

#include "ctrl/metrics_server.h"
#include "ctrl/net_listen.h"
#include "dataplane/clock.h"

namespace ls {

namespace {
constexpr uint32_t kRandomBit = 1u << 31;
}

Collector::Collector(const CoreConfig& cfg, RecordConsumer& out, bool payload)
    : cfg_(cfg),
      table_([&] {
        TableConfig t = cfg.table;
        if (!payload) t.payload_bytes = 0;  // only sFlow's samples carry any
        return t;
      }(), ctr_, *this, /*payload_prefault=*/0),
      dec_([this](const Uniflow& u) { add(u); }, cfg.parse),
      rate_(table_.capacity(), 1),
      hold_(out) {}

bool record_passes(const PacketFilter& f, const Uniflow& u) {
  uint8_t b[40 + 20] = {};
  auto put16 = [](uint8_t* p, unsigned v) {
    p[0] = uint8_t(v >> 8);
    p[1] = uint8_t(v);
  };
  const bool v6 = u.ip_ver == 6;
  uint8_t* l4 = b + (v6 ? 40 : 20);
  unsigned l4n = 0;
  switch (u.proto) {
    case 6:
      put16(l4, u.sport);
      put16(l4 + 2, u.dport);
      l4[12] = 5 << 4;  // data offset: 20 bytes
      l4[13] = u.tcp_flags;
      l4n = 20;
      break;
    case 17:
    case 132:
      put16(l4, u.sport);
      put16(l4 + 2, u.dport);
      l4n = u.proto == 17 ? 8 : 12;
      if (u.proto == 17) put16(l4 + 4, 8);
      break;
    case 1:
    case 58:
      put16(l4, u.dport);  // type << 8 | code, as the exports carry it
      l4n = 8;
      break;
    default:
      break;
  }
  unsigned total = unsigned(l4 - b) + l4n;
  if (v6) {
    b[0] = 0x60;
    put16(b + 4, l4n);
    b[6] = u.proto;
    b[7] = 64;
    std::memcpy(b + 8, u.src, 16);
    std::memcpy(b + 24, u.dst, 16);
  } else {
    b[0] = 0x45;
    put16(b + 2, total);
    b[8] = 64;
    b[9] = u.proto;
    std::memcpy(b + 12, u.src, 4);
    std::memcpy(b + 16, u.dst, 4);
  }
  PacketView v{b, total, total, 0, 0, LinkType::RAW, 0};
  return f.match(v, LinkType::RAW);
}

void Collector::add(const Uniflow& u) {
  uniflows++;
  ctr_.inc(Ctr::packets, u.packets);  // packets the exported flows stand for
  ctr_.inc(Ctr::bytes, u.bytes);
  if (filter_ && !record_passes(*filter_, u)) {
    dec_.ctr.inc(NfCtr::records_filtered);
    ctr_.inc(Ctr::filtered_out, u.packets);
    return;
  }
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
                        u.initiator, u.payload, u.payload_len);
  table_.expire();
}

void Collector::emit(const FlowEntry& e, const uint8_t* pay, uint16_t cap, EndReason why) {
  uint32_t r = rate_[uint32_t(&e - &table_.entry(0))];
  SamplingConfig s;
  s.rate = r & ~kRandomBit;
  s.mode = s.rate <= 1 ? SampleMode::OFF
                       : (r & kRandomBit) ? SampleMode::PACKET_RANDOM : SampleMode::PACKET_DET;
  if (s.rate == 0) s.rate = 1;
  hold_.slot().fill(e, pay, cap, why, 0, s);
  hold_.commit();
}

std::string Collector::metrics_text(bool alone) const {
  Exposition x;
  auto lbl = [](const char* k, const char* v) { return std::string(k) + "=\"" + v + "\""; };
  x.family("linesight_collector_datagrams_total", "counter", "Export datagrams (or IPFIX-over-TCP messages) received.");
  x.sample("linesight_collector_datagrams_total", lbl("version", "v1"), double(dec_.ctr.get(NfCtr::datagrams_v1)));
  x.sample("linesight_collector_datagrams_total", lbl("version", "v5"), double(dec_.ctr.get(NfCtr::datagrams_v5)));
  x.sample("linesight_collector_datagrams_total", lbl("version", "v7"), double(dec_.ctr.get(NfCtr::datagrams_v7)));
  x.sample("linesight_collector_datagrams_total", lbl("version", "v9"), double(dec_.ctr.get(NfCtr::datagrams_v9)));
  x.sample("linesight_collector_datagrams_total", lbl("version", "ipfix"), double(dec_.ctr.get(NfCtr::datagrams_ipfix)));
  x.sample("linesight_collector_datagrams_total", lbl("version", "sflow"), double(dec_.ctr.get(NfCtr::datagrams_sflow)));
  x.family("linesight_collector_records_total", "counter", "Flow records decoded (one direction each, as exported).");
  x.sample("linesight_collector_records_total", "", double(dec_.ctr.get(NfCtr::records)));
  x.family("linesight_collector_sflow_samples_total", "counter", "sFlow flow samples decoded: one sampled packet each.");
  x.sample("linesight_collector_sflow_samples_total", "", double(dec_.ctr.get(NfCtr::sflow_flow_samples)));
  // Everything else the decoder counts: problems by name (docs/collector.md), then events.
  x.family("linesight_collector_errors_total", "counter",
           "Export input that could not be used, by reason: malformed, unknown template, lost sequence numbers, packets an sFlow agent could not sample.");
  const NfCtr errors[] = {NfCtr::bad_version, NfCtr::truncated_header, NfCtr::bad_length, NfCtr::bad_set_length,
                          NfCtr::bad_template, NfCtr::data_without_template, NfCtr::records_without_flow_key,
                          NfCtr::records_without_time_base, NfCtr::sequence_gaps, NfCtr::tcp_refused,
                          NfCtr::tcp_bad_stream, NfCtr::sflow_bad_length, NfCtr::sflow_bad_agent_address,
                          NfCtr::sflow_samples_without_packet, NfCtr::sflow_samples_unparsed,
                          NfCtr::sflow_agent_drops};
  for (NfCtr c : errors)
    x.sample("linesight_collector_errors_total", lbl("reason", kNfCounterNames[size_t(c)]), double(dec_.ctr.get(c)));
  x.family("linesight_collector_events_total", "counter",
           "Options records, records the filter rejected, templates learnt and withdrawn, TCP sessions, sFlow samples not about IP packets.");
  for (NfCtr c : {NfCtr::options_records, NfCtr::records_filtered, NfCtr::templates, NfCtr::templates_withdrawn, NfCtr::tcp_sessions,
                  NfCtr::sflow_counter_samples, NfCtr::sflow_other_samples, NfCtr::sflow_samples_not_ip})
    x.sample("linesight_collector_events_total", lbl("event", kNfCounterNames[size_t(c)]), double(dec_.ctr.get(c)));
  x.family("linesight_collector_exporters", "gauge", "Exporters known (address:port and domain or engine).");
  x.sample("linesight_collector_exporters", "", double(dec_.exporters()));
  x.family("linesight_collector_templates", "gauge", "Templates held.");
  x.sample("linesight_collector_templates", "", double(dec_.templates()));
  // Inside `run` the dataplane's families of these names exist already (per lcore).
  const char* active = alone ? "linesight_flows_active" : "linesight_collector_flows_active";
  const char* emitted = alone ? "linesight_flow_records_total" : "linesight_collector_flow_records_total";
  x.family(active, "gauge", "Flows in the collector's table (both directions joined).");
  x.sample(active, "", double(table_.size()));
  x.family(emitted, "counter", "Bidirectional flow records emitted by the collector.");
  x.sample(emitted, "", double(ctr_.get(Ctr::records_emitted)));
  x.family("linesight_collector_table_full_total", "counter", "Exported records dropped: the flow table was full.");
  x.sample("linesight_collector_table_full_total", "", double(ctr_.get(Ctr::table_full_drop)));
  return std::move(x).str();
}

nlohmann::json Collector::netflow_json() const {
  nlohmann::json nf = nlohmann::json::object();
  for (size_t i = 0; i < size_t(NfCtr::count); i++) nf[kNfCounterNames[i]] = dec_.ctr.v[i];
  nlohmann::json why = nlohmann::json::object();
  for (size_t i = 0; i < kNumCounters; i++)
    if (kCounterKinds[i] == CtrKind::DROP && dec_.sflow_parse.at(i)) why[std::string(kCounterNames[i])] = dec_.sflow_parse.at(i);
  nf["sflow_unparsed"] = why;
  return nf;
}

std::string Collector::summary_text() const {
  std::string t = "collector: " + std::to_string(uniflows) + " exported records joined into " +
                  std::to_string(ctr_.get(Ctr::records_emitted)) + " flows\n";
  for (size_t i = 0; i < size_t(NfCtr::count); i++)
    if (uint64_t v = dec_.ctr.v[i]) t += "  " + std::string(kNfCounterNames[i]) + " " + std::to_string(v) + "\n";
  for (size_t i = 0; i < kNumCounters; i++)
    if (kCounterKinds[i] == CtrKind::DROP && dec_.sflow_parse.at(i))
      t += "    sflow_unparsed " + std::string(kCounterNames[i]) + " " + std::to_string(dec_.sflow_parse.at(i)) + "\n";
  return t;
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

constexpr size_t kMaxSessions = 256;
}  // namespace

void Collector::end_session(const std::string& from) { dec_.end_session(from); }

CollectorListener::CollectorListener(Collector& c, const std::string& udp, const std::string& tcp,
                                     const char* udp_opt, const char* tcp_opt)
    : c_(c), buf_(65536) {
  try {
    if (!udp.empty()) ufd_ = listen_socket(udp, SOCK_DGRAM, udp_opt);
    if (!tcp.empty()) lfd_ = listen_socket(tcp, SOCK_STREAM, tcp_opt);
  } catch (...) {
    close_all();
    throw;
  }
  if (ufd_ >= 0) {
    int buf = 16 << 20;  // bursts of export datagrams must not overflow the socket
    setsockopt(ufd_, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
  }
  // Tests and scripts wait for these lines before starting exporters.
  if (ufd_ >= 0) std::fprintf(stderr, "linesight: collecting NetFlow v1 / v5 / v7 / v9 / IPFIX / sFlow v5 on udp %s\n", udp.c_str());
  if (lfd_ >= 0) std::fprintf(stderr, "linesight: collecting IPFIX on tcp %s\n", tcp.c_str());
}

CollectorListener::~CollectorListener() { close_all(); }

void CollectorListener::close_all() {
  for (auto& s : sessions_) close(s.fd);
  sessions_.clear();
  if (ufd_ >= 0) close(ufd_);
  if (lfd_ >= 0) close(lfd_);
  ufd_ = lfd_ = -1;
}

void CollectorListener::drop_session(size_t i) {
  close(sessions_[i].fd);
  c_.end_session(sessions_[i].from);
  sessions_.erase(sessions_.begin() + long(i));
}

bool CollectorListener::poll(int timeout_ms) {
  pf_.clear();
  if (ufd_ >= 0) pf_.push_back({ufd_, POLLIN, 0});
  if (lfd_ >= 0) pf_.push_back({lfd_, POLLIN, 0});
  for (auto& s : sessions_) pf_.push_back({s.fd, POLLIN, 0});
  int n = ::poll(pf_.data(), pf_.size(), timeout_ms);
  if (n <= 0) return false;
  NfCounters& ctr = c_.netflow_counters();
  uint64_t before = last_ns_;
  if (ufd_ >= 0 && (pf_[0].revents & POLLIN)) {
    // What is queued, up to 1,024 datagrams: a flood must not starve the TCP sessions.
    for (int k = 0; k < 1024; k++) {
      sockaddr_storage from{};
      socklen_t fl = sizeof from;
      ssize_t got = recvfrom(ufd_, buf_.data(), buf_.size(), MSG_DONTWAIT, reinterpret_cast<sockaddr*>(&from), &fl);
      if (got < 0) break;
      c_.datagram(buf_.data(), size_t(got), peer_name(from));
      last_ns_ = mono_ns();
    }
  }
  if (lfd_ >= 0 && (pf_[ufd_ >= 0].revents & POLLIN)) {
    for (;;) {
      sockaddr_storage from{};
      socklen_t fl = sizeof from;
      int fd = accept4(lfd_, reinterpret_cast<sockaddr*>(&from), &fl, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) break;
      if (sessions_.size() >= kMaxSessions) {
        ctr.inc(NfCtr::tcp_refused);
        close(fd);
        continue;
      }
      ctr.inc(NfCtr::tcp_sessions);
      sessions_.push_back({fd, peer_name(from), IpfixStream{}});
    }
  }
  // Sessions polled this round are the first pf_.size() - first of `sessions_` (accepts
  // above only append).
  size_t first = size_t(ufd_ >= 0) + size_t(lfd_ >= 0), polled = pf_.size() - first;
  for (size_t k = polled; k-- > 0;) {
    if (!(pf_[first + k].revents & (POLLIN | POLLHUP | POLLERR))) continue;
    TcpSession& s = sessions_[k];
    bool ended = false, bad = false;
    // At most 1 MB a session a round: one busy exporter must not starve the others.
    for (int reads = 0; reads < 16 && !bad; reads++) {
      ssize_t got = read(s.fd, buf_.data(), buf_.size());
      if (got <= 0) {
        ended = got == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR);
        break;
      }
      last_ns_ = mono_ns();
      bad = !s.stream.feed(buf_.data(), size_t(got), [&](const uint8_t* m, size_t len) { c_.datagram(m, len, s.from); });
    }
    if (bad) ctr.inc(NfCtr::tcp_bad_stream);
    if (bad || ended) drop_session(k);  // a message cut by the close is lost with it
  }
  return last_ns_ != before;
}

void serve(Collector& c, const std::string& udp, const std::string& tcp, const std::atomic<bool>& stop,
           uint64_t exit_idle_ns, const std::function<void()>& tick) {
  CollectorListener l(c, udp, tcp);
  while (!stop.load(std::memory_order_relaxed)) {
    bool got = l.poll(100);
    if (tick) tick();
    // Only after a round that found the sockets empty: a slow tick or a descheduled
    // process must not leave queued datagrams unread.
    if (!got && exit_idle_ns && l.last_input_ns() && mono_ns() - l.last_input_ns() >= exit_idle_ns) break;
  }
}

}  // namespace ls
