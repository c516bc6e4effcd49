#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <tuple>
#include <vector>

#include <arpa/inet.h>
#include <nlohmann/json.hpp>

#include "features/feature_stage.h"
#include "features/periodicity.h"
#include "features/sketch_set.h"

using namespace ls;

namespace {

// An IPv4 record from the lower address (the client) with one forward packet.
FlowRecord ipv4_record(uint8_t proto) {
  FlowRecord r{};
  r.e.key.ip_ver = 4;
  r.e.key.proto = proto;
  r.e.init_lo = 1;
  r.e.pkts[0] = 1;
  return r;
}

Periodicity score(std::vector<double> v) { return score_periodicity(v.data(), v.size()); }

std::vector<double> beats(double period, int n, double jitter = 0, int skip_every = 0) {
  std::vector<double> v;
  uint64_t x = 12345;
  double t = 100;
  for (int i = 0; i < n; i++) {
    x = x * 6364136223846793005ull + 1;
    double j = (double(x >> 11) / double(1ull << 53) - 0.5) * 2 * jitter;
    if (!skip_every || i % skip_every) v.push_back(t + j);
    t += period;
  }
  return v;
}

TEST(Periodicity, StrictBeacon) {
  auto p = score(beats(2.0, 30));
  EXPECT_GT(p.score, 0.95);
  EXPECT_NEAR(p.period_s, 2.0, 0.01);
}

TEST(Periodicity, JitterAndMissedBeats) {
  auto p = score(beats(60, 33, 3.0, 5));  // ±5 % jitter, every 5th beat missing
  EXPECT_GT(p.score, 0.75) << p.mode_share;
  EXPECT_NEAR(p.period_s, 60, 2);
}

TEST(Periodicity, TwoPhaseBeacon) {
  std::vector<double> v;
  double t = 0;
  for (int i = 0; i < 32; i++) v.push_back(t += (i % 2 ? 9.0 : 14.0));
  EXPECT_GT(score(v).score, 0.95);
}

TEST(Periodicity, RandomContactsScoreLow) {
  std::vector<double> v;
  uint64_t x = 99;
  double t = 0;
  for (int i = 0; i < 32; i++) {
    x = x * 6364136223846793005ull + 1;
    t += -std::log(double((x >> 11) + 1) / double(1ull << 53)) * 30;  // Poisson, mean 30 s
    v.push_back(t);
  }
  EXPECT_LT(score(v).score, 0.5);
}

// Starts in any order score as in time order (sorted input skips the sort).
TEST(Periodicity, OrderOfStartsDoesNotMatter) {
  auto v = beats(60, 20, 3.0, 5);
  auto want = score(v);
  std::mt19937 g(4);
  std::shuffle(v.begin(), v.end(), g);
  auto got = score(v);
  EXPECT_GT(want.score, 0.5);
  EXPECT_EQ(got.score, want.score);
  EXPECT_EQ(got.period_s, want.period_s);
  EXPECT_EQ(got.cv, want.cv);
}

TEST(Periodicity, FewContactsHaveLowConfidence) {
  EXPECT_EQ(score({1, 3}).score, 0);
  EXPECT_LT(score({1, 3, 5, 7}).score, 0.5);  // perfectly regular but only 3 intervals
}

// Zeek conn.log rows grouped by (orig_h, resp_h, resp_p, proto): start times and label.
struct Pair {
  std::vector<double> starts;
  std::string label;
};

std::map<std::string, Pair> load_conn(const std::string& rel) {
  const char* d = std::getenv("LINESIGHT_DATA");
  std::string path = std::string(d ? d : "../shared/data") + "/" + rel;
  std::ifstream f(path);
  std::map<std::string, Pair> out;
  if (!f) return out;
  for (std::string line; std::getline(f, line);) {
    if (line.empty() || line[0] == '#') continue;
    std::vector<std::string> c;
    std::stringstream ss(line);
    for (std::string x; std::getline(ss, x, '\t');) c.push_back(x);
    if (c.size() < 22) continue;
    Pair& p = out[c[2] + " > " + c[4] + ":" + c[5] + "/" + c[6]];
    p.starts.push_back(std::stod(c[0]));
    p.label = c[21];
  }
  return out;
}

// The last 32 contacts, as the feature stage keeps them.
Periodicity score_last32(const Pair& p) {
  size_t n = std::min<size_t>(p.starts.size(), FeatureStage::kHistory);
  return score_periodicity(p.starts.data() + p.starts.size() - n, n);
}

TEST(PeriodicityOnLabelledTraffic, StratosphereConnLogs) {
  auto nj = load_conn("stratosphere-labeled/ctu-malware-230-1-njrat.conn.log.labeled");
  auto sme = load_conn("slips/ctu-sme-11-win-conn.log.labeled");
  auto normal = load_conn("stratosphere-labeled/ctu-normal-40-day1.conn.log.labeled");
  if (nj.empty() || sme.empty() || normal.empty()) GTEST_SKIP() << "shared data absent";
  for (auto* m : {&nj, &sme, &normal})
    for (auto& [k, p] : *m)
      if (p.starts.size() >= 9) {
        auto s = score_last32(p);
        std::printf("  %-70s %-10s n=%-4zu period=%8.2f share=%.2f score=%.2f\n", k.c_str(),
                    p.label.c_str(), p.starts.size(), s.period_s, s.mode_share, s.score);
      }
  // C&C channels of two different bots: njRAT alternates 9 s and 14 s, SME-11 beats at
  // 0.53 s with missed beats.
  auto njcc = score_last32(nj.at("192.168.1.115 > 41.108.179.197:1177/tcp"));
  EXPECT_GT(njcc.score, 0.9);
  EXPECT_GT(score_last32(sme.at("192.168.1.107 > 66.63.168.35:5888/tcp")).score, 0.75);
  // The infected host resolves its C&C name at each reconnect: its DNS contacts repeat
  // with the bot's 23 s (9 + 14) cycle.
  auto dns = score_last32(nj.at("fd2d:ab8c:225:0:81d3:fd3e:7f62:aec8 > fd2d:ab8c:225::1:53/udp"));
  EXPECT_GT(dns.score, 0.8);
  EXPECT_NEAR(dns.period_s, 23.0, 1.0);
  // A benign MQTT keep-alive is periodic too: periodicity is a feature, not a verdict.
  EXPECT_GT(score_last32(normal.at("147.32.81.167 > 91.228.167.171:8883/tcp")).score, 0.8);
  // Groups that are not beacons: inbound attackers (telnet/ssh/sip brute force) and the
  // host's plain-HTTP fetches. Their median score stays low.
  std::vector<double> attackers, web;
  for (auto& [k, p] : normal) {
    if (p.starts.size() < 9) continue;
    double s = score_last32(p).score;
    if (p.label == "Malicious" && k.find("> 147.32.81.167:") != std::string::npos) attackers.push_back(s);
    if (p.label == "Benign" && k.size() > 7 && k.compare(k.size() - 7, 7, ":80/tcp") == 0) web.push_back(s);
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 1.0 : v[v.size() / 2];
  };
  ASSERT_GE(attackers.size(), 10u);
  ASSERT_GE(web.size(), 10u);
  EXPECT_LT(median(attackers), 0.55) << attackers.size() << " attacker pairs";
  EXPECT_LT(median(web), 0.5) << web.size() << " web pairs";
}

TEST(FeatureStage, PairHistoryIsBoundedAndEvictsTheColdest) {
  FeatureConfig c;
  c.pair_capacity = c.first_contact_capacity = 64;
  c.server_capacity = 64;
  c.client_capacity = 64;
  FeatureStage st(c);
  FlowRecord r = ipv4_record(17);
  FeatureRow row;
  for (uint32_t i = 0; i < 1000; i++) {
    r.e.key.lo[0] = 10;
    std::memcpy(r.e.key.lo + 1, &i, 3);
    r.e.key.hi[0] = 8;
    r.e.first_ns = r.e.last_ns = 1'000'000'000ull * (i + 1);
    st.compute(r, row);
  }
  EXPECT_EQ(st.counters().rows, 1000u);
  // Each pair was seen once: they stay first contacts, and the coldest of those go
  EXPECT_GT(st.counters().first_contacts.evicted, 900u);
  EXPECT_EQ(st.counters().pairs.created, 0u);
  // 64 slots per table: small regions take 4 KB pages, not a 2 MB huge page each
  EXPECT_LE(st.memory_bytes(), size_t(128) << 10);
}

// A flood of one-off pairs (a scan, spoofed sources) must not make the stage forget the
// pairs that recur: those live in their own table once seen twice.
TEST(FeatureStage, OneOffPairsDoNotEvictRecurringPairs) {
  FeatureConfig c;
  c.pair_capacity = c.first_contact_capacity = 64;
  FeatureStage st(c);
  FlowRecord beacon = ipv4_record(6);
  beacon.e.key.lo[0] = 10;
  beacon.e.key.hi[0] = 9;
  beacon.e.key.hi_port = 443;
  FlowRecord flood = ipv4_record(17);
  flood.e.key.hi[0] = 8;
  FeatureRow row;
  uint64_t t = 1'700'000'000'000'000'000ull;
  for (int i = 0; i < 10; i++) {
    beacon.e.first_ns = beacon.e.last_ns = t + uint64_t(i) * 5'000'000'000ull;
    st.compute(beacon, row);
    if (i == 0) continue;  // recurring from its second contact on
    for (uint32_t j = 0; j < 1000; j++) {  // 1000 one-off pairs between two beats
      uint32_t n = uint32_t(i) * 1000 + j;
      flood.e.key.lo[0] = 11;
      std::memcpy(flood.e.key.lo + 1, &n, 3);
      flood.e.first_ns = flood.e.last_ns = beacon.e.first_ns + j * 1000;
      st.compute(flood, row);
      ASSERT_EQ(row.pair.contacts, 1u);
    }
  }
  beacon.e.first_ns = beacon.e.last_ns = t + 10 * 5'000'000'000ull;
  st.compute(beacon, row);
  EXPECT_EQ(row.pair.contacts, 11u);
  EXPECT_NEAR(row.pair.period_s, 5.0, 0.01);
  EXPECT_DOUBLE_EQ(row.pair.age_s, 50.0);
  EXPECT_GT(st.counters().first_contacts.evicted, 8000u);
  EXPECT_EQ(st.counters().pairs.created, 1u);
  EXPECT_EQ(st.counters().pairs.evicted, 0u);
}

// The second record turns a first contact into the Pair it would have been: its start,
// its first and last times, and whether it was a contact at all (a continued flow is not).
TEST(FeatureStage, FirstContactBecomesTheSamePair) {
  FeatureConfig c;
  FeatureStage st(c);
  FlowRecord r = ipv4_record(6);
  r.e.key.hi[0] = 9;
  r.e.key.hi_port = 443;
  FeatureRow row;
  const uint64_t t0 = 1'700'000'000'000'000'000ull;
  // A continuation first (the pair's earlier records were before the sensor started).
  r.e.tcp_state = TCP_ESTABLISHED | FLOW_CONTINUED;
  r.e.first_ns = t0 + 7'000'000'000ull;
  r.e.last_ns = t0 + 9'500'000'000ull;
  st.compute(r, row);
  EXPECT_EQ(row.pair.contacts, 0u);
  EXPECT_DOUBLE_EQ(row.pair.age_s, 2.5);
  // Then two contacts, the first of them earlier than the continuation.
  r.e.tcp_state = TCP_SYN | TCP_SYNACK | TCP_ESTABLISHED;
  r.e.first_ns = r.e.last_ns = t0 + 3'000'000'000ull;
  st.compute(r, row);
  EXPECT_EQ(row.pair.contacts, 1u);
  EXPECT_DOUBLE_EQ(row.pair.age_s, 6.5);  // 3 s .. 9.5 s
  EXPECT_EQ(row.pair.intervals, 0u);
  r.e.first_ns = r.e.last_ns = t0 + 13'000'000'000ull;
  st.compute(r, row);
  EXPECT_EQ(row.pair.contacts, 2u);
  EXPECT_DOUBLE_EQ(row.pair.age_s, 10.0);
  r.e.first_ns = r.e.last_ns = t0 + 23'000'000'000ull;
  st.compute(r, row);
  EXPECT_EQ(row.pair.contacts, 3u);
  EXPECT_EQ(row.pair.intervals, 2u);  // 3 s, 13 s, 23 s: the continuation is no start
  EXPECT_DOUBLE_EQ(row.pair.mean_s, 10.0);
  EXPECT_EQ(st.counters().pairs.created, 1u);
  EXPECT_EQ(st.counters().first_contacts.created, 1u);
}

// Replay's tables start at kGrowFrom slots and double: a grown table must behave exactly
// like one preallocated at full capacity — the same entry found for every key, the same
// creations, evictions and age-outs — or replay's features would depend on paging.
TEST(BoundedTable, GrowingOnDemandMatchesPreallocated) {
  struct Key {
    uint32_t k;
  };
  struct Val {
    uint64_t last_ns = 0, id = 0;
    bool used() const { return last_ns != 0; }
  };
  using Table = BoundedTable<Key, Val>;
  auto make = [](Paging p) {
    Paging saved = region_paging();
    region_paging() = p;
    auto t = std::make_unique<Table>(16384, 50'000'000'000ull, 7);
    region_paging() = saved;
    return t;
  };
  auto fixed = make(Paging::Prefault), grown = make(Paging::OnDemand);
  ASSERT_EQ(fixed->slots(), 16384u);
  ASSERT_EQ(grown->slots(), Table::kGrowFrom);
  uint64_t x = 1, ids = 0, erased = 0;
  for (uint32_t i = 0; i < 200000; i++) {
    x = x * 6364136223846793005ull + 1442695040888963407ull;
    Key k{uint32_t((x >> 33) % 40000)};  // more keys than slots: sets fill and evict
    uint64_t now = 1'000'000'000ull + uint64_t(i) * 1'000'000ull;  // 200 s: keys age out
    if (i % 5 == 0) {  // lookups without creation, some freeing the slot (first contacts)
      Val* a = fixed->find(k, fixed->hash(k), now);
      Val* b = grown->find(k, grown->hash(k), now);
      ASSERT_EQ(a != nullptr, b != nullptr) << "key " << k.k << " at step " << i;
      if (!a) continue;
      ASSERT_EQ(a->id, b->id) << "key " << k.k << " at step " << i;
      if (i % 10 == 0) {
        fixed->erase(*a);
        grown->erase(*b);
        erased++;
        ASSERT_EQ(fixed->find(k, fixed->hash(k), now), nullptr);
      }
      continue;
    }
    Val& a = fixed->find_or_make(k, now);
    Val& b = grown->find_or_make(k, now);
    ASSERT_EQ(a.id, b.id) << "key " << k.k << " at step " << i << ", " << grown->slots() << " slots";
    if (!a.used()) a.id = b.id = ++ids;
    a.last_ns = b.last_ns = now;
  }
  EXPECT_EQ(grown->slots(), 16384u);
  EXPECT_EQ(grown->memory_bytes(), fixed->memory_bytes());
  EXPECT_EQ(grown->ctr.created, fixed->ctr.created);
  EXPECT_EQ(grown->ctr.evicted, fixed->ctr.evicted);
  EXPECT_EQ(grown->ctr.aged_out, fixed->ctr.aged_out);
  EXPECT_GT(fixed->ctr.evicted, 10000u);
  EXPECT_GT(fixed->ctr.aged_out, 100u);
  EXPECT_GT(erased, 5000u);
}

TEST(FeatureStage, BeaconPairBecomesPeriodic) {
  FeatureStage st({});
  FlowRecord r{};
  r.e.key.ip_ver = 4;
  r.e.key.proto = 6;
  r.e.key.lo[0] = 10;
  r.e.key.hi[0] = 93;
  r.e.key.hi_port = 443;
  r.e.init_lo = 1;
  r.e.pkts[0] = r.e.pkts[1] = 5;
  r.e.flags[0] = 0x1B;
  r.e.tcp_state = TCP_SYN | TCP_SYNACK | TCP_ESTABLISHED;
  FeatureRow row;
  for (int i = 0; i < 20; i++) {
    r.e.key.lo_port = uint16_t(40000 + i);  // a new connection each time
    r.e.first_ns = 1'000'000'000'000ull + uint64_t(i) * 2'000'000'000ull;
    r.e.last_ns = r.e.first_ns + 150'000'000;
    st.compute(r, row);
  }
  EXPECT_EQ(row.pair.contacts, 20u);
  EXPECT_TRUE(row.handshake);
  EXPECT_GT(row.pair.score, 0.95);
  EXPECT_NEAR(row.pair.period_s, 2.0, 0.01);
  // An active-timeout continuation is the same contact.
  r.e.flags[0] = 0x18;
  r.e.tcp_state |= FLOW_CONTINUED;
  r.e.first_ns += 60'000'000'000ull;
  st.compute(r, row);
  EXPECT_EQ(row.pair.contacts, 20u);
}

}  // namespace

namespace {

TEST(Hll, EstimatesWithinItsErrorAndMerges) {
  Hll<8> a, b;
  for (uint64_t i = 0; i < 20000; i++) a.add(XXH3_64bits(&i, sizeof i));
  EXPECT_NEAR(a.estimate(), 20000, 20000 * 0.065 * 3);  // 3 standard errors
  for (uint64_t i = 10000; i < 30000; i++) b.add(XXH3_64bits(&i, sizeof i));
  a.merge(b);  // union: 30000 distinct
  EXPECT_NEAR(a.estimate(), 30000, 30000 * 0.065 * 3);
  // The running sum is exact: any order of the same values, or a merge, gives the same.
  Hll<8> fwd, rev, parts;
  for (uint64_t i = 0; i < 5000; i++) fwd.add(XXH3_64bits(&i, sizeof i));
  for (uint64_t i = 5000; i-- > 0;) rev.add(XXH3_64bits(&i, sizeof i));
  parts.merge(rev);
  EXPECT_EQ(fwd.sum, rev.sum);
  EXPECT_EQ(fwd.sum, parts.sum);
  EXPECT_EQ(fwd.estimate(), rev.estimate());
  Hll<8> small;
  for (uint64_t i = 0; i < 10; i++) small.add(XXH3_64bits(&i, sizeof i));
  EXPECT_NEAR(small.estimate(), 10, 1);  // linear counting is near exact when small
}

// The sparse form must give the very estimate of the dense sketches fed the same values,
// before, at and after the move to a dense block, with repeats and in any counter order.
TEST(EndpointSketches, SparseEstimatesAreTheDenseOnes) {
  SketchPool pool(64);
  std::mt19937_64 r(3);
  for (int round = 0; round < 40; round++) {
    EndpointSketches sk;
    DenseSketches want;
    int distinct = round < 20 ? round : int(r() % 3000);
    std::set<uint32_t> regs[3];  // non-zero registers per counter, as a dense sketch has them
    for (int i = 0; i < distinct * 3; i++) {
      uint64_t v = r() % uint64_t(std::max(distinct, 1));  // repeats: each value ~3 times
      uint64_t h = XXH3_64bits_withSeed(&v, sizeof v, uint64_t(i % 3));
      bool before = sk.dense != 0;
      switch (i % 3) {
        case 0: sk.add<0>(h, pool); want.a.add(h); regs[0].insert(Hll<8>::index_of(h)); break;
        case 1: sk.add<1>(h, pool); want.b.add(h); regs[1].insert(Hll<8>::index_of(h)); break;
        default: sk.add<2>(h, pool); want.c.add(h); regs[2].insert(Hll<6>::index_of(h)); break;
      }
      // Sparse exactly while every counter has at most kSparse registers set.
      size_t most = std::max({regs[0].size(), regs[1].size(), regs[2].size()});
      ASSERT_EQ(sk.dense != 0, before || most > EndpointSketches::kSparse) << "round " << round << " step " << i;
      ASSERT_EQ(sk.estimate<0>(pool), want.a.estimate()) << "round " << round << " step " << i;
      ASSERT_EQ(sk.estimate<1>(pool), want.b.estimate()) << "round " << round << " step " << i;
      ASSERT_EQ(sk.estimate<2>(pool), want.c.estimate()) << "round " << round << " step " << i;
      // The exported form (--sketches-out) holds the dense sketches' registers, sums included.
      Hll<8> a, b;
      Hll<6> c;
      sk.to_dense<0>(pool, a);
      sk.to_dense<1>(pool, b);
      sk.to_dense<2>(pool, c);
      ASSERT_TRUE(std::equal(a.reg, a.reg + a.kM, want.a.reg) && a.sum == want.a.sum && a.zeros == want.a.zeros)
          << "round " << round << " step " << i;
      ASSERT_TRUE(std::equal(b.reg, b.reg + b.kM, want.b.reg) && b.sum == want.b.sum);
      ASSERT_TRUE(std::equal(c.reg, c.reg + c.kM, want.c.reg) && c.sum == want.c.sum && c.zeros == want.c.zeros);
    }
    if (distinct > 20) {
      EXPECT_NE(sk.dense, 0u) << "a busy endpoint goes dense";
    }
    if (distinct > 0 && distinct <= int(EndpointSketches::kSparse)) {
      EXPECT_EQ(sk.dense, 0u);
    }
    sk.release(pool);
    EXPECT_EQ(pool.in_use(), 0u);
  }
}

// Every reset of an entry (eviction, age-out) gives its dense block back: with far more
// keys than slots the pool (one block per slot) must never run out — it aborts if it does.
TEST(EndpointSketches, TableResetsReleaseDenseBlocks) {
  struct Key {
    uint32_t k;
  };
  struct Val {
    uint64_t last_ns = 0;
    EndpointSketches sk;
    bool used() const { return last_ns != 0; }
  };
  struct Release {
    SketchPool* pool;
    void operator()(Val& v) const { v.sk.release(*pool); }
  };
  using Table = BoundedTable<Key, Val, Release>;
  SketchPool pool(Table::capacity_for(256));
  Table t(256, 1'000'000'000ull, 7, {&pool});
  std::mt19937_64 r(9);
  uint32_t dense_max = 0;
  for (uint32_t i = 0; i < 100000; i++) {
    Key k{uint32_t(r() % 600)};
    uint64_t now = 1'000'000'000ull + uint64_t(i) * 1'000'000ull;  // 100 s, 1 s max age: some age out
    Val& v = t.find_or_make(k, now);
    for (int j = 0; j < 4; j++) v.sk.add<0>(r(), pool);  // dense from the second visit on
    v.last_ns = now;
    dense_max = std::max(dense_max, pool.in_use());
  }
  EXPECT_GT(uint64_t(t.ctr.evicted), 10000u);
  EXPECT_GT(uint64_t(t.ctr.aged_out), 0u);
  EXPECT_LE(dense_max, t.capacity());
  EXPECT_GT(dense_max, t.capacity() / 2);
}

TEST(FeatureStage, ServerSeesDistinctClientsPrefixesAndFailures) {
  FeatureStage st({});
  FlowRecord r{};
  r.e.key.ip_ver = 4;
  r.e.key.proto = 6;
  r.e.init_lo = 1;
  r.e.key.hi[0] = 200;  // the server
  r.e.key.hi_port = 23;
  FeatureRow row;
  // 300 clients in 30 /24s try telnet; two thirds never get a SYN-ACK.
  for (uint32_t i = 0; i < 300; i++) {
    r.e.key.lo[0] = 10;
    r.e.key.lo[1] = uint8_t(i % 30);
    r.e.key.lo[3] = uint8_t(i / 30 + 1);
    r.e.key.lo_port = uint16_t(1024 + i);
    r.e.pkts[0] = 1;
    r.e.bytes[0] = 60;
    r.e.tcp_state = i % 3 ? TCP_SYN : TCP_SYN | TCP_SYNACK | TCP_ESTABLISHED;
    r.e.first_ns = r.e.last_ns = 1'000'000'000ull * (1000 + i);
    st.compute(r, row);
  }
  EXPECT_NEAR(row.pair.srv_clients, 300, 300 * 0.2);
  EXPECT_NEAR(row.pair.srv_client_nets, 30, 3);
  EXPECT_NEAR(row.pair.srv_ports, 1, 0.5);
  EXPECT_EQ(row.pair.srv_flows, 300u);
  EXPECT_NEAR(row.pair.srv_failed_share, 2.0 / 3, 0.01);
  EXPECT_NEAR(row.pair.srv_age_s, 299, 0.01);
}

// Batches match every record's payload first, then compute the rest (Hyperscan stays in
// cache): the rows are those of one record at a time, on the replay path (compute_batch)
// and on the DPDK workers' (process_batch, then process_client and compute).
TEST(FeatureStage, BatchesComputeWhatRecordsOneByOneDo) {
  FeatureConfig c;
  c.hash_seed = 5;
  c.rules = RuleSet::load_string("tcp 1:/^GET \\/beacon/ get\nudp 2:/tunnel/ tun\n3:/x{4}/ xs\n", "t.rules");
  std::vector<FlowRecord> recs;
  const char* pays[] = {"GET /beacon HTTP/1.1", "dns tunnel", "xxxxx", "nothing", "", "GET /beacon xxxx"};
  for (uint32_t i = 0; i < 300; i++) {
    FlowRecord r = ipv4_record(i % 3 == 1 ? 17 : 6);
    r.e.key.lo[0] = 10;
    r.e.key.lo[3] = uint8_t(i % 7);            // 7 clients
    r.e.key.hi[0] = 200;
    r.e.key.hi[3] = uint8_t(i % 5);            // 5 servers
    r.e.key.hi_port = uint16_t(80 + i % 2);
    r.e.key.lo_port = uint16_t(40000 + i);
    r.e.first_ns = r.e.last_ns = 1'000'000'000ull * (1000 + 2 * i);
    std::string p = pays[(i * 7) % 6];
    r.paylen[i % 4 == 3] = uint16_t(p.size());
    std::memcpy(r.payload[i % 4 == 3], p.data(), p.size());
    recs.push_back(r);
  }
  auto same = [](const FeatureRow& a, const FeatureRow& b, size_t i) {
    EXPECT_EQ(a.pair.sig_mask, b.pair.sig_mask) << i;
    EXPECT_EQ(a.pair.sig_rules, b.pair.sig_rules) << i;
    EXPECT_EQ(a.pair.contacts, b.pair.contacts) << i;
    EXPECT_EQ(a.pair.score, b.pair.score) << i;
    EXPECT_EQ(a.pair.srv_clients, b.pair.srv_clients) << i;
    EXPECT_EQ(a.client.servers, b.client.servers) << i;
    EXPECT_EQ(a.client.periodic_servers, b.client.periodic_servers) << i;
  };
  FeatureStage one(c);
  std::vector<FeatureRow> want(recs.size());
  uint64_t masks = 0;
  for (size_t i = 0; i < recs.size(); i++) {
    one.compute(recs[i], want[i]);
    masks |= 1ull << std::popcount(want[i].pair.sig_mask);
  }
  EXPECT_EQ(masks, 0b111u);  // rows with no hit, one hit and two hits

  FeatureStage batched(c);
  std::vector<FeatureRow> got(recs.size());
  std::vector<const FlowRecord*> ptrs;
  for (auto& r : recs) ptrs.push_back(&r);
  for (size_t done = 0; done < recs.size(); done += 97)  // batches across the 64-record step
    batched.compute_batch(ptrs.data() + done, std::min<size_t>(97, recs.size() - done), got.data() + done);
  for (size_t i = 0; i < recs.size(); i++) same(want[i], got[i], i);

  // Prefetched in holds of 32 as replay does: the lookups take the hashes the first step
  // computed.
  FeatureStage held(c);
  std::vector<FlowRecord> hrecs = recs;
  for (size_t done = 0; done < hrecs.size(); done += 32) {
    size_t m = std::min<size_t>(32, hrecs.size() - done);
    for (int step = 0; step < 2; step++)
      for (size_t i = done; i < done + m; i++) {
        held.prefetch(hrecs[i], step == 1);
        held.prefetch_client(hrecs[i], step == 1);
      }
    for (size_t i = done; i < done + m; i++) {
      FeatureRow row;
      held.compute(hrecs[i], row);
      same(want[i], row, i);
    }
  }

  FeatureStage worker(c);
  std::vector<FlowRecord> wrecs = recs;
  std::vector<FlowRecord*> wptrs;
  for (auto& r : wrecs) wptrs.push_back(&r);
  for (size_t done = 0; done < wrecs.size(); done += 97)
    worker.process_batch(wptrs.data() + done, unsigned(std::min<size_t>(97, wrecs.size() - done)));
  for (size_t i = 0; i < wrecs.size(); i++) {
    worker.process_client(wrecs[i]);
    FeatureRow row;
    worker.compute(wrecs[i], row);  // takes the attached pair and client features
    same(want[i], row, i);
  }
}

// A record carries the key hashes of the stage that prefetched it: another stage (another
// worker, another seed) hashes for itself, and a hash serves one lookup only, so a record
// reused for another flow is not looked up under the old flow's hash.
TEST(FeatureStage, PrefetchedHashesServeTheirStageOnce) {
  FeatureConfig ca, cb;
  ca.hash_seed = 1;
  cb.hash_seed = 2;
  FeatureStage a(ca), b(cb);
  auto rec = [](uint8_t client, uint64_t s) {
    FlowRecord r = ipv4_record(6);
    r.e.key.lo[0] = 10;
    r.e.key.lo[3] = client;
    r.e.key.hi[0] = 200;
    r.e.key.hi_port = 80;
    r.e.first_ns = r.e.last_ns = 1'000'000'000ull * s;
    return r;
  };
  auto prefetch = [](FeatureStage& st, const FlowRecord& r) {
    for (bool slot : {false, true}) {
      st.prefetch(r, slot);
      st.prefetch_client(r, slot);
    }
  };
  FeatureRow row;
  FlowRecord r = rec(1, 1000);
  prefetch(a, r);
  b.compute(r, row);  // a's hashes are not b's
  FlowRecord again = rec(1, 1010);
  b.compute(again, row);
  EXPECT_EQ(row.pair.contacts, 2u);
  EXPECT_EQ(row.pair.srv_flows, 2u);
  EXPECT_EQ(row.client.flows, 2u);

  FlowRecord reused = rec(2, 1000);
  prefetch(b, reused);
  b.compute(reused, row);
  reused.e.key.lo[3] = 3;  // the same record, another client, not prefetched again
  b.compute(reused, row);
  FlowRecord third = rec(3, 1010);
  b.compute(third, row);
  EXPECT_EQ(row.pair.contacts, 2u);
  EXPECT_EQ(row.client.flows, 2u);
  EXPECT_EQ(row.pair.srv_flows, 5u);
}

// Distinct counts hash with sketch_seed, not the tables' (random per run) seed: the same
// records give the same estimates on every run, and sensors sharing sketch_seed merge.
TEST(FeatureStage, DistinctCountsDoNotDependOnTheTableSeed) {
  auto counts = [](uint64_t table_seed, uint64_t sketch_seed) {
    FeatureConfig c;
    c.hash_seed = table_seed;
    c.sketch_seed = sketch_seed;
    FeatureStage st(c);
    FlowRecord r = ipv4_record(17);
    r.e.key.hi[0] = 200;
    r.e.key.hi_port = 53;
    FeatureRow row;
    std::vector<double> v;
    for (uint32_t i = 0; i < 400; i++) {
      r.e.key.lo[0] = 10;
      r.e.key.lo[2] = uint8_t(i >> 8);
      r.e.key.lo[3] = uint8_t(i);
      r.e.first_ns = r.e.last_ns = 1'000'000'000ull * (1000 + i);
      st.compute(r, row);
      v.push_back(row.pair.srv_clients);
    }
    return v;
  };
  auto a = counts(1, 1), b = counts(2, 1), c = counts(0x9e3779b97f4a7c15ull, 1);
  EXPECT_EQ(a, b);
  EXPECT_EQ(a, c);
  EXPECT_NEAR(a.back(), 400, 400 * 0.2);
  EXPECT_NE(a, counts(1, 2));  // the seed is in the hash: sensors must agree on it
}

// One client: a vertical scan of one host (1000 ports, unanswered), a horizontal sweep
// (400 hosts on port 22) and beacons to 3 servers every 30 s.
TEST(FeatureStage, ClientSeesFanOutScansAndPeriodicServers) {
  FeatureStage st({});
  FlowRecord r = ipv4_record(6);
  r.e.key.lo[0] = 10;  // the client
  r.e.tcp_state = TCP_SYN;
  FeatureRow row;
  uint64_t t = 1'000'000'000'000ull;
  for (uint32_t p = 0; p < 1000; p++) {
    r.e.key.hi[0] = 200;
    r.e.key.hi_port = uint16_t(1 + p);
    r.e.first_ns = r.e.last_ns = t += 1'000'000;
    st.compute(r, row);
  }
  EXPECT_NEAR(row.client.ports, 1000, 1000 * 0.2);
  EXPECT_NEAR(row.client.servers, 1, 0.5);
  EXPECT_NEAR(row.client.failed_share, 1.0, 1e-9);
  for (uint32_t h = 0; h < 400; h++) {
    r.e.key.hi[0] = 100;
    r.e.key.hi[2] = uint8_t(h >> 8);
    r.e.key.hi[3] = uint8_t(h);
    r.e.key.hi_port = 22;
    r.e.first_ns = r.e.last_ns = t += 1'000'000;
    st.compute(r, row);
  }
  EXPECT_NEAR(row.client.servers, 401, 401 * 0.2);
  EXPECT_EQ(row.client.flows, 1400u);
  EXPECT_NEAR(row.client.periodic_servers, 0, 0.5);
  r.e.tcp_state = TCP_SYN | TCP_SYNACK | TCP_ESTABLISHED;
  r.e.key.hi_port = 443;
  for (int beat = 0; beat < 12; beat++)
    for (uint8_t s = 0; s < 3; s++) {
      r.e.key.hi[0] = 50;
      r.e.key.hi[3] = s;
      r.e.key.lo_port = uint16_t(30000 + beat);
      r.e.first_ns = t + uint64_t(beat) * 30'000'000'000ull + s * 1'000'000ull;
      r.e.last_ns = r.e.first_ns + 1'000'000;
      st.compute(r, row);
    }
  EXPECT_NEAR(row.client.periodic_servers, 3, 0.5);
  EXPECT_LT(row.client.failed_share, 1.0);
  // Its exported sketch (--sketches-out) carries the registers the row was computed from.
  std::vector<EndpointSketch> clients;
  st.sketches([&](const EndpointSketch& s) {
    if (s.kind == SketchKind::client) clients.push_back(parse_sketch_line(sketch_line(s)));
  });
  ASSERT_EQ(clients.size(), 1u);
  EXPECT_EQ(clients[0].addr, "10.0.0.0");
  EXPECT_EQ(clients[0].flows, row.client.flows);
  EXPECT_EQ(clients[0].a.estimate(), row.client.servers);
  EXPECT_EQ(clients[0].b.estimate(), row.client.ports);
  EXPECT_EQ(clients[0].c.estimate(), row.client.periodic_servers);
}

// run's workers export a slice of slots at a time between records: the slices together
// are every server's and every client's line, once.
TEST(FeatureStage, SketchSlicesCoverEveryEndpointOnce) {
  FeatureStage st({});
  FlowRecord r = ipv4_record(6);
  FeatureRow row;
  for (uint32_t i = 0; i < 3000; i++) {
    r.e.key.lo[0] = 10, r.e.key.lo[2] = uint8_t(i % 700 >> 8), r.e.key.lo[3] = uint8_t(i % 700);
    r.e.key.hi[0] = 200, r.e.key.hi[3] = uint8_t(i % 90);
    r.e.key.hi_port = 443;
    r.e.first_ns = r.e.last_ns = 1'000'000'000ull * (1000 + i);
    st.compute(r, row);
  }
  std::vector<std::string> whole, sliced;
  st.sketches([&](const EndpointSketch& s) { whole.push_back(sketch_line(s)); });
  std::string text;
  uint32_t pos = 0;
  size_t lines = 0, passes = 1;
  while (!st.sketch_lines(text, pos, 7, lines)) passes++;
  for (size_t at = 0, end; (end = text.find('\n', at)) != std::string::npos; at = end + 1)
    sliced.push_back(text.substr(at, end - at + 1));
  EXPECT_EQ(whole.size(), 790u);  // 90 servers, 700 clients
  EXPECT_EQ(lines, whole.size());
  EXPECT_EQ(sliced, whole);
  EXPECT_GT(passes, 790u / 7);
}

// --sketch-clients: a client line carries the documented pseudonym of its address (the
// period of its window's start) and the key's id, or there are no client lines at all (in
// slices too); servers are named by address either way.
TEST(FeatureStage, SketchClientsByPseudonymOrNone) {
  FeatureConfig c;
  // 10 min windows, pseudonyms rotated every 25 min: some windows straddle two periods,
  // and the window's start decides (a sensor's own first or last sighting would not agree).
  c.window_ns = 600'000'000'000ull;
  c.pseudonym_rotate_ns = 1'500'000'000'000ull;
  c.pseudonym_secret = "sixteen-bytes-or-more";
  EXPECT_THROW(FeatureStage({.sketch_clients = SketchClients::pseudonym}), std::invalid_argument);  // no window
  auto fill = [](FeatureStage& st) {
    FlowRecord r = ipv4_record(6);
    FeatureRow row;
    // One window, [T, T + 10 min), with a period boundary at T + 5 min; clients 0..14 are
    // seen before it, 15..29 after.
    const uint64_t t = 1'700'002'200'000'000'000ull;
    for (uint32_t i = 0; i < 300; i++) {
      r.e.key.lo[0] = 10, r.e.key.lo[3] = uint8_t(i / 10);
      r.e.key.hi[0] = 200, r.e.key.hi[3] = uint8_t(i % 9);
      r.e.first_ns = r.e.last_ns = t + 2'000'000'000ull * i;
      st.compute(r, row);
    }
  };
  auto lines = [](FeatureStage& st, uint32_t slots) {
    std::string text;
    uint32_t pos = 0;
    size_t n = 0;
    while (!st.sketch_lines(text, pos, slots, n)) {
    }
    return text;
  };
  std::vector<EndpointSketch> by_addr, by_pseudonym, servers_only;
  FeatureStage a(c);
  fill(a);
  a.sketches([&](const EndpointSketch& s) { by_addr.push_back(s); });
  c.sketch_clients = SketchClients::pseudonym;
  FeatureStage p(c);
  fill(p);
  p.sketches([&](const EndpointSketch& s) { by_pseudonym.push_back(s); });
  c.sketch_clients = SketchClients::none;
  FeatureStage n(c);
  fill(n);
  n.sketches([&](const EndpointSketch& s) { servers_only.push_back(s); });

  ASSERT_EQ(by_addr.size(), by_pseudonym.size());
  Pseudonymizer ps(c.pseudonym_secret, c.pseudonym_rotate_ns);
  size_t clients = 0;
  for (size_t i = 0; i < by_addr.size(); i++) {
    const EndpointSketch &x = by_addr[i], &y = by_pseudonym[i];
    EXPECT_TRUE(x.pseudonym_key.empty());
    EXPECT_EQ(x.window, y.window);
    EXPECT_EQ(x.flows, y.flows);
    if (x.kind == SketchKind::server) {
      EXPECT_EQ(y.addr, x.addr);
      EXPECT_TRUE(y.pseudonym_key.empty());
      continue;
    }
    clients++;
    uint8_t ip[16] = {};
    ASSERT_EQ(inet_pton(AF_INET, x.addr.c_str(), ip), 1);
    EXPECT_EQ(y.addr, ps.of(ip, 4, x.window * c.window_ns)) << x.addr;
    EXPECT_EQ(y.pseudonym_key, ps.key_id());
    EXPECT_EQ(parse_sketch_line(sketch_line(y)).addr, y.addr);
  }
  EXPECT_EQ(clients, 30u);
  EXPECT_EQ(servers_only.size(), by_addr.size() - clients);
  for (const auto& s : servers_only) EXPECT_EQ(s.kind, SketchKind::server);
  std::string sliced = lines(n, 4), whole;
  for (const auto& s : servers_only) whole += sketch_line(s);
  EXPECT_EQ(sliced, whole);
  EXPECT_EQ(lines(p, 4).find("\"client\":"), std::string::npos);
  EXPECT_NE(lines(a, 4).find("\"client\":"), std::string::npos);
}

// A pair's starts move from the entry to a pool block at the 8th. The scores must be those
// of the 32 latest starts whatever the form and arrival order, and evicted pairs give
// their blocks back (the pool holds one per table slot and aborts if it runs out).
TEST(FeatureStage, PairHistoryOutgrowsTheEntry) {
  FeatureConfig c;
  c.pair_capacity = 64;
  FeatureStage st(c);
  FlowRecord r = ipv4_record(6);
  r.e.key.hi[0] = 9;
  r.e.key.hi_port = 443;
  FeatureRow row;
  std::mt19937 g(4);
  const uint64_t t0 = 1'700'000'000'000'000'000ull;
  int checked = 0;
  for (int round = 0; round < 6; round++)  // 40 new pairs a round: older pairs are evicted
    for (int client = 0; client < 40; client++) {
      r.e.key.lo[0] = 10;
      r.e.key.lo[2] = uint8_t(round);
      r.e.key.lo[3] = uint8_t(client);
      std::vector<int64_t> ms;  // 5 s beacons with jitter, arriving up to 3 contacts late
      for (int k = 0; k < 40; k++) ms.push_back(int64_t(round) * 1'000'000 + k * 5000 + int64_t(g() % 300));
      for (size_t k = 0; k + 1 < ms.size(); k++)
        if (g() % 3 == 0) std::swap(ms[k], ms[std::min(ms.size() - 1, k + 1 + g() % 3)]);
      std::vector<int64_t> seen;
      for (int64_t m : ms) {
        r.e.first_ns = r.e.last_ns = t0 + uint64_t(m) * 1'000'000ull;
        st.compute(r, row);
        seen.push_back(m);
        std::vector<int64_t> top = seen;  // the 32 latest starts, ascending
        std::sort(top.begin(), top.end());
        if (top.size() > FeatureStage::kHistory) top.erase(top.begin(), top.end() - FeatureStage::kHistory);
        std::vector<double> s;
        for (int64_t x : top) s.push_back(double(x - top[0]) / 1e3);
        Periodicity want = score_periodicity(s.data(), s.size());
        ASSERT_EQ(row.pair.intervals, want.intervals) << "round " << round << " contact " << seen.size();
        ASSERT_EQ(row.pair.period_s, want.period_s) << "round " << round << " contact " << seen.size();
        ASSERT_EQ(row.pair.score, want.score) << "round " << round << " contact " << seen.size();
        checked++;
      }
      EXPECT_EQ(row.pair.contacts, 40u);
    }
  EXPECT_EQ(checked, 6 * 40 * 40);
  EXPECT_GT(st.counters().pairs.evicted, 100u);
  EXPECT_GT(row.pair.score, 0.5);  // and the beacon is periodic
}

TEST(FeatureStage, TumblingWindowRestartsEndpointCounts) {
  FeatureConfig c;
  c.window_ns = 60'000'000'000ull;
  FeatureStage st(c);
  FlowRecord r = ipv4_record(17);
  r.e.key.hi[0] = 9;
  FeatureRow row;
  for (uint32_t i = 0; i < 50; i++) {  // 50 clients in the first minute, 5 in the next
    r.e.key.lo[0] = 10;
    r.e.key.lo[3] = uint8_t(i);
    r.e.first_ns = r.e.last_ns = 120'000'000'000ull + (i < 45 ? i : 60 + i) * 1'000'000'000ull;
    st.compute(r, row);
    if (i == 44) {
      EXPECT_NEAR(row.pair.srv_clients, 45, 5);
      EXPECT_EQ(st.counters().servers.overflowed, 1u);  // 45 clients do not fit inline
      EXPECT_EQ(st.counters().clients.overflowed, 0u);
    }
  }
  EXPECT_NEAR(row.pair.srv_clients, 5, 0.5);
  EXPECT_EQ(st.counters().servers.overflowed, 0u) << "the new window gave the dense block back";
  EXPECT_EQ(row.pair.srv_flows, 5u);
  EXPECT_EQ(row.client.flows, 1u);
}

}  // namespace

// A sketch line reads back as it was written; merging is the union of the registers and
// the sum of the counts, and refuses sketches that cannot be compared.
TEST(EndpointSketch, LineRoundTripAndMerge) {
  EndpointSketch a, b;
  a.addr = b.addr = "2001:db8::7";
  a.first_ns = 5, a.last_ns = 9, a.flows = 3, a.bytes = 300, a.failed = 1;
  b.first_ns = 2, b.last_ns = 7, b.flows = 4, b.bytes = 100, b.failed = 0;
  Hll<8> all;
  for (uint64_t v = 0; v < 500; v++) {
    uint64_t h = XXH3_64bits_withSeed(&v, sizeof v, 1);
    (v % 2 ? a : b).a.add(h);
    all.add(h);
    a.c.add(h & 0xff00);
  }
  EndpointSketch back = parse_sketch_line(sketch_line(a));
  EXPECT_EQ(back.addr, a.addr);
  EXPECT_EQ(back.kind, SketchKind::server);
  EXPECT_TRUE(std::equal(back.a.reg, back.a.reg + 256, a.a.reg));
  EXPECT_EQ(back.a.sum, a.a.sum);
  EXPECT_TRUE(std::equal(back.c.reg, back.c.reg + 64, a.c.reg));
  EXPECT_EQ(back.flows, 3u);
  merge_sketch(back, b);
  EXPECT_TRUE(std::equal(back.a.reg, back.a.reg + 256, all.reg));
  EXPECT_EQ(back.a.estimate(), all.estimate());
  EXPECT_EQ(back.first_ns, 2u);
  EXPECT_EQ(back.last_ns, 9u);
  EXPECT_EQ(back.flows, 7u);
  EXPECT_EQ(back.bytes, 400u);
  EXPECT_EQ(back.sensors, 2u);
  EndpointSketch other = b;
  other.seed = 2;
  EXPECT_THROW(merge_sketch(back, other), SketchError);
  other = b;
  other.addr = "192.0.2.1";
  EXPECT_THROW(merge_sketch(back, other), SketchError);
  other = b;
  other.kind = SketchKind::client;  // a host that is both: two endpoints, never one
  EXPECT_THROW(merge_sketch(back, other), SketchError);
  for (const char* bad : {"", "[]", "{\"linesight_sketch\":1}", "{\"server\":\"x\"}", "{\"linesight_sketch\":3}"})
    EXPECT_THROW(parse_sketch_line(bad), SketchError) << bad;
}

// The hand-written line is what nlohmann's dump of the same object gives, byte for byte:
// numbers at their extremes, empty and full registers, and addresses with every kind of
// character a merged file may carry back (quotes, backslashes, control bytes, UTF-8).
TEST(EndpointSketch, LineIsNlohmannsDump) {
  auto regs = [](const auto& h) {
    nlohmann::json a = nlohmann::json::array();
    for (uint32_t i = 0; i < std::size(h.reg); i++)
      if (h.reg[i]) a.push_back({i, h.reg[i]});
    return a;
  };
  auto reference = [&](const EndpointSketch& s) {
    bool srv = s.kind == SketchKind::server;
    nlohmann::ordered_json j = {{"linesight_sketch", 2}, {"kind", srv ? "server" : "client"}};
    if (s.pseudonym_key.empty()) {
      j[srv ? "server" : "client"] = s.addr;
    } else {
      j["client_pseudonym"] = s.addr;
      j["pseudonym_key"] = s.pseudonym_key;
    }
    for (auto [k, v] : {std::pair{"seed", s.seed}, {"window_ns", s.window_ns}, {"window", s.window},
                        {"first_ns", s.first_ns}, {"last_ns", s.last_ns}, {"flows", s.flows}})
      j[k] = v;
    if (srv) j["bytes"] = s.bytes;
    j["failed"] = s.failed;
    j["sensors"] = s.sensors;
    j[srv ? "clients" : "servers"] = regs(s.a);
    j[srv ? "client_nets" : "ports"] = regs(s.b);
    j[srv ? "ports" : "periodic_servers"] = regs(s.c);
    return j.dump() + "\n";
  };
  std::mt19937_64 g(11);
  const std::string addrs[] = {"10.0.0.1", "2001:db8::1", "a\"b\\c", std::string("\x01\x1f\x7f\b\f\n\r\t", 8),
                               "h\xc3\xa9te", ""};
  for (int round = 0; round < 200; round++) {
    EndpointSketch s;
    s.kind = round % 2 ? SketchKind::client : SketchKind::server;
    s.addr = addrs[round % std::size(addrs)];
    if (round % 4 == 3) {  // a client by pseudonym
      s.addr = "0123456789abcdef01234567";
      s.pseudonym_key = "89abcdef";
    }
    uint64_t* f[] = {&s.seed, &s.window_ns, &s.window, &s.first_ns, &s.last_ns, &s.flows, &s.bytes, &s.failed};
    for (uint64_t* x : f) *x = round % 7 == 0 ? UINT64_MAX : round % 7 == 1 ? 0 : g() >> (g() % 64);
    s.sensors = uint32_t(round % 5 == 0 ? UINT32_MAX : g());
    for (int v = 0; v < round * 5; v++) {
      s.a.add(g());
      s.b.add(g());
      s.c.add(g());
    }
    ASSERT_EQ(sketch_line(s), reference(s)) << "round " << round;
  }
}

// Lines as the sensors write them take the fast reader, which gives what the JSON reader
// gives; anything else it leaves to the JSON reader: other spellings of the same sketch,
// and every error, so errors are named as before.
TEST(EndpointSketch, WrittenLinesTakeTheFastReader) {
  auto same = [](const EndpointSketch& a, const EndpointSketch& b) {
    return sketch_line(a) == sketch_line(b) && a.a.sum == b.a.sum && a.b.zeros == b.b.zeros && a.c.sum == b.c.sum;
  };
  auto json_reads = [](const std::string& l, EndpointSketch& out) {
    try {
      out = parse_sketch_line_json(l);
      return true;
    } catch (const SketchError&) {
      return false;
    }
  };
  std::mt19937_64 g(5);
  const std::string addrs[] = {"10.0.0.1", "2001:db8::1", "a\"b", "h\xc3\xa9te", "x\ty", "192.0.2.255"};
  int fast = 0;
  for (int round = 0; round < 400; round++) {
    EndpointSketch s;
    s.kind = round % 2 ? SketchKind::client : SketchKind::server;
    s.addr = addrs[round % std::size(addrs)];
    if (round % 4 == 3) {
      s.addr = "0123456789abcdef01234567";
      s.pseudonym_key = "89abcdef";
    }
    uint64_t* f[] = {&s.seed, &s.window_ns, &s.window, &s.first_ns, &s.last_ns, &s.bytes};
    for (uint64_t* x : f) *x = round % 9 == 0 ? UINT64_MAX : round % 9 == 1 ? 0 : g() >> (g() % 64);
    s.flows = g() >> (g() % 64);
    s.failed = round % 11 == 5 ? s.flows + 1 : s.flows / 3;  // sometimes more failed than flows: an error
    if (s.kind == SketchKind::client) s.bytes = 0;
    s.sensors = uint32_t(g());
    for (int v = 0; v < round % 50 * 7; v++) {
      s.a.add(g());
      s.b.add(g());
      s.c.add(g());
    }
    std::string line = sketch_line(s);
    line.pop_back();  // the newline, as getline leaves it
    EndpointSketch a, b;
    bool by_json = json_reads(line, b);
    bool plain = s.addr.find_first_of("\"\\\t\xc3") == std::string::npos;
    ASSERT_EQ(parse_sketch_line_written(line, a), plain && by_json) << line;
    if (plain && by_json) {
      fast++;
      ASSERT_TRUE(same(a, b)) << line;
      ASSERT_TRUE(same(a, s)) << line;
    }
    // The same sketch spelled otherwise: only the JSON reader, to the same result.
    for (std::string other : {std::string(line).insert(1, " "), line + " ", std::string(line).replace(
                                  line.find("\"seed\":"), 7, "\"seed\": ")}) {
      ASSERT_FALSE(parse_sketch_line_written(other, a)) << other;
      if (by_json) {
        ASSERT_TRUE(same(parse_sketch_line(other), b)) << other;
      }
    }
  }
  EXPECT_GT(fast, 150);
  // Errors: the fast reader refuses, the JSON reader names them.
  EndpointSketch ok;
  ok.addr = "10.0.0.1";
  ok.flows = 3;
  ok.a.raise(5, 2);
  std::string good = sketch_line(ok);
  good.pop_back();
  EndpointSketch a;
  ASSERT_TRUE(parse_sketch_line_written(good, a));
  auto with = [&](const std::string& from, const std::string& to) {
    std::string l = good;
    l.replace(l.find(from), from.size(), to);
    return l;
  };
  for (const std::string& bad :
       {with("[5,2]", "[5,0]"), with("[5,2]", "[256,1]"), with("[5,2]", "[5,58]"), with("\"failed\":0", "\"failed\":4"),
        with("\"flows\":3", "\"flows\":03"), with("\"server\":\"10.0.0.1\"", "\"server\":\"\""), good + "x",
        good.substr(0, good.size() - 1), with("[5,2]", "[5,2],"), with("\"seed\":1", "\"seed\":-1"),
        with("[5,2]", "[5.0,2]"), with("\"flows\":3", "\"flows\":18446744073709551616")}) {
    EXPECT_FALSE(parse_sketch_line_written(bad, a)) << bad;
    EXPECT_THROW(parse_sketch_line(bad), SketchError) << bad;
  }
  // Version 1 lines (servers only, no kind) are the JSON reader's.
  std::string v1 = with("\"linesight_sketch\":2,\"kind\":\"server\",", "\"linesight_sketch\":1,");
  EXPECT_FALSE(parse_sketch_line_written(v1, a));
  EXPECT_TRUE(same(parse_sketch_line(v1), ok));
}

// A client line names its counters as a client's and has no bytes; a line of version 1
// (before client sketches) still reads, as a server's.
TEST(EndpointSketch, ClientLinesAndVersionOne) {
  EndpointSketch c;
  c.kind = SketchKind::client;
  c.addr = "192.0.2.9";
  c.flows = 5, c.failed = 4;
  for (uint64_t v = 0; v < 40; v++) c.b.add(XXH3_64bits_withSeed(&v, sizeof v, 1));
  c.c.add(7);
  std::string line = sketch_line(c);
  auto j = nlohmann::json::parse(line);
  EXPECT_EQ(j["linesight_sketch"], 2);
  EXPECT_EQ(j["kind"], "client");
  EXPECT_EQ(j["client"], "192.0.2.9");
  EXPECT_FALSE(j.contains("bytes"));
  EXPECT_FALSE(j.contains("server"));
  EXPECT_TRUE(j["servers"].empty());
  EXPECT_EQ(j["ports"].size(), size_t(std::count_if(c.b.reg, c.b.reg + 256, [](uint8_t r) { return r != 0; })));
  EXPECT_EQ(j["periodic_servers"].size(), 1u);
  EndpointSketch back = parse_sketch_line(line);
  EXPECT_EQ(back.kind, SketchKind::client);
  EXPECT_EQ(back.addr, c.addr);
  EXPECT_TRUE(std::equal(back.b.reg, back.b.reg + 256, c.b.reg));
  EXPECT_TRUE(std::equal(back.c.reg, back.c.reg + 64, c.c.reg));
  EXPECT_EQ(back.failed, 4u);
  j["kind"] = "router";
  EXPECT_THROW(parse_sketch_line(j.dump()), SketchError);
  j.erase("kind");
  EXPECT_THROW(parse_sketch_line(j.dump()), SketchError);

  EndpointSketch s;
  s.addr = "198.51.100.1";
  s.bytes = 99;
  auto v1 = nlohmann::json::parse(sketch_line(s));
  v1["linesight_sketch"] = 1;
  v1.erase("kind");
  EndpointSketch old = parse_sketch_line(v1.dump());
  EXPECT_EQ(old.kind, SketchKind::server);
  EXPECT_EQ(old.addr, "198.51.100.1");
  EXPECT_EQ(old.bytes, 99u);
}

// A client by pseudonym: read back with its key; a malformed pseudonym or key, or both a
// pseudonym and an address, is refused; lines by address and by pseudonym, or under two
// keys, do not merge, and the error says which.
TEST(EndpointSketch, PseudonymLines) {
  EndpointSketch c;
  c.kind = SketchKind::client;
  c.addr = "00112233445566778899aabb";
  c.pseudonym_key = "0a1b2c3d";
  c.flows = 2;
  std::string line = sketch_line(c);
  EXPECT_EQ(line.find("\"client\":"), std::string::npos);
  EndpointSketch back = parse_sketch_line(line);
  EXPECT_EQ(back.addr, c.addr);
  EXPECT_EQ(back.pseudonym_key, c.pseudonym_key);
  auto refused = [&](auto edit, const std::string& why) {
    auto j = nlohmann::ordered_json::parse(line);
    edit(j);
    try {
      parse_sketch_line(j.dump());
      ADD_FAILURE() << "accepted " << j.dump();
    } catch (const SketchError& e) {
      EXPECT_NE(std::string(e.what()).find(why), std::string::npos) << e.what();
    }
  };
  refused([](auto& j) { j["client_pseudonym"] = "00112233445566778899AABB"; }, "24 hex digits");
  refused([](auto& j) { j["client_pseudonym"] = "0011"; }, "24 hex digits");
  refused([](auto& j) { j.erase("pseudonym_key"); }, "\"pseudonym_key\" missing");
  refused([](auto& j) { j["pseudonym_key"] = 7; }, "\"pseudonym_key\" missing or not 8 hex");
  refused([](auto& j) { j["client"] = "192.0.2.1"; }, "both");

  EndpointSketch other = c;
  other.pseudonym_key = "ffffffff";
  EndpointSketch m = c;
  try {
    merge_sketch(m, other);
    ADD_FAILURE() << "merged under two keys";
  } catch (const SketchError& e) {
    EXPECT_NE(std::string(e.what()).find("keys differ (0a1b2c3d and ffffffff)"), std::string::npos) << e.what();
  }
  other.pseudonym_key.clear();
  try {
    merge_sketch(m, other);
    ADD_FAILURE() << "merged by address and by pseudonym";
  } catch (const SketchError& e) {
    EXPECT_NE(std::string(e.what()).find("by address and by pseudonym"), std::string::npos) << e.what();
  }
  merge_sketch(m, c);
  EXPECT_EQ(m.flows, 4u);
  EXPECT_EQ(m.sensors, 2u);
}

// The merge host's sparse set gives, endpoint for endpoint, the lines of merging dense
// sketches with merge_sketch, in the same order, whether an endpoint stays sparse, goes
// dense on its own or by a merge; and a small endpoint costs a fraction of its dense form.
TEST(SketchSet, MergesAsDenseSketchesDo) {
  std::mt19937_64 r(11);
  SketchSet set;
  std::map<std::tuple<SketchKind, std::string, uint64_t>, EndpointSketch> want;
  for (int i = 0; i < 4000; i++) {
    EndpointSketch s;
    uint64_t e = r() % 500;  // an endpoint; several lines each, from several "sensors"
    s.kind = e % 2 ? SketchKind::client : SketchKind::server;
    s.addr = e % 3 ? "10.0." + std::to_string(e / 256) + "." + std::to_string(e % 256)
                   : "2001:db8::" + std::to_string(e);  // beyond the short-string buffer
    s.window = r() % 2;
    s.window_ns = 600'000'000'000ull;
    s.first_ns = r() % 1000, s.last_ns = s.first_ns + r() % 1000;
    s.flows = 1 + r() % 10, s.failed = r() % s.flows, s.bytes = s.kind == SketchKind::server ? r() % 5000 : 0;
    // Mostly a few peers; now and then many (dense at once), so merges meet both forms.
    uint64_t peers = r() % 10 ? r() % 5 : 5 + r() % 400;
    for (uint64_t v = 0; v < peers; v++) {
      uint64_t x = e * 1000 + r() % (peers * 2);
      s.a.add(XXH3_64bits_withSeed(&x, sizeof x, 1));
      s.b.add(XXH3_64bits_withSeed(&x, sizeof x, 2) | 0xff);
      s.c.add(XXH3_64bits_withSeed(&x, sizeof x, 3));
    }
    set.add(s);
    auto [it, fresh] = want.try_emplace({s.kind, s.addr, s.window}, s);
    if (!fresh) merge_sketch(it->second, s);
  }
  ASSERT_EQ(set.size(), want.size());
  std::vector<uint32_t> order = set.in_order();
  ASSERT_EQ(order.size(), want.size());
  size_t n = 0, dense = 0;
  for (auto& [k, w] : want) {
    EndpointSketch got = set.at(order[n++]);
    ASSERT_EQ(sketch_line(got), sketch_line(w)) << w.addr;
    ASSERT_EQ(got.a.estimate(), w.a.estimate());
    dense += w.a.zeros < 256 - EndpointSketches::kSparse || w.b.zeros < 256 - EndpointSketches::kSparse;
  }
  EXPECT_GT(dense, 50u) << "the test must take endpoints past the sparse form";
  EXPECT_EQ(set.count(SketchKind::server) + set.count(SketchKind::client), want.size());
  // top(): servers by distinct clients, ties in file order — the dense merge's stable sort.
  std::vector<const EndpointSketch*> servers;
  for (auto& [k, w] : want)
    if (w.kind == SketchKind::server) servers.push_back(&w);
  std::stable_sort(servers.begin(), servers.end(),
                   [](auto* a, auto* b) { return a->a.estimate() > b->a.estimate(); });
  std::vector<uint32_t> top = set.top(SketchKind::server, 30);
  ASSERT_EQ(top.size(), 30u);
  for (size_t i = 0; i < top.size(); i++) EXPECT_EQ(set.at(top[i]).addr, servers[i]->addr) << i;
  EXPECT_EQ(set.top(SketchKind::client, 0).size(), set.count(SketchKind::client));

  // Refusals name the difference, as merge_sketch does.
  EndpointSketch other;
  other.addr = "192.0.2.9";
  other.window_ns = 600'000'000'000ull;
  other.seed = 2;
  EXPECT_THROW(set.add(other), SketchError);
  other.seed = 1;
  other.window_ns = 0;
  EXPECT_THROW(set.add(other), SketchError);
  other.window_ns = 600'000'000'000ull;
  other.kind = SketchKind::client;
  other.pseudonym_key = "0badc0de";
  other.addr = std::string(24, 'a');
  EXPECT_THROW(set.add(other), SketchError) << "clients by address, then by pseudonym";
  EXPECT_EQ(set.size(), want.size()) << "a refused line adds nothing";
  SketchSet fresh;  // nor does it set what later lines must match
  EndpointSketch server;
  server.addr = "192.0.2.1";
  fresh.add(server);
  other.seed = 2;
  EXPECT_THROW(fresh.add(other), SketchError);
  other.seed = 1;
  other.window_ns = 0;
  other.pseudonym_key.clear();
  other.addr = "192.0.2.2";
  EXPECT_NO_THROW(fresh.add(other)) << "the first client line taken is by address";
  EXPECT_EQ(fresh.size(), 2u);

  // Memory: endpoints meeting one or two peers stay sparse.
  SketchSet small;
  for (uint32_t i = 0; i < 20000; i++) {
    EndpointSketch s;
    s.addr = "10." + std::to_string(i >> 16) + "." + std::to_string((i >> 8) & 255) + "." + std::to_string(i & 255);
    s.a.add(XXH3_64bits(&i, sizeof i));
    s.b.add(XXH3_64bits(&i, sizeof i) >> 3);
    s.c.add(7);
    small.add(s);
  }
  EXPECT_LT(small.memory_bytes() / small.size(), 200u) << "dense registers alone would be " << sizeof(DenseSketches);
}

