#include <gtest/gtest.h>
#include <pcap/pcap.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include "ctrl/flow_writer.h"
#include "dataplane/clock.h"
#include "dataplane/replay.h"
#include "dataplane/text.h"
#include "tests/pktbuild.h"

using namespace ls;
using lstest::Pkt;

namespace {

constexpr uint64_t S = 1'000'000'000ull;

std::string tmp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() /
          ("ls_test_" + std::to_string(getpid()) + "_" + name)).string();
}

// Writes a nanosecond pcap with `flows` UDP/TCP conversations of `per` packets each,
// spread over `span_ns`.
std::string write_pcap(const std::string& name, int flows, int per, uint64_t span_ns) {
  std::string path = tmp_path(name);
  pcap_t* d = pcap_open_dead_with_tstamp_precision(DLT_EN10MB, 65535, PCAP_TSTAMP_PRECISION_NANO);
  pcap_dumper_t* w = pcap_dump_open(d, path.c_str());
  EXPECT_NE(w, nullptr);
  uint64_t n = uint64_t(flows) * per, i = 0;
  for (int r = 0; r < per; r++) {
    for (int f = 0; f < flows; f++, i++) {
      uint8_t a = uint8_t(f & 0xFF), b = uint8_t(f >> 8);
      bool rev = r % 2;
      Pkt p = f % 3 ? lstest::udp4(rev ? std::initializer_list<uint8_t>{172, 16, 0, 1} : std::initializer_list<uint8_t>{10, b, a, 1},
                                   rev ? std::initializer_list<uint8_t>{10, b, a, 1} : std::initializer_list<uint8_t>{172, 16, 0, 1},
                                   rev ? 53 : 40000, rev ? 40000 : 53, "q")
                    : lstest::tcp4(rev ? std::initializer_list<uint8_t>{172, 16, 0, 1} : std::initializer_list<uint8_t>{10, b, a, 1},
                                   rev ? std::initializer_list<uint8_t>{10, b, a, 1} : std::initializer_list<uint8_t>{172, 16, 0, 1},
                                   rev ? 443 : 50000, rev ? 50000 : 443, 0x10, "data");
      uint64_t ts = 1'600'000'000 * S + (n > 1 ? span_ns * i / (n - 1) : 0);
      pcap_pkthdr h{};
      h.ts.tv_sec = time_t(ts / S);
      h.ts.tv_usec = suseconds_t(ts % S);
      h.caplen = h.len = uint32_t(p.b.size());
      pcap_dump(reinterpret_cast<u_char*>(w), &h, p.b.data());
    }
  }
  pcap_dump_close(w);
  pcap_close(d);
  return path;
}

struct Lines : RecordConsumer {
  std::vector<std::string> v;
  std::string s;
  void consume(const FlowRecord& r) override {
    FlowRecord c = r;
    c.core = 0;  // which core handled a flow is not part of its identity
    s.clear();
    format_record(c, true, s);
    v.push_back(s);
  }
  std::vector<std::string> sorted() const {
    auto x = v;
    std::sort(x.begin(), x.end());
    return x;
  }
};

CoreConfig cfg_small() {
  CoreConfig c;
  c.table.capacity = 1 << 14;
  c.table.hash_seed = 1;
  return c;
}

TEST(Replay, MultiCoreGivesTheSameRecordsAsOneCore) {
  auto path = write_pcap("multi.pcap", 600, 6, 2 * S);
  Lines one, three;
  auto s1 = open_pcap_files({path});
  auto r1 = run_replay(*s1, cfg_small(), one, {});
  auto s3 = open_pcap_files({path});
  ReplayOptions o;
  o.cores = 3;
  auto r3 = run_replay(*s3, cfg_small(), three, o);
  EXPECT_EQ(one.v.size(), 600u);
  EXPECT_EQ(one.sorted(), three.sorted());
  EXPECT_EQ(r1.total.get(Ctr::packets), 3600u);
  EXPECT_EQ(r3.total.get(Ctr::packets), 3600u);
  ASSERT_EQ(r3.per_core.size(), 3u);
  for (auto& c : r3.per_core) EXPECT_GT(c.get(Ctr::packets), 600u);  // every core got work
  std::filesystem::remove(path);
}

// The model scores what one consume_batch() holds: records must reach the consumer in
// batches on every core count, each prefetched first.
struct BatchSizes : Lines {
  size_t largest = 0, prefetched = 0;
  void consume_batch(const FlowRecord* const* recs, size_t n) override {
    largest = std::max(largest, n);
    RecordConsumer::consume_batch(recs, n);
  }
  void prefetch(const FlowRecord&, bool slot) override { prefetched += slot; }
};

TEST(Replay, RecordsReachTheConsumerInBatches) {
  auto path = write_pcap("batches.pcap", 600, 2, 2 * S);
  for (uint32_t cores : {1u, 2u}) {
    BatchSizes b;
    auto src = open_pcap_files({path});
    ReplayOptions o;
    o.cores = cores;
    run_replay(*src, cfg_small(), b, o);
    EXPECT_EQ(b.v.size(), 600u) << cores;
    EXPECT_EQ(b.prefetched, 600u) << cores;
    EXPECT_GE(b.largest, 16u) << cores;  // every flow ends at once at the end of input
  }
  std::filesystem::remove(path);
}

// Several cores hand records over in one order (by batch, then core), whatever the
// threads' timing: the same input gives the same record sequence on every run.
TEST(Replay, MultiCoreOrderIsTheSameOnEveryRun) {
  auto path = write_pcap("order.pcap", 3000, 4, 120 * S);  // flows end all through the run
  CoreConfig c = cfg_small();
  c.table.idle_timeout_ns = 5 * S;
  auto replay = [&](uint32_t cores) {
    Lines got;
    auto src = open_pcap_files({path});
    ReplayOptions o;
    o.cores = cores;
    run_replay(*src, c, got, o);
    return got;
  };
  for (uint32_t cores : {2u, 3u}) {
    auto ref = replay(cores);
    EXPECT_GT(ref.v.size(), 3000u);
    for (int run = 0; run < 4; run++)  // (not EXPECT_EQ: thousands of lines on failure)
      EXPECT_TRUE(replay(cores).v == ref.v) << cores << " cores, run " << run << ": another order";
  }
  std::filesystem::remove(path);
}

TEST(Replay, LoopRewritesAddressesDeterministically) {
  auto path = write_pcap("loop.pcap", 50, 4, S);
  Lines a, b;
  auto s = open_memory_loop({path}, 3);
  auto r = run_replay(*s, cfg_small(), a, {});
  EXPECT_EQ(r.total.get(Ctr::packets), 600u);
  EXPECT_EQ(a.v.size(), 150u);  // 3 loops × 50 distinct flows
  std::set<std::string> uniq(a.v.begin(), a.v.end());
  EXPECT_EQ(uniq.size(), 150u);
  auto s2 = open_memory_loop({path}, 3);
  run_replay(*s2, cfg_small(), b, {});
  EXPECT_EQ(a.sorted(), b.sorted());
  // Loop 0 is the capture itself.
  Lines plain;
  auto s3 = open_pcap_files({path});
  run_replay(*s3, cfg_small(), plain, {});
  for (auto& l : plain.v) EXPECT_TRUE(uniq.count(l)) << l;
  std::filesystem::remove(path);
}

TEST(Replay, RecordedSpeedPacesPackets) {
  auto path = write_pcap("speed.pcap", 2, 10, S / 2);  // 0.5 s of capture
  Lines l;
  ReplayOptions o;
  o.speed = 5;  // ≈ 0.1 s
  auto s = open_pcap_files({path});
  auto t0 = std::chrono::steady_clock::now();
  run_replay(*s, cfg_small(), l, o);
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_GE(secs, 0.09);
  EXPECT_EQ(l.v.size(), 2u);
  std::filesystem::remove(path);
}

TEST(Replay, StopFlagFlushesActiveFlows) {
  auto path = write_pcap("stop.pcap", 300, 4, S);
  std::atomic<bool> stop{true};
  ReplayOptions o;
  o.stop = &stop;
  Lines l;
  auto s = open_pcap_files({path});
  auto r = run_replay(*s, cfg_small(), l, o);
  EXPECT_TRUE(r.interrupted);
  EXPECT_GT(r.total.get(Ctr::packets), 0u);
  EXPECT_EQ(l.v.size(), r.total.get(Ctr::records_emitted));
  std::filesystem::remove(path);
}

TEST(Replay, TruncatedFileKeepsPacketsAndWarns) {
  auto path = write_pcap("trunc.pcap", 10, 2, S);
  auto size = std::filesystem::file_size(path);
  std::filesystem::resize_file(path, size - 7);  // cut inside the last record
  Lines l;
  auto s = open_pcap_files({path});
  auto r = run_replay(*s, cfg_small(), l, {});
  EXPECT_EQ(r.total.get(Ctr::packets), 19u);
  EXPECT_EQ(s->stats().truncated_files, 1u);
  ASSERT_EQ(s->stats().warnings.size(), 1u);
  EXPECT_NE(s->stats().warnings[0].find("trunc"), std::string::npos);
  std::filesystem::remove(path);
}

TEST(Replay, MissingFileIsAClearError) {
  try {
    open_pcap_files({"/nonexistent/x.pcap"});
    FAIL() << "no exception";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/x.pcap"), std::string::npos);
  }
}

TEST(Replay, FlowSamplingSameOnAnyCoreCount) {
  auto path = write_pcap("fs.pcap", 400, 3, S);
  CoreConfig c = cfg_small();
  c.sampling = {SampleMode::FLOW_HASH, 4, 99};
  Lines one, two;
  auto s1 = open_pcap_files({path});
  run_replay(*s1, c, one, {});
  ReplayOptions o;
  o.cores = 2;
  auto s2 = open_pcap_files({path});
  run_replay(*s2, c, two, o);
  EXPECT_EQ(one.sorted(), two.sorted());
  EXPECT_GT(one.v.size(), 60u);
  EXPECT_LT(one.v.size(), 140u);
  std::filesystem::remove(path);
}

TEST(Replay, PacketSamplingRenormalises) {
  auto path = write_pcap("ps.pcap", 1, 1000, S);
  CoreConfig c = cfg_small();
  c.sampling = {SampleMode::PACKET_DET, 10, 0};
  Lines l;
  auto s = open_pcap_files({path});
  auto r = run_replay(*s, c, l, {});
  EXPECT_EQ(r.total.get(Ctr::sampled_out), 900u);
  ASSERT_EQ(l.v.size(), 1u);
  EXPECT_NE(l.v[0].find("\"est_packets\":1000"), std::string::npos) << l.v[0];
  EXPECT_NE(l.v[0].find("\"method\":\"packet\",\"rate\":10"), std::string::npos);
  std::filesystem::remove(path);
}

}  // namespace

namespace {
// The fast paths of the number formatters agree with to_chars (= printf's %.3f / %g).
TEST(Text, FastNumberFormattingMatchesToChars) {
  std::mt19937_64 rng(5);
  auto ref = [](double v, std::chars_format f, int p) {
    char b[64];
    return std::string(b, std::to_chars(b, b + sizeof b, v, f, p).ptr);
  };
  int bad = 0;
  for (int i = 0; i < 200000; i++) {
    double mag = std::pow(10.0, double(int(rng() % 16)) - 7);
    double v = double(rng() % 10'000'000) / 1e6 * mag * ((rng() & 1) ? 1 : -1);
    if (i % 5 == 0) v = std::round(v);
    if (i % 7 == 0) v = double(rng() % 1000) / 8;
    if (i % 3 == 0) v = std::exp(double(rng() % 28'000'000) / 1e6 - 12) * ((rng() & 1) ? 1 : -1);  // full mantissas
    std::string g, f;
    ls::append_general6(g, v);
    ls::append_fixed3(f, v);
    std::string rg = ref(v, std::chars_format::general, 6), rf = ref(v, std::chars_format::fixed, 3);
    if (rf == "-0.000") rf = "0.000";  // we print no negative zero
    if (rg == "-0") rg = "0";
    bad += g != rg || f != rf;
    if (bad && bad < 4 && (g != rg || f != rf)) ADD_FAILURE() << v << ": " << g << " vs " << rg << ", " << f << " vs " << rf;
  }
  EXPECT_EQ(bad, 0);
  for (double v : {0.0, 1e-4, 9.999995, 999999.4, 999999.6, 123456.5, 0.5, 2.5, 999999.0, 1e6, 7.0, -42.0, 99999.95,
                   0.000123456, 1e300, -1e-300, 4294967296.5})
    EXPECT_EQ([&] { std::string s; ls::append_general6(s, v); return s; }(), ref(v, std::chars_format::general, 6)) << v;
  // Past fixed form's 40 bytes: scientific, not a truncated buffer.
  std::string big;
  ls::append_fixed3(big, 1e40);
  EXPECT_EQ(big, ref(1e40, std::chars_format::scientific, 3));
}

// Integers as std::to_chars writes them: every length and its edges (9…9, 10…0), both
// signs, the extremes, and random values of every bit length.
TEST(Text, IntegersMatchToChars) {
  auto check_u = [](uint64_t v) {
    char a[24], b[24];
    std::string_view got(a, size_t(ls::put_uint(a, v) - a)), want(b, size_t(std::to_chars(b, b + 24, v).ptr - b));
    EXPECT_EQ(got, want) << v;
    return got == want;
  };
  auto check_i = [](int64_t v) {
    char a[24], b[24];
    std::string_view got(a, size_t(ls::put_int(a, v) - a)), want(b, size_t(std::to_chars(b, b + 24, v).ptr - b));
    EXPECT_EQ(got, want) << v;
  };
  uint64_t p = 1;
  for (int d = 0; d < 20; d++, p *= 10) {
    for (uint64_t v : {p - 1, p, p + 1, 2 * p - 1, 5 * p, 9 * p}) check_u(v);
  }
  for (uint64_t v : {uint64_t(0), UINT64_MAX, UINT64_MAX - 1, uint64_t(INT64_MAX), uint64_t(1) << 63}) check_u(v);
  for (int64_t v : {int64_t(0), int64_t(-1), int64_t(-9), int64_t(-10), INT64_MIN, INT64_MAX, int64_t(-123456789012)}) check_i(v);
  std::mt19937_64 rng(11);
  int bad = 0;
  for (int i = 0; i < 200000 && bad < 3; i++) {
    uint64_t v = rng() >> (rng() % 64);
    bad += !check_u(v);
    int64_t s = int64_t(v >> 1);  // negatable
    check_i((i & 1) ? -s : s);
  }
}

// put_ip's text against inet_ntop's for one address of family af (put_ip's ip_ver 4 or 6).
void expect_ntop(int af, const uint8_t* a) {
  char want[INET6_ADDRSTRLEN], got[ls::kMaxIp];
  ASSERT_NE(inet_ntop(af, a, want, sizeof want), nullptr);
  ASSERT_EQ(std::string(got, ls::put_ip(got, a, af == AF_INET ? 4 : 6)), want);
}

// IPv4 text is inet_ntop's: every octet value in every position, and random addresses.
TEST(Text, Ipv4MatchesInetNtop) {
  std::mt19937_64 rng(12);
  auto check = [](const uint8_t* a) { expect_ntop(AF_INET, a); };
  for (int pos = 0; pos < 4; pos++) {
    for (int v = 0; v < 256; v++) {
      uint8_t a[4] = {uint8_t(rng()), uint8_t(rng()), uint8_t(rng()), uint8_t(rng())};
      a[pos] = uint8_t(v);
      check(a);
    }
  }
  for (int i = 0; i < 100000; i++) {
    uint32_t x = uint32_t(rng());
    uint8_t a[4];
    std::memcpy(a, &x, 4);
    check(a);
  }
}

// A rounded estimate's text is %g of std::round: halves (away from zero), the largest
// doubles below them, the edge of %g's exponent form, and what is not a count.
TEST(Text, RoundedCountsMatchG6OfRound) {
  auto check = [](double x) {
    char a[ls::kMaxNumber], b[ls::kMaxNumber];
    std::string_view got(a, size_t(ls::put_rounded_g6(a, x) - a));
    std::string_view want(b, size_t(ls::put_general6(b, std::round(x)) - b));
    EXPECT_EQ(got, want) << x;
  };
  for (double x : {0.0, -0.0, 0.49999999999999994, 0.5, 1.5, 2.5, 999998.5, 999999.0, 999999.4999999999,
                   999999.5, 1e6, 1.5e6, 4503599627370495.5, 1e300, -0.4, -0.5, -2.5, -1e7, double(NAN), double(INFINITY),
                   -double(INFINITY)}) {
    check(x);
    check(std::nextafter(x, 0.0));
    check(std::nextafter(x, INFINITY));
  }
  std::mt19937_64 rng(13);
  for (int i = 0; i < 200000; i++) {
    double x = double(rng() % 4'000'000) / 2 + double(rng() % 3) / 4;  // many halves
    check(x);
    check(std::nextafter(x, 0.0));
  }
}

// IPv6 text is glibc's inet_ntop's, character for character: zero runs of every length
// and position (ties, trailing, leading), the IPv4-compatible and -mapped forms and the
// near misses that must stay hex.
TEST(Text, Ipv6MatchesInetNtop) {
  std::mt19937_64 rng(11);
  auto check = [](const uint8_t* a) { expect_ntop(AF_INET6, a); };
  uint8_t a[16];
  for (uint32_t zeros = 0; zeros < 256; zeros++)  // every pattern of zero groups
    for (int k = 0; k < 64; k++) {
      for (int i = 0; i < 8; i++) {
        uint16_t v = std::max<uint16_t>(1, uint16_t(rng() >> (48 + rng() % 16)));  // 1 to 4 hex digits
        if (k % 4 == 1 && i == 5) v = 0xffff;  // mapped-looking
        if (k % 8 == 3 && i == 7) v = 1;       // ::1-looking
        if (zeros >> i & 1) v = 0;
        a[2 * i] = uint8_t(v >> 8);
        a[2 * i + 1] = uint8_t(v);
      }
      check(a);
    }
  for (const char* s : {"::", "::1", "::ffff:1.2.3.4", "::1.2.3.4", "::0.0.1.0", "::0.1.0.0", "::ffff:0.0.0.0",
                        "1::", "ffff::", "1:0:0:2::3", "::fffe:1.2.3.4", "::ffff:0:1.2.3.4", "0:0:0:0:0:1:0:0",
                        "2001:db8::8:800:200c:417a", "fe80::1", "1:2:3:4:5:6:7:0"}) {
    ASSERT_EQ(inet_pton(AF_INET6, s, a), 1) << s;
    check(a);
  }
}

// TextBuf (the flow record and feature CSV writers) gives the same text as appending each
// piece to the string, whatever the pieces' order and lengths relative to its buffer.
TEST(Text, TextBufMatchesPiecewiseAppends) {
  std::mt19937_64 rng(9);
  std::string out = "prefix:", ref = "prefix:";
  {
    ls::TextBuf w(out);
    for (int i = 0; i < 5000; i++) {
      uint64_t v = rng() >> (rng() % 64);
      double d = double(int64_t(rng() % 2'000'000) - 1'000'000) / double(1 + rng() % 1000);
      uint8_t a[16];
      for (auto& x : a) x = uint8_t(rng());
      switch (rng() % 10) {
        case 0: w.run<1>().num(v); ls::append_uint(ref, v); break;
        case 1: w.run<1>().sint(-int64_t(v >> 1)); ref += std::to_string(-int64_t(v >> 1)); break;
        case 2: w.run<1>().g6(d); ls::append_general6(ref, d); break;
        case 3: w.run<1>().f3(d * 1e30); ls::append_fixed3(ref, d * 1e30); break;  // up to the scientific form
        case 4: { uint8_t ver = rng() & 1 ? 4 : 6; w.run<1>().ip(a, ver); ref += ls::format_ip(a, ver); break; }
        case 5: w.run<1>().lit("\",\"a_literal_key\":"); ref += "\",\"a_literal_key\":"; break;
        case 6: { std::string t(rng() % 200, char('a' + rng() % 26)); w.text(t); ref += t; break; }  // short and long
        case 7: {
          size_t n = rng() % 300;
          static const char* hx = "0123456789abcdef";
          std::vector<uint8_t> b(n);
          for (auto& x : b) x = uint8_t(rng());
          w.hex(b.data(), n);
          for (uint8_t x : b) ref += {hx[x >> 4], hx[x & 15]};
          break;
        }
        case 8: {  // a Run: up to 8 fields after one room check, the buffer's end near or not
          ls::TextBuf::Run r = w.run<8>();
          for (int k = int(rng() % 9); k > 0; k--) {
            switch (rng() % 6) {
              case 0: r.num(v); ls::append_uint(ref, v); break;
              case 1: r.sint(-int64_t(v >> 1)); ref += std::to_string(-int64_t(v >> 1)); break;
              case 2: r.g6(d); ls::append_general6(ref, d); break;
              case 3: r.f3(d * 1e30); ls::append_fixed3(ref, d * 1e30); break;
              case 4: r.ip(a, 6); ref += ls::format_ip(a, 6); break;
              default: r.lit("\",\"a_literal_key\":").c(); ref += "\",\"a_literal_key\":,";
            }
          }
          break;
        }
        default: w.run<1>().c(); ref += ',';
      }
    }
  }
  EXPECT_EQ(out.size(), ref.size());
  EXPECT_TRUE(out == ref);
}

// A Run given fewer fields than it writes stops the program in debug builds (the
// sanitizer suites) instead of writing past the buffer.
TEST(Text, RunBeyondItsReservationAbortsInDebugBuilds) {
#ifdef NDEBUG
  GTEST_SKIP() << "the check is compiled in debug builds only (the sanitizer suites run it)";
#else
  std::string out;
  EXPECT_DEATH(
      {
        ls::TextBuf w(out);
        ls::TextBuf::Run r = w.run<1>();
        uint8_t a[16];
        std::memset(a, 0xff, sizeof a);  // 39 characters, and then no room for a number
        r.ip(a, 6).num(UINT64_MAX);
      },
      "more fields than reserved");
#endif
}
}  // namespace

TEST(Clock, DeviceTimestampsPast2038AndPast2554) {
  // net_pcap's µs from libpcap's signed 32-bit seconds: 4e9 s (2096) arrives negative.
  uint64_t raw = uint64_t(int64_t(int32_t(uint32_t(4'000'000'000u)))) * 1'000'000ull + 5;
  EXPECT_EQ(device_ts_ns(raw, 1000), 4'000'000'000'000'005'000ull);
  EXPECT_EQ(device_ts_ns(1'000'000'000'000'000ull, 1000), 1'000'000'000'000'000'000ull);
  EXPECT_EQ(device_ts_ns(UINT64_MAX / 2, 1000), UINT64_MAX / 1000 * 1000);  // saturates
  EXPECT_EQ(device_ts_ns(123, 1), 123u);
}
