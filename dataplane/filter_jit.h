// The capture filter's Ethernet program as native code, for the RX lcores: DPDK converts
// libpcap's classic BPF to eBPF (rte_bpf_convert), verifies it and JIT-compiles it.
// Needs the EAL (DPDK allocates the program from its heap).
#pragma once
#include <memory>
#include <string>

#include "dataplane/packet_filter.h"

namespace ls {

// A filter for `run`: expression compiled as PacketFilter does, plus the JIT for Ethernet
// frames when DPDK can build it. When it cannot, `why` says so and libpcap's interpreter
// runs every packet (the same verdicts, slower). Throws FilterError as PacketFilter.
std::shared_ptr<const PacketFilter> compile_lcore_filter(const std::string& expression, std::string& why);

}  // namespace ls
