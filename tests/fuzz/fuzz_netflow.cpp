// NetFlow v9 / IPFIX decoder. The input is split into datagrams at 2-byte length
// prefixes, so templates from one datagram meet data sets in the next.
#include <cstdint>

#include "ctrl/netflow.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* d, size_t n) {
  uint64_t sink = 0;
  ls::NetflowDecoder dec([&](const ls::Uniflow& u) { sink += u.packets; });
  size_t off = 0;
  while (off + 2 <= n) {
    size_t len = size_t(d[off] << 8 | d[off + 1]);
    off += 2;
    if (len > n - off) len = n - off;
    dec.decode(d + off, len, "fuzz");
    off += len;
  }
  return int(sink & 0);
}
