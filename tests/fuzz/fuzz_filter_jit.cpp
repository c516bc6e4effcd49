// The capture filter's two engines on any frame: DPDK's JIT (run's RX lcores) must give
// libpcap's interpreter's verdict, else abort. Byte 0 adds to the wire length (`len` on a
// cut frame goes to the interpreter), the rest is the frame.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "dataplane/filter_jit.h"
#include "tests/scratch_eal.h"

namespace {
struct Engines {
  std::vector<std::shared_ptr<const ls::PacketFilter>> jit, interp;
};
Engines* engines;
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  if (!lstest::start_scratch_eal("lsfuzz")) {
    std::fprintf(stderr, "fuzz_filter_jit: EAL init failed\n");
    std::abort();
  }
  // Indirect loads past the IP header, small and large jset constants, ALU, len,
  // scratch memory (tcpdump keeps ports there for "portrange"), VLAN and IPv6.
  const char* exprs[] = {
      "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn or udp port 53",
      "tcp[((tcp[12:1] & 0xf0) >> 2):4] = 0x47455420",
      "vlan and (ip[6:2] & 0x1fff != 0 or icmp[icmptype] == icmp-echo)",
      "ip6 and (tcp portrange 1000-2000 or ip6[40] == 128)",
      "len > 100 and ip[2:2] % 7 = 3 or udp[4:2] - 8 = len - 42",
      "ether[0] & 1 != 0 or arp or (ip[9] + ip[8] > 70 and ip[1] ^ 0xff < 0x10)",
  };
  engines = new Engines;
  for (const char* e : exprs) {
    std::string why;
    engines->jit.push_back(ls::compile_lcore_filter(e, why));
    if (engines->jit.back()->engine() != "dpdk-bpf-jit") {
      std::fprintf(stderr, "fuzz_filter_jit: '%s' not JIT-compiled: %s\n", e, why.c_str());
      std::abort();
    }
    engines->interp.push_back(std::make_shared<const ls::PacketFilter>(e));
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* d, size_t n) {
  if (n < 1 || n - 1 > 0xffff) return 0;
  ls::PacketView v{d + 1, uint32_t(n - 1), uint32_t(n - 1) + d[0], 0, 0, ls::LinkType::ETHERNET, 0};
  for (size_t k = 0; k < engines->jit.size(); k++)
    if (engines->jit[k]->match(v, v.link) != engines->interp[k]->match(v, v.link)) __builtin_trap();
  return 0;
}
