#include <arpa/inet.h>
#include <gtest/gtest.h>

#include <bit>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <set>

#include "features/partners.h"
#include "features/ti_table.h"

using namespace ls;
namespace fs = std::filesystem;

namespace {

struct TmpDir {
  fs::path p = fs::temp_directory_path() / ("ls_ti_" + std::to_string(getpid()));
  TmpDir() { fs::create_directories(p); }
  ~TmpDir() { fs::remove_all(p); }
  std::string write(const std::string& rel, const std::string& text) {
    fs::create_directories((p / rel).parent_path());
    std::ofstream(p / rel) << text;
    return (p / rel).string();
  }
};

const uint8_t* addr(const char* ip) {
  static uint8_t a[16];
  std::memset(a, 0, sizeof a);
  inet_pton(std::string(ip).find(':') != std::string::npos ? AF_INET6 : AF_INET, ip, a);
  return a;
}

// Distinct ports the feeds name for the address, ascending, comma-separated.
std::string ports_of(const TiTable& t, const char* ip) {
  std::set<uint16_t> ports;
  for (auto& [feed, port] : t.listed_ports(addr(ip), std::string(ip).find(':') != std::string::npos ? 6 : 4))
    ports.insert(port);
  std::string o;
  for (uint16_t p : ports) {
    if (!o.empty()) o += ',';
    o += std::to_string(p);
  }
  return o;
}

TiHit look(const TiTable& t, const char* ip, bool* found = nullptr) {
  uint8_t a[16] = {};
  bool v6 = std::string(ip).find(':') != std::string::npos;
  inet_pton(v6 ? AF_INET6 : AF_INET, ip, a);
  TiHit h;
  bool f = t.lookup(a, v6 ? 6 : 4, h);
  if (found) *found = f;
  return f ? h : TiHit{};
}

TEST(TiTable, OverlappingPrefixesReportEveryFeed) {
  TmpDir d;
  d.write("snap-2024-01-10/c2.ipset", "#\n# c2\n#\n# Category        : malware\n#\n10.1.2.3\n2001:db8::7\nnot-an-ip\n");
  d.write("snap-2024-01-20/c2.ipset", "#\n# c2\n#\n# Category        : malware\n#\n10.1.2.3\n");
  d.write("block.netset", "# block\n10.1.0.0/16\n10.0.0.0/8\n2001:db8::/32\n");
  d.write("scores.txt", "# ipsum-like\n10.9.9.9\t7\n");
  d.write("iocs.csv", "report_date,report_title,ip,port\n2024-01-05,Emotet,10.1.2.3,443\n2024-01-05,Emotet,bad,1\n");
  auto t = TiTable::load({d.p.string()});
  TiHit h = look(*t, "10.1.2.3");
  EXPECT_EQ(h.feeds, 3u);  // c2 (two snapshots count once), block, iocs
  EXPECT_EQ(h.categories, "Emotet;malware");
  // Dates: the CSV row (2024-01-05) and the snapshot directories (01-10, 01-20).
  EXPECT_EQ(h.first_days, 19727);  // 2024-01-05
  EXPECT_EQ(h.last_days, 19742);   // 2024-01-20
  EXPECT_EQ(look(*t, "10.1.9.9").feeds, 1u);    // only the /16 (and the /8): one feed
  EXPECT_DOUBLE_EQ(look(*t, "10.9.9.9").max_weight, 7);
  bool found;
  look(*t, "11.0.0.1", &found);
  EXPECT_FALSE(found);
  EXPECT_EQ(look(*t, "2001:db8::7").feeds, 2u);
  EXPECT_EQ(look(*t, "2001:db8::8").feeds, 1u);
  look(*t, "2001:db9::1", &found);
  EXPECT_FALSE(found);
  uint64_t skipped = 0;
  for (auto& f : t->feeds()) skipped += f.skipped;
  EXPECT_EQ(skipped, 2u);  // "not-an-ip" and the CSV's "bad"
}

TEST(TiTable, RangeToTheLastIpv4AddressDoesNotLeakIntoIpv6) {
  // 0.0.0.0/0 has no end edge in the IPv4 sweep; the IPv6 sweep must start empty.
  TmpDir d;
  d.write("all4.netset", "# all4\n0.0.0.0/0\n");
  d.write("one6.ipset", "# one6\n2001:db8::1\n");
  auto t = TiTable::load({d.p.string()});
  EXPECT_EQ(look(*t, "255.255.255.255").feeds, 1u);
  EXPECT_EQ(look(*t, "2001:db8::1").feeds, 1u);
  bool found;
  look(*t, "2001:db8::2", &found);
  EXPECT_FALSE(found);
}

// Lookups search one /16's intervals (v4_by16_) in a large table and all of them in a
// small one: every answer must still be the brute-force one — at range edges, across /16
// edges, for ranges spanning many /16s or none.
class TiLookupSize : public ::testing::TestWithParam<int> {};
INSTANTIATE_TEST_SUITE_P(TiTable, TiLookupSize, ::testing::Values(3000, 40));
TEST_P(TiLookupSize, Ipv4LookupsAgreeWithBruteForce) {
  TmpDir d;
  std::mt19937 r(5);
  struct Range {
    uint32_t lo, hi;
    int feed;
  };
  std::vector<Range> ranges;
  std::string a, b;
  for (int i = 0; i < GetParam(); i++) {
    int len = std::vector<int>{8, 12, 15, 16, 17, 24, 30, 32, 32, 32}[r() % 10];
    uint32_t lo = r() & (len ? ~0u << (32 - len) : 0), hi = lo | (len == 32 ? 0 : ~0u >> len);
    int feed = int(r() % 2);
    ranges.push_back({lo, hi, feed});
    char line[40];
    std::snprintf(line, sizeof line, "%u.%u.%u.%u/%d\n", lo >> 24, lo >> 16 & 255, lo >> 8 & 255, lo & 255, len);
    (feed ? b : a) += line;
  }
  auto t = TiTable::load({d.write("a.netset", a), d.write("b.netset", b)});
  EXPECT_EQ(t->indexed_v4(), GetParam() > 1000) << "the size no longer picks the path this case means to test";
  std::vector<uint32_t> q;
  for (auto& x : ranges)
    for (uint32_t v : {x.lo - 1, x.lo, x.hi, x.hi + 1, x.lo | 0xffff, (x.lo | 0xffff) + 1}) q.push_back(v);
  for (int i = 0; i < 20000; i++) q.push_back(uint32_t(r()));
  for (uint32_t v : {0u, 0xffffffffu, 0x10000u, 0xffffu}) q.push_back(v);
  for (uint32_t v : q) {
    uint32_t want = 0;
    for (auto& x : ranges)
      if (v >= x.lo && v <= x.hi) want |= 1u << x.feed;
    uint8_t ip[16] = {uint8_t(v >> 24), uint8_t(v >> 16), uint8_t(v >> 8), uint8_t(v)};
    TiHit h;
    bool hit = t->lookup(ip, 4, h);
    ASSERT_EQ(hit, want != 0) << std::hex << v;
    if (hit) {
      ASSERT_EQ(h.feeds, uint32_t(std::popcount(want))) << std::hex << v;
    }
  }
}

TEST(TiTable, ClearErrors) {
  TmpDir d;
  auto meta = d.write("families.csv", "family,description\nemotet,banking trojan\n");
  EXPECT_THROW(TiTable::load({meta}), TiError);  // named explicitly: must be a feed
  auto t = TiTable::load({d.p.string()});        // found in a directory: skipped, warned
  ASSERT_EQ(t->warnings().size(), 1u);
  EXPECT_NE(t->warnings()[0].find("no ip column"), std::string::npos);
  try {
    TiTable::load({"/nonexistent/feeds"});
    FAIL();
  } catch (const TiError& e) {
    EXPECT_NE(std::string(e.what()).find("/nonexistent/feeds"), std::string::npos);
  }
}

TEST(TiTable, SharedDataKnowsTheCapturesCnC) {
  const char* data = std::getenv("LINESIGHT_DATA");
  fs::path ti = fs::path(data ? data : "../shared/data") / "ti";
  if (!fs::exists(ti)) GTEST_SKIP() << "shared data absent";
  auto t = TiTable::load({ti.string()});
  TiHit emotet = look(*t, "138.197.147.101");  // ndpi/emotet.pcap's C&C
  EXPECT_GE(emotet.feeds, 2u);
  EXPECT_NE(emotet.categories.find("emotet"), std::string::npos);
  TiHit trick = look(*t, "82.118.225.196");    // ndpi/trickbot.pcap's server
  EXPECT_GE(trick.feeds, 1u);
  std::printf("  %zu feed instances, %zu intervals, %zu KB\n", t->feeds().size(), t->intervals(),
              t->memory_bytes() / 1024);
}

}  // namespace

namespace {

TEST(TiTable, StixBundlesAndMispFeeds) {
  TmpDir d;
  d.write("partner.json", R"({"type": "bundle", "id": "bundle--1", "objects": [
    {"type": "identity", "id": "identity--a", "name": "Partner ISP"},
    {"type": "indicator", "id": "indicator--1", "created_by_ref": "identity--a", "pattern_type": "stix",
     "pattern": "[ipv4-addr:value = '198.51.100.7']", "valid_from": "2024-02-08T15:16:39.842Z",
     "confidence": 80, "labels": ["c2-server", "emotet"]},
    {"type": "indicator", "id": "indicator--2", "pattern_type": "stix",
     "pattern": "[network-traffic:dst_ref.value = '2001:db8::9' AND network-traffic:dst_port = 443]"},
    {"type": "indicator", "id": "indicator--3", "pattern_type": "stix", "pattern": "[file:hashes.MD5 = 'abc']"},
    {"type": "indicator", "id": "indicator--4", "pattern_type": "sigma", "pattern": "x"},
    {"type": "indicator", "id": "indicator--5", "pattern_type": "stix", "pattern": "[ipv4-addr:value = 'nope']"}]})");
  d.write("misp/manifest.json", R"({"e1": {"info": "x"}})");
  d.write("misp/e1.json", R"({"Event": {"info": "botnet C2", "date": "2024-01-05", "Orgc": {"name": "CERT-X"},
    "Attribute": [{"type": "ip-dst|port", "value": "203.0.113.5|8080"}, {"type": "domain", "value": "a.example"},
                  {"type": "ip-src", "value": "bad"}],
    "Object": [{"Attribute": [{"type": "ip-dst", "value": "203.0.113.6"}]}]}})");
  auto t = TiTable::load({d.p.string()});
  TiHit h = look(*t, "198.51.100.7");
  EXPECT_EQ(h.feeds, 1u);
  EXPECT_EQ(h.categories, "c2-server;emotet");
  EXPECT_DOUBLE_EQ(h.max_weight, 0.8);
  EXPECT_EQ(h.first_days, 19761);  // 2024-02-08
  EXPECT_EQ(look(*t, "2001:db8::9").feeds, 1u);
  EXPECT_EQ(look(*t, "203.0.113.5").categories, "botnet C2");
  EXPECT_EQ(look(*t, "203.0.113.6").feeds, 1u);
  uint64_t skipped = 0, stix = 0;
  for (auto& f : t->feeds()) stix += f.name == "Partner ISP";
  for (auto& f : t->feeds())
    if (f.path.find("partner.json") != std::string::npos) skipped = f.skipped;
  EXPECT_EQ(skipped, 3u);  // a hash, a sigma rule, a bad address
  EXPECT_GE(stix, 1u);     // named by the bundle's producer
  d.write("broken/x.json", "{\"type\": \"bundle\", ");
  EXPECT_THROW(TiTable::load({(d.p / "broken/x.json").string()}), TiError);
  d.write("other/y.json", "[1, 2]");
  try {
    TiTable::load({(d.p / "other/y.json").string()});
    FAIL();
  } catch (const TiError& e) {
    EXPECT_NE(std::string(e.what()).find("neither a STIX 2.1 bundle, a MISP event nor linesight indicators"),
              std::string::npos);
  }
  // Ports named per address: STIX dst_port, MISP ip-dst|port.
  EXPECT_EQ(ports_of(*t, "2001:db8::9"), "443");
  EXPECT_EQ(ports_of(*t, "203.0.113.5"), "8080");
  EXPECT_EQ(ports_of(*t, "198.51.100.7"), "");
}

TEST(TiTable, CsvColumnMappingPortsAndLastSeen) {
  TmpDir d;
  auto f = d.write("iocs.csv",
                   "ip,port,first_seen,last_seen,confidence,threat\n"
                   "198.51.100.1,443,2024-01-01,2024-03-01,80,qakbot\n"
                   "198.51.100.2,443/tcp;8080/tcp,2024-02-01,,,\n"
                   "198.51.101.0/24,25,2024-02-01,,,\n"  // a range: its port names no address
                   "198.51.100.3,not-a-port,2024-02-01,,,\n");
  auto t = TiTable::load({f});
  TiHit h = look(*t, "198.51.100.1");
  EXPECT_EQ(h.first_days, 19723);  // 2024-01-01
  EXPECT_EQ(h.last_days, 19783);   // 2024-03-01: last_seen is a listing too
  EXPECT_DOUBLE_EQ(h.max_weight, 0.8);  // confidence in percent
  EXPECT_EQ(h.categories, "qakbot");
  EXPECT_EQ(ports_of(*t, "198.51.100.1"), "443");
  EXPECT_EQ(ports_of(*t, "198.51.100.2"), "443,8080");
  EXPECT_EQ(ports_of(*t, "198.51.100.3"), "");
  EXPECT_EQ(ports_of(*t, "198.51.101.9"), "");  // inside the /24, no port of its own
  EXPECT_EQ(t->listing(addr("198.51.101.9"), 4).size(), 1u);
  EXPECT_EQ(t->listing(addr("198.51.100.1"), 4).size(), 2u);  // first and last seen
  EXPECT_TRUE(t->listing(addr("192.0.2.1"), 4).empty());
}

TEST(TiTable, OperatorWeightsReplaceTheFilesOwn) {
  TmpDir d;
  auto a = d.write("w/strong.ipset", "198.51.100.1\n");
  d.write("w/weak.txt", "198.51.100.1 7\n198.51.100.2 7\n");  // ipsum-style: weight 7 from the file
  auto t = TiTable::load({(d.p / "w").string()}, {{"weak", 0.2}, {"absent", 0.5}});
  EXPECT_DOUBLE_EQ(look(*t, "198.51.100.2").max_weight, 0.2);
  EXPECT_DOUBLE_EQ(look(*t, "198.51.100.1").max_weight, 1.0);  // strong keeps the default 1
  EXPECT_DOUBLE_EQ(look(*TiTable::load({(d.p / "w").string()}), "198.51.100.2").max_weight, 7);
  (void)a;
}

TEST(TiTable, ReadsLinesightIndicatorsJson) {
  TmpDir d;
  auto f = d.write("partner/indicators.json", R"([
    {"indicator": "203.0.113.50", "ip_version": 4, "ports": ["447/tcp", "449/tcp"],
     "first_seen": "2024-05-01T10:00:00.000Z", "last_seen": "2024-05-03T10:00:00.000Z",
     "apps": ["c2-server"], "score": 0.97, "reliability": 0.9, "threats": ["trickbot"]},
    {"indicator": "nonsense", "ip_version": 4}])");
  auto t = TiTable::load({f});
  TiHit h = look(*t, "203.0.113.50");
  EXPECT_EQ(h.feeds, 1u);
  EXPECT_EQ(h.categories, "trickbot");
  EXPECT_DOUBLE_EQ(h.max_weight, 0.9);
  EXPECT_EQ(h.first_days, 19844);  // 2024-05-01
  EXPECT_EQ(h.last_days, 19846);
  EXPECT_EQ(ports_of(*t, "203.0.113.50"), "447,449");
  EXPECT_EQ(t->feeds()[0].skipped, 1u);
}

}  // namespace

#include "features/reliability.h"

namespace {

namespace {
// Every field a lookup can return, for an address.
std::string describe(const TiTable& t, const uint8_t* a, uint8_t ver) {
  TiHit h;
  if (!t.lookup(a, ver, h)) return "-";
  std::string o = std::to_string(h.feeds) + "|" + std::to_string(h.max_weight) + "|" + h.categories + "|" +
                  std::to_string(h.first_days) + "|" + std::to_string(h.last_days) + "|";
  for (uint32_t f : t.listing(a, ver)) o += t.feeds()[f].name + "@" + std::to_string(t.feeds()[f].date_days) + ",";
  for (auto& [f, port] : t.listed_ports(a, ver)) o += std::to_string(f) + ":" + std::to_string(port) + ",";
  return o;
}

void write_feeds(TmpDir& d) {
  d.write("snap-2024-01-10/c2.ipset", "#\n# c2\n#\n# Category        : malware\n#\n10.1.2.3\n2001:db8::7\nnot-an-ip\n");
  d.write("snap-2024-01-20/c2.ipset", "#\n# c2\n#\n# Category        : malware\n#\n10.1.2.3\n255.255.255.0/24\n");
  d.write("block.netset", "# block\n10.1.0.0/16\n10.0.0.0/8\n2001:db8::/32\n");
  d.write("scores.txt", "# ipsum-like\n10.9.9.9\t7\n");
  d.write("iocs.csv", "report_date,report_title,ip,port\n2024-01-05,Emotet,10.1.2.3,443\n2024-01-05,Emotet,2001:db8::9,8443\n");
  d.write("notes/readme.csv", "a,b\n1,2\n");  // not a feed: a warning
}

// Addresses at and beside every edge of the feeds above.
std::vector<std::string> probes() {
  return {"0.0.0.0", "9.255.255.255", "10.0.0.0", "10.0.255.255", "10.1.0.0", "10.1.2.2", "10.1.2.3", "10.1.2.4",
          "10.1.255.255", "10.2.0.0", "10.9.9.9", "10.255.255.255", "11.0.0.0", "255.255.254.255", "255.255.255.0",
          "255.255.255.255", "::", "2001:db7:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db8::", "2001:db8::7",
          "2001:db8::8", "2001:db8::9", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db9::"};
}
}  // namespace

TEST(TiTable, FreeTextCategoriesNeedNoEscaping) {
  // MISP `info` and CSV titles are free text; categories go unquoted into feature CSV
  // cells and detection JSON strings, so commas, quotes, backslashes, control bytes and
  // bytes that are not UTF-8 must not survive (they split CSV rows and broke JSON lines).
  TmpDir d;
  d.write("misp/e1.json", R"({"Event": {"info": "OSINT - Emotet, \"Epoch 4\"\tC2 \\ list", "date": "2024-01-05",
    "Attribute": [{"type": "ip-dst", "value": "203.0.113.5"}]}})");
  d.write("t.csv", "ip,report_title\n203.0.113.5,caf\xc3\xa9 \xff\xfe bad;second\n");
  auto t = TiTable::load({d.p.string()});
  std::string c = look(*t, "203.0.113.5").categories;
  EXPECT_EQ(c.find_first_of(",\"\\\t\r\n"), std::string::npos) << c;
  EXPECT_NE(c.find("OSINT - Emotet   Epoch 4  C2   list"), std::string::npos) << c;
  EXPECT_NE(c.find("caf\xc3\xa9 ?? bad"), std::string::npos) << c;  // valid UTF-8 kept
  EXPECT_NE(c.find(";second"), std::string::npos) << c;               // ';' still separates
}

TEST(TiTable, CompiledTableAnswersAsTheFeeds) {
  TmpDir d;
  write_feeds(d);
  auto text = TiTable::load({d.p.string()}, {{"block", 0.4}});
  std::string bin = (d.p / "all.lsti").string();
  text->save(bin);
  ASSERT_TRUE(TiTable::is_compiled(bin));
  EXPECT_FALSE(TiTable::is_compiled((d.p / "block.netset").string()));
  auto comp = TiTable::load({bin});
  for (auto& ip : probes()) {
    uint8_t ver = ip.find(':') != std::string::npos ? 6 : 4;
    EXPECT_EQ(describe(*text, addr(ip.c_str()), ver), describe(*comp, addr(ip.c_str()), ver)) << ip;
  }
  EXPECT_EQ(comp->intervals(), text->intervals());
  EXPECT_EQ(comp->feeds().size(), text->feeds().size());
  EXPECT_EQ(comp->sources().size(), 6u);
  EXPECT_EQ(comp->warnings(), text->warnings());  // the skipped CSV, and nothing changed since
  EXPECT_DOUBLE_EQ(look(*comp, "10.1.9.9").max_weight, 0.4);  // the weight given at compile time
  // Weights at load time still override; other paths beside a compiled table are refused.
  EXPECT_DOUBLE_EQ(look(*TiTable::load({bin}, {{"block", 0.9}}), "10.1.9.9").max_weight, 0.9);
  EXPECT_THROW(TiTable::load({bin, (d.p / "block.netset").string()}), TiError);
}

TEST(TiTable, CompiledTableSaysWhichFeedsChanged) {
  TmpDir d;
  write_feeds(d);
  std::string bin = (d.p / "all.lsti").string();
  TiTable::load({d.p.string()})->save(bin);
  d.write("scores.txt", "# ipsum-like\n10.9.9.9\t7\n10.9.9.10\t3\n");
  fs::remove(d.p / "block.netset");
  auto t = TiTable::load({bin});
  std::string all;
  for (auto& w : t->warnings()) all += w + "\n";
  EXPECT_NE(all.find("scores.txt changed since the table was compiled"), std::string::npos) << all;
  EXPECT_NE(all.find("block.netset is gone since the table was compiled"), std::string::npos) << all;
  EXPECT_EQ(look(*t, "10.1.9.9").feeds, 1u);  // still the compiled answer until recompiled
}

TEST(TiTable, DamagedCompiledTableIsRefusedNeverHalfLoaded) {
  TmpDir d;
  write_feeds(d);
  std::string bin = (d.p / "all.lsti").string();
  TiTable::load({d.p.string()})->save(bin);
  std::ifstream in(bin, std::ios::binary);
  std::string good((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::string cut = (d.p / "cut.lsti").string();
  // Every truncation, and every single byte set to 0xff: a clean TiError or a table that
  // still answers (a flipped weight or date byte is a valid table), never a crash.
  size_t refused = 0;
  for (size_t n = 8; n < good.size(); n++) {
    std::ofstream(cut, std::ios::binary | std::ios::trunc).write(good.data(), std::streamsize(n));
    try {
      TiTable::load({cut});
      ADD_FAILURE() << "truncated at " << n << " of " << good.size() << " loaded";
    } catch (const TiError& e) {
      refused++;
      EXPECT_NE(std::string(e.what()).find("damaged compiled table"), std::string::npos) << e.what();
    }
  }
  EXPECT_EQ(refused, good.size() - 8);
  for (size_t i = 8; i < good.size(); i++) {
    std::string bad = good;
    bad[i] = char(0xff);
    std::ofstream(cut, std::ios::binary | std::ios::trunc).write(bad.data(), std::streamsize(bad.size()));
    try {
      auto t = TiTable::load({cut});
      for (auto& ip : probes()) describe(*t, addr(ip.c_str()), ip.find(':') != std::string::npos ? 6 : 4);
    } catch (const TiError&) {
    }
  }
}

// A table larger than the loader's 64 KB window: the IPv4 section read straight into
// its array, the port entries across many refills. Same answers as the feeds; cut inside
// either section or by one byte at the end, refused.
TEST(TiTable, CompiledTableLargerThanTheReadWindow) {
  TmpDir d;
  std::mt19937 r(9);
  std::string net, csv = "ip,port\n";
  std::vector<std::string> ips;
  for (int i = 0; i < 30000; i++) {
    uint32_t v = uint32_t(r()) | 0x01000000u;
    std::string ip = std::to_string(v >> 24) + "." + std::to_string(v >> 16 & 255) + "." + std::to_string(v >> 8 & 255) +
                     "." + std::to_string(v & 255);
    net += ip + "\n";
    if (i % 4 == 0) csv += ip + "," + std::to_string(1 + r() % 65535) + "\n";
    if (i % 97 == 0) ips.push_back(ip);
  }
  auto text = TiTable::load({d.write("a.netset", net), d.write("b.csv", csv)});
  std::string bin = (d.p / "big.lsti").string();
  text->save(bin);
  ASSERT_GT(fs::file_size(bin), 4u * (64 << 10)) << "too small to leave the window";
  auto comp = TiTable::load({bin});
  EXPECT_EQ(comp->intervals(), text->intervals());
  for (auto& ip : ips) {
    EXPECT_EQ(describe(*text, addr(ip.c_str()), 4), describe(*comp, addr(ip.c_str()), 4)) << ip;
    EXPECT_EQ(ports_of(*text, ip.c_str()), ports_of(*comp, ip.c_str())) << ip;
  }
  std::ifstream in(bin, std::ios::binary);
  std::string good((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // A file cut before it is opened: the counts no longer fit its length, refused up front.
  std::string cut = (d.p / "cut.lsti").string();
  for (size_t n : {good.size() / 4, good.size() / 2, good.size() * 7 / 8, good.size() - 1}) {
    std::ofstream(cut, std::ios::binary | std::ios::trunc).write(good.data(), std::streamsize(n));
    EXPECT_THROW(TiTable::load({cut}), TiError) << "cut at " << n << " of " << good.size();
  }
  // A file that shrinks while it is read (its length at open was the whole table): the
  // counts pass, and the read that comes up short must refuse it — in the first window,
  // in the IPv4 section read straight into its array (the middle of the file), and in the
  // last window (the port entries).
  for (size_t n : {size_t(100), good.size() / 2, good.size() - 1}) {
    std::ofstream(cut, std::ios::binary | std::ios::trunc).write(good.data(), std::streamsize(n));
    std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(cut.c_str(), "rb"), std::fclose);
    ASSERT_TRUE(f);
    try {
      TiTable::read_compiled(f.get(), good.size(), cut);
      ADD_FAILURE() << "loaded a table cut at " << n << " of " << good.size();
    } catch (const TiError& e) {
      EXPECT_NE(std::string(e.what()).find("read failed"), std::string::npos) << e.what();
    }
  }
  std::unique_ptr<FILE, int (*)(FILE*)> whole(std::fopen(bin.c_str(), "rb"), std::fclose);
  EXPECT_EQ(TiTable::read_compiled(whole.get(), good.size(), bin)->intervals(), text->intervals());
}

TEST(Reliability, IndependentSourcesCombineAndDecay) {
  ReliabilityModel m;
  // Two fresh feeds at weight 0.5 each: 1 − 0.5 × 0.5.
  EXPECT_NEAR(reliability(m, {{0.5, 0}, {0.5, 0}}, {}, {}), 0.75, 1e-12);
  // More independent sources never lower it.
  EXPECT_GT(reliability(m, {{0.5, 0}, {0.5, 0}, {0.2, 0}}, {}, {}), 0.75);
  // A listing loses half its weight per feed half-life.
  EXPECT_NEAR(reliability(m, {{1.0, 30}}, {}, {}), 0.5, 1e-12);
}

TEST(Reliability, FalseNegativeCorrection) {
  ReliabilityModel m;
  // Every feed dropped it three months ago, but our sensor saw C&C-like traffic yesterday.
  double dropped_only = reliability(m, {{0.9, 90}, {0.7, 90}}, {}, {});
  double with_traffic = reliability(m, {{0.9, 90}, {0.7, 90}}, {{0.9, 1}}, {});
  EXPECT_LT(dropped_only, 0.3);
  EXPECT_GT(with_traffic, 0.8);  // keeps (regains) reliability
}

TEST(Reliability, FalsePositiveCorrection) {
  ReliabilityModel m;
  // Listed by one strong feed 90 days ago, never corroborated by traffic or partners.
  double r = reliability(m, {{1.0, 90}}, {}, {});
  EXPECT_LT(r, 0.15);  // 2^-3
  // The same listing with a partner's recent report stays credible.
  EXPECT_GT(reliability(m, {{1.0, 90}}, {}, {{0.8, 2}}), 0.7);
  // Our own old detections decay faster than listings.
  EXPECT_LT(reliability(m, {}, {{1.0, 28}}, {}), reliability(m, {{1.0, 28}}, {}, {}));
}

}  // namespace

namespace {

TEST(PartnerTable, CombinesPartnersExports) {
  TmpDir d;
  auto a = d.write("a/indicators.json", R"([
    {"indicator": "203.0.113.7", "ports": ["443/tcp"], "score": 0.8, "first_seen": "2024-03-02T00:00:00.000Z",
     "last_seen": "2024-03-03T12:00:00.000Z", "detections": 3, "threats": ["qakbot"]},
    {"indicator": "2001:db8::1", "ports": ["8443/tcp"], "score": 0.7, "first_seen": "2024-03-01T00:00:00Z"},
    {"indicator": "bogus"}, {"no": "indicator"}])");
  auto b = d.write("b/indicators.csv",
                   "indicator,ip_version,ports,first_seen,last_seen,apps,score,reliability,threats,clients_bucket,"
                   "periodicity,period_s,bytes,detections\n"
                   "203.0.113.7,4,443/tcp;2222/tcp,2024-03-01T00:00:00.000Z,2024-03-02T00:00:00.000Z,beacon,0.95,0.9,"
                   "emotet,,0.9,60,1000,5\n"
                   "203.0.113.8,4,,2024-03-01T00:00:00.000Z,,beacon,x,0.9,,,,,,1\n");
  auto t = PartnerTable::load({a, b});
  const PartnerHit* h = t->lookup(addr("203.0.113.7"), 4);
  ASSERT_NE(h, nullptr);
  EXPECT_EQ(h->reports, 2u);
  EXPECT_DOUBLE_EQ(h->score, 0.95);
  EXPECT_EQ(h->detections, 8u);
  EXPECT_TRUE(h->has_port(443));
  EXPECT_TRUE(h->has_port(2222));
  EXPECT_FALSE(h->has_port(0));  // ICMP's port 0 is not "a port of interest"
  EXPECT_EQ(h->threats, "emotet;qakbot");
  EXPECT_EQ(h->first_ns, 1709251200000000000ull);  // 2024-03-01, the earlier partner
  EXPECT_EQ(h->last_ns, 1709467200000000000ull);   // 2024-03-03 12:00
  EXPECT_NE(t->lookup(addr("2001:db8::1"), 6), nullptr);
  EXPECT_EQ(t->lookup(addr("203.0.113.9"), 4), nullptr);
  EXPECT_EQ(t->lookup(addr("203.0.113.8"), 4), nullptr);  // its score is not a number: skipped
  ASSERT_EQ(t->files().size(), 2u);
  EXPECT_EQ(t->files()[0].skipped, 2u);
  EXPECT_EQ(t->files()[1].skipped, 1u);
  EXPECT_NEAR(partner_days(h->first_ns + 36 * 3600'000'000'000ull, h->first_ns), 1.5, 1e-9);
  EXPECT_THROW(PartnerTable::load({d.write("c.csv", "ip,score\n1.2.3.4,1\n")}), PartnerError);
  EXPECT_THROW(PartnerTable::load({d.write("d.json", "{\"type\": \"bundle\"}")}), PartnerError);
  EXPECT_THROW(PartnerTable::load({(d.p / "missing.json").string()}), PartnerError);
}

}  // namespace

// The table's big arrays: 2 MB and more come from huge-page-advised mappings, 2 MB
// aligned (a 20 MB table then loads with tens of page faults, not thousands); smaller
// ones from operator new. Both sides must release what they took (ASan, and munmap's
// size).
TEST(HugeAlloc, LargeArraysAreHugePageAlignedAndAdvised) {
  std::vector<uint64_t, HugeAlloc<uint64_t>> big(kHugePage / 8 + 1, 7), small(100, 3);
  auto at = reinterpret_cast<uintptr_t>(big.data());
  EXPECT_EQ(at % kHugePage, 0u);
  EXPECT_EQ(big.front() + big.back() + small.back(), 17u);
  std::ifstream mode("/sys/kernel/mm/transparent_hugepage/enabled");
  std::string thp((std::istreambuf_iterator<char>(mode)), {});
  if (!thp.empty() && thp.find("[never]") == std::string::npos) {
    // /proc/self/smaps: the mapping holding big's first byte says whether THP may back it.
    std::ifstream smaps("/proc/self/smaps");
    std::string line;
    bool inside = false;
    int eligible = -1;
    while (std::getline(smaps, line)) {
      uintptr_t lo, hi;
      if (std::sscanf(line.c_str(), "%lx-%lx ", &lo, &hi) == 2 && line.find(':') > line.find(' '))
        inside = lo <= at && at < hi;
      else if (inside && line.rfind("THPeligible:", 0) == 0)
        eligible = std::atoi(line.c_str() + 12);
    }
    EXPECT_EQ(eligible, 1) << "THP mode " << thp;
  }
  big.resize(10);
  big.shrink_to_fit();  // from a mapping to operator new
  small.resize(kHugePage / 8 * 3, 1);  // and back
  EXPECT_EQ(big.back() + small.back(), 8u);
}
