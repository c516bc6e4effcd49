// The capture filter JIT-compiled by DPDK (dataplane/filter_jit.h) gives libpcap's
// interpreter's verdict on every packet of the shared captures, for expressions that use
// every kind of classic BPF instruction tcpdump emits, and on frames cut short.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "dataplane/filter_jit.h"
#include "dataplane/source.h"
#include "tests/scratch_eal.h"

namespace ls {
namespace {

class Eal : public ::testing::Environment {
 public:
  void SetUp() override { ASSERT_TRUE(lstest::start_scratch_eal("lsjit")) << "EAL init failed"; }
  void TearDown() override { rte_eal_cleanup(); }
};
const auto* const kEal = ::testing::AddGlobalTestEnvironment(new Eal);

// Each line exercises a different part of classic BPF: absolute and indirect loads of
// every size, the IP header length (ldxb 4*([k]&0xf)), jset with small and large
// constants, every ALU operation, the frame length, scratch memory, VLAN and IPv6 paths.
const std::vector<std::string> kExpressions = {
    "tcp", "udp", "icmp", "arp", "ip6", "vlan", "ip and not tcp and not udp",
    "tcp port 80", "udp port 53", "port 443 or port 8080", "portrange 1-1024",
    "tcp[tcpflags] & tcp-syn != 0", "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn",
    "tcp[13] & 0x10 = 0x10", "tcp[13] = 0x18", "ip[6] & 0x40 != 0", "ip[6:2] & 0x1fff != 0",
    "ip[0] & 0x80000000 != 0", "ip[4:4] & 0xfffff000 = 0x12345000",
    "len > 200", "greater 1000", "less 64", "net 10.0.0.0/8", "src net 192.168.0.0/16 and not dst port 53",
    "ip6 and tcp", "ip6 and udp port 53", "icmp[icmptype] == icmp-echo", "icmp6",
    "tcp[((tcp[12:1] & 0xf0) >> 2):4] = 0x47455420", "udp[8:2] > 1000",
    "ether[0] & 1 != 0", "ether broadcast", "ip multicast", "vlan and tcp", "vlan 100 or vlan 200",
    "ip[2:2] % 7 = 0", "ip[2:2] / 4 > 100", "ip[2:2] * 3 > 1000", "ip[8] - 1 < 63",
    "ip[1] ^ 0xff = 0xff", "ip[0] << 1 > 0x8a", "ip[2:2] | 1 = 41", "-ip[8] & 0xff > 128",
    "ip[9] + ip[8] > 70", "tcp[0:2] > tcp[2:2]", "udp[4:2] - 8 = len - 42",
    "(tcp or udp) and (ip[6:2] & 0x3fff = 0) and ip[2:2] > 576",
    "host 8.8.8.8 or host 1.1.1.1 or net 172.16.0.0/12",
    "ip6 host 2001:db8::1 or ip6 host 2001:db8::2 or ip6 host 2001:db8::3 or ip6 net fe80::/10",
};

std::vector<std::string> ethernet_captures() {
  const char* d = std::getenv("LINESIGHT_DATA");
  std::string root = d ? d : "../shared/data";
  std::vector<std::string> out;
  if (!std::filesystem::is_directory(root)) return out;
  for (const auto& e : std::filesystem::recursive_directory_iterator(root)) {
    std::string p = e.path().string();
    if (e.is_regular_file() && (p.ends_with(".pcap") || p.ends_with(".pcapng"))) out.push_back(p);
  }
  std::sort(out.begin(), out.end());
  return out;
}

TEST(FilterJit, EveryExpressionCompilesToNativeCode) {
  for (const auto& e : kExpressions) {
    std::string why;
    auto f = compile_lcore_filter(e, why);
    EXPECT_EQ(f->engine(), "dpdk-bpf-jit") << e << ": " << why;
  }
}

TEST(FilterJit, SameVerdictsAsLibpcapOnEveryCapturedFrame) {
  auto files = ethernet_captures();
  if (files.empty()) GTEST_SKIP() << "shared data absent (../shared/data or LINESIGHT_DATA)";
  std::vector<std::shared_ptr<const PacketFilter>> jit, interp;
  for (const auto& e : kExpressions) {
    std::string why;
    jit.push_back(compile_lcore_filter(e, why));
    interp.push_back(std::make_shared<const PacketFilter>(e));
  }
  uint64_t frames = 0, cut = 0;
  std::vector<uint64_t> matched(kExpressions.size());
  Arena arena;
  PacketView v[256];
  for (const auto& file : files) {
    auto src = open_pcap_files({file});
    for (uint32_t n; (n = src->next_burst(v, 256, arena));) {
      for (uint32_t i = 0; i < n; i++) {
        if (v[i].link != LinkType::ETHERNET) continue;
        frames++;
        for (size_t k = 0; k < kExpressions.size(); k++) {
          bool want = interp[k]->match(v[i], LinkType::ETHERNET);
          ASSERT_EQ(jit[k]->match(v[i], LinkType::ETHERNET), want)
              << kExpressions[k] << " on frame " << frames << " of " << file;
          matched[k] += want;
        }
        // The same frame cut short, as a small snaplen or a broken record would: loads
        // past the end reject the packet in both engines.
        if (frames % 97 == 0)
          for (uint32_t len = 0; len < std::min<uint32_t>(v[i].cap_len, 90); len++) {
            PacketView c = v[i];
            c.cap_len = c.wire_len = len;
            cut++;
            for (size_t k = 0; k < kExpressions.size(); k++)
              ASSERT_EQ(jit[k]->match(c, LinkType::ETHERNET), interp[k]->match(c, LinkType::ETHERNET))
                  << kExpressions[k] << " on frame " << frames << " of " << file << " cut to " << len;
          }
      }
    }
  }
  EXPECT_GT(frames, 100000u);
  EXPECT_GT(cut, 1000u);
  // An expression no frame matches would compare nothing: most must match some.
  size_t some = 0;
  for (size_t k = 0; k < kExpressions.size(); k++) some += matched[k] > 0 && matched[k] < frames;
  EXPECT_GE(some, kExpressions.size() * 3 / 4);
  std::printf("%llu frames (+%llu cut short) × %zu expressions: same verdicts\n",
              (unsigned long long)frames, (unsigned long long)cut, kExpressions.size());
}

// DPDK's verifier does not finish on this one (minutes, measured): the forked trial load
// is killed after its budget and the interpreter runs the filter.
TEST(FilterJit, AFilterTooHardForDpdksVerifierRunsInTheInterpreter) {
  std::string e;
  for (int i = 1; i < 40; i++)
    e += (i > 1 ? " or " : "") + std::string("(vlan ") + std::to_string(i) + " and tcp portrange " +
         std::to_string(i) + "-" + std::to_string(i + 100) + ")";
  std::string why;
  auto t0 = std::chrono::steady_clock::now();
  auto f = compile_lcore_filter(e, why);
  double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(f->engine(), "libpcap");
  EXPECT_NE(why.find("did not finish"), std::string::npos) << why;
  EXPECT_LT(s, 30.0);
}

TEST(FilterJit, FrameLengthOfACutFrameGoesToTheInterpreter) {
  std::string why;
  auto f = compile_lcore_filter("len > 100", why);
  PacketFilter ref("len > 100");
  uint8_t frame[64] = {};
  PacketView v{frame, 64, 1500, 0, 0, LinkType::ETHERNET, 0};
  EXPECT_TRUE(ref.match(v, LinkType::ETHERNET));
  EXPECT_TRUE(f->match(v, LinkType::ETHERNET));  // the JIT would see 64
  v.wire_len = 64;
  EXPECT_FALSE(f->match(v, LinkType::ETHERNET));
}

}  // namespace
}  // namespace ls
