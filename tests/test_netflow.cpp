// NetFlow v9 / IPFIX decoder on hand-built datagrams: the cases softflowd does not send
// (variable-length and enterprise fields, uptime wrap, withdrawal, absolute times).
#include <gtest/gtest.h>

#include <vector>

#include "ctrl/collector.h"
#include "ctrl/netflow.h"

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

// The collector hands the records a datagram ends to its consumer together (the models
// score them in one batch), each prefetched first, and every one by the end.
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
