// Fixed-capacity hash table for per-worker feature state (pairs, servers). Linear probing
// over an 8-slot window; when the window is full, the entry idle the longest is replaced
// (the coldest state is forgotten first); entries idle longer than max_age restart.
// Value must have `uint64_t last_ns` and `bool used()`; it is value-initialised on reuse.
#pragma once
#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstring>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "dataplane/mem.h"

namespace ls {

struct BoundedTableCounters {
  uint64_t created = 0, evicted = 0, aged_out = 0;
};

template <class Key, class Value>
class BoundedTable {
 public:
  struct Slot {
    Key key;
    Value v;
  };
  BoundedTable(uint32_t capacity, uint64_t max_age_ns, uint64_t seed)
      : max_age_(max_age_ns), seed_(seed) {
    uint32_t cap = std::bit_ceil(std::max<uint32_t>(capacity, 64));
    mem_ = Region(size_t(cap) * sizeof(Slot));
    slots_ = mem_.as<Slot>();
    mask_ = cap - 1;
  }
  // The entry for `k`, created (value-initialised) when absent, aged out or evicted.
  Value& find_or_make(const Key& k, uint64_t now) {
    uint64_t h = XXH3_64bits_withSeed(&k, sizeof k, seed_);
    constexpr uint32_t kWindow = 8;
    Slot* victim = nullptr;
    for (uint32_t i = 0; i < kWindow; i++) {
      Slot& s = slots_[(h + i) & mask_];
      if (s.v.used() && std::memcmp(&s.key, &k, sizeof k) == 0) {
        if (now <= s.v.last_ns + max_age_) return s.v;
        ctr.aged_out++;
        s.v = Value{};
        return s.v;
      }
      if (!s.v.used()) {
        if (!victim || victim->v.used()) victim = &s;
      } else if (!victim || (victim->v.used() && s.v.last_ns < victim->v.last_ns)) {
        victim = &s;
      }
    }
    if (victim->v.used()) ctr.evicted++;
    else ctr.created++;
    victim->key = k;
    victim->v = Value{};
    return victim->v;
  }
  size_t memory_bytes() const { return mem_.size(); }
  BoundedTableCounters ctr;

 private:
  Region mem_;
  Slot* slots_;
  uint32_t mask_;
  uint64_t max_age_, seed_;
};

}  // namespace ls
