// Capture filters: tcpdump's expression language, compiled by libpcap into classic BPF
// and run on each packet's captured bytes before it is parsed. A packet the filter
// rejects is counted (filtered_out) and goes no further.
#pragma once
#include <array>
#include <stdexcept>
#include <string>

#include "dataplane/packet.h"

struct bpf_insn;

namespace ls {

struct FilterError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

class PacketFilter {
 public:
  // Compiled for every link type the readers deliver. Throws FilterError with libpcap's
  // message when the expression does not compile for Ethernet (the DPDK ports' link
  // type). An expression that needs a link layer some captures lack ("ether host ...",
  // "vlan") matches no packet of those captures.
  explicit PacketFilter(const std::string& expression);
  ~PacketFilter();
  PacketFilter(const PacketFilter&) = delete;
  PacketFilter& operator=(const PacketFilter&) = delete;

  bool match(const PacketView& v, LinkType lt) const;
  const std::string& expression() const { return expr_; }
  // Link types (pcap names) the expression cannot apply to, comma-separated; "" if none.
  std::string unusable_links() const;

 private:
  void release();
  struct Prog {
    LinkType link;
    bpf_insn* insns = nullptr;  // nullptr: did not compile for this link type
    unsigned len = 0;
  };
  static constexpr size_t kLinks = 7;
  std::array<Prog, kLinks> progs_;
  std::string expr_;
};

}  // namespace ls
