// Micro-benchmarks of the dataplane pieces. Tables are measured in steady state at a
// stated load (flows resident / capacity) and size, both in cache and far beyond it;
// rates are reported as items (packets or lookups) per second.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "ctrl/collector.h"
#include "ctrl/flow_writer.h"
#include "dataplane/flow_core.h"
#include "features/feature_stage.h"
#include "features/signatures.h"
#include "features/ti_table.h"

#include <unistd.h>

#include <cstdio>
#include <deque>
#include "dataplane/source.h"
#include "tests/pktbuild.h"
#ifdef LS_HAVE_DPDK
#include "dataplane/filter_jit.h"
#include "tests/scratch_eal.h"
#endif

using namespace ls;
using lstest::Pkt;

namespace {

struct NullSink : RecordSink {
  uint64_t n = 0;
  void emit(const FlowEntry&, const uint8_t*, uint16_t, EndReason) override { n++; }
};

void parse_loop(benchmark::State& st, const Pkt& p, const ParseConfig& cfg = {}) {
  auto v = p.view();
  PacketMeta m;
  Counters c;
  for (auto _ : st) {
    benchmark::DoNotOptimize(parse_packet(v, LinkType::ETHERNET, cfg, m, c));
    benchmark::ClobberMemory();
  }
  st.SetItemsProcessed(st.iterations());
}

void BM_ParseTcp4(benchmark::State& st) {
  parse_loop(st, lstest::tcp4({10, 0, 0, 1}, {10, 0, 0, 2}, 1234, 443, 0x18, "GET / HTTP/1.1\r\n"));
}
BENCHMARK(BM_ParseTcp4);

// BM_ParseTcp4 behind a capture filter the packet passes (libpcap's BPF interpreter):
// 0 "tcp port 443"; 1 a longer one, as an operator narrows a backbone link.
void BM_ParseTcp4Filtered(benchmark::State& st) {
  const char* expr[] = {"tcp port 443",
                        "(tcp or udp) and not (port 53 or port 123) and net 10.0.0.0/8 and "
                        "not (tcp[tcpflags] & tcp-rst != 0) and greater 60"};
  ParseConfig cfg;
  cfg.filter = std::make_shared<const PacketFilter>(expr[st.range(0)]);
  parse_loop(st, lstest::tcp4({10, 0, 0, 1}, {10, 0, 0, 2}, 1234, 443, 0x18, "GET / HTTP/1.1\r\n"), cfg);
}
BENCHMARK(BM_ParseTcp4Filtered)->Arg(0)->Arg(1);

#ifdef LS_HAVE_DPDK
// The same with the filter JIT-compiled by DPDK, as `run`'s RX lcores run it. The EAL
// starts on first use (no hugepages, no devices, one lcore).
void BM_ParseTcp4FilteredJit(benchmark::State& st) {
  static bool eal = lstest::start_scratch_eal("lsbench");
  if (!eal) return st.SkipWithError("EAL init failed");
  const char* expr[] = {"tcp port 443",
                        "(tcp or udp) and not (port 53 or port 123) and net 10.0.0.0/8 and "
                        "not (tcp[tcpflags] & tcp-rst != 0) and greater 60"};
  std::string why;
  ParseConfig cfg;
  cfg.filter = compile_lcore_filter(expr[st.range(0)], why);
  if (!why.empty()) return st.SkipWithError(why.c_str());
  parse_loop(st, lstest::tcp4({10, 0, 0, 1}, {10, 0, 0, 2}, 1234, 443, 0x18, "GET / HTTP/1.1\r\n"), cfg);
}
BENCHMARK(BM_ParseTcp4FilteredJit)->Arg(0)->Arg(1);
#endif

void BM_ParseVxlanVlanIpv6(benchmark::State& st) {
  Pkt p;
  p.eth(0x0800).ip4({9, 9, 9, 9}, {8, 8, 8, 8}, 17).udp(1, 4789).bytes({8, 0, 0, 0}).u32(1 << 8)
      .eth(0x8100).vlan(5, 0x86DD).ip6(1, 2, 6).tcp(1, 2, 0x10).finish();
  parse_loop(st, p);
}
BENCHMARK(BM_ParseVxlanVlanIpv6);

std::vector<FlowKey> make_keys(size_t n, uint64_t seed) {
  std::mt19937_64 r(seed);
  std::vector<FlowKey> k(n);
  for (auto& x : k) {
    x = {};
    uint64_t a = r(), b = r();
    std::memcpy(x.lo, &a, 4);
    std::memcpy(x.hi, &b, 4);
    x.lo_port = uint16_t(r());
    x.hi_port = 443;
    x.proto = 6;
    x.ip_ver = 4;
  }
  return k;
}

void BM_HashKey(benchmark::State& st) {
  auto keys = make_keys(1024, 1);
  size_t i = 0;
  for (auto _ : st) {
    benchmark::DoNotOptimize(hash_key(keys[i++ & 1023], 42));
  }
  st.SetItemsProcessed(st.iterations());
}
BENCHMARK(BM_HashKey);

// Lookup hits at load = resident / capacity, random order, with burst prefetch
// (range(1) = 1) or without.
void BM_TableLookup(benchmark::State& st) {
  const uint32_t cap = uint32_t(st.range(0));
  const uint32_t resident = cap / 4 * 3;  // 75 % of the pool
  const bool prefetch = st.range(1);
  TableConfig tc;
  tc.capacity = cap;
  tc.payload_bytes = 0;
  tc.hash_seed = 7;
  Counters c;
  NullSink s;
  FlowTable t(tc, c, s);
  auto keys = make_keys(resident, 2);
  std::vector<uint64_t> h(resident);
  for (uint32_t i = 0; i < resident; i++) {
    h[i] = hash_key(keys[i], 7);
    t.insert(keys[i], h[i], 1);
  }
  std::vector<uint32_t> order(1 << 16);
  std::mt19937 r(3);
  for (auto& o : order) o = r() % resident;
  size_t pos = 0;
  uint64_t found = 0;
  for (auto _ : st) {
    constexpr int B = 32;
    const uint32_t* o = &order[pos];
    pos = (pos + B) & (order.size() - 1);
    if (prefetch) {
      for (int i = 0; i < B; i++) t.prefetch_bucket(h[o[i]]);
      for (int i = 0; i < B; i++) t.prefetch_entry(keys[o[i]], h[o[i]]);
    }
    for (int i = 0; i < B; i++) found += t.find(keys[o[i]], h[o[i]]) != FlowTable::kNone;
  }
  if (found != uint64_t(st.iterations()) * 32) st.SkipWithError("lookup missed a resident key");
  st.SetItemsProcessed(st.iterations() * 32);
  st.counters["table_MB"] = double(t.memory_bytes()) / 1e6;
}
BENCHMARK(BM_TableLookup)->ArgsProduct({{1 << 14, 1 << 22}, {0, 1}});

// Steady-state churn: insert a new flow and remove an old one, table at ~75 % load.
void BM_TableInsertRemove(benchmark::State& st) {
  const uint32_t cap = uint32_t(st.range(0));
  TableConfig tc;
  tc.capacity = cap;
  tc.payload_bytes = 0;
  tc.hash_seed = 7;
  tc.idle_timeout_ns = 1;  // every access of an old entry expires it
  Counters c;
  NullSink s;
  FlowTable t(tc, c, s);
  const uint32_t resident = cap / 4 * 3;
  auto keys = make_keys(resident * 2, 4);
  std::vector<uint64_t> h(keys.size());
  std::vector<uint32_t> idx(keys.size(), FlowTable::kNone);
  for (size_t i = 0; i < keys.size(); i++) h[i] = hash_key(keys[i], 7);
  for (uint32_t i = 0; i < resident; i++) idx[i] = t.insert(keys[i], h[i], 1);
  size_t in = resident, out = 0;
  for (auto _ : st) {
    t.check_expired(idx[out], 100);  // removes the oldest (expired on access)
    out = out + 1 == keys.size() ? 0 : out + 1;
    idx[in] = t.insert(keys[in], h[in], 1);
    in = in + 1 == keys.size() ? 0 : in + 1;
  }
  st.SetItemsProcessed(st.iterations());
}
BENCHMARK(BM_TableInsertRemove)->Arg(1 << 14)->Arg(1 << 22);

// The whole per-core stage from memory: parse + key + hash + lookup/insert + update +
// expiry sweep, over range(0) flows visited uniformly at random (4096 packet templates,
// each pass rewritten to new addresses with the replay loop rewrite), both directions,
// 64 B payload capture on, table capacity 2 × flows.
void BM_CorePipeline(benchmark::State& st) {
  const uint32_t flows = uint32_t(st.range(0));
  constexpr uint32_t kTemplates = 4096;
  const uint32_t per = std::min(flows, kTemplates);
  const uint32_t passes = (flows + per - 1) / per;
  std::vector<Pkt> pkts;
  std::mt19937 r(5);
  for (uint32_t i = 0; i < kTemplates; i++) {
    uint32_t f = i % per;
    uint8_t a = uint8_t(f), b = uint8_t(f >> 8);
    if (r() & 1) pkts.push_back(lstest::tcp4({172, 16, 0, 1}, {10, 1, b, a}, 443, 40000, 0x10, "0123456789"));
    else pkts.push_back(lstest::tcp4({10, 1, b, a}, {172, 16, 0, 1}, 40000, 443, 0x10, "0123456789"));
  }
  std::shuffle(pkts.begin(), pkts.end(), r);
  CoreConfig cfg;
  cfg.table.capacity = std::max<uint32_t>(flows * 2, 1024);
  cfg.table.hash_seed = 9;
  NullSink s;
  FlowCore core(cfg, s);
  std::vector<PacketView> v(pkts.size());
  for (size_t i = 0; i < pkts.size(); i++) v[i] = pkts[i].view(0);
  uint64_t ts = 1'000'000'000'000ull, lcg = 1;
  size_t pos = 0;
  for (auto _ : st) {
    for (int i = 0; i < 32; i++) {
      v[pos + i].ts_ns = (ts += 100);
      lcg = lcg * 6364136223846793005ull + 1442695040888963407ull;
      v[pos + i].rewrite = uint32_t(((lcg >> 32) * passes) >> 32);
    }
    core.process_raw(&v[pos], 32);
    pos = (pos + 32) & (kTemplates - 1);
  }
  st.SetItemsProcessed(st.iterations() * 32);
  st.counters["flows"] = double(core.table.size());
  st.counters["created"] = double(core.ctr.get(Ctr::flows_created));
  st.counters["evicted"] = double(core.ctr.get(Ctr::flows_evicted));
  st.counters["idle"] = double(core.ctr.get(Ctr::flows_idle_timeout));
}
BENCHMARK(BM_CorePipeline)->Arg(1000)->Arg(200000)->Arg(4000000);

// Expiry sweep cost per visited slot, nothing expiring. range(0): percent of the slots up
// to the high-water mark still holding a flow (100: full; 1: what a capture's quiet
// segment after a busy one, or a clock-jump flush, leaves — holes the sweep skips).
void BM_ExpirySweep(benchmark::State& st) {
  TableConfig tc;
  tc.capacity = 1 << 20;
  tc.payload_bytes = 0;
  tc.sweep_period_ns = 1'000'000'000;
  tc.idle_timeout_ns = 1'000'000'000'000'000'000ull;  // nothing expires however long it runs
  tc.active_timeout_ns = 0;
  Counters c;
  NullSink s;
  FlowTable t(tc, c, s);
  auto keys = make_keys(tc.capacity / 2, 6);
  uint64_t now = 1'000'000'000;
  std::vector<uint32_t> idx;
  for (auto& k : keys) idx.push_back(t.insert(k, hash_key(k, 0), now));
  for (size_t i = 0; i < idx.size(); i++)
    if (i % 100 >= size_t(st.range(0))) t.end(idx[i], EndReason::FLUSH);
  const uint32_t kept = t.size();
  t.advance_clock(now, 0);
  for (auto _ : st) {
    now += 1'000'000;  // 1 ms of packet time → 1/1000 of the table
    t.advance_clock(now, 0);
    t.expire();
  }
  if (t.size() != kept) st.SkipWithError("flows expired during the run");
  st.SetItemsProcessed(st.iterations() * (tc.capacity / 2) / 1000);
}
BENCHMARK(BM_ExpirySweep)->Arg(100)->Arg(1);

// An IPv4 TCP record to port 443, opened by the low address, `pkts` and `bytes` each way.
FlowRecord https_record(uint32_t pkts, uint64_t bytes) {
  FlowRecord r{};
  r.e.key.ip_ver = 4;
  r.e.key.proto = 6;
  r.e.key.hi_port = 443;
  r.e.init_lo = 1;
  r.e.pkts[0] = r.e.pkts[1] = pkts;
  r.e.bytes[0] = r.e.bytes[1] = bytes;
  return r;
}

// Feature stage per flow record: timing features + pair lookup + periodicity over a full
// 32-contact history, range(0) pairs in the table.
void BM_FeatureStage(benchmark::State& st) {
  const uint32_t pairs = uint32_t(st.range(0));
  FeatureConfig fc;
  fc.pair_capacity = fc.first_contact_capacity = pairs * 2;
  FeatureStage fs(fc);
  FlowRecord r = https_record(6, 3000);
  r.e.flags[0] = 0x1B;
  FeatureRow row;
  uint64_t t = 1'000'000'000'000ull;
  uint32_t i = 0;
  for (auto _ : st) {
    uint32_t p = i++ % pairs;
    std::memcpy(r.e.key.lo, &p, 4);
    t += 1'000'000'000ull / pairs * 2;
    r.e.first_ns = t;
    r.e.last_ns = t + 100'000'000;
    fs.compute(r, row);
    benchmark::DoNotOptimize(row.pair.score);
  }
  st.SetItemsProcessed(st.iterations());
}
BENCHMARK(BM_FeatureStage)->Arg(1000)->Arg(100000);

// The pair, server and client tables as replay drives them: records in holds of 32, each
// one's first prefetch step when it arrives, the second for the whole hold, then the
// features (no signatures, TI or periodicity history to speak of: range(0) distinct
// clients contacting range(0) / 4 servers, so most contacts are a pair's first or second).
// Tables at the defaults' capacities; 1 << 20 endpoints keeps every set far out of cache.
void BM_FeatureTablesPrefetched(benchmark::State& st) {
  const uint32_t n = uint32_t(st.range(0));
  FeatureConfig fc;
  fc.hash_seed = 5;
  FeatureStage fs(fc);
  std::vector<FlowRecord> recs(1 << 16);
  std::mt19937 g(9);
  for (auto& r : recs) {
    r.e.key.ip_ver = 4;
    r.e.key.proto = 6;
    uint32_t cli = 0x0a000000u + g() % n, srv = 0xc0000000u + g() % (n / 4 + 1);
    std::memcpy(r.e.key.lo, &cli, 4);
    std::memcpy(r.e.key.hi, &srv, 4);
    r.e.key.lo_port = uint16_t(1024 + g() % 60000);
    r.e.key.hi_port = 443;
    r.e.init_lo = 1;
    r.e.pkts[0] = r.e.pkts[1] = 4;
    r.e.bytes[0] = r.e.bytes[1] = 800;
  }
  constexpr size_t kHold = 32;
  std::vector<FeatureRow> rows(kHold);
  uint64_t t = 1'700'000'000'000'000'000ull;
  size_t pos = 0;
  for (auto _ : st) {
    FlowRecord* hold = &recs[pos];
    pos = (pos + kHold) & (recs.size() - 1);
    for (size_t i = 0; i < kHold; i++) {
      hold[i].e.first_ns = t += 1'000'000;
      hold[i].e.last_ns = t + 50'000'000;
      fs.prefetch(hold[i], false);
      fs.prefetch_client(hold[i], false);
    }
    for (size_t i = 0; i < kHold; i++) {
      fs.prefetch(hold[i], true);
      fs.prefetch_client(hold[i], true);
    }
    for (size_t i = 0; i < kHold; i++) fs.compute(hold[i], rows[i]);
    benchmark::DoNotOptimize(rows[kHold - 1].pair.contacts);
  }
  st.SetItemsProcessed(st.iterations() * kHold);
}
BENCHMARK(BM_FeatureTablesPrefetched)->Arg(1 << 10)->Arg(1 << 20);

// --sketches-every in run: a worker formats its endpoints' sketch lines 64 table slots
// between two bursts of records. range(0) clients, each contacting 3 of range(0) / 8
// servers (sparse counters), every 64th of them 40 (dense); the servers meet ≈ 29
// clients each (dense). One item = one line: ns per item × 64 is what a slice holds a
// worker up for. range(1): clients by address (0), by keyed pseudonym (1: one
// HMAC-SHA256 a client line), or none (2).
// A feature stage holding n clients and n / 8 servers as described above.
std::unique_ptr<FeatureStage> sketch_bench_stage(uint32_t n, SketchClients clients) {
  FeatureConfig fc;
  fc.hash_seed = 5;
  fc.client_capacity = fc.server_capacity = 2 * n;
  fc.window_ns = 3'600'000'000'000ull;  // pseudonyms need one; every variant has it
  fc.sketch_clients = clients;
  fc.pseudonym_secret = "bench-secret-0123456789";
  auto fs = std::make_unique<FeatureStage>(fc);
  FlowRecord r = https_record(4, 800);
  FeatureRow row;
  uint64_t t = 1'700'000'000'000'000'000ull;
  std::mt19937 g(3);
  for (uint32_t c = 0; c < n; c++) {
    uint32_t cli = 0x0a000000u + c;
    std::memcpy(r.e.key.lo, &cli, 4);
    for (uint32_t k = 0; k < (c % 64 ? 3u : 40u); k++) {
      uint32_t srv = 0xc0000000u + g() % (n / 8 + 1);
      std::memcpy(r.e.key.hi, &srv, 4);
      r.e.first_ns = r.e.last_ns = t += 1000;
      fs->compute(r, row);
    }
  }
  return fs;
}

void BM_SketchLines(benchmark::State& st) {
  const uint32_t n = uint32_t(st.range(0));
  std::unique_ptr<FeatureStage> stage = sketch_bench_stage(n, SketchClients(st.range(1)));
  FeatureStage& fs = *stage;
  std::string text;
  size_t lines = 0;
  for (auto _ : st) {
    text.clear();
    uint32_t pos = 0;
    while (!fs.sketch_lines(text, pos, 64, lines)) {
    }
    benchmark::DoNotOptimize(text.data());
  }
  st.SetItemsProcessed(int64_t(lines));
  st.counters["bytes_per_line"] = double(text.size()) / double(lines / st.iterations());
  FeatureCounters c = fs.counters();  // endpoints holding a dense block
  st.counters["dense_share"] = double(c.servers.overflowed + c.clients.overflowed) / double(lines / st.iterations());
}
BENCHMARK(BM_SketchLines)->Args({1 << 14, 0})->Args({1 << 14, 1})->Args({1 << 14, 2})->Unit(benchmark::kMillisecond);

// `sketches merge` reading those lines (by address): range(0) 0 = parse_sketch_line (lines
// as written take the fast reader), 1 = the JSON reader alone. One item = one line.
void BM_SketchRead(benchmark::State& st) {
  std::unique_ptr<FeatureStage> fs = sketch_bench_stage(1 << 14, SketchClients::address);
  std::string text;
  size_t n = 0;
  for (uint32_t pos = 0; !fs->sketch_lines(text, pos, 64, n);) {
  }
  std::vector<std::string> lines;
  for (size_t at = 0, nl; (nl = text.find('\n', at)) != std::string::npos; at = nl + 1)
    lines.push_back(text.substr(at, nl - at));
  for (auto _ : st)
    for (const std::string& l : lines) {
      EndpointSketch s = st.range(0) ? parse_sketch_line_json(l) : parse_sketch_line(l);
      benchmark::DoNotOptimize(s.a.sum);
    }
  st.SetItemsProcessed(int64_t(st.iterations() * lines.size()));
}
BENCHMARK(BM_SketchRead)->Arg(0)->Arg(1)->Unit(benchmark::kMillisecond);

// 4,096 records with varied addresses, ports, sizes and timing (periodic pairs among
// them), and their feature rows, so numbers in the text benchmarks have realistic widths.
struct TextInput {
  static constexpr size_t kN = 4096;
  FeatureConfig fc;
  FeatureStage fs{fc};
  std::vector<FlowRecord> recs{kN};
  std::vector<FeatureRow> rows{kN};
  TextInput() {
    std::mt19937 g(3);
    uint64_t t = 1'700'000'000'000'000'000ull;
    for (size_t i = 0; i < kN; i++) {
      FlowRecord& r = recs[i];
      r.e.key.ip_ver = i % 8 ? 4 : 6;
      r.e.key.proto = i % 3 ? 6 : 17;
      uint32_t cli = 0x0a000000u + g() % 512, srv = 0xc0a80000u + g() % 64;
      std::memcpy(r.e.key.lo, &cli, 4);
      std::memcpy(r.e.key.hi, &srv, 4);
      r.e.key.lo_port = uint16_t(1024 + g() % 60000);
      r.e.key.hi_port = uint16_t(i % 4 ? 443 : 53);
      r.e.init_lo = 1;
      r.e.pkts[0] = 1 + g() % 40;
      r.e.pkts[1] = g() % 40;
      r.e.bytes[0] = r.e.pkts[0] * (60 + g() % 1400);
      r.e.bytes[1] = r.e.pkts[1] * (60 + g() % 1400);
      r.e.flags[0] = 0x1B;
      r.e.flags[1] = 0x12;
      r.e.iat_min_us = uint32_t(g() % 1000);
      r.e.iat_max_us = r.e.iat_min_us + uint32_t(g() % 3'000'000);
      r.e.iat_sq = double(g() % 1'000'000) * 1e6;
      r.e.size_sq = double(r.e.bytes[0] + r.e.bytes[1]) * 800;
      r.e.size_min = 60;
      r.e.size_max = uint16_t(60 + g() % 1400);
      t += 1 + g() % 500'000'000;
      r.e.first_ns = t;
      r.e.last_ns = t + g() % 30'000'000'000ull;
      r.why = EndReason(g() % 4);
      fs.compute(r, rows[i]);
    }
  }
};

// One feature CSV row per iteration (FeatureStage::csv_row, the text `--features-out`
// writes).
void BM_FeatureCsvRow(benchmark::State& st) {
  static TextInput in;
  std::string line;
  size_t i = 0, bytes = 0;
  for (auto _ : st) {
    line.clear();
    FeatureStage::csv_row(in.rows[i++ % TextInput::kN], nullptr, line);
    bytes += line.size();
    benchmark::DoNotOptimize(line.data());
  }
  st.SetItemsProcessed(st.iterations());
  st.counters["bytes_per_row"] = double(bytes) / double(st.iterations());
}
BENCHMARK(BM_FeatureCsvRow);

// One flow record as a JSON line per iteration (format_record, what `--flows-out` writes;
// without the payload hex).
void BM_FlowRecordJson(benchmark::State& st) {
  static TextInput in;
  std::string line;
  size_t i = 0, bytes = 0;
  for (auto _ : st) {
    line.clear();
    format_record(in.recs[i++ % TextInput::kN], false, line);
    bytes += line.size();
    benchmark::DoNotOptimize(line.data());
  }
  st.SetItemsProcessed(st.iterations());
  st.counters["bytes_per_record"] = double(bytes) / double(st.iterations());
}
BENCHMARK(BM_FlowRecordJson);

// Threat-intel lookups: range(0) random /32 entries plus 1/10 as many /24s in one feed,
// looked up at random addresses (~half hits); the interval map is binary-searched.
void BM_TiLookup(benchmark::State& st) {
  const uint32_t n = uint32_t(st.range(0));
  std::string path = "/tmp/ls_bench_ti_" + std::to_string(getpid()) + ".netset";
  {
    FILE* f = std::fopen(path.c_str(), "w");
    std::mt19937 r(11);
    for (uint32_t i = 0; i < n; i++) std::fprintf(f, "%u.%u.%u.%u\n", unsigned(r() & 255), unsigned(r() & 255), unsigned(r() & 255), unsigned(r() & 255));
    for (uint32_t i = 0; i < n / 10; i++) std::fprintf(f, "%u.%u.%u.0/24\n", unsigned(r() & 255), unsigned(r() & 255), unsigned(r() & 255));
    std::fclose(f);
  }
  auto t = TiTable::load({path});
  std::remove(path.c_str());
  std::vector<uint32_t> q(1 << 16);
  std::mt19937 r(12);
  for (auto& x : q) x = r();
  size_t i = 0, hits = 0;
  TiHit h;
  for (auto _ : st) {
    uint32_t a = q[i++ & 0xFFFF];
    uint8_t b[4] = {uint8_t(a >> 24), uint8_t(a >> 16), uint8_t(a >> 8), uint8_t(a)};
    hits += t->lookup(b, 4, h);
  }
  benchmark::DoNotOptimize(hits);
  st.SetItemsProcessed(st.iterations());
  st.counters["table_MB"] = double(t->memory_bytes()) / 1e6;
}
BENCHMARK(BM_TiLookup)->Arg(10000)->Arg(1000000);

// Payload signatures: the shipped rules (features/rules/default.rules) against the payload
// prefixes the flow table keeps (64 B per direction), one record (up to two block-mode
// scans) per item. range(0) = 0: the records of the real application mix in shared data
// (skipped when absent); 1: synthetic — a third HTTP requests, a third TLS-like binary,
// a third random bytes, so the literal prefilters see both text and noise.
// LINESIGHT_BENCH_RULES=FILE measures another rule file on the same prefixes.
struct CollectSink : RecordSink {
  std::deque<FlowRecord> recs;
  void emit(const FlowEntry& e, const uint8_t* pay, uint16_t cap, EndReason why) override {
    recs.emplace_back().fill(e, pay, cap, why, 0, {});
  }
};

void BM_Signatures(benchmark::State& st) {
  CollectSink sink;
  if (st.range(0) == 0) {
    const std::string mix = LS_SOURCE_ROOT "/../shared/data/bench/ndpi-ether-concat.pcap";
    if (access(mix.c_str(), R_OK) != 0) {
      st.SkipWithError(("capture absent: " + mix).c_str());
      return;
    }
    CoreConfig cfg;
    cfg.table.capacity = 1 << 17;
    FlowCore core(cfg, sink);
    auto src = open_pcap_files({mix});
    Arena arena;
    PacketView v[64];
    while (uint32_t n = src->next_burst(v, 64, arena)) core.process_raw(v, n);
    core.finish();
  } else {
    std::mt19937 g(21);
    const char* paths[] = {"/", "/index.html", "/api/v2/items?id=", "/static/app.js", "/login"};
    for (int i = 0; i < 4096; i++) {
      FlowRecord& r = sink.recs.emplace_back();
      r.e.key.proto = 6;
      for (int d = 0; d < 2; d++) {
        std::string p;
        if (i % 3 == 0 && d == 0) {
          p = std::string("GET ") + paths[g() % 5] + std::to_string(g()) + " HTTP/1.1\r\nHost: example.org\r\n";
        } else if (i % 3 == 1) {
          p = "\x16\x03\x01";
          while (p.size() < 64) p += char(g());
        } else {
          while (p.size() < 64) p += char(g());
        }
        r.paylen[d] = uint16_t(std::min<size_t>(p.size(), 64));
        std::memcpy(r.payload[d], p.data(), r.paylen[d]);
      }
    }
  }
  const char* file = std::getenv("LINESIGHT_BENCH_RULES");  // an operator's own rule file
  auto rules = RuleSet::load_file(file ? file : LS_SOURCE_ROOT "/features/rules/default.rules");
  SignatureMatcher m(rules);
  std::vector<const FlowRecord*> recs;
  uint64_t scanned = 0;
  for (const FlowRecord& r : sink.recs)
    if (r.paylen[0] || r.paylen[1]) {
      recs.push_back(&r);
      scanned += r.paylen[0] + r.paylen[1];
    }
  uint64_t hits = 0;
  size_t i = 0;
  for (auto _ : st) {
    hits += m.match(*recs[i]) != 0;
    if (++i == recs.size()) i = 0;
  }
  st.SetItemsProcessed(st.iterations());
  st.counters["records"] = double(recs.size());
  st.counters["bytes_per_record"] = double(scanned) / double(recs.size());
  st.counters["hit_share"] = double(hits) / double(st.iterations());
}
BENCHMARK(BM_Signatures)->Arg(0)->Arg(1);

// Router flow input (ctrl/collector.h): export datagrams decoded and joined into flow
// records, in exported records (uniflows) per second. range(0) = 5, 9 or 10 (IPFIX):
// 32,768 TCP conversations, each exported both ways in consecutive records, 30 records a
// datagram (v5's maximum; v9 and IPFIX carry the same fields, IPFIX with absolute ms
// times), starts spread over 60 s. An iteration is one pass over every datagram; the next
// pass is 60 s later (its times moved untimed), so with the 30 s idle timeout every pass
// creates, joins and expires every flow.
struct CountConsumer : RecordConsumer {
  uint64_t n = 0;
  void consume(const FlowRecord&) override { n++; }
};

struct Gram {
  std::vector<uint8_t> b;
  void u8(uint8_t v) { b.push_back(v); }
  void u16(uint16_t v) { u8(uint8_t(v >> 8)), u8(uint8_t(v)); }
  void u32(uint32_t v) { u16(uint16_t(v >> 16)), u16(uint16_t(v)); }
  void u64(uint64_t v) { u32(uint32_t(v >> 32)), u32(uint32_t(v)); }
  void set_u16(size_t at, uint16_t v) { b[at] = uint8_t(v >> 8), b[at + 1] = uint8_t(v); }
  uint64_t get(size_t at, int n) const {
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v = v << 8 | b[at + size_t(i)];
    return v;
  }
  void put(size_t at, int n, uint64_t v) {
    for (int i = n - 1; i >= 0; i--, v >>= 8) b[at + size_t(i)] = uint8_t(v);
  }
};

void BM_Collector(benchmark::State& st) {
  const int ver = int(st.range(0));
  constexpr uint32_t kConv = 32768, kPerGram = 30, kUptimeMs = 100'000'000;
  constexpr uint64_t kT0Ms = 1'700'000'000'000ull, kPassMs = 60'000;
  const uint32_t export_s = uint32_t((kT0Ms + kPassMs) / 1000);  // after the pass's last flow
  // v9 / IPFIX template 256: src, dst, ports, protocol, flags, packets, octets, first, last.
  const uint16_t t_first = ver == 10 ? 152 : 22, t_last = ver == 10 ? 153 : 21, t_len = ver == 10 ? 8 : 4;
  const uint16_t fields[][2] = {{8, 4}, {12, 4}, {7, 2}, {11, 2}, {4, 1}, {6, 1}, {2, 4}, {1, 4}, {t_first, t_len},
                                {t_last, t_len}};
  std::vector<Gram> grams;
  std::vector<size_t> time_at;  // IPFIX: where each record's absolute start / end ms are
  if (ver != 5) {
    Gram t;
    t.u16(uint16_t(ver)), t.u16(ver == 10 ? 0 : 1), t.u32(ver == 10 ? export_s : kUptimeMs);
    if (ver == 9) t.u32(export_s);
    t.u32(0), t.u32(1);
    t.u16(ver == 10 ? 2 : 0), t.u16(uint16_t(4 + 4 + 4 * std::size(fields))), t.u16(256), t.u16(uint16_t(std::size(fields)));
    for (auto& f : fields) t.u16(f[0]), t.u16(f[1]);
    if (ver == 10) t.set_u16(2, uint16_t(t.b.size()));
    grams.push_back(t);
  }
  const size_t first_data = grams.size();
  for (uint32_t i = 0; i < 2 * kConv; i += kPerGram) {
    Gram g;
    uint32_t n = std::min(kPerGram, 2 * kConv - i), seq = i / kPerGram;
    g.u16(uint16_t(ver));
    if (ver == 5) {
      g.u16(uint16_t(n)), g.u32(kUptimeMs), g.u32(export_s), g.u32(0), g.u32(i), g.u16(0), g.u16(0);
    } else if (ver == 9) {
      g.u16(uint16_t(n)), g.u32(kUptimeMs), g.u32(export_s), g.u32(seq), g.u32(1);
      g.u16(256), g.u16(uint16_t(4 + n * 30));
    } else {
      g.u16(0), g.u32(export_s), g.u32(i), g.u32(1);
      g.u16(256), g.u16(uint16_t(4 + n * 38));
    }
    for (uint32_t k = i; k < i + n; k++) {
      uint32_t c = k / 2, client = 0x0A000000u | c, server = 0xC6330000u | (c % 4096);
      uint16_t cport = uint16_t(1024 + c % 60000);
      bool fwd = k % 2 == 0;
      uint64_t start = kT0Ms + uint64_t(c) * kPassMs / kConv, end = start + 500;
      g.u32(fwd ? client : server), g.u32(fwd ? server : client);
      if (ver == 5) g.u32(0), g.u16(1), g.u16(2);  // next hop, interfaces
      if (ver == 5) {
        g.u32(10), g.u32(1500);
        g.u32(uint32_t(kUptimeMs - (kT0Ms + kPassMs - start))), g.u32(uint32_t(kUptimeMs - (kT0Ms + kPassMs - end)));
        g.u16(fwd ? cport : 443), g.u16(fwd ? 443 : cport), g.u8(0), g.u8(0x1b), g.u8(6), g.u8(0);
        g.u16(0), g.u16(0), g.u8(24), g.u8(24), g.u16(0);
        continue;
      }
      g.u16(fwd ? cport : 443), g.u16(fwd ? 443 : cport), g.u8(6), g.u8(0x1b), g.u32(10), g.u32(1500);
      if (ver == 9) {
        g.u32(uint32_t(kUptimeMs - (kT0Ms + kPassMs - start))), g.u32(uint32_t(kUptimeMs - (kT0Ms + kPassMs - end)));
      } else {
        time_at.push_back(grams.size() << 16 | g.b.size());
        g.u64(start), g.u64(end);
      }
    }
    if (ver == 10) g.set_u16(2, uint16_t(g.b.size()));
    grams.push_back(g);
  }
  CoreConfig cfg;
  cfg.table.capacity = 1 << 17;
  CountConsumer out;
  Collector col(cfg, out);
  // Second argument 1: a --filter every record passes (its cost per record).
  if (st.range(1)) col.set_filter(std::make_shared<const PacketFilter>("tcp port 443 and not net 192.0.2.0/24"));
  const std::string from = "192.0.2.1:2055";
  for (size_t k = 0; k < first_data; k++) col.datagram(grams[k].b.data(), grams[k].b.size(), from);  // templates
  uint64_t uniflows = 0;
  bool first_pass = true;
  for (auto _ : st) {
    st.PauseTiming();
    if (!first_pass) {  // the same flows, one pass later
      if (ver == 10) {
        for (size_t at : time_at) {
          Gram& g = grams[at >> 16];
          size_t o = at & 0xFFFF;
          g.put(o, 8, g.get(o, 8) + kPassMs);
          g.put(o + 8, 8, g.get(o + 8, 8) + kPassMs);
        }
      } else {
        for (size_t k = first_data; k < grams.size(); k++) grams[k].put(8, 4, grams[k].get(8, 4) + kPassMs / 1000);
      }
    }
    first_pass = false;
    st.ResumeTiming();
    for (size_t k = first_data; k < grams.size(); k++) col.datagram(grams[k].b.data(), grams[k].b.size(), from);
    uniflows += 2 * kConv;
  }
  st.SetItemsProcessed(int64_t(uniflows));
  st.counters["filtered"] = double(col.netflow().get(NfCtr::records_filtered));
  st.counters["records_per_flow"] = out.n ? double(col.netflow().get(NfCtr::records)) / double(out.n) : 0;
  st.counters["bad"] = double(col.netflow().get(NfCtr::data_without_template) + col.netflow().get(NfCtr::bad_length) +
                              col.netflow().get(NfCtr::bad_set_length));
}
BENCHMARK(BM_Collector)->Args({5, 0})->Args({9, 0})->Args({10, 0})->Args({10, 1})->Unit(benchmark::kMillisecond);

// sFlow v5 as a switch sends it: datagrams of 8 flow samples, each a 128-byte Ethernet
// header of a TCP packet of one of 32,768 conversations (both directions), sampling 1 in
// 1,000. Samples per second decoded, parsed and joined into the flow table.
void BM_CollectorSflow(benchmark::State& st) {
  constexpr uint32_t kConv = 32768, kPerGram = 8;
  std::vector<Gram> grams;
  for (uint32_t i = 0, seq = 1; i < 2 * kConv; i += kPerGram, seq++) {
    Gram g;
    g.u32(5), g.u32(1), g.u32(0xC0000201), g.u32(0), g.u32(seq), g.u32(100'000 + seq), g.u32(kPerGram);
    for (uint32_t k = i; k < i + kPerGram; k++) {
      uint32_t c = k / 2;
      bool fwd = k % 2 == 0;
      uint8_t cl[4] = {10, uint8_t(c >> 16), uint8_t(c >> 8), uint8_t(c)}, sv[4] = {198, 51, uint8_t(c >> 12), uint8_t(c)};
      lstest::Pkt p;
      p.eth(0x0800).ip4({fwd ? cl[0] : sv[0], fwd ? cl[1] : sv[1], fwd ? cl[2] : sv[2], fwd ? cl[3] : sv[3]},
                        {fwd ? sv[0] : cl[0], fwd ? sv[1] : cl[1], fwd ? sv[2] : cl[2], fwd ? sv[3] : cl[3]}, 6);
      uint16_t cport = uint16_t(1024 + c % 60000);
      p.tcp(fwd ? cport : 443, fwd ? 443 : cport, 0x18).zeros(128 - 54).finish();
      p.put16(14 + 2, 1400);  // the packet was 1,414 bytes; the agent kept 128
      g.u32(1), g.u32(uint32_t(32 + 8 + 16 + p.b.size()));  // flow sample
      g.u32(seq * kPerGram + k - i), g.u32(3), g.u32(1000), g.u32(1000 * k), g.u32(0), g.u32(1), g.u32(2), g.u32(1);
      g.u32(1), g.u32(uint32_t(16 + p.b.size()));  // raw packet header
      g.u32(1), g.u32(1418), g.u32(4), g.u32(uint32_t(p.b.size()));
      for (uint8_t x : p.b) g.u8(x);
    }
    grams.push_back(g);
  }
  CoreConfig cfg;
  cfg.table.capacity = 1 << 17;
  CountConsumer out;
  Collector col(cfg, out);
  const std::string from = "192.0.2.1:6343";
  uint64_t samples = 0;
  for (auto _ : st) {
    for (const Gram& g : grams) col.datagram(g.b.data(), g.b.size(), from);
    samples += 2 * kConv;
  }
  st.SetItemsProcessed(int64_t(samples));
  st.counters["flows"] = double(col.flows_active());
  st.counters["bad"] = double(col.netflow().get(NfCtr::sflow_bad_length) + col.netflow().get(NfCtr::sflow_samples_unparsed));
}
BENCHMARK(BM_CollectorSflow)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
