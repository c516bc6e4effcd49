#include "ctrl/netflow.h"

#include <algorithm>
#include <cstring>

#include "dataplane/clock.h"

namespace ls {

namespace {

uint16_t rd16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
uint32_t rd32(const uint8_t* p) { return uint32_t(rd16(p)) << 16 | rd16(p + 2); }
// Unsigned big-endian of 1..8 bytes (IPFIX reduced-size encoding, RFC 7011 6.2).
uint64_t rdn(const uint8_t* p, size_t n) {
  uint64_t v = 0;
  for (size_t i = 0; i < n && i < 8; i++) v = v << 8 | p[i];
  return v;
}

// sFlow's samples and records: a format word, a length and that many bytes. Reads the one
// at `off` and moves past it; false when it runs past n.
bool next_xdr(const uint8_t* p, size_t n, size_t& off, uint32_t& format, const uint8_t*& body, uint32_t& len) {
  if (n - off < 8) return false;
  format = rd32(p + off);
  len = rd32(p + off + 4);
  if (len > n - off - 8) return false;
  body = p + off + 8;
  off += 8 + size_t(len);
  return true;
}

constexpr uint64_t kNtpToUnix = 2'208'988'800ull;  // seconds from 1900 to 1970
uint64_t ntp_ns(uint64_t v) {
  uint64_t s = v >> 32, frac = v & 0xFFFFFFFFull;
  if (s < kNtpToUnix) return 0;
  return (s - kNtpToUnix) * 1'000'000'000ull + (frac * 1'000'000'000ull >> 32);
}

// Information elements used (IANA IPFIX registry; the same numbers as NetFlow v9 types).
enum : uint16_t {
  IE_OCTETS = 1, IE_PACKETS = 2, IE_PROTO = 4, IE_TCP_FLAGS = 6, IE_SRC_PORT = 7,
  IE_SRC_V4 = 8, IE_DST_PORT = 11, IE_DST_V4 = 12, IE_LAST_UPTIME = 21, IE_FIRST_UPTIME = 22,
  IE_SRC_V6 = 27, IE_DST_V6 = 28, IE_ICMP_V4 = 32, IE_SAMPLING_INTERVAL = 34,
  IE_SAMPLING_ALGORITHM = 35, IE_SAMPLER_MODE = 49, IE_SAMPLER_INTERVAL = 50, IE_IP_VERSION = 60,
  IE_OCTETS_TOTAL = 85, IE_PACKETS_TOTAL = 86, IE_ICMP_V6 = 139, IE_START_S = 150, IE_END_S = 151,
  IE_START_MS = 152, IE_END_MS = 153, IE_START_US = 154, IE_END_US = 155, IE_START_NS = 156,
  IE_END_NS = 157, IE_SYS_INIT_MS = 160, IE_ICMP_TYPE_V4 = 176, IE_ICMP_CODE_V4 = 177,
  IE_ICMP_TYPE_V6 = 178, IE_ICMP_CODE_V6 = 179, IE_SELECTOR_ALGORITHM = 304,
  IE_BIFLOW_DIRECTION = 239, IE_PACKET_INTERVAL = 305, IE_PACKET_SPACE = 306,
};

}  // namespace

uint32_t NetflowDecoder::exporter_of(const std::string& from, uint32_t domain) {
  uint32_t next = free_exporters_.empty() ? uint32_t(exporters_.size()) : free_exporters_.back();
  auto [it, fresh] = exporter_index_.try_emplace({from, domain}, next);
  if (fresh) {
    Exporter e;
    e.from = from;
    e.domain = domain;
    if (next == exporters_.size()) {
      exporters_.push_back(e);
    } else {
      exporters_[next] = e;
      free_exporters_.pop_back();
    }
  }
  return it->second;
}

void NetflowDecoder::end_session(const std::string& from) {
  for (auto it = exporter_index_.lower_bound({from, 0}); it != exporter_index_.end() && it->first.first == from;) {
    uint32_t ex = it->second;
    templates_.erase(templates_.lower_bound({ex, 0}), templates_.upper_bound({ex, UINT16_MAX}));
    free_exporters_.push_back(ex);
    it = exporter_index_.erase(it);
  }
}

// Cisco's fixed formats (IPv4 only): a header — version, count, sysUpTime ms, export
// time s + ns, then in v5 and v7 the flows sequence, in v5 engine type / id and sampling
// (2 bits mode, 14 bits interval), in v7 4 reserved bytes — and `count` records: src,
// dst, next hop, ifindex in / out, packets, octets, first / last (sysUpTime ms), ports,
// then TCP flags, protocol and ToS where the version puts them. v5 adds AS numbers and
// masks (48 bytes); v7 (Catalyst NDE) adds them, flags and the bypassed router (52); v1
// has none of it (48 bytes, no sequence, no source id).
struct FixedFormat {
  uint16_t version;
  size_t hdr, rec;
  size_t flags_at, proto_at;  // in a record
  bool sequence, engine_and_sampling;
  NfCtr counter;
};
constexpr FixedFormat kV1{1, 16, 48, 40, 38, false, false, NfCtr::datagrams_v1};
constexpr FixedFormat kV5{5, 24, 48, 37, 38, true, true, NfCtr::datagrams_v5};
constexpr FixedFormat kV7{7, 24, 52, 37, 38, true, false, NfCtr::datagrams_v7};

void NetflowDecoder::decode(const uint8_t* p, size_t n, const std::string& from, uint64_t recv_ns) {
  ctr.inc(NfCtr::datagrams);
  if (n < 4) return ctr.inc(NfCtr::truncated_header);
  uint16_t ver = rd16(p);
  bool ipfix = ver == 10;
  if (ver == 5) return decode_fixed(p, n, from, kV5);
  if (ver == 1) return decode_fixed(p, n, from, kV1);
  if (ver == 7) return decode_fixed(p, n, from, kV7);
  // sFlow's version is a 32-bit word: its first two bytes are zero.
  if (ver == 0 && rd16(p + 2) == 5) return decode_sflow(p, n, from, recv_ns ? recv_ns : wall_ns());
  if (ver != 9 && ver != 10) return ctr.inc(NfCtr::bad_version);
  size_t hdr = ipfix ? 16 : 20;
  if (n < hdr) return ctr.inc(NfCtr::truncated_header);
  uint32_t ex, seq, uptime_ms = 0;
  uint64_t export_ms;
  if (ipfix) {
    ctr.inc(NfCtr::datagrams_ipfix);
    size_t len = rd16(p + 2);
    if (len != n) {
      ctr.inc(NfCtr::bad_length);
      if (len > n || len < hdr) return;
      n = len;  // trailing bytes after the message are not ours
    }
    export_ms = uint64_t(rd32(p + 4)) * 1000;
    seq = rd32(p + 8);
    ex = exporter_of(from, rd32(p + 12));
  } else {
    ctr.inc(NfCtr::datagrams_v9);
    uptime_ms = rd32(p + 4);
    export_ms = uint64_t(rd32(p + 8)) * 1000;
    seq = rd32(p + 12);
    ex = exporter_of(from, rd32(p + 16));
  }
  uint32_t data_records = 0, flow_records = 0;
  size_t off = hdr;
  while (off + 4 <= n) {
    uint16_t id = rd16(p + off);
    size_t len = rd16(p + off + 2);
    if (len < 4 || off + len > n) {
      ctr.inc(NfCtr::bad_set_length);
      break;
    }
    const uint8_t* body = p + off + 4;
    size_t blen = len - 4;
    off += len;
    uint16_t tmpl_id = ipfix ? 2 : 0, opt_id = ipfix ? 3 : 1;
    if (id == tmpl_id || id == opt_id) {
      templates_set(body, blen, ex, ipfix, id == opt_id);
    } else if (id >= 256) {
      auto it = templates_.find({ex, id});
      if (it == templates_.end()) {
        ctr.inc(NfCtr::data_without_template);
        continue;
      }
      uint32_t got = data_set(body, blen, ex, it->second, ipfix, export_ms, uptime_ms);
      data_records += got;
      if (!it->second.options) flow_records += got;
    }  // other set ids are reserved: skipped
  }
  check_sequence(exporters_[ex], ipfix, seq, flow_records, data_records);
}

void NetflowDecoder::decode_fixed(const uint8_t* p, size_t n, const std::string& from, const FixedFormat& f) {
  ctr.inc(f.counter);
  if (n < f.hdr) return ctr.inc(NfCtr::truncated_header);
  uint32_t count = rd16(p + 2), uptime_ms = rd32(p + 4);
  // Records that are whole and announced are decoded; a count that disagrees with the
  // length is counted once (nfcapd would drop the datagram: the records are still good).
  if (f.hdr + size_t(count) * f.rec != n) {
    ctr.inc(NfCtr::bad_length);
    count = uint32_t(std::min<size_t>(count, (n - f.hdr) / f.rec));
  }
  uint32_t ex = exporter_of(from, f.engine_and_sampling ? uint32_t(p[20]) << 8 | p[21] : 0);
  Exporter& e = exporters_[ex];
  if (f.engine_and_sampling) {
    // Every v5 header states the sampling in force: mode 1 is 1 in N deterministic, mode 2
    // random, mode 0 (or N = 0) none. v1 and v7 say nothing: unsampled.
    uint16_t samp = rd16(p + 22), mode = samp >> 14, interval = samp & 0x3FFF;
    e.sampling = mode && interval ? interval : 1;
    e.sampling_random = mode == 2 && interval;
  }
  // The exporter's boot in ms, to the header's ns: these times are as exact as its clock.
  int64_t base_ms = int64_t(rd32(p + 8)) * 1000 + rd32(p + 12) / 1'000'000 - int64_t(uptime_ms);
  for (uint32_t i = 0; i < count; i++) {
    const uint8_t* r = p + f.hdr + size_t(i) * f.rec;
    Uniflow u{};
    u.ip_ver = 4;
    std::memcpy(u.src, r, 4);
    std::memcpy(u.dst, r + 4, 4);
    u.packets = rd32(r + 16);
    u.bytes = rd32(r + 20);
    // Relative to sysUpTime, 32-bit ms that may wrap (49.7 days after boot).
    int64_t first = int32_t(rd32(r + 24) - uptime_ms) + int64_t(uptime_ms);
    int64_t last = int32_t(rd32(r + 28) - uptime_ms) + int64_t(uptime_ms);
    u.sport = rd16(r + 32);
    u.dport = rd16(r + 34);  // ICMP: type × 256 + code, as Cisco exports it
    u.tcp_flags = r[f.flags_at];
    u.proto = r[f.proto_at];
    // A Catalyst exporting under a destination-only or source-destination flow mask
    // leaves protocol (and ports) zero: a traffic count, not a flow.
    if (f.version == 7 && u.proto == 0) {
      ctr.inc(NfCtr::records_without_flow_key);
      continue;
    }
    u.first_ns = uint64_t(std::max<int64_t>(0, base_ms + first)) * 1'000'000ull;
    u.last_ns = std::max<uint64_t>(u.first_ns, uint64_t(std::max<int64_t>(0, base_ms + last)) * 1'000'000ull);
    u.sampling_interval = e.sampling;
    u.sampling_random = e.sampling_random;
    u.exporter = ex;
    ctr.inc(NfCtr::records);
    sink_(u);
  }
  if (!f.sequence) return;
  // The header's sequence counts the flows before this datagram.
  uint32_t seq = rd32(p + 16);
  if (e.seq_known && seq != e.next_seq) {
    uint32_t gap = seq - e.next_seq;
    ctr.inc(NfCtr::sequence_gaps, gap < (1u << 31) ? gap : 1);  // far behind: a restart
  }
  e.seq_known = true;
  e.next_seq = seq + rd16(p + 2);
}

// sFlow v5 (sflow.org, "sFlow Version 5"): XDR, so every field is one or more 32-bit
// big-endian words. Header: version, agent address type (0 none, 1 IPv4, 2 IPv6) and
// address, sub-agent id, datagram sequence, agent uptime (ms), sample count. Each sample
// is a format word (enterprise << 12 | format) and a length; flow samples (0:1, expanded
// 0:3) describe one sampled packet, counter samples (0:2, 0:4) interface counters.
void NetflowDecoder::decode_sflow(const uint8_t* p, size_t n, const std::string& from, uint64_t recv_ns) {
  ctr.inc(NfCtr::datagrams_sflow);
  if (n < 8) return ctr.inc(NfCtr::truncated_header);
  uint32_t atype = rd32(p + 4);
  if (atype > 2) return ctr.inc(NfCtr::sflow_bad_agent_address);
  size_t off = 8 + (atype == 1 ? 4 : atype == 2 ? 16 : 0);
  if (n < off + 16) return ctr.inc(NfCtr::truncated_header);
  uint32_t sub_agent = rd32(p + off), seq = rd32(p + off + 4), uptime_ms = rd32(p + off + 8);
  uint32_t samples = rd32(p + off + 12);
  off += 16;
  uint32_t ex = exporter_of(from, sub_agent);
  Exporter& e = exporters_[ex];
  // Samples carry no time of their own; the datagram's uptime dates them (the agent sends
  // within a second or so). Uptime is mapped to our clock once and kept, so times follow
  // the agent's clock and not our receive queue, until they stray from arrival by > 10 s
  // (reboot, uptime wrap after 49.7 days, a stalled collector draining): then mapped again.
  int64_t up_ns = int64_t(uptime_ms) * 1'000'000;
  int64_t ts = e.sflow_boot_ns + up_ns;
  if (!e.sflow_boot_known || ts > int64_t(recv_ns) + 10'000'000'000 || ts < int64_t(recv_ns) - 10'000'000'000) {
    e.sflow_boot_ns = int64_t(recv_ns) - up_ns;
    e.sflow_boot_known = true;
    ts = int64_t(recv_ns);
  }
  // Datagrams are numbered per agent and sub-agent; a restart starts again at 1.
  if (e.seq_known && seq != e.next_seq) {
    uint32_t gap = seq - e.next_seq;
    ctr.inc(NfCtr::sequence_gaps, gap < (1u << 31) ? gap : 1);
  }
  e.seq_known = true;
  e.next_seq = seq + 1;
  for (uint32_t i = 0; i < samples; i++) {
    uint32_t format, len;
    const uint8_t* body;
    if (!next_xdr(p, n, off, format, body, len)) return ctr.inc(NfCtr::sflow_bad_length);
    if (format == 1 || format == 3) {
      sflow_flow_sample(body, len, format == 3, ex, uint64_t(std::max<int64_t>(0, ts)));
    } else if (format == 2 || format == 4) {
      ctr.inc(NfCtr::sflow_counter_samples);
    } else {
      ctr.inc(NfCtr::sflow_other_samples);
    }
  }
}

// An agent's `drops` counts, per data source since the agent started, packets chosen for
// sampling that it had no resources to sample: the samples, and every estimate made from
// them, fall short by that much. Counted from the second sample of a source on; a counter
// that went back (an agent restart) counts from zero again.
void NetflowDecoder::count_sflow_drops(Exporter& e, uint64_t source, uint32_t drops) {
  auto it = std::lower_bound(e.sflow_drops.begin(), e.sflow_drops.end(), source,
                             [](const auto& a, uint64_t s) { return a.first < s; });
  if (it == e.sflow_drops.end() || it->first != source) {
    e.sflow_drops.insert(it, {source, drops});
    return;
  }
  ctr.inc(NfCtr::sflow_agent_drops, drops >= it->second ? drops - it->second : drops);
  it->second = drops;
}

// A flow sample: sequence, source id (expanded: type and index apart), sampling rate,
// sample pool, drops, input and output interfaces (expanded: format and value apart),
// record count; then records, each a format word and a length. The raw packet header
// (0:1: header protocol, frame length, bytes stripped, header length, header) is parsed
// as a captured packet; sampled IPv4 / IPv6 (0:3, 0:4) stand in when no header came.
void NetflowDecoder::sflow_flow_sample(const uint8_t* p, size_t n, bool expanded, uint32_t ex, uint64_t ts_ns) {
  size_t off = expanded ? 44 : 32;
  if (n < off) return ctr.inc(NfCtr::sflow_bad_length);
  uint32_t rate = rd32(p + (expanded ? 12 : 8)), records = rd32(p + off - 4);
  // Data source: type and index (the standard form packs the type in the id's top byte).
  uint32_t id = rd32(p + 4);
  uint64_t source = expanded ? uint64_t(id) << 32 | rd32(p + 8) : uint64_t(id >> 24) << 32 | (id & 0xffffff);
  count_sflow_drops(exporters_[ex], source, rd32(p + (expanded ? 20 : 16)));
  const uint8_t *header = nullptr, *v4 = nullptr, *v6 = nullptr;
  uint32_t hproto = 0, hlen = 0;
  uint64_t frame_bytes = 0;
  for (uint32_t i = 0; i < records; i++) {
    uint32_t format, len;
    const uint8_t* r;
    if (!next_xdr(p, n, off, format, r, len)) return ctr.inc(NfCtr::sflow_bad_length);
    if (format == 1) {
      if (len < 16 || rd32(r + 12) > len - 16) return ctr.inc(NfCtr::sflow_bad_length);
      uint32_t hp = rd32(r), frame = rd32(r + 4), stripped = rd32(r + 8);
      if (hp != 1 && hp != 11 && hp != 12) continue;  // not Ethernet, IPv4 or IPv6
      header = r + 16;
      hproto = hp;
      hlen = rd32(r + 12);
      // Frame bytes as a capture counts them: without what the agent stripped (the FCS).
      frame_bytes = frame - std::min(stripped, frame);
    } else if (format == 3 && len >= 32) {
      v4 = r;
    } else if (format == 4 && len >= 56) {
      v6 = r;
    }
  }
  Uniflow u{};
  u.packets = 1;
  u.first_ns = u.last_ns = ts_ns;
  u.sampling_interval = std::max<uint32_t>(rate, 1);
  u.sampling_random = rate > 1;  // sFlow samples 1 in N at random
  u.exporter = ex;
  if (header) {
    PacketView v{header, hlen, uint32_t(std::max<uint64_t>(frame_bytes, hlen)), ts_ns, 0,
                 hproto == 1 ? LinkType::ETHERNET : hproto == 11 ? LinkType::IPV4 : LinkType::IPV6, 0};
    PacketMeta m{};
    if (!parse_packet(v, v.link, parse_, m, sflow_parse)) {
      if (m.error == Ctr::non_ip_ethertype || m.error == Ctr::pppoe_non_ip) return ctr.inc(NfCtr::sflow_samples_not_ip);
      sflow_parse.inc(m.error);
      return ctr.inc(NfCtr::sflow_samples_unparsed);
    }
    std::memcpy(u.src, m.src, 16);
    std::memcpy(u.dst, m.dst, 16);
    u.sport = m.sport;
    u.dport = m.dport;
    u.proto = m.l4_proto;
    u.ip_ver = m.ip_ver;
    u.tcp_flags = m.tcp_flags;
    u.bytes = v.wire_len;
    u.payload = m.payload;
    u.payload_len = m.payload_len;
  } else if (v4 || v6) {
    // length, protocol, source, destination, source port, destination port, TCP flags, ToS.
    const uint8_t* r = v4 ? v4 : v6;
    size_t a = v4 ? 4 : 16;
    u.ip_ver = v4 ? 4 : 6;
    u.bytes = rd32(r);
    u.proto = uint8_t(rd32(r + 4));
    std::memcpy(u.src, r + 8, a);
    std::memcpy(u.dst, r + 8 + a, a);
    u.sport = uint16_t(rd32(r + 8 + 2 * a));
    u.dport = uint16_t(rd32(r + 12 + 2 * a));
    u.tcp_flags = uint8_t(rd32(r + 16 + 2 * a));
  } else {
    return ctr.inc(NfCtr::sflow_samples_without_packet);
  }
  ctr.inc(NfCtr::sflow_flow_samples);
  sink_(u);
}

// v9 numbers datagrams. IPFIX numbers the data records sent before this message
// (RFC 7011 3.1); some exporters (softflowd) number the flow records up to and including
// it: recognised on the first message, which then carries its own count.
void NetflowDecoder::check_sequence(Exporter& e, bool ipfix, uint32_t seq, uint32_t flows,
                                    uint32_t data) {
  if (!e.seq_known) {
    e.seq_known = true;
    e.seq_after = ipfix && seq != 0 && (seq == flows || seq == data);
  } else {
    uint32_t expect = e.seq_after ? e.next_seq + flows : e.next_seq;
    if (seq != expect) {
      uint32_t gap = seq - expect;
      ctr.inc(NfCtr::sequence_gaps, gap < (1u << 31) ? gap : 1);  // far behind: a restart
    }
  }
  e.next_seq = !ipfix ? seq + 1 : e.seq_after ? seq : seq + data;
}

void NetflowDecoder::templates_set(const uint8_t* p, size_t n, uint32_t ex, bool ipfix,
                                   bool options) {
  size_t off = 0;
  while (off + 4 <= n) {
    uint16_t tid = rd16(p + off);
    uint16_t count = rd16(p + off + 2);
    if (tid == 0 && !ipfix) return;  // v9 padding
    if (ipfix && count == 0) {  // withdrawal (RFC 7011 8.1)
      if (templates_.erase({ex, tid})) ctr.inc(NfCtr::templates_withdrawn);
      off += 4;
      continue;
    }
    Template t;
    t.options = options;
    size_t nfields = count;
    off += 4;
    if (options) {
      if (off + 2 > n) return ctr.inc(NfCtr::bad_template);
      uint16_t third = rd16(p + off);
      off += 2;
      if (ipfix) {
        t.scope_fields = third;  // count = all fields, third = scope fields
      } else {
        // v9: count = scope length in bytes, third = option length in bytes
        t.scope_fields = uint16_t(count / 4);
        nfields = (size_t(count) + third) / 4;
      }
      if (t.scope_fields > nfields) return ctr.inc(NfCtr::bad_template);
    }
    // A template without fields would describe zero-length records: a data set could
    // never be consumed (found by tests/fuzz/fuzz_netflow as a hang).
    if (tid < 256 || nfields == 0) return ctr.inc(NfCtr::bad_template);
    for (size_t i = 0; i < nfields; i++) {
      if (off + 4 > n) return ctr.inc(NfCtr::bad_template);
      Field f{uint16_t(rd16(p + off) & (ipfix ? 0x7FFF : 0xFFFF)), rd16(p + off + 2), 0};
      bool enterprise = ipfix && (p[off] & 0x80);
      off += 4;
      if (enterprise) {
        if (off + 4 > n) return ctr.inc(NfCtr::bad_template);
        f.pen = rd32(p + off);
        off += 4;
      }
      if (f.len == 0 || (f.len == 65535 && !ipfix)) return ctr.inc(NfCtr::bad_template);
      t.min_len += f.len == 65535 ? 1 : f.len;
      t.fields.push_back(f);
    }
    ctr.inc(NfCtr::templates);
    templates_[{ex, tid}] = std::move(t);
  }
}

uint32_t NetflowDecoder::data_set(const uint8_t* p, size_t n, uint32_t ex, const Template& t,
                                  bool ipfix, uint64_t export_ms, uint32_t uptime_ms) {
  uint32_t got = 0;
  size_t off = 0;
  if (t.min_len == 0) return 0;
  std::vector<uint16_t> lens(t.fields.size());
  // Fewer bytes than the smallest record left: padding (RFC 7011 3.3.1, RFC 3954 5.3).
  while (off + t.min_len <= n) {
    size_t at = off;
    bool ok = true;
    for (size_t i = 0; i < t.fields.size(); i++) {
      size_t len = t.fields[i].len;
      if (len == 65535) {  // variable length: 1 byte, or 255 then 2 bytes
        if (at + 1 > n) { ok = false; break; }
        len = p[at++];
        if (len == 255) {
          if (at + 2 > n) { ok = false; break; }
          len = rd16(p + at);
          at += 2;
        }
      }
      if (at + len > n) { ok = false; break; }
      lens[i] = uint16_t(len);
      at += len;
    }
    if (!ok) break;  // a cut variable-length record is treated as padding
    record(p + off, t, lens, ex, ipfix, export_ms, uptime_ms);
    got++;
    off = at;
  }
  return got;
}

void NetflowDecoder::record(const uint8_t* p, const Template& t, const std::vector<uint16_t>& lens,
                            uint32_t ex, bool ipfix, uint64_t export_ms, uint32_t uptime_ms) {
  Exporter& e = exporters_[ex];
  Uniflow u{};
  bool have_src = false, have_dst = false, have_delta_p = false, have_delta_b = false;
  uint64_t start_ns = 0, end_ns = 0, pkt_interval = 0, pkt_space = 0;
  int64_t first_up = -1, last_up = -1;
  uint8_t icmp_type = 0, icmp_code = 0;
  bool have_icmp = false;
  size_t at = 0;
  for (size_t i = 0; i < t.fields.size(); i++) {
    const Field& f = t.fields[i];
    size_t len = lens[i];
    const uint8_t* v = p + at;
    if (f.len == 65535) v += len < 255 ? 1 : 3;
    at = size_t(v - p) + len;
    // v9 options scope fields are scope types, not IEs; IPFIX scopes are not needed here.
    if (f.pen || (t.options && i < t.scope_fields)) continue;
    uint64_t x = len <= 8 ? rdn(v, len) : 0;
    switch (f.ie) {
      case IE_SRC_V4: if (len == 4) { std::memcpy(u.src, v, 4); u.ip_ver = 4; have_src = true; } break;
      case IE_DST_V4: if (len == 4) { std::memcpy(u.dst, v, 4); have_dst = true; } break;
      case IE_SRC_V6: if (len == 16) { std::memcpy(u.src, v, 16); u.ip_ver = 6; have_src = true; } break;
      case IE_DST_V6: if (len == 16) { std::memcpy(u.dst, v, 16); have_dst = true; } break;
      case IE_SRC_PORT: u.sport = uint16_t(x); break;
      case IE_DST_PORT: u.dport = uint16_t(x); break;
      case IE_PROTO: u.proto = uint8_t(x); break;
      case IE_TCP_FLAGS: u.tcp_flags = uint8_t(x); break;  // 2-byte form: flags in the low byte
      case IE_IP_VERSION: if (x == 4 || x == 6) u.ip_ver = uint8_t(x); break;
      case IE_OCTETS: u.bytes = x; have_delta_b = true; break;
      case IE_PACKETS: u.packets = x; have_delta_p = true; break;
      case IE_OCTETS_TOTAL: if (!have_delta_b) u.bytes = x; break;
      case IE_PACKETS_TOTAL: if (!have_delta_p) u.packets = x; break;
      case IE_FIRST_UPTIME: first_up = int64_t(x); break;
      case IE_LAST_UPTIME: last_up = int64_t(x); break;
      case IE_START_S: start_ns = x * 1'000'000'000ull; break;
      case IE_END_S: end_ns = x * 1'000'000'000ull; break;
      case IE_START_MS: start_ns = x * 1'000'000ull; break;
      case IE_END_MS: end_ns = x * 1'000'000ull; break;
      case IE_START_US: case IE_START_NS: start_ns = ntp_ns(x); break;
      case IE_END_US: case IE_END_NS: end_ns = ntp_ns(x); break;
      case IE_SYS_INIT_MS: e.init_ms = x; break;
      case IE_ICMP_V4: case IE_ICMP_V6:
        icmp_type = uint8_t(x >> 8); icmp_code = uint8_t(x); have_icmp = true; break;
      case IE_ICMP_TYPE_V4: case IE_ICMP_TYPE_V6: icmp_type = uint8_t(x); have_icmp = true; break;
      case IE_ICMP_CODE_V4: case IE_ICMP_CODE_V6: icmp_code = uint8_t(x); have_icmp = true; break;
      case IE_SAMPLING_INTERVAL: case IE_SAMPLER_INTERVAL: if (x) e.sampling = uint32_t(x); break;
      case IE_SAMPLING_ALGORITHM: case IE_SAMPLER_MODE: e.sampling_random = x == 2; break;
      case IE_SELECTOR_ALGORITHM: e.sampling_random = x == 3; break;
      case IE_PACKET_INTERVAL: pkt_interval = x; break;
      case IE_PACKET_SPACE: pkt_space = x; break;
      case IE_BIFLOW_DIRECTION: u.initiator = x == 1 ? 1 : x == 2 ? -1 : 0; break;
      default: break;
    }
  }
  if (t.options) {
    // N selected, M skipped: 1 in (N + M) / N.
    if (pkt_interval) e.sampling = uint32_t((pkt_interval + pkt_space) / pkt_interval);
    ctr.inc(NfCtr::options_records);
    return;
  }
  if (!have_src || !have_dst || !u.ip_ver) return ctr.inc(NfCtr::records_without_flow_key);
  if (have_icmp && (u.proto == 1 || u.proto == 58)) {
    u.sport = 0;
    u.dport = uint16_t(icmp_type << 8 | icmp_code);
  }
  if (first_up >= 0 || last_up >= 0) {
    if (first_up < 0) first_up = last_up;
    if (last_up < 0) last_up = first_up;
    int64_t base_ms;
    if (!ipfix) {
      base_ms = int64_t(export_ms) - int64_t(uptime_ms);  // the exporter's boot, to 1 s
    } else if (e.init_ms) {
      base_ms = int64_t(e.init_ms);
    } else {
      ctr.inc(NfCtr::records_without_time_base);
      base_ms = int64_t(export_ms) - last_up;  // assume the flow ended at export
    }
    // Relative times are 32-bit milliseconds that may wrap (49.7 days after boot).
    if (!ipfix) {
      first_up = int32_t(uint32_t(first_up) - uptime_ms) + int64_t(uptime_ms);
      last_up = int32_t(uint32_t(last_up) - uptime_ms) + int64_t(uptime_ms);
    }
    start_ns = uint64_t(std::max<int64_t>(0, base_ms + first_up)) * 1'000'000ull;
    end_ns = uint64_t(std::max<int64_t>(0, base_ms + last_up)) * 1'000'000ull;
  }
  if (!start_ns && !end_ns) {
    ctr.inc(NfCtr::records_without_time_base);
    start_ns = end_ns = export_ms * 1'000'000ull;
  }
  if (!start_ns) start_ns = end_ns;
  if (!end_ns || end_ns < start_ns) end_ns = start_ns;
  u.first_ns = start_ns;
  u.last_ns = end_ns;
  u.sampling_interval = e.sampling;
  u.sampling_random = e.sampling_random;
  u.exporter = ex;
  ctr.inc(NfCtr::records);
  sink_(u);
}

}  // namespace ls
