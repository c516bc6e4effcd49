// Capture filters: tcpdump's expression language, compiled by libpcap into classic BPF
// and run on each packet's captured bytes before it is parsed. A packet the filter
// rejects is counted (filtered_out) and goes no further.
#pragma once
#include <array>
#include <memory>
#include <stdexcept>
#include <string>

#include "dataplane/packet.h"

struct bpf_insn;

namespace ls {

struct FilterError : std::invalid_argument {
  using std::invalid_argument::invalid_argument;
};

// Another way to run the Ethernet program (dataplane/filter_jit.h: DPDK's BPF JIT).
struct FilterEngine {
  virtual ~FilterEngine() = default;
  virtual bool match(const PacketView& v) const = 0;
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

  bool match(const PacketView& v, LinkType lt) const {
    // The engine sees cap_len as the length, at most 65535 (an mbuf's): "len" on a cut
    // frame and bigger frames need the interpreter.
    if (lt == LinkType::ETHERNET && eth_engine_ && (!eth_reads_len_ || v.wire_len == v.cap_len) &&
        v.cap_len <= 0xffff)
      return eth_engine_->match(v);
    return interpret(v, lt);
  }
  const std::string& expression() const { return expr_; }
  // Classic BPF for lt (nullptr when the expression does not apply to it).
  const bpf_insn* program(LinkType lt, unsigned& len) const;
  // Ethernet packets go to e from now on. Only before the filter is shared.
  void set_ethernet_engine(std::unique_ptr<FilterEngine> e, std::string name);
  // "libpcap" (its interpreter) or the Ethernet engine's name.
  const std::string& engine() const { return engine_name_; }
  // Link types (pcap names) the expression cannot apply to, comma-separated; "" if none.
  std::string unusable_links() const;

 private:
  bool interpret(const PacketView& v, LinkType lt) const;
  void release();
  struct Prog {
    LinkType link;
    bpf_insn* insns = nullptr;  // nullptr: did not compile for this link type
    unsigned len = 0;
  };
  static constexpr size_t kLinks = 7;
  std::array<Prog, kLinks> progs_;
  std::string expr_;
  std::unique_ptr<FilterEngine> eth_engine_;
  bool eth_reads_len_ = false;  // the Ethernet program loads the frame length
  std::string engine_name_ = "libpcap";
};

}  // namespace ls
