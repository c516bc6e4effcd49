#include <gtest/gtest.h>

#include "dataplane/parser.h"
#include "tests/pktbuild.h"

using namespace ls;
using lstest::Pkt;

namespace {

struct Parsed {
  bool ok;
  PacketMeta m;
  Counters c;
};

Parsed parse(const Pkt& p, ParseConfig cfg = {}, LinkType lt = LinkType::ETHERNET) {
  Parsed r{};
  r.ok = parse_packet(p.view(1, lt), lt, cfg, r.m, r.c);
  return r;
}

void expect_v4(const PacketMeta& m, std::array<uint8_t, 4> s, std::array<uint8_t, 4> d) {
  EXPECT_EQ(m.ip_ver, 4);
  EXPECT_EQ(0, std::memcmp(m.src, s.data(), 4));
  EXPECT_EQ(0, std::memcmp(m.dst, d.data(), 4));
}

TEST(Parser, TcpOverEthernet) {
  Pkt p = lstest::tcp4({10, 0, 0, 1}, {10, 0, 0, 2}, 1234, 80, 0x02, "GET /");
  auto r = parse(p);  // r.m.payload points into p
  ASSERT_TRUE(r.ok);
  expect_v4(r.m, {10, 0, 0, 1}, {10, 0, 0, 2});
  EXPECT_EQ(r.m.l4_proto, 6);
  EXPECT_EQ(r.m.sport, 1234);
  EXPECT_EQ(r.m.dport, 80);
  EXPECT_EQ(r.m.tcp_flags, 0x02);
  ASSERT_EQ(r.m.payload_len, 5);
  EXPECT_EQ(0, std::memcmp(r.m.payload, "GET /", 5));
  EXPECT_EQ(r.c.get(Ctr::ipv4), 1u);
}

TEST(Parser, TcpOptionsSkipToPayload) {
  Pkt p;
  p.eth(0x0800).ip4({1, 1, 1, 1}, {2, 2, 2, 2}, 6).tcp(5, 6, 0x18, 3).payload("xy").finish();
  auto r = parse(p);
  ASSERT_TRUE(r.ok);
  ASSERT_EQ(r.m.payload_len, 2);
  EXPECT_EQ(r.m.payload[0], 'x');
}

TEST(Parser, EthernetPaddingIsNotPayload) {
  Pkt p = lstest::udp4({1, 1, 1, 1}, {2, 2, 2, 2}, 53, 53, "ab");
  p.zeros(20);  // trailer beyond the IP total length
  auto r = parse(p);
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.m.payload_len, 2);
}

TEST(Parser, VlanAndQinQ) {
  Pkt p;
  p.eth(0x88A8).vlan(100, 0x8100).vlan(200, 0x0800).ip4({1, 2, 3, 4}, {5, 6, 7, 8}, 17).udp(1, 2).finish();
  auto r = parse(p);
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.m.vlan_depth, 2);
  EXPECT_EQ(r.m.zone, 200u);  // innermost (customer) tag
  EXPECT_EQ(r.c.get(Ctr::vlan_tagged), 1u);
}

TEST(Parser, TooManyVlanTags) {
  Pkt p;
  p.eth(0x8100);
  for (int i = 0; i < 10000; i++) p.vlan(1, 0x8100);
  p.vlan(1, 0x0800);
  auto r = parse(p);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.m.error, Ctr::too_many_vlan_tags);
}

TEST(Parser, MplsStack) {
  Pkt p;
  p.eth(0x8847).mpls(16, false).mpls(17, false).mpls(18, true).ip4({1, 1, 1, 1}, {2, 2, 2, 2}, 6).tcp(1, 2, 0x10).finish();
  auto r = parse(p);
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.m.dport, 2);
  EXPECT_EQ(r.c.get(Ctr::mpls_labelled), 1u);
}

TEST(Parser, MplsWithoutBottomOfStack) {
  Pkt p;
  p.eth(0x8847);
  for (int i = 0; i < 20; i++) p.mpls(16, false);
  EXPECT_EQ(parse(p).m.error, Ctr::too_many_mpls_labels);
  Pkt q;
  q.eth(0x8847).mpls(16, false);
  EXPECT_EQ(parse(q).m.error, Ctr::truncated_mpls);
}

TEST(Parser, MplsUnknownPayload) {
  Pkt p;
  p.eth(0x8847).mpls(16, true).zeros(20);  // pseudowire control word, not IP
  EXPECT_EQ(parse(p).m.error, Ctr::mpls_unknown_payload);
}

TEST(Parser, PppoeSession) {
  Pkt p;
  p.eth(0x8864).bytes({0x11, 0, 0, 1}).u16(0).u16(0x0021).ip4({1, 1, 1, 1}, {2, 2, 2, 2}, 17).udp(9, 10).finish();
  auto r = parse(p);
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.m.sport, 9);
}

TEST(Parser, Ipv4OptionsAndBadHeaderLength) {
  Pkt p;
  p.eth(0x0800).ip4({1, 1, 1, 1}, {2, 2, 2, 2}, 17, 0, 1, 2).udp(7, 8).finish();
  auto r = parse(p);
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.m.sport, 7);
  EXPECT_EQ(r.c.get(Ctr::ipv4_options), 1u);
  p.b[14] = 0x44;  // IHL 4 words < 5
  EXPECT_EQ(parse(p).m.error, Ctr::bad_ip_header_len);
  p.b[14] = 0x4F;  // IHL 60 bytes > captured
  p.b.resize(14 + 40);
  EXPECT_EQ(parse(p).m.error, Ctr::truncated_ipv4);
}

TEST(Parser, Ipv4TotalLengthLies) {
  Pkt p = lstest::udp4({1, 1, 1, 1}, {2, 2, 2, 2}, 1, 2);
  p.put16(14 + 2, 10);  // total length shorter than the header
  EXPECT_EQ(parse(p).m.error, Ctr::bad_ip_total_len);
  p.put16(14 + 2, 60000);  // longer than captured: snaplen truncation, still usable
  auto r = parse(p);
  EXPECT_TRUE(r.ok);
  EXPECT_EQ(r.c.get(Ctr::snaplen_truncated), 1u);
}

TEST(Parser, BadIpVersion) {
  Pkt p = lstest::udp4({1, 1, 1, 1}, {2, 2, 2, 2}, 1, 2);
  p.b[14] = 0x55;
  EXPECT_EQ(parse(p).m.error, Ctr::bad_ip_version);
}

TEST(Parser, Ipv4Fragments) {
  Pkt first;
  first.eth(0x0800).ip4({1, 1, 1, 1}, {2, 2, 2, 2}, 17, 0x2000, 77).udp(5000, 53).zeros(32).finish();
  auto r1 = parse(first);
  ASSERT_TRUE(r1.ok);
  EXPECT_EQ(r1.m.frag, Frag::FIRST);
  EXPECT_EQ(r1.m.sport, 5000);
  EXPECT_EQ(r1.m.frag_id, 77u);
  Pkt later;
  later.eth(0x0800).ip4({1, 1, 1, 1}, {2, 2, 2, 2}, 17, 5, 77).zeros(16).finish();
  auto r2 = parse(later);
  ASSERT_TRUE(r2.ok);
  EXPECT_EQ(r2.m.frag, Frag::LATER);
  EXPECT_EQ(r2.m.sport, 0);  // attributed later by the fragment cache
}

TEST(Parser, Ipv6ExtensionHeadersAndFragment) {
  Pkt p;
  // hop-by-hop (8 bytes) → fragment (first, M=1) → UDP
  p.eth(0x86DD).ip6(1, 2, 0).bytes({44, 0, 1, 0, 0, 0, 0, 0}).bytes({17, 0}).u16(1).u32(0xABCD).udp(1000, 2000).finish();
  auto r = parse(p);
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.m.ip_ver, 6);
  EXPECT_EQ(r.m.l4_proto, 17);
  EXPECT_EQ(r.m.frag, Frag::FIRST);
  EXPECT_EQ(r.m.frag_id, 0xABCDu);
  EXPECT_EQ(r.m.dport, 2000);
  EXPECT_EQ(r.c.get(Ctr::ipv6_ext_headers), 2u);
}

TEST(Parser, Ipv6ExtensionChainBounded) {
  Pkt p;
  p.eth(0x86DD).ip6(1, 2, 60);
  for (int i = 0; i < 20; i++) p.bytes({60, 0, 1, 0, 0, 0, 0, 0});
  p.finish();
  EXPECT_EQ(parse(p).m.error, Ctr::too_many_ipv6_ext_headers);
  Pkt q;
  q.eth(0x86DD).ip6(1, 2, 0).bytes({6, 9, 0, 0}).finish();  // claims 80 bytes
  EXPECT_EQ(parse(q).m.error, Ctr::truncated_ipv6_ext);
}

TEST(Parser, IcmpEchoSharesIdentifier) {
  Pkt req, rep;
  req.eth(0x0800).ip4({1, 1, 1, 1}, {2, 2, 2, 2}, 1).bytes({8, 0, 0, 0}).u16(0x1234).u16(1).finish();
  rep.eth(0x0800).ip4({2, 2, 2, 2}, {1, 1, 1, 1}, 1).bytes({0, 0, 0, 0}).u16(0x1234).u16(1).finish();
  auto a = parse(req), b = parse(rep);
  ASSERT_TRUE(a.ok && b.ok);
  EXPECT_EQ(a.m.sport, 0x1234);
  EXPECT_EQ(b.m.dport, 0x1234);
  Pkt unreach;
  unreach.eth(0x0800).ip4({1, 1, 1, 1}, {2, 2, 2, 2}, 1).bytes({3, 3, 0, 0}).u32(0).finish();
  auto u = parse(unreach);
  EXPECT_EQ(u.m.dport, 0x0303);
  Pkt v6;
  v6.eth(0x86DD).ip6(1, 2, 58).bytes({128, 0, 0, 0}).u16(7).u16(1).finish();
  EXPECT_EQ(parse(v6).m.sport, 7);
}

TEST(Parser, Sctp) {
  Pkt p;
  p.eth(0x0800).ip4({1, 1, 1, 1}, {2, 2, 2, 2}, 132).u16(2905).u16(2906).u32(0).u32(0).finish();
  auto r = parse(p);
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.m.sport, 2905);
  p.b.resize(p.b.size() - 6);
  p.finish();
  EXPECT_EQ(parse(p).m.error, Ctr::truncated_sctp);
}

TEST(Parser, GreDecapsulation) {
  Pkt p;
  p.eth(0x0800).ip4({9, 9, 9, 9}, {8, 8, 8, 8}, 47).u16(0x2000).u16(0x0800).u32(42)
      .ip4({10, 0, 0, 1}, {10, 0, 0, 2}, 6).tcp(1111, 22, 0x02).finish();
  auto r = parse(p);
  ASSERT_TRUE(r.ok);
  expect_v4(r.m, {10, 0, 0, 1}, {10, 0, 0, 2});
  EXPECT_EQ(r.m.tunnel, Tunnel::GRE);
  EXPECT_EQ(r.m.zone, 42u);
  EXPECT_EQ(r.m.dport, 22);
  ParseConfig off;
  off.decap_gre = false;
  auto o = parse(p, off);
  ASSERT_TRUE(o.ok);
  expect_v4(o.m, {9, 9, 9, 9}, {8, 8, 8, 8});
  EXPECT_EQ(o.m.l4_proto, 47);
}

TEST(Parser, GreVersion1IsUnsupported) {
  Pkt p;
  p.eth(0x0800).ip4({9, 9, 9, 9}, {8, 8, 8, 8}, 47).u16(0x2001).u16(0x880B).u32(0).finish();
  EXPECT_EQ(parse(p).m.error, Ctr::unsupported_gre);
}

TEST(Parser, VxlanDecapsulation) {
  Pkt p;
  p.eth(0x0800).ip4({9, 9, 9, 9}, {8, 8, 8, 8}, 17).udp(55555, 4789).bytes({8, 0, 0, 0}).u32(5001 << 8)
      .eth(0x0800).ip4({192, 168, 0, 1}, {192, 168, 0, 2}, 17).udp(53, 5353).finish();
  auto r = parse(p);
  ASSERT_TRUE(r.ok);
  expect_v4(r.m, {192, 168, 0, 1}, {192, 168, 0, 2});
  EXPECT_EQ(r.m.tunnel, Tunnel::VXLAN);
  EXPECT_EQ(r.m.zone, 5001u);
  EXPECT_EQ(r.m.sport, 53);
}

TEST(Parser, GtpuDecapsulationWhenEnabled) {
  Pkt p;
  p.eth(0x0800).ip4({9, 9, 9, 9}, {8, 8, 8, 8}, 17).udp(2152, 2152)
      .bytes({0x30, 0xFF}).u16(0).u32(0xBEEF)
      .ip4({100, 64, 0, 1}, {1, 1, 1, 1}, 6).tcp(40000, 443, 0x02).finish();
  auto plain = parse(p);
  ASSERT_TRUE(plain.ok);
  EXPECT_EQ(plain.m.dport, 2152);  // off by default: stays the outer UDP flow
  ParseConfig on;
  on.decap_gtpu = true;
  auto r = parse(p, on);
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.m.tunnel, Tunnel::GTPU);
  EXPECT_EQ(r.m.zone, 0xBEEFu);
  EXPECT_EQ(r.m.dport, 443);
}

TEST(Parser, TunnelDepthBounded) {
  Pkt p;
  p.eth(0x0800);
  for (int i = 0; i < 6; i++) p.ip4({1, 1, 1, 1}, {2, 2, 2, 2}, 4);  // IP-in-IP in IP-in-IP ...
  p.ip4({1, 1, 1, 1}, {2, 2, 2, 2}, 17).udp(1, 2).finish();
  EXPECT_EQ(parse(p).m.error, Ctr::tunnel_depth_exceeded);
}

TEST(Parser, LinuxCookedAndRaw) {
  Pkt sll;
  sll.zeros(14).u16(0x0800).ip4({1, 1, 1, 1}, {2, 2, 2, 2}, 17).udp(1, 2).finish();
  auto r = parse(sll, {}, LinkType::LINUX_SLL);
  ASSERT_TRUE(r.ok);
  EXPECT_EQ(r.m.dport, 2);
  Pkt raw;
  raw.ip6(1, 2, 17).udp(3, 4).finish();
  auto q = parse(raw, {}, LinkType::RAW);
  ASSERT_TRUE(q.ok);
  EXPECT_EQ(q.m.ip_ver, 6);
  EXPECT_EQ(q.m.dport, 4);
}

TEST(Parser, NonIpIsNamed) {
  Pkt arp;
  arp.eth(0x0806).zeros(28);
  EXPECT_EQ(parse(arp).m.error, Ctr::non_ip_ethertype);
}

// Every prefix of every valid packet: never a crash, never a read past cap_len (ASan
// checks that), and a truncated L2-L4 header is named rather than accepted silently.
TEST(Parser, EveryTruncationIsHandled) {
  std::vector<Pkt> ps;
  ps.push_back(lstest::tcp4({1, 1, 1, 1}, {2, 2, 2, 2}, 1, 2, 0x10, "hello"));
  Pkt v;
  v.eth(0x0800).ip4({9, 9, 9, 9}, {8, 8, 8, 8}, 17).udp(1, 4789).bytes({8, 0, 0, 0}).u32(1 << 8)
      .eth(0x8100).vlan(5, 0x86DD).ip6(1, 2, 44).bytes({6, 0, 0, 1}).u32(9).tcp(1, 2, 0x02).finish();
  ps.push_back(v);
  for (auto& full : ps) {
    for (size_t n = 0; n < full.b.size(); n++) {
      std::vector<uint8_t> cut(full.b.begin(), full.b.begin() + long(n));
      PacketView pv{cut.data(), uint32_t(n), uint32_t(full.b.size()), 1, 0, LinkType::ETHERNET, 0};
      PacketMeta m;
      Counters c;
      bool ok = parse_packet(pv, LinkType::ETHERNET, {}, m, c);
      if (!ok) {
        EXPECT_NE(m.error, Ctr::packets) << "prefix " << n;
      }
    }
  }
}

}  // namespace

// Capture filters: libpcap's compiler, our call per packet before the parser.
TEST(PacketFilter, RejectsBeforeParsingAndCountsNothingElse) {
  ParseConfig cfg;
  cfg.filter = std::make_shared<const PacketFilter>("tcp port 80 and host 10.0.0.2");
  auto pass = parse(lstest::tcp4({10, 0, 0, 1}, {10, 0, 0, 2}, 1234, 80), cfg);
  EXPECT_TRUE(pass.ok);
  EXPECT_EQ(pass.c.get(Ctr::ipv4), 1u);
  for (const Pkt& p : {lstest::tcp4({10, 0, 0, 1}, {10, 0, 0, 3}, 1234, 80),
                       lstest::udp4({10, 0, 0, 1}, {10, 0, 0, 2}, 1234, 80)}) {
    auto r = parse(p, cfg);
    EXPECT_FALSE(r.ok);
    EXPECT_EQ(r.m.error, Ctr::filtered_out);
    EXPECT_EQ(r.c.get(Ctr::ipv4), 0u);  // not parsed at all
  }
  // A field past the captured bytes does not match (BPF's out-of-bounds load ends it).
  Pkt cut = lstest::tcp4({10, 0, 0, 1}, {10, 0, 0, 2}, 1234, 80);
  cut.b.resize(14 + 20 + 4);  // the ports, not the flags
  cfg.filter = std::make_shared<const PacketFilter>("tcp[tcpflags] & tcp-syn != 0");
  EXPECT_EQ(parse(cut, cfg).m.error, Ctr::filtered_out);
}

TEST(PacketFilter, EveryLinkTypeTheReadersDeliver) {
  Pkt raw;
  raw.ip4({10, 0, 0, 1}, {10, 0, 0, 2}, 6).tcp(1234, 80, 0x02).finish();
  ParseConfig cfg;
  cfg.filter = std::make_shared<const PacketFilter>("tcp dst port 80");
  EXPECT_TRUE(parse(raw, cfg, LinkType::RAW).ok);
  EXPECT_TRUE(parse(raw, cfg, LinkType::IPV4).ok);
  EXPECT_EQ(cfg.filter->unusable_links(), "");
  // No Ethernet header in raw IP: an Ethernet filter matches none of those packets.
  cfg.filter = std::make_shared<const PacketFilter>("ether host 02:00:00:00:00:02");
  EXPECT_NE(cfg.filter->unusable_links().find("RAW"), std::string::npos) << cfg.filter->unusable_links();
  EXPECT_TRUE(parse(lstest::tcp4({10, 0, 0, 1}, {10, 0, 0, 2}, 1234, 80), cfg).ok);
  EXPECT_EQ(parse(raw, cfg, LinkType::RAW).m.error, Ctr::filtered_out);
}

TEST(PacketFilter, BadExpressionNamesItAndLibpcapsReason) {
  for (const char* bad : {"tcp port", "host 999.1.1.1", "ip broadcast", "portrange 9-"}) {
    try {
      PacketFilter f(bad);
      ADD_FAILURE() << bad << " compiled";
    } catch (const FilterError& e) {
      std::string m = e.what();
      EXPECT_NE(m.find(std::string("filter '") + bad + "': "), std::string::npos) << m;
      EXPECT_GT(m.size(), std::strlen(bad) + 12) << "no reason: " << m;
    }
  }
}
