// Packet parser: link layer → VLAN/QinQ/MPLS/PPPoE → IPv4/IPv6 (+ext, fragments) →
// TCP/UDP/ICMP/ICMPv6/SCTP, decapsulating GRE, VXLAN, GTP-U and IP-in-IP when enabled.
// Never reads past cap_len; every unusable packet sets meta.error to a named counter.
#pragma once
#include <memory>

#include "dataplane/packet.h"
#include "dataplane/packet_filter.h"

namespace ls {

struct ParseConfig {
  bool decap_gre = true;
  bool decap_vxlan = true;
  bool decap_gtpu = false;
  bool decap_ipip = true;
  uint16_t vxlan_port = 4789;
  uint16_t gtpu_port = 2152;
  uint8_t max_vlan_tags = 8;
  uint8_t max_mpls_labels = 16;
  uint8_t max_ipv6_ext = 8;
  uint8_t max_tunnel_depth = 3;
  // Capture filter (--filter); packets it rejects end as filtered_out before parsing.
  std::shared_ptr<const PacketFilter> filter;
};

// Fills `m`; returns true when the packet can be attributed to a flow. INFO counters
// (vlan_tagged, ipv4, ...) are bumped here; the caller bumps m.error on false.
bool parse_packet(const PacketView& p, LinkType lt, const ParseConfig& cfg, PacketMeta& m,
                  Counters& c);

}  // namespace ls
