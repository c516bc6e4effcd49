// Per-packet metadata filled once by the parser; later stages never re-parse.
#pragma once
#include <cstdint>

#include "dataplane/counters.h"

namespace ls {

// Link types we accept (pcap LINKTYPE_* values; DPDK ports are always ETHERNET).
enum class LinkType : uint16_t {
  ETHERNET = 1,
  RAW = 101,
  LINUX_SLL = 113,
  IPV4 = 228,
  IPV6 = 229,
  LINUX_SLL2 = 276,
  NULL_LOOP = 0,
};

enum class Frag : uint8_t { NONE = 0, FIRST = 1, LATER = 2 };
enum class Tunnel : uint8_t { NONE = 0, GRE = 1, VXLAN = 2, GTPU = 3, IPIP = 4 };

// A raw packet handed over by a source. `data` stays valid until the burst is released.
struct PacketView {
  const uint8_t* data;
  uint32_t cap_len;
  uint32_t wire_len;
  uint64_t ts_ns;
  uint32_t rewrite;  // loop index for deterministic address rewriting (0 = none)
  LinkType link;
  uint16_t epoch;  // clock epoch, bumped by ClockGuard on a backward timestamp jump
};

struct alignas(64) PacketMeta {
  uint8_t src[16];  // IPv4 in the first 4 bytes, rest zero
  uint8_t dst[16];
  uint64_t ts_ns;
  const uint8_t* payload;  // L4 payload (captured part)
  uint32_t wire_len;
  uint32_t zone;  // VLAN id or tunnel id, used in the key when configured
  uint32_t frag_id;  // IPv4 ID or IPv6 fragment identification
  uint16_t payload_len;
  uint16_t sport;
  uint16_t dport;
  uint8_t ip_ver;  // 4 or 6; 0 when the packet was not parsed into a flow
  uint8_t l4_proto;
  uint8_t tcp_flags;
  Frag frag;
  Tunnel tunnel;
  uint8_t vlan_depth;
  bool no_payload;  // L4 header parsed and no payload bytes on the wire (pure ACK, ...)
  uint16_t epoch;
  Ctr error;  // Ctr::packets when the packet is usable, else the named drop counter
};

// Watches a source's timestamps in arrival order. A step back larger than the tolerance
// starts a new clock epoch (concatenated captures: the 35 MB mix jumps back 300 times);
// tables flush on a new epoch. Decided once per source, so every core agrees.
class ClockGuard {
 public:
  explicit ClockGuard(uint64_t tolerance_ns) : tol_(tolerance_ns) {}
  void stamp(PacketView& v) {
    if (v.ts_ns + tol_ < max_) {
      epoch_++;
      max_ = v.ts_ns;
    } else if (v.ts_ns > max_) {
      max_ = v.ts_ns;
    }
    v.epoch = epoch_;
  }

 private:
  uint64_t tol_, max_ = 0;
  uint16_t epoch_ = 0;
};

}  // namespace ls
