// Packet parser: any bytes, any link type, every decapsulation on, with and without a
// capture filter; then the flow core so the table's update path sees whatever the parser
// let through.
#include <cstddef>
#include <cstdint>

#include "dataplane/flow_core.h"
#include "dataplane/parser.h"

namespace {
struct Null : ls::RecordSink {
  void emit(const ls::FlowEntry&, const uint8_t*, uint16_t, ls::EndReason) override {}
};
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* d, size_t n) {
  if (n < 1) return 0;
  static Null sink;
  static ls::CoreConfig cfg = [] {
    ls::CoreConfig c;
    c.table.capacity = 1024;
    c.table.payload_bytes = 32;
    c.parse.decap_gtpu = true;
    return c;
  }();
  static ls::FlowCore core(cfg, sink);
  const ls::LinkType types[] = {ls::LinkType::ETHERNET, ls::LinkType::RAW,   ls::LinkType::LINUX_SLL,
                                ls::LinkType::IPV4,     ls::LinkType::IPV6,  ls::LinkType::LINUX_SLL2,
                                ls::LinkType::NULL_LOOP, ls::LinkType::ETHERNET};
  ls::PacketView v{d + 1, uint32_t(n - 1), uint32_t(n - 1) + (d[0] >> 4), 1'000'000'000ull * d[0], 0,
                   types[d[0] % 8], 0};
  ls::PacketMeta m;
  ls::Counters c;
  ls::parse_packet(v, v.link, cfg.parse, m, c);
  // A capture filter reading headers at offsets the packet may not have (libpcap's
  // interpreter bounds its loads by cap_len); what passes goes on as without one.
  static ls::ParseConfig filtered = [] {
    ls::ParseConfig p = cfg.parse;
    p.filter = std::make_shared<const ls::PacketFilter>(
        "vlan or (tcp[tcpflags] & tcp-syn != 0) or udp port 53 or ip6[40] == 128 or ip[6:2] & 0x1fff != 0");
    return p;
  }();
  ls::parse_packet(v, v.link, filtered, m, c);
  core.process_raw(&v, 1);
  return 0;
}
