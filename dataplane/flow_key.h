// Symmetric flow key: a padded POD in canonical endpoint order, hashed whole with XXH3
// and a per-run seed, so both directions of a conversation land in one entry.
#pragma once
#include <cstdint>
#include <cstring>
#include <type_traits>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "dataplane/packet.h"

namespace ls {

struct FlowKey {
  uint8_t lo[16];  // the smaller (address, port) endpoint
  uint8_t hi[16];
  uint16_t lo_port;
  uint16_t hi_port;
  uint32_t zone;  // VLAN / tunnel id when configured, else 0
  uint8_t proto;
  uint8_t ip_ver;
  uint8_t pad[2];  // always zero: the key is hashed and compared as raw bytes

  bool operator==(const FlowKey& o) const { return std::memcmp(this, &o, sizeof *this) == 0; }
};
static_assert(sizeof(FlowKey) == 44);
static_assert(std::is_trivially_copyable_v<FlowKey>);

struct KeyConfig {
  bool use_zone = false;  // include VLAN id / tunnel id in the key
};

// Builds the canonical key. Returns true when the packet's source is the `lo` endpoint.
inline bool make_key(const PacketMeta& m, const KeyConfig& kc, FlowKey& k) {
  int c = std::memcmp(m.src, m.dst, 16);
  bool src_lo = c < 0 || (c == 0 && m.sport <= m.dport);
  const uint8_t* a = src_lo ? m.src : m.dst;
  const uint8_t* b = src_lo ? m.dst : m.src;
  std::memcpy(k.lo, a, 16);
  std::memcpy(k.hi, b, 16);
  k.lo_port = src_lo ? m.sport : m.dport;
  k.hi_port = src_lo ? m.dport : m.sport;
  k.zone = kc.use_zone ? m.zone : 0;
  k.proto = m.l4_proto;
  k.ip_ver = m.ip_ver;
  k.pad[0] = k.pad[1] = 0;
  return src_lo;
}

inline uint64_t hash_key(const FlowKey& k, uint64_t seed) {
  return XXH3_64bits_withSeed(&k, sizeof k, seed);
}

}  // namespace ls
