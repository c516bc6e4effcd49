#include "ctrl/ipfix.h"

#include "dataplane/clock.h"

#include <netdb.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace ls {
namespace {

// Information elements (IANA IPFIX registry).
enum : uint16_t {
  IE_octetDeltaCount = 1, IE_packetDeltaCount = 2, IE_protocolIdentifier = 4,
  IE_tcpControlBits = 6, IE_sourceTransportPort = 7, IE_sourceIPv4Address = 8,
  IE_destinationTransportPort = 11, IE_destinationIPv4Address = 12,
  IE_sourceIPv6Address = 27, IE_destinationIPv6Address = 28, IE_vlanId = 58,
  IE_flowEndReason = 136, IE_observationDomainId = 149, IE_flowStartMilliseconds = 152,
  IE_flowEndMilliseconds = 153, IE_biflowDirection = 239, IE_selectorAlgorithm = 304,
  IE_samplingPacketInterval = 305, IE_samplingPacketSpace = 306,
};
constexpr uint16_t kTplV4 = 256, kTplV6 = 257, kTplSampling = 258;

struct Field {
  uint16_t id, len;
};
const Field kCommon[] = {
    {IE_sourceTransportPort, 2}, {IE_destinationTransportPort, 2}, {IE_protocolIdentifier, 1},
    {IE_tcpControlBits, 2}, {IE_octetDeltaCount, 8}, {IE_packetDeltaCount, 8},
    {IE_flowStartMilliseconds, 8}, {IE_flowEndMilliseconds, 8}, {IE_flowEndReason, 1},
    {IE_biflowDirection, 1}, {IE_vlanId, 2}};

void put8(std::vector<uint8_t>& b, uint8_t v) { b.push_back(v); }
void put16(std::vector<uint8_t>& b, uint16_t v) {
  b.push_back(uint8_t(v >> 8));
  b.push_back(uint8_t(v));
}
void put32(std::vector<uint8_t>& b, uint32_t v) {
  put16(b, uint16_t(v >> 16));
  put16(b, uint16_t(v));
}
void put64(std::vector<uint8_t>& b, uint64_t v) {
  put32(b, uint32_t(v >> 32));
  put32(b, uint32_t(v));
}

void template_record(std::vector<uint8_t>& b, uint16_t id, bool v6) {
  put16(b, id);
  put16(b, uint16_t(2 + std::size(kCommon)));
  put16(b, v6 ? IE_sourceIPv6Address : IE_sourceIPv4Address);
  put16(b, v6 ? 16 : 4);
  put16(b, v6 ? IE_destinationIPv6Address : IE_destinationIPv4Address);
  put16(b, v6 ? 16 : 4);
  for (auto& f : kCommon) {
    put16(b, f.id);
    put16(b, f.len);
  }
}

// RFC 7011 §10.2 flowEndReason values.
uint8_t end_reason_code(EndReason r) {
  switch (r) {
    case EndReason::IDLE: return 1;
    case EndReason::ACTIVE: return 2;
    case EndReason::TCP_END: return 3;
    case EndReason::FLUSH:
    case EndReason::CLOCK_JUMP: return 4;
    case EndReason::EVICTED: return 5;
  }
  return 4;
}

// PSAMP selector algorithms (RFC 5477 / IANA): 1 systematic count-based, 3 random
// n-out-of-N, 6 hash-based filtering; sample-and-hold has no code: 0 (unassigned) with
// the interval still given.
uint16_t selector(SampleMode m) {
  switch (m) {
    case SampleMode::PACKET_DET: return 1;
    case SampleMode::PACKET_RANDOM: return 3;
    case SampleMode::FLOW_HASH: return 6;
    default: return 0;
  }
}


}  // namespace

IpfixExporter::IpfixExporter(const IpfixConfig& c) : cfg_(c) {
  size_t colon = c.collector.rfind(':');
  if (colon == std::string::npos || colon == 0)
    throw std::runtime_error("IPFIX collector '" + c.collector + "': expected HOST:PORT");
  std::string host = c.collector.substr(0, colon), port = c.collector.substr(colon + 1);
  if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  addrinfo hints{}, *res = nullptr;
  hints.ai_socktype = SOCK_DGRAM;
  int rc = getaddrinfo(host.c_str(), port.c_str(), &hints, &res);
  if (rc != 0) throw std::runtime_error("IPFIX collector '" + c.collector + "': " + gai_strerror(rc));
  fd_ = socket(res->ai_family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0 || connect(fd_, res->ai_addr, res->ai_addrlen) != 0) {
    std::string e = std::strerror(errno);
    freeaddrinfo(res);
    throw std::runtime_error("IPFIX collector '" + c.collector + "': " + e);
  }
  freeaddrinfo(res);
}

IpfixExporter::~IpfixExporter() {
  flush();
  if (fd_ >= 0) close(fd_);
}

void IpfixExporter::send_message(
    const std::vector<std::pair<uint16_t, const std::vector<uint8_t>*>>& sets, uint32_t records) {
  std::vector<uint8_t> m;
  m.reserve(cfg_.max_message + 64);
  put16(m, 10);
  put16(m, 0);  // length, set below
  put32(m, uint32_t(wall_ns() / 1'000'000'000ull));
  put32(m, seq_);
  put32(m, cfg_.domain);
  for (auto& [id, body] : sets) {
    if (body->empty()) continue;
    put16(m, id);
    put16(m, uint16_t(4 + body->size()));
    m.insert(m.end(), body->begin(), body->end());
  }
  m[2] = uint8_t(m.size() >> 8);
  m[3] = uint8_t(m.size());
  // Sequence numbers count data records sent, whether or not the send succeeds (§3.1).
  seq_ += records;
  ssize_t n = ::send(fd_, m.data(), m.size(), MSG_DONTWAIT);
  if (n != ssize_t(m.size())) {
    stats.send_errors++;
    return;
  }
  stats.messages++;
  stats.bytes += m.size();
}

void IpfixExporter::send_templates(uint64_t now) {
  std::vector<uint8_t> t, o;
  template_record(t, kTplV4, false);
  template_record(t, kTplV6, true);
  // Options template: scope observationDomainId, then the sampling description.
  put16(o, kTplSampling);
  put16(o, 4);  // field count
  put16(o, 1);  // scope field count
  put16(o, IE_observationDomainId);
  put16(o, 4);
  put16(o, IE_selectorAlgorithm);
  put16(o, 2);
  put16(o, IE_samplingPacketInterval);
  put16(o, 4);
  put16(o, IE_samplingPacketSpace);
  put16(o, 4);
  send_message({{2, &t}, {3, &o}}, 0);
  stats.template_sends++;
  last_templates_ns_ = now;
  have_sampling_ = false;  // resend the sampling options data after templates
}

void IpfixExporter::encode(const FlowRecord& r, std::vector<uint8_t>& v4, std::vector<uint8_t>& v6,
                           uint32_t& n) {
  const FlowEntry& e = r.e;
  int f = e.init_lo ? 0 : 1;
  for (int dir = 0; dir < 2; dir++) {
    int d = dir == 0 ? f : 1 - f;  // canonical direction of this uniflow
    if (!e.pkts[d]) continue;
    const uint8_t* src = d == 0 ? e.key.lo : e.key.hi;
    const uint8_t* dst = d == 0 ? e.key.hi : e.key.lo;
    uint16_t sp = d == 0 ? e.key.lo_port : e.key.hi_port;
    uint16_t dp = d == 0 ? e.key.hi_port : e.key.lo_port;
    if (e.key.proto == 1 || e.key.proto == 58) {
      // Collectors read ICMP as sport 0, dport = type × 256 + code. Our echo flows key on
      // the identifier (sport == dport); export them as request / reply per direction.
      bool echo = e.key.lo_port == e.key.hi_port;
      if (echo) dp = uint16_t((e.key.proto == 1 ? (dir == 0 ? 8 : 0) : (dir == 0 ? 128 : 129)) << 8);
      sp = 0;
    }
    std::vector<uint8_t>& b = e.key.ip_ver == 6 ? v6 : v4;
    size_t alen = e.key.ip_ver == 6 ? 16 : 4;
    b.insert(b.end(), src, src + alen);
    b.insert(b.end(), dst, dst + alen);
    put16(b, sp);
    put16(b, dp);
    put8(b, e.key.proto);
    put16(b, e.key.proto == 6 ? e.flags[d] : 0);
    put64(b, e.bytes[d]);
    put64(b, e.pkts[d]);
    put64(b, e.first_ns / 1'000'000);
    put64(b, e.last_ns / 1'000'000);
    put8(b, end_reason_code(r.why));
    put8(b, dir == 0 ? 1 : 2);  // initiator / reverseInitiator
    put16(b, uint16_t(e.key.zone & 0x0FFF));
    n++;
  }
}

void IpfixExporter::consume(const FlowRecord& r) {
  uint64_t now = wall_ns();
  if (!last_templates_ns_ || now - last_templates_ns_ >= cfg_.template_refresh_ns) {
    flush();
    send_templates(now);
  }
  if (!have_sampling_ || r.sampling.mode != sampling_.mode || r.sampling.rate != sampling_.rate) {
    flush();
    std::vector<uint8_t> s;
    put32(s, cfg_.domain);
    put16(s, selector(r.sampling.mode));
    put32(s, 1);  // samplingPacketInterval: packets selected per ...
    put32(s, r.sampling.mode == SampleMode::OFF ? 0 : r.sampling.rate - 1);  // ... packets skipped
    send_message({{kTplSampling, &s}}, 1);
    sampling_ = r.sampling;
    have_sampling_ = true;
  }
  encode(r, v4_, v6_, pending_);
  // A record is at most 2 × 85 bytes: flush before the next could overflow the message.
  if (16 + 8 + v4_.size() + v6_.size() + 2 * 85 > cfg_.max_message) flush();
}

void IpfixExporter::flush() {
  if (!pending_) return;
  send_message({{kTplV4, &v4_}, {kTplV6, &v6_}}, pending_);
  stats.data_records += pending_;
  v4_.clear();
  v6_.clear();
  pending_ = 0;
}

}  // namespace ls
