#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <memory>
#include <vector>

#include "dataplane/flow_core.h"
#include "dataplane/record.h"
#include "tests/pktbuild.h"

using namespace ls;
using lstest::Pkt;

namespace {

constexpr uint64_t S = 1'000'000'000ull;

struct Collect : RecordSink {
  std::vector<FlowRecord> recs;
  void emit(const FlowEntry& e, const uint8_t* pay, uint16_t cap, EndReason why) override {
    recs.emplace_back();
    recs.back().fill(e, pay, cap, why, 0, {});
  }
};

PacketMeta meta_of(const Pkt& p, uint64_t ts) {
  PacketMeta m;
  Counters c;
  EXPECT_TRUE(parse_packet(p.view(ts), LinkType::ETHERNET, {}, m, c));
  return m;
}

TEST(FlowKey, BothDirectionsMapToOneKey) {
  auto a = meta_of(lstest::tcp4({10, 0, 0, 1}, {10, 0, 0, 2}, 1234, 80), 1);
  auto b = meta_of(lstest::tcp4({10, 0, 0, 2}, {10, 0, 0, 1}, 80, 1234), 1);
  FlowKey ka, kb;
  bool la = make_key(a, {}, ka), lb = make_key(b, {}, kb);
  EXPECT_TRUE(ka == kb);
  EXPECT_NE(la, lb);
  EXPECT_EQ(hash_key(ka, 7), hash_key(kb, 7));
  EXPECT_NE(hash_key(ka, 7), hash_key(ka, 8));  // seeded
  // Same addresses, ports swapped on one side only: a different conversation.
  auto c = meta_of(lstest::tcp4({10, 0, 0, 1}, {10, 0, 0, 2}, 80, 1234), 1);
  FlowKey kc;
  make_key(c, {}, kc);
  EXPECT_FALSE(ka == kc);
}

TEST(FlowKey, SameHostBothPortsSymmetric) {
  auto a = meta_of(lstest::udp4({1, 1, 1, 1}, {1, 1, 1, 1}, 5, 9), 1);
  auto b = meta_of(lstest::udp4({1, 1, 1, 1}, {1, 1, 1, 1}, 9, 5), 1);
  FlowKey ka, kb;
  make_key(a, {}, ka);
  make_key(b, {}, kb);
  EXPECT_TRUE(ka == kb);
}

TEST(FlowKey, ZoneOnlyWhenConfigured) {
  Pkt p1, p2;
  p1.eth(0x8100).vlan(10, 0x0800).ip4({1, 1, 1, 1}, {2, 2, 2, 2}, 17).udp(1, 2).finish();
  p2.eth(0x8100).vlan(20, 0x0800).ip4({1, 1, 1, 1}, {2, 2, 2, 2}, 17).udp(1, 2).finish();
  auto a = meta_of(p1, 1), b = meta_of(p2, 1);
  FlowKey ka, kb;
  make_key(a, {}, ka);
  make_key(b, {}, kb);
  EXPECT_TRUE(ka == kb);
  make_key(a, {true}, ka);
  make_key(b, {true}, kb);
  EXPECT_FALSE(ka == kb);
}

struct Fixture : ::testing::Test {
  Collect sink;
  CoreConfig cfg;
  std::unique_ptr<FlowCore> core;
  void make(uint32_t cap = 1024) {
    cfg.table.capacity = cap;
    cfg.table.hash_seed = 42;
    core = std::make_unique<FlowCore>(cfg, sink);
  }
  ClockGuard clock{1'000'000'000ull};
  void feed(const Pkt& p, uint64_t ts) {
    auto v = p.view(ts);
    clock.stamp(v);
    core->process_raw(&v, 1);
  }
};

TEST_F(Fixture, CountsBothDirectionsInOneRecord) {
  make();
  feed(lstest::tcp4({10, 0, 0, 9}, {10, 0, 0, 2}, 40000, 443, 0x02), 1 * S);
  feed(lstest::tcp4({10, 0, 0, 2}, {10, 0, 0, 9}, 443, 40000, 0x12), 1 * S + 1000);
  feed(lstest::tcp4({10, 0, 0, 9}, {10, 0, 0, 2}, 40000, 443, 0x18, "hello"), 1 * S + 3000);
  EXPECT_EQ(core->table.size(), 1u);
  core->finish();
  ASSERT_EQ(sink.recs.size(), 1u);
  const auto& r = sink.recs[0];
  int f = r.e.init_lo ? 0 : 1;
  EXPECT_EQ(r.e.pkts[f], 2u);
  EXPECT_EQ(r.e.pkts[1 - f], 1u);
  EXPECT_EQ(r.e.flags[f], 0x1A);
  EXPECT_EQ(r.e.flags[1 - f], 0x12);
  EXPECT_EQ(r.e.first_ns, 1 * S);
  EXPECT_EQ(r.e.last_ns, 1 * S + 3000);
  EXPECT_EQ(r.e.iat_min_us, 1u);
  EXPECT_EQ(r.e.iat_max_us, 2u);
  EXPECT_EQ(r.why, EndReason::FLUSH);
  ASSERT_EQ(r.paylen[f], 5);
  EXPECT_EQ(0, std::memcmp(r.payload[f], "hello", 5));
  EXPECT_TRUE(r.e.tcp_state & TCP_ESTABLISHED);
  EXPECT_EQ(r.e.rtt_us, 3u);      // SYN → the ACK completing the handshake
  EXPECT_EQ(r.e.empty_pkts, 2u);  // SYN and SYN-ACK carry no payload
}

TEST_F(Fixture, NoRttWithoutTheSynAndSnaplenIsNotEmptiness) {
  make();
  // Joined mid-handshake: no SYN, so no RTT.
  feed(lstest::tcp4({10, 0, 0, 2}, {10, 0, 0, 9}, 443, 40000, 0x12), S);
  feed(lstest::tcp4({10, 0, 0, 9}, {10, 0, 0, 2}, 40000, 443, 0x10), S + 5000);
  // A packet cut by the snaplen before its payload is not payload-less.
  auto p = lstest::tcp4({10, 0, 0, 9}, {10, 0, 0, 2}, 40000, 443, 0x18, "0123456789");
  auto v = p.view(S + 9000);
  v.cap_len -= 10;
  clock.stamp(v);
  core->process_raw(&v, 1);
  core->finish();
  ASSERT_EQ(sink.recs.size(), 1u);
  EXPECT_EQ(sink.recs[0].e.rtt_us, 0u);
  EXPECT_EQ(sink.recs[0].e.empty_pkts, 2u);
  EXPECT_EQ(core->ctr.get(Ctr::snaplen_truncated), 1u);
}

TEST_F(Fixture, PayloadCaptureBoundedAndDisablable) {
  cfg.table.payload_bytes = 4;
  make();
  feed(lstest::udp4({1, 1, 1, 1}, {2, 2, 2, 2}, 1, 2, "abc"), S);
  feed(lstest::udp4({1, 1, 1, 1}, {2, 2, 2, 2}, 1, 2, "defgh"), S);
  core->finish();
  int f = sink.recs[0].e.init_lo ? 0 : 1;
  ASSERT_EQ(sink.recs[0].paylen[f], 4);
  EXPECT_EQ(0, std::memcmp(sink.recs[0].payload[f], "abcd", 4));
  sink.recs.clear();
  cfg.table.payload_bytes = 0;
  make();
  feed(lstest::udp4({1, 1, 1, 1}, {2, 2, 2, 2}, 1, 2, "abc"), S);
  core->finish();
  EXPECT_EQ(sink.recs[0].paylen[0] + sink.recs[0].paylen[1], 0);
}

TEST_F(Fixture, IdleTimeoutExpiresInPacketTime) {
  cfg.table.idle_timeout_ns = 10 * S;
  make();
  feed(lstest::udp4({1, 1, 1, 1}, {2, 2, 2, 2}, 1, 2), 100 * S);
  feed(lstest::udp4({3, 3, 3, 3}, {4, 4, 4, 4}, 1, 2), 105 * S);
  EXPECT_TRUE(sink.recs.empty());
  feed(lstest::udp4({3, 3, 3, 3}, {4, 4, 4, 4}, 1, 2), 112 * S);
  ASSERT_EQ(sink.recs.size(), 1u);
  EXPECT_EQ(sink.recs[0].why, EndReason::IDLE);
  EXPECT_EQ(sink.recs[0].e.key.lo[0], 1);
  EXPECT_EQ(core->ctr.get(Ctr::flows_idle_timeout), 1u);
}

TEST_F(Fixture, ActiveTimeoutEmitsPeriodicRecords) {
  cfg.table.active_timeout_ns = 60 * S;
  cfg.table.idle_timeout_ns = 30 * S;
  make();
  for (uint64_t t = 0; t <= 130; t += 5) feed(lstest::udp4({1, 1, 1, 1}, {2, 2, 2, 2}, 1, 2), (1000 + t) * S);
  core->finish();
  ASSERT_EQ(sink.recs.size(), 3u);
  EXPECT_EQ(sink.recs[0].why, EndReason::ACTIVE);
  EXPECT_EQ(sink.recs[1].why, EndReason::ACTIVE);
  EXPECT_EQ(sink.recs[2].why, EndReason::FLUSH);
  uint64_t total = 0;
  for (auto& r : sink.recs) total += r.e.pkts[0] + r.e.pkts[1];
  EXPECT_EQ(total, 27u);  // nothing lost across the splits
}

TEST_F(Fixture, TcpEndAfterFinBothWaysAndLinger) {
  cfg.table.tcp_end_timeout_ns = 2 * S;
  make();
  auto a2b = [](uint8_t f) { return lstest::tcp4({1, 1, 1, 1}, {2, 2, 2, 2}, 1000, 80, f); };
  auto b2a = [](uint8_t f) { return lstest::tcp4({2, 2, 2, 2}, {1, 1, 1, 1}, 80, 1000, f); };
  feed(a2b(0x02), 10 * S);
  feed(b2a(0x12), 10 * S + 1);
  feed(a2b(0x11), 11 * S);
  feed(b2a(0x11), 11 * S + 1);
  feed(a2b(0x10), 11 * S + 2);  // last ACK lands in the same flow
  EXPECT_TRUE(sink.recs.empty());
  feed(lstest::udp4({7, 7, 7, 7}, {8, 8, 8, 8}, 1, 2), 14 * S);
  ASSERT_EQ(sink.recs.size(), 1u);
  EXPECT_EQ(sink.recs[0].why, EndReason::TCP_END);
  EXPECT_EQ(sink.recs[0].e.pkts[0] + sink.recs[0].e.pkts[1], 5u);
}

TEST_F(Fixture, NewSynOnClosedFlowStartsNewRecord) {
  make();
  auto a2b = [](uint8_t f) { return lstest::tcp4({1, 1, 1, 1}, {2, 2, 2, 2}, 1000, 80, f); };
  feed(a2b(0x02), S);
  feed(a2b(0x04), S + 10);  // RST
  feed(a2b(0x02), S + 20);  // port reuse
  EXPECT_EQ(sink.recs.size(), 1u);
  EXPECT_EQ(core->table.size(), 1u);
}

TEST_F(Fixture, FullTableDropNewIsCounted) {
  cfg.table.full_policy = FullPolicy::DROP_NEW;
  make(4);
  for (uint8_t i = 1; i <= 10; i++) feed(lstest::udp4({10, 0, 0, i}, {2, 2, 2, 2}, 1, 2), S + i);
  EXPECT_EQ(core->table.size(), 4u);
  EXPECT_EQ(core->ctr.get(Ctr::table_full_drop), 6u);
  EXPECT_EQ(core->ctr.get(Ctr::flows_evicted), 0u);
  core->finish();
  EXPECT_EQ(sink.recs.size(), 4u);
}

TEST_F(Fixture, FullTableEvictsOldest) {
  make(4);
  for (uint8_t i = 1; i <= 4; i++) feed(lstest::udp4({10, 0, 0, i}, {2, 2, 2, 2}, 1, 2), S * i);
  feed(lstest::udp4({10, 0, 0, 1}, {2, 2, 2, 2}, 1, 2), 5 * S);  // refresh flow 1
  feed(lstest::udp4({10, 0, 0, 9}, {2, 2, 2, 2}, 1, 2), 6 * S);
  ASSERT_EQ(sink.recs.size(), 1u);
  EXPECT_EQ(sink.recs[0].why, EndReason::EVICTED);
  EXPECT_EQ(sink.recs[0].e.key.lo[3], 2);  // flow 2 was the oldest idle
  EXPECT_EQ(core->ctr.get(Ctr::flows_evicted), 1u);
  EXPECT_EQ(core->ctr.get(Ctr::table_full_drop), 0u);
}

TEST_F(Fixture, BackwardClockJumpFlushesOnceAndKeepsCounting) {
  cfg.table.idle_timeout_ns = 30 * S;
  make();
  feed(lstest::udp4({1, 1, 1, 1}, {2, 2, 2, 2}, 1, 2), 2'000'000'000 * S);
  feed(lstest::udp4({1, 1, 1, 1}, {2, 2, 2, 2}, 1, 2), 2'000'000'000 * S + S / 2);
  // A concatenated capture from 1970: the old segment's flows end as clock_jump and
  // the new segment's flows are not expired by the later "now".
  feed(lstest::udp4({5, 5, 5, 5}, {6, 6, 6, 6}, 1, 2), 10 * S);
  feed(lstest::udp4({5, 5, 5, 5}, {6, 6, 6, 6}, 1, 2), 11 * S);
  ASSERT_EQ(sink.recs.size(), 1u);
  EXPECT_EQ(sink.recs[0].why, EndReason::CLOCK_JUMP);
  EXPECT_EQ(core->ctr.get(Ctr::clock_backward_jumps), 1u);
  core->finish();
  ASSERT_EQ(sink.recs.size(), 2u);
  EXPECT_EQ(sink.recs[1].e.pkts[0] + sink.recs[1].e.pkts[1], 2u);
}

TEST_F(Fixture, SmallReorderingIsTolerated) {
  make();
  feed(lstest::udp4({1, 1, 1, 1}, {2, 2, 2, 2}, 1, 2), 100 * S);
  feed(lstest::udp4({1, 1, 1, 1}, {2, 2, 2, 2}, 1, 2), 100 * S - 1000);
  feed(lstest::udp4({1, 1, 1, 1}, {2, 2, 2, 2}, 1, 2), 100 * S + 1000);
  EXPECT_EQ(core->ctr.get(Ctr::clock_reordered), 1u);
  core->finish();
  ASSERT_EQ(sink.recs.size(), 1u);
  EXPECT_EQ(sink.recs[0].e.last_ns, 100 * S + 1000);
  EXPECT_EQ(sink.recs[0].e.iat_min_us, 0u);
}

TEST_F(Fixture, LaterFragmentsAttributedToFirst) {
  make();
  Pkt first, later, orphan;
  first.eth(0x0800).ip4({1, 1, 1, 1}, {2, 2, 2, 2}, 17, 0x2000, 77).udp(5000, 53).zeros(32).finish();
  later.eth(0x0800).ip4({1, 1, 1, 1}, {2, 2, 2, 2}, 17, 5, 77).zeros(16).finish();
  orphan.eth(0x0800).ip4({1, 1, 1, 1}, {2, 2, 2, 2}, 17, 5, 78).zeros(16).finish();
  feed(first, S);
  feed(later, S + 1);
  feed(orphan, S + 2);
  EXPECT_EQ(core->ctr.get(Ctr::fragments_attributed), 1u);
  EXPECT_EQ(core->ctr.get(Ctr::fragments_unattributed), 1u);
  core->finish();
  ASSERT_EQ(sink.recs.size(), 2u);  // the 5000→53 flow with 2 packets, and a portless one
  for (auto& r : sink.recs) {
    if (r.e.key.lo_port || r.e.key.hi_port) EXPECT_EQ(r.e.pkts[0] + r.e.pkts[1], 2u);
    else EXPECT_EQ(r.e.pkts[0] + r.e.pkts[1], 1u);
  }
}

TEST_F(Fixture, MalformedPacketsAreCountedNotFlowed) {
  make();
  Pkt bad = lstest::udp4({1, 1, 1, 1}, {2, 2, 2, 2}, 1, 2);
  bad.b[14] = 0x41;
  feed(bad, S);
  EXPECT_EQ(core->ctr.get(Ctr::bad_ip_header_len), 1u);
  EXPECT_EQ(core->ctr.get(Ctr::packets), 1u);
  EXPECT_EQ(core->table.size(), 0u);
}

// Many flows through a small table: every inserted key stays findable until removed,
// and the sum of records equals the packets fed (no loss through evictions).
TEST_F(Fixture, ChurnKeepsAccounting) {
  cfg.table.idle_timeout_ns = 2 * S;
  make(512);
  uint64_t fed = 0;
  for (uint32_t i = 0; i < 20000; i++) {
    uint8_t a = uint8_t(i % 251), b = uint8_t(i / 251 % 13);
    feed(lstest::udp4({10, b, a, 1}, {2, 2, 2, 2}, uint16_t(i % 7), 53), S + uint64_t(i) * S / 1000);
    fed++;
  }
  core->finish();
  uint64_t got = 0;
  for (auto& r : sink.recs) got += r.e.pkts[0] + r.e.pkts[1];
  EXPECT_EQ(got + core->ctr.get(Ctr::table_full_drop), fed);
  EXPECT_EQ(core->table.size(), 0u);
}

TEST(FlowTable, HotStateIsTwoCacheLines) { EXPECT_EQ(sizeof(FlowEntry), 128u); }

}  // namespace

namespace {
// Flows 0 .. n-1 at time ts, entry i keyed by 10.0.(i >> 8).(i & 255).
std::vector<uint32_t> fill_table(FlowTable& t, uint32_t n, uint64_t ts) {
  std::vector<uint32_t> idx;
  for (uint32_t i = 0; i < n; i++) {
    FlowKey k{};
    k.lo[0] = 10, k.lo[2] = uint8_t(i >> 8), k.lo[3] = uint8_t(i);
    k.hi[0] = 192;
    k.lo_port = 1000, k.hi_port = 53, k.proto = 17, k.ip_ver = 4;
    uint32_t e = t.insert(k, hash_key(k, 42), ts);
    t.update(e, 0, ts, 60, 0, nullptr, 0);
    idx.push_back(e);
  }
  return idx;
}
uint32_t flow_no(const FlowRecord& r) { return uint32_t(r.e.key.lo[2]) << 8 | r.e.key.lo[3]; }
}  // namespace

// The sweep and the flush skip holes by a bitmap of used entries: flows between holes,
// at word edges (63 | 64, 127 | 128) and at the last partial word, are each found once, in
// index order from the sweep's cursor, when a sweep reaches them in chunks of a slot or two.
TEST(FlowTable, SweepAndFlushFindFlowsBetweenHoles) {
  const std::vector<uint32_t> keep = {0, 1, 62, 63, 64, 127, 128, 191, 192, 199};
  for (bool sweep : {true, false}) {
    Counters ctr;
    Collect sink;
    TableConfig tc;
    tc.capacity = 200;
    tc.idle_timeout_ns = S;
    tc.sweep_period_ns = S;
    tc.hash_seed = 42;
    FlowTable t(tc, ctr, sink);
    const uint64_t t0 = 100 * S;
    t.advance_clock(t0, 0);
    auto idx = fill_table(t, 200, t0);
    for (uint32_t i = 0; i < 200; i++) {
      ASSERT_EQ(idx[i], i);  // a new table hands out entries in order
      if (std::find(keep.begin(), keep.end(), i) == keep.end()) t.end(i, EndReason::FLUSH);
    }
    sink.recs.clear();
    if (!sweep) {
      t.flush(EndReason::FLUSH);
      std::vector<uint32_t> got;
      for (auto& r : sink.recs) got.push_back(flow_no(r));
      EXPECT_EQ(got, keep);
      EXPECT_EQ(t.size(), 0u);
      continue;
    }
    // Just short of the deadline: 199 slots swept, nothing due; the cursor rests on 199.
    t.advance_clock(t0 + S - 1, 0);
    t.expire();
    EXPECT_TRUE(sink.recs.empty());
    // Then one period in 7 ms steps (1.4 slots each): every kept flow once, from 199 on.
    for (uint64_t ts = t0 + S + 7'000'000; ts <= t0 + 2 * S + 7'000'000; ts += 7'000'000) {
      t.advance_clock(ts, 0);
      t.expire();
      if (ts < t0 + S + S / 2) {  // half a period: the first half of the slots at most
        for (auto& r : sink.recs) EXPECT_TRUE(flow_no(r) == 199 || flow_no(r) < 110) << flow_no(r);
      }
    }
    std::vector<uint32_t> got;
    for (auto& r : sink.recs) {
      got.push_back(flow_no(r));
      EXPECT_EQ(r.why, EndReason::IDLE);
    }
    std::vector<uint32_t> want = {199, 0, 1, 62, 63, 64, 127, 128, 191, 192};
    EXPECT_EQ(got, want);
    EXPECT_EQ(t.size(), 0u);
  }
}

namespace {
size_t resident_bytes() {
  long pages = 0, rss = 0;
  FILE* f = std::fopen("/proc/self/statm", "r");
  if (!f || std::fscanf(f, "%ld %ld", &pages, &rss) != 2) rss = -1;
  if (f) std::fclose(f);
  return rss < 0 ? 0 : size_t(rss) * size_t(sysconf(_SC_PAGESIZE));
}
}  // namespace

// The collector's payload pool (payload_prefault = 0) is not faulted in at start even
// under Prefault, as in `run`: NetFlow-only collection must not pay 2 × payload_bytes per
// flow of capacity. A flow that writes payload faults in its own part, and reads it back.
TEST(FlowTable, PayloadPoolPrefaultedOnlyWhenAsked) {
  Paging saved = region_paging();
  region_paging() = Paging::Prefault;
  TableConfig cfg;
  cfg.capacity = 1 << 18;
  cfg.payload_bytes = 128;  // pool: 64 MB
  const size_t pool = size_t(cfg.capacity) * 2 * cfg.payload_bytes;
  Counters ctr;
  Collect sink;
  size_t before = resident_bytes();
  auto full = std::make_unique<FlowTable>(cfg, ctr, sink);
  size_t with_pool = resident_bytes() - before;
  full.reset();
  before = resident_bytes();
  FlowTable lazy(cfg, ctr, sink, 0);
  size_t without_pool = resident_bytes() - before;
  region_paging() = saved;
  ASSERT_GT(before, 0u) << "/proc/self/statm unreadable";
  EXPECT_GE(with_pool, pool) << "the default prefaults the whole pool";
  EXPECT_LT(without_pool + pool / 2, with_pool) << "payload_prefault = 0 leaves the pool unfaulted";
  auto idx = fill_table(lazy, 1, S);
  const uint8_t hello[] = {'h', 'e', 'l', 'l', 'o'};
  lazy.update(idx[0], 1, S + 1, 60, 0, hello, sizeof hello);
  lazy.flush(EndReason::FLUSH);
  ASSERT_EQ(sink.recs.size(), 1u);
  EXPECT_EQ(sink.recs[0].e.paylen[1], sizeof hello);
  EXPECT_EQ(std::memcmp(sink.recs[0].payload[1], hello, sizeof hello), 0);
}
