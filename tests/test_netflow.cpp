// NetFlow v9 / IPFIX / sFlow decoder on hand-built datagrams: the cases softflowd and
// pmacct do not send (variable-length and enterprise fields, uptime wrap, withdrawal,
// absolute times; sFlow's expanded samples, IPv6 agents, records without headers).
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "ctrl/collector.h"
#include "ctrl/netflow.h"
#include "tests/pktbuild.h"

namespace {

using ls::NetflowDecoder;
using ls::NfCtr;
using ls::Uniflow;

struct Buf {
  std::vector<uint8_t> b;
  Buf& u8(uint8_t v) { b.push_back(v); return *this; }
  Buf& u16(uint16_t v) { return u8(uint8_t(v >> 8)).u8(uint8_t(v)); }
  Buf& u32(uint32_t v) { return u16(uint16_t(v >> 16)).u16(uint16_t(v)); }
  Buf& u64(uint64_t v) { return u32(uint32_t(v >> 32)).u32(uint32_t(v)); }
  Buf& bytes(const std::vector<uint8_t>& v) { b.insert(b.end(), v.begin(), v.end()); return *this; }
  // XDR opaque / structure: a format word, the length, the body (padded to 4 bytes).
  Buf& xdr(uint32_t format, const Buf& body) {
    u32(format).u32(uint32_t((body.b.size() + 3) & ~size_t(3))).bytes(body.b);
    while (b.size() % 4) u8(0);
    return *this;
  }
  Buf& set(uint16_t id, const Buf& body) { u16(id).u16(uint16_t(body.b.size() + 4)); b.insert(b.end(), body.b.begin(), body.b.end()); return *this; }
  void patch_len() { b[2] = uint8_t(b.size() >> 8); b[3] = uint8_t(b.size()); }
};

struct Netflow : ::testing::Test {
  std::vector<Uniflow> got;
  NetflowDecoder d{[this](const Uniflow& u) { got.push_back(u); }};
  void feed(const Buf& m) { d.decode(m.b.data(), m.b.size(), "192.0.2.1:9999"); }
};

TEST_F(Netflow, V9RelativeTimesAcrossUptimeWrap) {
  // Exporter up for 2^32 + 5000 ms: uptime reads 5000; a flow that started 10 s ago has
  // FIRST_SWITCHED just below 2^32.
  Buf t;
  t.u16(256).u16(5).u16(8).u16(4).u16(12).u16(4).u16(22).u16(4).u16(21).u16(4).u16(2).u16(4);
  Buf rec;
  rec.u32(0x0A000001).u32(0x0A000002).u32(uint32_t(-5000)).u32(4000).u32(7);
  Buf m;
  m.u16(9).u16(2).u32(5000).u32(1'700'000'000).u32(0).u32(0).set(0, t).set(256, rec);
  feed(m);
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].first_ns, (1'700'000'000'000ull - 10'000) * 1'000'000);
  EXPECT_EQ(got[0].last_ns, (1'700'000'000'000ull - 1'000) * 1'000'000);
  EXPECT_EQ(got[0].packets, 7u);
  EXPECT_EQ(got[0].ip_ver, 4);
}

TEST_F(Netflow, IpfixVariableLengthEnterpriseAndAbsoluteMs) {
  Buf t;  // src v4, dst v4, an enterprise field, a variable-length string, start/end ms, octets (reduced to 2 bytes)
  t.u16(300).u16(7).u16(8).u16(4).u16(12).u16(4).u16(0x8000 | 1).u16(4).u32(9).u16(82).u16(65535)
      .u16(152).u16(8).u16(153).u16(8).u16(1).u16(2);
  Buf recs;
  for (int i = 0; i < 2; i++) {
    recs.u32(0xC6336401 + i).u32(0x0A000001).u32(0xDEADBEEF).u8(3).u8('e').u8('t').u8('h')
        .u64(1'700'000'000'123ull + i).u64(1'700'000'001'000ull).u16(1500);
  }
  recs.u8(0).u8(0).u8(0);  // padding shorter than a record
  Buf m;
  m.u16(10).u16(0).u32(1'700'000'002).u32(0).u32(1).set(2, t).set(300, recs);
  m.patch_len();
  feed(m);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[1].first_ns, 1'700'000'000'124ull * 1'000'000);
  EXPECT_EQ(got[1].bytes, 1500u);
  EXPECT_EQ(got[1].src[3], 2);
  EXPECT_EQ(d.ctr.get(NfCtr::records), 2u);
  // Withdrawn: the next data set has no template.
  Buf w;
  w.u16(300).u16(0);
  Buf m2;
  m2.u16(10).u16(0).u32(1'700'000'003).u32(2).u32(1).set(2, w).set(300, recs);
  m2.patch_len();
  feed(m2);
  EXPECT_EQ(d.ctr.get(NfCtr::templates_withdrawn), 1u);
  EXPECT_EQ(d.ctr.get(NfCtr::data_without_template), 1u);
  EXPECT_EQ(d.ctr.get(NfCtr::sequence_gaps), 0u);
}

TEST_F(Netflow, EveryTruncationOfAValidMessageIsSafe) {
  Buf t;
  t.u16(256).u16(3).u16(27).u16(16).u16(28).u16(16).u16(2).u16(4);
  Buf rec;
  for (int i = 0; i < 36; i++) rec.u8(uint8_t(i));
  Buf m;
  m.u16(10).u16(0).u32(1).u32(0).u32(0).set(2, t).set(256, rec);
  m.patch_len();
  for (size_t n = 0; n <= m.b.size(); n++) {
    std::vector<uint8_t> cut(m.b.begin(), m.b.begin() + long(n));  // exact size: ASan sees overreads
    d.decode(cut.data(), cut.size(), "x");
  }
  EXPECT_EQ(got.size(), 1u);  // only the whole message yields the record
  EXPECT_EQ(got[0].ip_ver, 6);
  EXPECT_EQ(d.ctr.get(NfCtr::bad_length), m.b.size() - 16);
}

// IPFIX over TCP: templates live as long as the session (RFC 7011 8); after the close
// the same peer's data needs its templates again, and the exporter slot is reused.
TEST_F(Netflow, EndedSessionForgetsItsTemplates) {
  Buf t;
  t.u16(256).u16(3).u16(8).u16(4).u16(12).u16(4).u16(2).u16(4);
  Buf rec;
  rec.u32(0x0A000001).u32(0x0A000002).u32(5);
  Buf with_template, data_only;
  with_template.u16(10).u16(0).u32(1'700'000'000).u32(0).u32(1).set(2, t).set(256, rec);
  with_template.patch_len();
  data_only.u16(10).u16(0).u32(1'700'000'000).u32(1).u32(1).set(256, rec);
  data_only.patch_len();
  d.decode(with_template.b.data(), with_template.b.size(), "192.0.2.1:40000");
  d.decode(with_template.b.data(), with_template.b.size(), "192.0.2.1:40001");  // another session
  EXPECT_EQ(got.size(), 2u);
  EXPECT_EQ(d.templates(), 2u);
  d.end_session("192.0.2.1:40000");
  EXPECT_EQ(d.templates(), 1u);
  EXPECT_EQ(d.exporters(), 1u);
  d.decode(data_only.b.data(), data_only.b.size(), "192.0.2.1:40000");
  EXPECT_EQ(got.size(), 2u);
  EXPECT_EQ(d.ctr.get(NfCtr::data_without_template), 1u);
  d.decode(data_only.b.data(), data_only.b.size(), "192.0.2.1:40001");  // the other kept its own
  EXPECT_EQ(got.size(), 3u);
  d.decode(with_template.b.data(), with_template.b.size(), "192.0.2.1:40000");
  EXPECT_EQ(got.size(), 4u);
  EXPECT_EQ(got.back().exporter, 0u);  // the released slot, reused
  EXPECT_EQ(d.exporters(), 2u);
}

// Two IPFIX messages as a TCP stream cut at every position: the same two messages, each
// once, whole; then bytes that are not a message header end the stream.
TEST(IpfixStream, MessagesCutAnywhere) {
  Buf a, b;
  a.u16(10).u16(0).u32(1).u32(0).u32(1).set(2, Buf().u16(256).u16(1).u16(8).u16(4));
  a.patch_len();
  b.u16(10).u16(0).u32(2).u32(0).u32(1).set(256, Buf().u32(0x0A000001).u32(0x0A000002));
  b.patch_len();
  std::vector<uint8_t> all(a.b);
  all.insert(all.end(), b.b.begin(), b.b.end());
  for (size_t cut = 0; cut <= all.size(); cut++) {
    ls::IpfixStream st;
    std::vector<std::vector<uint8_t>> got;
    auto msg = [&](const uint8_t* m, size_t n) { got.emplace_back(m, m + n); };
    ASSERT_TRUE(st.feed(all.data(), cut, msg));
    ASSERT_TRUE(st.feed(all.data() + cut, all.size() - cut, msg));
    ASSERT_EQ(got.size(), 2u) << "cut at " << cut;
    EXPECT_EQ(got[0], a.b);
    EXPECT_EQ(got[1], b.b);
    EXPECT_EQ(st.pending(), 0u);
  }
  ls::IpfixStream st;
  size_t msgs = 0;
  auto count = [&](const uint8_t*, size_t) { msgs++; };
  EXPECT_TRUE(st.feed(a.b.data(), a.b.size(), count));
  Buf v9;
  v9.u16(9).u16(1).u32(0).u32(0).u32(0).u32(0);
  EXPECT_FALSE(st.feed(v9.b.data(), v9.b.size(), count));
  EXPECT_EQ(msgs, 1u);
  ls::IpfixStream short_len;  // IPFIX, but a length below its own header
  Buf m;
  m.u16(10).u16(15).u32(0).u32(0).u32(0);
  EXPECT_FALSE(short_len.feed(m.b.data(), m.b.size(), count));
}

// NetFlow v5: one 48-byte record (src, dst, ports, protocol, flags, counts, uptime-relative
// times) after a 24-byte header with export time in s + ns, engine id and sampling.
Buf v5_record(uint32_t src, uint32_t dst, uint32_t pkts, uint32_t octets, uint32_t first, uint32_t last,
              uint16_t sport, uint16_t dport, uint8_t flags, uint8_t proto) {
  Buf r;
  r.u32(src).u32(dst).u32(0).u16(1).u16(2).u32(pkts).u32(octets).u32(first).u32(last).u16(sport).u16(dport)
      .u8(0).u8(flags).u8(proto).u8(0).u16(0).u16(0).u8(24).u8(24).u16(0);
  return r;
}
Buf v5(uint16_t count, uint32_t uptime, uint32_t secs, uint32_t nsecs, uint32_t seq, uint16_t sampling,
       const std::vector<Buf>& recs) {
  Buf m;
  m.u16(5).u16(count).u32(uptime).u32(secs).u32(nsecs).u32(seq).u8(1).u8(7).u16(sampling);
  for (const Buf& r : recs) m.b.insert(m.b.end(), r.b.begin(), r.b.end());
  return m;
}

TEST_F(Netflow, V5RecordsTimesSamplingAndSequence) {
  // Up 2^32 + 5000 ms (uptime reads 5000), exported at 1,700,000,000.250 s; the TCP flow
  // started 10 s ago (first just below 2^32: the wrap), the ICMP echo 1.5 s ago.
  Buf tcp = v5_record(0xC0000201, 0xC6336402, 12, 3400, uint32_t(-5000), 4000, 40000, 443, 0x1B, 6);
  Buf icmp = v5_record(0xC0000201, 0xC6336403, 1, 84, 3500, 3500, 0, 8 << 8, 0, 1);
  feed(v5(2, 5000, 1'700'000'000, 250'000'000, 100, 0x8000 | 100, {tcp, icmp}));
  ASSERT_EQ(got.size(), 2u);
  const uint64_t export_ms = 1'700'000'000'250ull;
  EXPECT_EQ(got[0].first_ns, (export_ms - 10'000) * 1'000'000);
  EXPECT_EQ(got[0].last_ns, (export_ms - 1'000) * 1'000'000);
  EXPECT_EQ(got[0].ip_ver, 4);
  EXPECT_EQ(got[0].src[0], 0xC0);
  EXPECT_EQ(got[0].dst[3], 0x02);
  EXPECT_EQ(got[0].sport, 40000);
  EXPECT_EQ(got[0].dport, 443);
  EXPECT_EQ(got[0].proto, 6);
  EXPECT_EQ(got[0].tcp_flags, 0x1B);
  EXPECT_EQ(got[0].packets, 12u);
  EXPECT_EQ(got[0].bytes, 3400u);
  EXPECT_EQ(got[0].sampling_interval, 100u);  // mode 2: random 1 in 100
  EXPECT_TRUE(got[0].sampling_random);
  EXPECT_EQ(got[1].proto, 1);
  EXPECT_EQ(got[1].dport, 8 << 8);  // echo request, type × 256 + code
  EXPECT_EQ(got[1].first_ns, (export_ms - 1'500) * 1'000'000);
  EXPECT_EQ(d.ctr.get(NfCtr::datagrams_v5), 1u);
  EXPECT_EQ(d.ctr.get(NfCtr::records), 2u);
  // The next datagram should say 102 flows before it; 105 means three were lost.
  feed(v5(1, 6000, 1'700'000'001, 0, 105, 0x4000 | 4, {icmp}));
  EXPECT_EQ(d.ctr.get(NfCtr::sequence_gaps), 3u);
  EXPECT_EQ(got.back().sampling_interval, 4u);  // mode 1: deterministic 1 in 4
  EXPECT_FALSE(got.back().sampling_random);
  feed(v5(1, 7000, 1'700'000'002, 0, 106, 0, {tcp}));
  EXPECT_EQ(d.ctr.get(NfCtr::sequence_gaps), 3u);
  EXPECT_EQ(got.back().sampling_interval, 1u);  // the exporter stopped sampling
  EXPECT_FALSE(got.back().sampling_random);
  EXPECT_EQ(d.ctr.get(NfCtr::bad_length), 0u);
}

TEST_F(Netflow, V5CountDisagreeingWithLengthKeepsWholeRecords) {
  Buf r = v5_record(0x0A000001, 0x0A000002, 1, 60, 10, 10, 1, 2, 0, 17);
  feed(v5(3, 100, 1'700'000'000, 0, 0, 0, {r, r}));  // 3 announced, 2 sent
  EXPECT_EQ(got.size(), 2u);
  EXPECT_EQ(d.ctr.get(NfCtr::bad_length), 1u);
  Buf m = v5(2, 100, 1'700'000'000, 0, 3, 0, {r, r});
  for (size_t n = 0; n <= m.b.size(); n++) {  // every cut: only whole records, never an overread
    std::vector<uint8_t> cut(m.b.begin(), m.b.begin() + long(n));
    d.decode(cut.data(), cut.size(), "x");
  }
  // Cuts below the header: truncated; from the header on, whole records only: 0 for
  // 24..71, 1 for 72..119, 2 for the full 120 bytes.
  EXPECT_EQ(d.ctr.get(NfCtr::truncated_header), 24u);
  EXPECT_EQ(got.size(), 2u + 48 + 2);
  EXPECT_EQ(d.ctr.get(NfCtr::bad_length), 1u + 96);
}

// NetFlow v1 (16-byte header: no sequence, no engine, no sampling; TCP flags at byte 40
// of a record, after protocol and ToS) and v7 (Catalyst NDE: v5's header with 4 reserved
// bytes in place of engine and sampling, v5's record plus the bypassed router: 52 bytes).
TEST_F(Netflow, V1AndV7Records) {
  Buf r1;
  r1.u32(0xC0000201).u32(0xC6336402).u32(0).u16(1).u16(2).u32(7).u32(900).u32(1000).u32(4000).u16(40000)
      .u16(443).u16(0).u8(6).u8(0x10).u8(0x1B).u8(0).u16(0).u32(0);
  ASSERT_EQ(r1.b.size(), 48u);
  Buf m1;
  m1.u16(1).u16(2).u32(5000).u32(1'700'000'000).u32(250'000'000);
  m1.bytes(r1.b);
  m1.bytes(r1.b);
  feed(m1);
  ASSERT_EQ(got.size(), 2u);
  const uint64_t export_ms = 1'700'000'000'250ull;
  EXPECT_EQ(got[0].first_ns, (export_ms - 4'000) * 1'000'000);
  EXPECT_EQ(got[0].last_ns, (export_ms - 1'000) * 1'000'000);
  EXPECT_EQ(got[0].proto, 6);
  EXPECT_EQ(got[0].tcp_flags, 0x1B) << "not the ToS byte before it";
  EXPECT_EQ(got[0].dport, 443);
  EXPECT_EQ(got[0].packets, 7u);
  EXPECT_EQ(got[0].sampling_interval, 1u);
  EXPECT_EQ(d.ctr.get(NfCtr::datagrams_v1), 1u);
  m1.b.resize(m1.b.size() - 1);  // the second record cut short
  feed(m1);
  EXPECT_EQ(got.size(), 3u);
  EXPECT_EQ(d.ctr.get(NfCtr::bad_length), 1u);
  EXPECT_EQ(d.ctr.get(NfCtr::sequence_gaps), 0u) << "v1 has no sequence";

  auto v7 = [](uint32_t seq, const std::vector<Buf>& recs) {
    Buf m;
    m.u16(7).u16(uint16_t(recs.size())).u32(5000).u32(1'700'000'000).u32(250'000'000).u32(seq).u32(0);
    for (const Buf& r : recs) {
      m.bytes(r.b);
      m.u32(0xC0000101);  // router_sc
    }
    return m;
  };
  Buf full = v5_record(0x0A000001, 0x0A000002, 3, 180, 4500, 4900, 5353, 53, 0, 17);
  // A destination-only flow mask: no source, ports nor protocol.
  Buf dest_only = v5_record(0, 0x0A000003, 9, 900, 4000, 4900, 0, 0, 0, 0);
  got.clear();
  feed(v7(10, {full, dest_only}));
  ASSERT_EQ(got.size(), 1u);
  EXPECT_EQ(got[0].proto, 17);
  EXPECT_EQ(got[0].dport, 53);
  EXPECT_EQ(got[0].bytes, 180u);
  EXPECT_EQ(got[0].first_ns, (export_ms - 500) * 1'000'000);
  EXPECT_EQ(d.ctr.get(NfCtr::records_without_flow_key), 1u);
  feed(v7(15, {full}));  // 12 expected: 3 flows lost
  EXPECT_EQ(d.ctr.get(NfCtr::sequence_gaps), 3u);
  EXPECT_EQ(d.ctr.get(NfCtr::datagrams_v7), 2u);
  EXPECT_EQ(d.ctr.get(NfCtr::bad_length), 1u);
  EXPECT_EQ(d.ctr.get(NfCtr::bad_version), 0u);
  Buf v6;
  v6.u16(6).u16(0).u32(0).u32(0).u32(0).u32(0).u32(0);
  feed(v6);
  EXPECT_EQ(d.ctr.get(NfCtr::bad_version), 1u);
}

// The collector hands the records a datagram ends to its consumer together (the models
// score them in one batch), each prefetched first, and every one by the end.
// sFlow v5 pieces (sflow.org "sFlow Version 5"): a datagram from IPv4 agent 192.0.2.9,
// flow samples and their records.
Buf sflow(uint32_t seq, uint32_t uptime_ms, const std::vector<Buf>& samples, uint32_t sub_agent = 0) {
  Buf m;
  m.u32(5).u32(1).u32(0xC0000209).u32(sub_agent).u32(seq).u32(uptime_ms).u32(uint32_t(samples.size()));
  for (const Buf& s : samples) m.bytes(s.b);
  return m;
}
Buf flow_sample(uint32_t rate, const std::vector<Buf>& records, bool expanded = false, uint32_t drops = 0,
                uint32_t type = 0, uint32_t index = 3) {
  Buf b;
  if (expanded)  // sequence, source type, index, rate, pool, drops, input fmt/value, output fmt/value
    b.u32(7).u32(type).u32(index).u32(rate).u32(rate * 10).u32(drops).u32(0).u32(1).u32(0).u32(2);
  else  // sequence, source id (type << 24 | index), rate, pool, drops, input, output
    b.u32(7).u32(type << 24 | index).u32(rate).u32(rate * 10).u32(drops).u32(1).u32(2);
  b.u32(uint32_t(records.size()));
  for (const Buf& r : records) b.bytes(r.b);
  return Buf().xdr(expanded ? 3 : 1, b);
}
Buf raw_header(uint32_t proto, uint32_t frame_len, uint32_t stripped, const std::vector<uint8_t>& h) {
  Buf body;
  body.u32(proto).u32(frame_len).u32(stripped).u32(uint32_t(h.size())).bytes(h);
  return Buf().xdr(1, body);
}
// The sFlow switch record every agent adds (1001): must be skipped.
Buf switch_record() { return Buf().xdr(1001, Buf().u32(10).u32(0).u32(20).u32(0)); }

constexpr uint64_t kRecv = 1'800'000'000'000'000'000ull;

TEST_F(Netflow, SflowSamplesBecomeOnePacketRecords) {
  lstest::Pkt syn = lstest::tcp4({10, 0, 0, 1}, {198, 51, 100, 7}, 40000, 443, 0x02, "hello");
  lstest::Pkt v6;
  v6.ip6(1, 2, 17).udp(5353, 53).payload("0123456789abcdef0123456789abcdef").finish();
  std::vector<uint8_t> v6cut(v6.b.begin(), v6.b.begin() + 48);  // the agent keeps 48 bytes
  lstest::Pkt arp;
  arp.eth(0x0806).zeros(28);
  Buf ip4rec;  // sampled IPv4: length, protocol, src, dst, sport, dport, TCP flags, ToS
  ip4rec.u32(1400).u32(6).u32(0xC0000201).u32(0x0A000002).u32(443).u32(51000).u32(0x18).u32(0);
  Buf other;
  other.u32(1);
  Buf m = sflow(1, 60'000,
                {flow_sample(512, {switch_record(), raw_header(1, uint32_t(syn.b.size()) + 4, 4, syn.b)}),
                 flow_sample(1, {raw_header(12, 1500, 0, v6cut)}, true),
                 Buf().xdr(2, Buf().u32(1).u32(3).u32(0)),           // counter sample
                 Buf().xdr(4300u << 12 | 1, other),                   // enterprise 4300
                 flow_sample(2048, {Buf().xdr(3, ip4rec)}),
                 flow_sample(64, {raw_header(2, 100, 0, {1, 2, 3, 4})}),  // token bus: not ours
                 flow_sample(64, {raw_header(1, 46, 4, arp.b)}),
                 flow_sample(64, {raw_header(1, 64, 4, std::vector<uint8_t>(syn.b.begin(), syn.b.begin() + 24))})});
  d.decode(m.b.data(), m.b.size(), "192.0.2.9:6343", kRecv);
  ASSERT_EQ(got.size(), 3u);
  EXPECT_EQ(d.ctr.get(NfCtr::datagrams_sflow), 1u);
  EXPECT_EQ(d.ctr.get(NfCtr::sflow_flow_samples), 3u);
  EXPECT_EQ(d.ctr.get(NfCtr::sflow_counter_samples), 1u);
  EXPECT_EQ(d.ctr.get(NfCtr::sflow_other_samples), 1u);
  EXPECT_EQ(d.ctr.get(NfCtr::sflow_samples_without_packet), 1u);
  EXPECT_EQ(d.ctr.get(NfCtr::sflow_samples_not_ip), 1u);  // the ARP frame: normal, not an error
  EXPECT_EQ(d.ctr.get(NfCtr::sflow_samples_unparsed), 1u);
  EXPECT_EQ(d.sflow_parse.get(ls::Ctr::truncated_ipv4), 1u);
  EXPECT_EQ(d.sflow_parse.get(ls::Ctr::non_ip_ethertype), 0u);
  EXPECT_EQ(d.ctr.get(NfCtr::records), 0u);  // NetFlow / IPFIX records only
  const Uniflow& a = got[0];
  EXPECT_EQ(a.ip_ver, 4);
  EXPECT_EQ(a.src[0], 10);
  EXPECT_EQ(a.dst[3], 7);
  EXPECT_EQ(a.sport, 40000);
  EXPECT_EQ(a.dport, 443);
  EXPECT_EQ(a.proto, 6);
  EXPECT_EQ(a.tcp_flags, 0x02);
  EXPECT_EQ(a.packets, 1u);
  EXPECT_EQ(a.bytes, syn.b.size());  // the frame without the stripped FCS
  EXPECT_EQ(a.sampling_interval, 512u);
  EXPECT_TRUE(a.sampling_random);
  EXPECT_EQ(a.first_ns, kRecv);
  EXPECT_EQ(a.last_ns, kRecv);
  ASSERT_EQ(a.payload_len, 5u);  // for the signatures
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(a.payload), 5), "hello");
  const Uniflow& b = got[1];  // expanded sample, raw IPv6 cut to 48 bytes
  EXPECT_EQ(b.ip_ver, 6);
  EXPECT_EQ(b.src[15], 1);
  EXPECT_EQ(b.dport, 53);
  EXPECT_EQ(b.proto, 17);
  EXPECT_EQ(b.bytes, 1500u);
  EXPECT_EQ(b.sampling_interval, 1u);
  EXPECT_FALSE(b.sampling_random);
  EXPECT_EQ(b.payload_len, 48u - 40 - 8);  // what the cut header holds
  const Uniflow& c = got[2];  // sampled IPv4 record, no header
  EXPECT_EQ(c.src[0], 192);
  EXPECT_EQ(c.sport, 443);
  EXPECT_EQ(c.dport, 51000);
  EXPECT_EQ(c.tcp_flags, 0x18);
  EXPECT_EQ(c.bytes, 1400u);
  EXPECT_EQ(c.sampling_interval, 2048u);
}

// Times follow the agent's uptime, not arrival; a reboot (or any stray > 10 s) maps the
// uptime to arrival again. Datagram sequence numbers count losses.
TEST_F(Netflow, SflowTimesFollowUptimeAndSequenceCountsLosses) {
  lstest::Pkt p = lstest::udp4({10, 0, 0, 1}, {10, 0, 0, 2}, 1000, 53, "q");
  auto one = [&](uint32_t seq, uint32_t up, uint64_t recv, uint32_t sub = 0) {
    Buf m = sflow(seq, up, {flow_sample(1, {raw_header(1, uint32_t(p.b.size()), 0, p.b)})}, sub);
    d.decode(m.b.data(), m.b.size(), "192.0.2.9:6343", recv);
    return got.back().first_ns;
  };
  EXPECT_EQ(one(1, 1'000, kRecv), kRecv);
  EXPECT_EQ(one(2, 3'500, kRecv + 2'700'000'000), kRecv + 2'500'000'000);  // arrived late
  EXPECT_EQ(one(5, 4'000, kRecv + 3'000'000'000), kRecv + 3'000'000'000);
  EXPECT_EQ(d.ctr.get(NfCtr::sequence_gaps), 2u);                            // 3 and 4 lost
  EXPECT_EQ(one(6, 9'000, kRecv + 8'000'000'000), kRecv + 8'000'000'000);
  EXPECT_EQ(one(7, 20'000, kRecv + 28'000'000'000), kRecv + 19'000'000'000);  // queued 9 s: agent's time
  EXPECT_EQ(one(8, 21'000, kRecv + 32'000'000'000), kRecv + 32'000'000'000);  // 12 s: mapped again
  EXPECT_EQ(one(1, 200, kRecv + 40'000'000'000), kRecv + 40'000'000'000);    // rebooted
  EXPECT_EQ(d.ctr.get(NfCtr::sequence_gaps), 3u);                              // a restart counts once
  EXPECT_EQ(one(2, 1'200, kRecv + 41'100'000'000), kRecv + 41'000'000'000);
  EXPECT_EQ(one(1, 50'000, kRecv + 41'500'000'000, 1), kRecv + 41'500'000'000);  // another sub-agent
  EXPECT_EQ(one(2, 50'100, kRecv + 41'600'000'000, 1), kRecv + 41'600'000'000);
  EXPECT_EQ(d.ctr.get(NfCtr::sequence_gaps), 3u);
  EXPECT_EQ(d.exporters(), 2u);
}

// An agent's drops counter (per data source, cumulative) rises when it could not sample
// packets it chose: the increases are counted, not the value first seen (history before
// we listened), and a counter that went back (agent restart) counts from zero.
TEST_F(Netflow, SflowAgentDropsCounted) {
  lstest::Pkt p = lstest::udp4({10, 0, 0, 1}, {10, 0, 0, 2}, 1000, 53, "q");
  uint32_t seq = 0;
  auto one = [&](uint32_t drops, bool expanded, uint32_t type, uint32_t index, uint32_t sub = 0) {
    seq++;
    Buf m = sflow(seq, 1'000 + seq,
                  {flow_sample(256, {raw_header(1, uint32_t(p.b.size()), 0, p.b)}, expanded, drops, type, index)},
                  sub);
    d.decode(m.b.data(), m.b.size(), "192.0.2.9:6343", kRecv + seq * 1'000'000ull);
    return d.ctr.get(NfCtr::sflow_agent_drops);
  };
  EXPECT_EQ(one(5, false, 0, 3), 0u);      // first seen: the agent's history
  EXPECT_EQ(one(12, false, 0, 3), 7u);
  EXPECT_EQ(one(12, false, 0, 3), 7u);
  EXPECT_EQ(one(100, true, 0, 4), 7u);     // another port: first seen
  EXPECT_EQ(one(110, true, 0, 4), 17u);
  EXPECT_EQ(one(50, true, 1, 3), 17u);     // type 1 index 3 is not type 0 index 3
  EXPECT_EQ(one(14, true, 0, 3), 19u);     // the expanded form of type 0 index 3: the same source
  EXPECT_EQ(one(2, false, 0, 3), 21u);     // went back: restarted, 2 since
  EXPECT_EQ(one(9, false, 0, 3, 1), 21u);  // another sub-agent: its own sources
  EXPECT_EQ(d.ctr.get(NfCtr::sflow_flow_samples), 9u);  // every sample still becomes a record
}

TEST_F(Netflow, SflowEveryTruncationIsSafe) {
  lstest::Pkt p = lstest::tcp4({10, 0, 0, 1}, {10, 0, 0, 2}, 1000, 80, 0x18, "GET / HTTP/1.1");
  Buf ip6rec;  // sampled IPv6: length, protocol, src, dst, ports, flags, priority
  ip6rec.u32(80).u32(17).u32(0x20010db8).u32(0).u32(0).u32(1).u32(0x20010db8).u32(0).u32(0).u32(2)
      .u32(5000).u32(53).u32(0).u32(0);
  Buf m;  // IPv6 agent
  m.u32(5).u32(2).u32(0x20010db8).u32(0).u32(0).u32(9).u32(0).u32(3).u32(1000).u32(2);
  m.bytes(flow_sample(10, {switch_record(), raw_header(1, uint32_t(p.b.size()) + 4, 4, p.b)}).b);
  size_t first_end = m.b.size();
  m.bytes(flow_sample(10, {Buf().xdr(4, ip6rec)}, true).b);
  d.decode(m.b.data(), m.b.size(), "x", kRecv);
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0].dport, 80);
  EXPECT_EQ(got[1].ip_ver, 6);
  EXPECT_EQ(got[1].dst[15], 2);
  EXPECT_EQ(got[1].dport, 53);
  for (size_t n = 0; n < m.b.size(); n++) {
    std::vector<uint8_t> cut(m.b.begin(), m.b.begin() + long(n));  // exact size: ASan sees overreads
    d.decode(cut.data(), cut.size(), "x", kRecv);
  }
  // Cuts past the first sample give it again, and nothing else: never a half-read sample.
  EXPECT_EQ(got.size(), 2 + (m.b.size() - first_end));
  for (size_t i = 2; i < got.size(); i++) EXPECT_EQ(got[i].dport, 80);
  EXPECT_EQ(d.ctr.get(NfCtr::sflow_bad_length), m.b.size() - 40);  // every cut past the 40-byte header
  EXPECT_EQ(d.ctr.get(NfCtr::sflow_flow_samples), got.size());
  EXPECT_GT(d.ctr.get(NfCtr::truncated_header), 0u);
  uint8_t bad_agent[] = {0, 0, 0, 5, 0, 0, 0, 7, 0, 0, 0, 0};
  d.decode(bad_agent, sizeof bad_agent, "x", kRecv);
  EXPECT_EQ(d.ctr.get(NfCtr::sflow_bad_agent_address), 1u);
  uint8_t v4[] = {0, 0, 0, 4, 0, 0, 0, 1, 192, 0, 2, 1};  // sFlow v4: not decoded
  d.decode(v4, sizeof v4, "x", kRecv);
  EXPECT_EQ(d.ctr.get(NfCtr::bad_version), 1u);
}

TEST(Collector, RecordsReachTheConsumerInBatches) {
  struct Batches : ls::RecordConsumer {
    size_t records = 0, largest = 0, prefetched = 0;
    void consume(const ls::FlowRecord&) override { records++; }
    void consume_batch(const ls::FlowRecord* const* r, size_t n) override {
      largest = std::max(largest, n);
      RecordConsumer::consume_batch(r, n);
    }
    void prefetch(const ls::FlowRecord&, bool slot) override { prefetched += slot; }
  } out;
  ls::CoreConfig cfg;
  cfg.table.capacity = 1 << 12;
  cfg.table.idle_timeout_ns = 10'000'000'000ull;
  ls::Collector col(cfg, out);
  // IPFIX: src, dst v4, start/end ms, packets; 40 flows at t, then the same 40 again
  // 60 s later (the first 40 end idle while that datagram is decoded).
  Buf t;
  t.u16(300).u16(5).u16(8).u16(4).u16(12).u16(4).u16(152).u16(8).u16(153).u16(8).u16(2).u16(8);
  for (uint64_t round = 0; round < 2; round++) {
    Buf recs;
    for (uint32_t i = 0; i < 40; i++)
      recs.u32(0x0A000000 + i).u32(0xC6336401).u64(1'700'000'000'000ull + round * 60'000).u64(1'700'000'000'500ull + round * 60'000).u64(3);
    Buf m;
    m.u16(10).u16(0).u32(uint32_t(1'700'000'001 + round * 60)).u32(uint32_t(round * 40)).u32(1).set(2, t).set(300, recs);
    m.patch_len();
    col.datagram(m.b.data(), m.b.size(), "192.0.2.1:9999");
    if (round == 1) {
      EXPECT_EQ(out.records, 40u);  // the first 40, handed over with the datagram
    }
  }
  col.finish();
  EXPECT_EQ(out.records, 80u);
  EXPECT_EQ(out.prefetched, 80u);
  EXPECT_GE(out.largest, 16u);
}

// --exit-idle must not leave queued datagrams unread: a tick slower than the idle time
// (or a process descheduled as long) used to end serve() with the second datagram queued.
TEST(Collector, ExitIdleReadsWhatIsQueuedFirst) {
  struct : ls::RecordConsumer {
    void consume(const ls::FlowRecord&) override {}
  } out;
  ls::CoreConfig cfg;
  cfg.table.capacity = 1 << 10;
  ls::Collector col(cfg, out);
  int probe = socket(AF_INET, SOCK_DGRAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t al = sizeof a;
  ASSERT_EQ(bind(probe, reinterpret_cast<sockaddr*>(&a), sizeof a), 0);
  ASSERT_EQ(getsockname(probe, reinterpret_cast<sockaddr*>(&a), &al), 0);
  close(probe);  // the port serve() binds next
  const uint8_t junk[30] = {0xff};
  auto send_one = [&] {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    sendto(s, junk, sizeof junk, 0, reinterpret_cast<sockaddr*>(&a), sizeof a);
    close(s);
  };
  std::atomic<bool> stop{false};
  int ticks = 0;
  auto& ctr = col.netflow_counters();
  ls::serve(col, "127.0.0.1:" + std::to_string(ntohs(a.sin_port)), "", stop, 50'000'000, [&] {
    if (++ticks == 1) send_one();
    if (ctr.get(NfCtr::datagrams) == 1 && ticks < 100) {
      send_one();
      ticks = 100;
      std::this_thread::sleep_for(std::chrono::milliseconds(150));  // > the idle time
    }
    if (ticks > 1000) stop = true;  // bound: the test fails below rather than hangs
    ticks += ticks >= 100;
  });
  EXPECT_EQ(ctr.get(NfCtr::datagrams), 2u);
  EXPECT_EQ(ctr.get(NfCtr::bad_version), 2u);
  EXPECT_FALSE(stop.load());
}

// --filter in collect: a record is judged as one packet of its 5-tuple and flags.
TEST(Collector, FilterSeesARecordAsOnePacket) {
  auto rec = [](const char* src, const char* dst, uint8_t proto, uint16_t sport, uint16_t dport, uint8_t flags) {
    Uniflow u{};
    u.ip_ver = std::strchr(src, ':') ? 6 : 4;
    int af = u.ip_ver == 6 ? AF_INET6 : AF_INET;
    EXPECT_EQ(inet_pton(af, src, u.src), 1);
    EXPECT_EQ(inet_pton(af, dst, u.dst), 1);
    u.proto = proto;
    u.sport = sport;
    u.dport = dport;
    u.tcp_flags = flags;
    return u;
  };
  auto pass = [](const char* expr, const Uniflow& u) { return ls::record_passes(ls::PacketFilter(expr), u); };
  Uniflow tcp = rec("10.0.0.1", "192.0.2.9", 6, 51000, 443, 0x12);
  EXPECT_TRUE(pass("tcp port 443", tcp));
  EXPECT_TRUE(pass("src net 10.0.0.0/8 and dst host 192.0.2.9", tcp));
  EXPECT_TRUE(pass("tcp[tcpflags] & tcp-syn != 0", tcp));
  EXPECT_TRUE(pass("ip and not ip6", tcp));
  EXPECT_FALSE(pass("udp", tcp));
  EXPECT_FALSE(pass("dst host 10.0.0.1", tcp));
  EXPECT_FALSE(pass("tcp[tcpflags] & tcp-rst != 0", tcp));
  EXPECT_FALSE(pass("port 80", tcp));
  Uniflow udp6 = rec("2001:db8::1", "2001:db8::2", 17, 53, 5353, 0);
  EXPECT_TRUE(pass("ip6 and udp src port 53", udp6));
  EXPECT_TRUE(pass("src host 2001:db8::1 and dst port 5353", udp6));
  EXPECT_FALSE(pass("tcp or ip", udp6));
  Uniflow echo = rec("192.0.2.1", "192.0.2.2", 1, 0, 8 << 8, 0);
  EXPECT_TRUE(pass("icmp[icmptype] == icmp-echo", echo));
  EXPECT_FALSE(pass("icmp[icmptype] == icmp-echoreply", echo));
  EXPECT_TRUE(pass("icmp6", rec("2001:db8::1", "2001:db8::2", 58, 0, 128 << 8, 0)));
  EXPECT_TRUE(pass("sctp port 2905", rec("192.0.2.1", "192.0.2.2", 132, 2905, 40000, 0)));
  Uniflow gre = rec("192.0.2.1", "192.0.2.2", 47, 0, 0, 0);
  EXPECT_TRUE(pass("ip proto gre", gre));
  EXPECT_FALSE(pass("port 0", gre));

  // In the collector: rejected records are counted, their packets as filtered_out.
  struct Count : ls::RecordConsumer {
    size_t records = 0;
    void consume(const ls::FlowRecord&) override { records++; }
  } out;
  ls::CoreConfig cfg;
  cfg.table.capacity = 1 << 10;
  ls::Collector col(cfg, out);
  col.set_filter(std::make_shared<const ls::PacketFilter>("src net 10.0.0.0/30"));
  Buf t, recs, m;
  t.u16(300).u16(5).u16(8).u16(4).u16(12).u16(4).u16(152).u16(8).u16(153).u16(8).u16(2).u16(8);
  for (uint32_t i = 0; i < 40; i++)
    recs.u32(0x0A000000 + i).u32(0xC6336401).u64(1'700'000'000'000ull).u64(1'700'000'000'500ull).u64(3);
  m.u16(10).u16(0).u32(1'700'000'001).u32(0).u32(1).set(2, t).set(300, recs);
  m.patch_len();
  col.datagram(m.b.data(), m.b.size(), "192.0.2.1:9999");
  col.finish();
  EXPECT_EQ(out.records, 4u);  // 10.0.0.0 to 10.0.0.3
  EXPECT_EQ(col.netflow().get(NfCtr::records_filtered), 36u);
  EXPECT_EQ(col.table_counters().get(ls::Ctr::filtered_out), 36u * 3);
  EXPECT_EQ(col.table_counters().get(ls::Ctr::packets), 40u * 3);
}

}  // namespace

namespace {
// Found by fuzz_netflow: a v9 template with no fields made its data set loop forever.
TEST(NetflowRegression, TemplateWithoutFieldsIsRefused) {
  std::vector<uint8_t> m = {0, 9, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0,  // v9 header
                            0, 0, 0, 8, 1, 0, 0, 0,                                      // template 256, 0 fields
                            1, 0, 0, 8, 1, 2, 3, 4};                                     // data set 256
  uint64_t n = 0;
  ls::NetflowDecoder d([&](const ls::Uniflow&) { n++; });
  d.decode(m.data(), m.size(), "x");
  EXPECT_EQ(d.ctr.get(ls::NfCtr::bad_template), 1u);
  EXPECT_EQ(d.ctr.get(ls::NfCtr::data_without_template), 1u);
  EXPECT_EQ(n, 0u);
}
}  // namespace
