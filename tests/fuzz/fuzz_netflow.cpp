// NetFlow v1 / v5 / v7 / v9 / IPFIX / sFlow v5 decoder. The input is split into datagrams
// at 2-byte length prefixes, so templates from one datagram meet data sets in the next. Arrival
// time is fixed, so a crash replays the same way. The same bytes are
// also one IPFIX-over-TCP stream, read in pieces whose sizes the input's bytes set.
// Every record also goes through collect --filter's view of it as a packet.
#include <algorithm>
#include <cstdint>

#include "ctrl/collector.h"
#include "ctrl/netflow.h"

constexpr uint64_t kArrival = 1'800'000'000'000'000'000ull;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* d, size_t n) {
  static const ls::PacketFilter filter("tcp[tcpflags] & tcp-syn != 0 or icmp6 or sctp port 1 or udp portrange 1-1024 or ip6 proto 47");
  uint64_t sink = 0;
  ls::NetflowDecoder dec([&](const ls::Uniflow& u) { sink += u.packets + ls::record_passes(filter, u); });
  size_t off = 0;
  while (off + 2 <= n) {
    size_t len = size_t(d[off] << 8 | d[off + 1]);
    off += 2;
    if (len > n - off) len = n - off;
    dec.decode(d + off, len, "fuzz", kArrival);
    off += len;
  }
  ls::NetflowDecoder tcp([&](const ls::Uniflow& u) { sink += u.packets; });
  ls::IpfixStream stream;
  for (size_t at = 0; at < n;) {
    size_t piece = std::min<size_t>(n - at, 1 + d[at] % 97);
    if (!stream.feed(d + at, piece, [&](const uint8_t* m, size_t len) { tcp.decode(m, len, "fuzz-tcp", kArrival); })) break;
    at += piece;
  }
  tcp.end_session("fuzz-tcp");
  return int(sink & 0);
}
