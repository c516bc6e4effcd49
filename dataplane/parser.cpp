#include "dataplane/parser.h"

#include <cstring>

namespace ls {
namespace {

inline uint16_t rd16(const uint8_t* p) { return uint16_t(p[0] << 8 | p[1]); }
inline uint32_t rd32(const uint8_t* p) {
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}

constexpr uint16_t ETH_IPV4 = 0x0800, ETH_IPV6 = 0x86DD, ETH_VLAN = 0x8100, ETH_QINQ = 0x88A8,
                   ETH_QINQ_OLD = 0x9100, ETH_MPLS = 0x8847, ETH_MPLS_MC = 0x8848,
                   ETH_PPPOE = 0x8864, ETH_TEB = 0x6558;

// Parsing state: [p, end) is what remains of the captured bytes.
struct Cur {
  const uint8_t* p;
  const uint8_t* end;
  size_t left() const { return size_t(end - p); }
};

struct Parser {
  const ParseConfig& cfg;
  PacketMeta& m;
  Counters& c;
  uint8_t tunnel_depth = 0;
  size_t uncaptured = 0;  // bytes the innermost IP header claims beyond the capture

  bool fail(Ctr why) {
    m.error = why;
    m.ip_ver = 0;
    return false;
  }

  bool ethernet(Cur k) {
    if (k.left() < 14) return fail(Ctr::truncated_l2);
    uint16_t et = rd16(k.p + 12);
    k.p += 14;
    return ethertype(k, et);
  }

  bool ethertype(Cur k, uint16_t et) {
    uint8_t tags = 0;
    while (et == ETH_VLAN || et == ETH_QINQ || et == ETH_QINQ_OLD) {
      if (++tags > cfg.max_vlan_tags) return fail(Ctr::too_many_vlan_tags);
      if (k.left() < 4) return fail(Ctr::truncated_vlan);
      // The innermost VLAN id names the zone (QinQ: customer tag).
      m.zone = rd16(k.p) & 0x0FFF;
      et = rd16(k.p + 2);
      k.p += 4;
    }
    if (tags) {
      c.inc(Ctr::vlan_tagged);
      m.vlan_depth = tags;
    }
    switch (et) {
      case ETH_IPV4: return ipv4(k);
      case ETH_IPV6: return ipv6(k);
      case ETH_MPLS:
      case ETH_MPLS_MC: return mpls(k);
      case ETH_PPPOE: return pppoe(k);
      default: return fail(Ctr::non_ip_ethertype);
    }
  }

  bool mpls(Cur k) {
    c.inc(Ctr::mpls_labelled);
    for (uint8_t n = 0;; n++) {
      if (n >= cfg.max_mpls_labels) return fail(Ctr::too_many_mpls_labels);
      if (k.left() < 4) return fail(Ctr::truncated_mpls);
      bool bos = k.p[2] & 1;
      k.p += 4;
      if (bos) break;
    }
    // RFC 4385: no protocol field after the stack; the IP version nibble decides.
    if (k.left() < 1) return fail(Ctr::truncated_mpls);
    switch (k.p[0] >> 4) {
      case 4: return ipv4(k);
      case 6: return ipv6(k);
      default: return fail(Ctr::mpls_unknown_payload);
    }
  }

  bool pppoe(Cur k) {
    // RFC 2516 session header (6) + PPP protocol (2).
    if (k.left() < 8) return fail(Ctr::truncated_pppoe);
    uint16_t proto = rd16(k.p + 6);
    k.p += 8;
    c.inc(Ctr::pppoe);
    if (proto == 0x0021) return ipv4(k);
    if (proto == 0x0057) return ipv6(k);
    return fail(Ctr::pppoe_non_ip);
  }

  // A nested IP header replaces the outer one: the flow is the innermost conversation.
  bool enter_tunnel(Tunnel t, uint32_t id) {
    if (++tunnel_depth > cfg.max_tunnel_depth) return fail(Ctr::tunnel_depth_exceeded);
    c.inc(Ctr::tunnel_decapsulated);
    m.tunnel = t;
    m.zone = id;
    m.frag = Frag::NONE;
    m.sport = m.dport = 0;
    m.tcp_flags = 0;
    m.payload = nullptr;
    m.payload_len = 0;
    m.no_payload = false;
    return true;
  }

  bool ipv4(Cur k) {
    if (k.left() < 20) return fail(Ctr::truncated_ipv4);
    const uint8_t* h = k.p;
    if ((h[0] >> 4) != 4) return fail(Ctr::bad_ip_version);
    size_t ihl = size_t(h[0] & 0x0F) * 4;
    if (ihl < 20) return fail(Ctr::bad_ip_header_len);
    if (k.left() < ihl) return fail(Ctr::truncated_ipv4);
    size_t total = rd16(h + 2);
    // TSO-offloaded captures carry total length 0; use what was captured.
    if (total == 0) total = k.left();
    if (total < ihl) return fail(Ctr::bad_ip_total_len);
    if (ihl > 20) c.inc(Ctr::ipv4_options);
    c.inc(Ctr::ipv4);
    m.ip_ver = 4;
    std::memcpy(m.src, h + 12, 4);
    std::memcpy(m.dst, h + 16, 4);
    std::memset(m.src + 4, 0, 12);
    std::memset(m.dst + 4, 0, 12);
    m.l4_proto = h[9];
    m.frag_id = rd16(h + 4);
    uint16_t fo = rd16(h + 6);
    bool mf = fo & 0x2000;
    uint16_t off = fo & 0x1FFF;
    // Ethernet padding is not payload: trim to the IP total length.
    Cur l4{k.p + ihl, k.p + (total < k.left() ? total : k.left())};
    uncaptured = total > k.left() ? total - k.left() : 0;
    if (uncaptured) c.inc(Ctr::snaplen_truncated);
    if (off) {
      m.frag = Frag::LATER;
      return true;
    }
    if (mf) {
      m.frag = Frag::FIRST;
      c.inc(Ctr::fragments_first);
    }
    return l4proto(l4, m.l4_proto);
  }

  bool ipv6(Cur k) {
    if (k.left() < 40) return fail(Ctr::truncated_ipv6);
    const uint8_t* h = k.p;
    if ((h[0] >> 4) != 6) return fail(Ctr::bad_ip_version);
    size_t plen = rd16(h + 4);
    c.inc(Ctr::ipv6);
    m.ip_ver = 6;
    std::memcpy(m.src, h + 8, 16);
    std::memcpy(m.dst, h + 24, 16);
    uint8_t nh = h[6];
    k.p += 40;
    // Jumbograms (plen 0, RFC 2675) and snaplen: bound by what was captured.
    uncaptured = plen > k.left() ? plen - k.left() : 0;
    if (plen && plen < k.left()) k.end = k.p + plen;
    else if (uncaptured) c.inc(Ctr::snaplen_truncated);
    for (uint8_t n = 0;; n++) {
      switch (nh) {
        case 0:    // hop-by-hop
        case 43:   // routing
        case 60:   // destination options
        case 135:  // mobility
        case 139:  // HIP
        case 140: {  // shim6
          if (n >= cfg.max_ipv6_ext) return fail(Ctr::too_many_ipv6_ext_headers);
          if (k.left() < 8) return fail(Ctr::truncated_ipv6_ext);
          size_t len = (size_t(k.p[1]) + 1) * 8;
          if (k.left() < len) return fail(Ctr::truncated_ipv6_ext);
          nh = k.p[0];
          k.p += len;
          c.inc(Ctr::ipv6_ext_headers);
          continue;
        }
        case 51: {  // AH: length in 4-octet units minus 2 (RFC 4302)
          if (n >= cfg.max_ipv6_ext) return fail(Ctr::too_many_ipv6_ext_headers);
          if (k.left() < 8) return fail(Ctr::truncated_ipv6_ext);
          size_t len = (size_t(k.p[1]) + 2) * 4;
          if (k.left() < len) return fail(Ctr::truncated_ipv6_ext);
          nh = k.p[0];
          k.p += len;
          c.inc(Ctr::ipv6_ext_headers);
          continue;
        }
        case 44: {  // fragment
          if (n >= cfg.max_ipv6_ext) return fail(Ctr::too_many_ipv6_ext_headers);
          if (k.left() < 8) return fail(Ctr::truncated_ipv6_ext);
          uint16_t fo = rd16(k.p + 2);
          m.frag_id = rd32(k.p + 4);
          nh = k.p[0];
          k.p += 8;
          c.inc(Ctr::ipv6_ext_headers);
          if (fo & 0xFFF8) {
            m.l4_proto = nh;
            m.frag = Frag::LATER;
            return true;
          }
          if (fo & 1) {
            m.frag = Frag::FIRST;
            c.inc(Ctr::fragments_first);
          }
          continue;
        }
        default:
          m.l4_proto = nh;
          return l4proto(k, nh);
      }
    }
  }

  bool ports(Cur k, size_t hdr, Ctr trunc) {
    if (k.left() < hdr) return fail(trunc);
    m.sport = rd16(k.p);
    m.dport = rd16(k.p + 2);
    set_payload(k, hdr);
    return true;
  }

  void set_payload(Cur k, size_t hdr) {
    m.payload = k.p + hdr;
    size_t n = k.left() - hdr;
    m.payload_len = uint16_t(n > 0xFFFF ? 0xFFFF : n);
    // Empty on the wire, not merely cut off by the snaplen.
    m.no_payload = n == 0 && uncaptured == 0;
  }

  bool l4proto(Cur k, uint8_t proto) {
    switch (proto) {
      case 6: {
        if (k.left() < 20) return fail(Ctr::truncated_tcp);
        size_t doff = size_t(k.p[12] >> 4) * 4;
        if (doff < 20) return fail(Ctr::bad_tcp_header_len);
        if (k.left() < doff) return fail(Ctr::truncated_tcp);
        m.tcp_flags = k.p[13];
        return ports(k, doff, Ctr::truncated_tcp);
      }
      case 17: {
        if (!ports(k, 8, Ctr::truncated_udp)) return false;
        if (m.frag == Frag::NONE) return udp_tunnels(k);
        return true;
      }
      case 132: return ports(k, 12, Ctr::truncated_sctp);
      case 1:
      case 58: return icmp(k, proto);
      case 47: return m.frag == Frag::NONE && cfg.decap_gre ? gre(k) : true;
      case 4:
      case 41:
        if (m.frag != Frag::NONE || !cfg.decap_ipip) return true;
        if (!enter_tunnel(Tunnel::IPIP, 0)) return false;
        return proto == 4 ? ipv4(k) : ipv6(k);
      default: return true;  // other protocols: flow on addresses + protocol
    }
  }

  // Echo request and reply share the identifier so both land in one flow; other
  // messages key on type/code as NetFlow does (dport = type << 8 | code).
  bool icmp(Cur k, uint8_t proto) {
    if (k.left() < 8) return fail(Ctr::truncated_icmp);
    uint8_t type = k.p[0], code = k.p[1];
    bool echo = proto == 1 ? (type == 8 || type == 0) : (type == 128 || type == 129);
    if (echo) {
      m.sport = m.dport = rd16(k.p + 4);
    } else {
      m.sport = 0;
      m.dport = uint16_t(type << 8 | code);
    }
    set_payload(k, 8);
    return true;
  }

  bool gre(Cur k) {
    if (k.left() < 4) return fail(Ctr::truncated_gre);
    uint16_t fl = rd16(k.p);
    uint16_t proto = rd16(k.p + 2);
    if ((fl & 7) != 0) return fail(Ctr::unsupported_gre);  // version 1 (PPTP) and beyond
    size_t len = 4 + ((fl & 0x8000) ? 4 : 0);  // checksum + reserved
    uint32_t key = 0;
    if (fl & 0x2000) {
      if (k.left() < len + 4) return fail(Ctr::truncated_gre);
      key = rd32(k.p + len);
      len += 4;
    }
    if (fl & 0x1000) len += 4;  // sequence number
    if (k.left() < len) return fail(Ctr::truncated_gre);
    k.p += len;
    if (proto != ETH_IPV4 && proto != ETH_IPV6 && proto != ETH_TEB && proto != ETH_MPLS)
      return fail(Ctr::unsupported_gre);
    if (!enter_tunnel(Tunnel::GRE, key)) return false;
    if (proto == ETH_TEB) return ethernet(k);
    return ethertype(k, proto);
  }

  bool udp_tunnels(Cur k) {
    if (cfg.decap_vxlan && m.dport == cfg.vxlan_port) {
      // RFC 7348: flags(1) reserved(3) VNI(3) reserved(1), then Ethernet.
      if (k.left() < 16) return fail(Ctr::truncated_vxlan);
      if (!(k.p[8] & 0x08)) return true;  // I flag clear: not VXLAN, keep the UDP flow
      uint32_t vni = rd32(k.p + 12) >> 8;
      if (!enter_tunnel(Tunnel::VXLAN, vni)) return false;
      k.p += 16;
      return ethernet(k);
    }
    if (cfg.decap_gtpu && (m.dport == cfg.gtpu_port || m.sport == cfg.gtpu_port)) return gtpu(k);
    return true;
  }

  bool gtpu(Cur k) {
    // 3GPP TS 29.281: version 1, PT 1; G-PDU (0xFF) carries a user IP packet.
    k.p += 8;
    if (k.left() < 8) return fail(Ctr::truncated_gtpu);
    uint8_t fl = k.p[0];
    if ((fl >> 5) != 1 || !(fl & 0x10)) return fail(Ctr::bad_gtpu);
    if (k.p[1] != 0xFF) return true;  // signalling (echo etc.): stays a UDP flow
    uint32_t teid = rd32(k.p + 4);
    size_t len = 8;
    if (fl & 0x07) {
      if (k.left() < 12) return fail(Ctr::truncated_gtpu);
      uint8_t next = k.p[11];
      len = 12;
      // Extension headers: length in 4-octet units, last octet names the next one.
      for (int n = 0; next; n++) {
        if (n > 8 || k.left() < len + 1) return fail(Ctr::truncated_gtpu);
        size_t el = size_t(k.p[len]) * 4;
        if (el == 0 || k.left() < len + el) return fail(Ctr::bad_gtpu);
        next = k.p[len + el - 1];
        len += el;
      }
    }
    k.p += len;
    if (k.left() < 1) return fail(Ctr::truncated_gtpu);
    if (!enter_tunnel(Tunnel::GTPU, teid)) return false;
    switch (k.p[0] >> 4) {
      case 4: return ipv4(k);
      case 6: return ipv6(k);
      default: return fail(Ctr::bad_gtpu);
    }
  }
};

}  // namespace

bool parse_packet(const PacketView& p, LinkType lt, const ParseConfig& cfg, PacketMeta& m,
                  Counters& c) {
  m.ts_ns = p.ts_ns;
  m.epoch = p.epoch;
  m.wire_len = p.wire_len;
  m.payload = nullptr;
  m.payload_len = 0;
  m.no_payload = false;
  m.zone = 0;
  m.sport = m.dport = 0;
  m.ip_ver = 0;
  m.l4_proto = 0;
  m.tcp_flags = 0;
  m.frag = Frag::NONE;
  m.tunnel = Tunnel::NONE;
  m.vlan_depth = 0;
  m.error = Ctr::packets;
  if (cfg.filter && !cfg.filter->match(p, lt)) {
    m.error = Ctr::filtered_out;
    return false;
  }
  Parser ps{cfg, m, c};
  Cur k{p.data, p.data + p.cap_len};
  switch (lt) {
    case LinkType::ETHERNET: return ps.ethernet(k);
    case LinkType::RAW:
      if (k.left() < 1) return ps.fail(Ctr::truncated_l2);
      return (k.p[0] >> 4) == 6 ? ps.ipv6(k) : ps.ipv4(k);
    case LinkType::IPV4: return ps.ipv4(k);
    case LinkType::IPV6: return ps.ipv6(k);
    case LinkType::LINUX_SLL:
      // 16-byte cooked header, protocol in the last two bytes.
      if (k.left() < 16) return ps.fail(Ctr::truncated_l2);
      k.p += 16;
      return ps.ethertype(k, rd16(k.p - 2));
    case LinkType::LINUX_SLL2:
      if (k.left() < 20) return ps.fail(Ctr::truncated_l2);
      k.p += 20;
      return ps.ethertype(k, rd16(k.p - 20));
    case LinkType::NULL_LOOP: {
      // BSD loopback: 4-byte address family in host order of the capturing machine.
      if (k.left() < 4) return ps.fail(Ctr::truncated_l2);
      uint32_t af = uint32_t(k.p[0]) | uint32_t(k.p[3]);
      k.p += 4;
      if (af == 2) return ps.ipv4(k);
      if (af == 24 || af == 28 || af == 30) return ps.ipv6(k);
      return ps.fail(Ctr::non_ip_ethertype);
    }
  }
  return ps.fail(Ctr::unsupported_link_type);
}

}  // namespace ls
