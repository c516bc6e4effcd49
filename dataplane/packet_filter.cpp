#include "dataplane/packet_filter.h"

#include <pcap/pcap.h>

#include <utility>

namespace ls {

namespace {
// LinkType → the DLT libpcap compiles for. NULL_LOOP also stands for DLT_LOOP captures,
// whose address family is in network order: "ip" may not match those (BSD loopback).
constexpr std::pair<LinkType, int> kDlts[] = {
    {LinkType::ETHERNET, DLT_EN10MB}, {LinkType::RAW, DLT_RAW},   {LinkType::LINUX_SLL, DLT_LINUX_SLL},
    {LinkType::IPV4, DLT_IPV4},       {LinkType::IPV6, DLT_IPV6}, {LinkType::LINUX_SLL2, DLT_LINUX_SLL2},
    {LinkType::NULL_LOOP, DLT_NULL}};
constexpr int kSnap = 262144;
}  // namespace

PacketFilter::PacketFilter(const std::string& expression) : expr_(expression) {
  static_assert(std::size(kDlts) == kLinks);
  try {
    for (size_t i = 0; i < kLinks; i++) {
      auto [lt, dlt] = kDlts[i];
      progs_[i].link = lt;
      pcap_t* p = pcap_open_dead(dlt, kSnap);
      if (!p) throw FilterError("filter: libpcap could not open a handle to compile with");
      bpf_program prog{};
      // optimize = 1, as tcpdump; netmask unknown: "ip broadcast" is refused, as by tcpdump -r
      int rc = pcap_compile(p, &prog, expr_.c_str(), 1, PCAP_NETMASK_UNKNOWN);
      std::string why = rc != 0 ? pcap_geterr(p) : "";
      pcap_close(p);
      if (rc != 0 && lt == LinkType::ETHERNET) throw FilterError("filter '" + expr_ + "': " + why);
      progs_[i].insns = prog.bf_insns;  // nullptr when it did not compile for this link type
      progs_[i].len = prog.bf_len;
    }
  } catch (...) {
    release();
    throw;
  }
}

PacketFilter::~PacketFilter() { release(); }

void PacketFilter::release() {
  for (Prog& p : progs_) {
    bpf_program prog{p.len, p.insns};
    if (p.insns) pcap_freecode(&prog);
    p.insns = nullptr;
  }
}

const bpf_insn* PacketFilter::program(LinkType lt, unsigned& len) const {
  for (const Prog& p : progs_)
    if (p.link == lt) {
      len = p.len;
      return p.insns;
    }
  len = 0;
  return nullptr;
}

void PacketFilter::set_ethernet_engine(std::unique_ptr<FilterEngine> e, std::string name) {
  unsigned n;
  const bpf_insn* in = program(LinkType::ETHERNET, n);
  eth_reads_len_ = false;
  for (unsigned i = 0; i < n; i++)
    if (BPF_MODE(in[i].code) == BPF_LEN && (BPF_CLASS(in[i].code) == BPF_LD || BPF_CLASS(in[i].code) == BPF_LDX))
      eth_reads_len_ = true;
  eth_engine_ = std::move(e);
  engine_name_ = eth_engine_ ? std::move(name) : "libpcap";
}

bool PacketFilter::interpret(const PacketView& v, LinkType lt) const {
  for (const Prog& p : progs_)
    if (p.link == lt) return p.insns && bpf_filter(p.insns, v.data, v.wire_len, v.cap_len) != 0;
  return false;
}

std::string PacketFilter::unusable_links() const {
  std::string o;
  for (size_t i = 0; i < kLinks; i++)
    if (!progs_[i].insns) {
      if (!o.empty()) o += ", ";
      o += pcap_datalink_val_to_name(kDlts[i].second);
    }
  return o;
}

}  // namespace ls
