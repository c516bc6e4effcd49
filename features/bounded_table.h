// Fixed-capacity hash table for per-worker feature state (pairs, servers, clients).
// 8-way set-associative: a key's set is 8 slots whose signatures and ages sit in one
// 64-byte line, apart from the (large) values, so a lookup costs that line plus the one
// value it finds. A full set replaces its entry idle the longest (the coldest state is
// forgotten first); entries idle longer than max_age restart.
// Value must have `uint64_t last_ns` and `bool used()`; it is value-initialised on reuse,
// after `drop(value)` (Drop: what an entry holds outside the table, given back).
// Under Paging::OnDemand (replay) the table uses kGrowFrom slots at first and doubles when
// a key meets a full set, up to its capacity; only then does it evict. Doubling splits
// each set in two in place (the upper half is memory not touched yet) keeping slot order,
// so a grown table holds what one preallocated at full capacity would: the same entries
// in the same slots, the same evictions (unit-tested).
#pragma once
#include <algorithm>
#include <bit>
#include <cstdint>
#include <cstddef>
#include <cstring>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "dataplane/counters.h"
#include "dataplane/mem.h"
#include "dataplane/prefetch.h"

namespace ls {

// Written by the owning worker, read live by the control core (/stats, /metrics).
struct BoundedTableCounters {
  OwnedCounter created, evicted, aged_out;
  uint64_t overflowed = 0;  // a gauge filled in by the owner of a BlockPool beside the table
};

template <class Value>
struct DropNothing {
  void operator()(Value&) const {}
};

// The table's hash of a key: XXH3 with the table's seed.
struct SeededXxh3 {
  template <class Key>
  uint64_t operator()(const Key& k, uint64_t seed) const { return XXH3_64bits_withSeed(&k, sizeof k, seed); }
};

template <class Key, class Value, class Drop = DropNothing<Value>, class Hash = SeededXxh3>
class BoundedTable {
 public:
  static constexpr uint32_t kWays = 8;
  struct Slot {
    Key key;
    Value v;
  };
  static constexpr uint32_t kGrowFrom = 1024;

  BoundedTable(uint32_t capacity, uint64_t max_age_ns, uint64_t seed, Drop drop = {})
      : max_cap_(capacity_for(capacity)), max_age_(max_age_ns),
        seed_(seed), drop_(drop) {
    size_t meta_bytes = size_t(max_cap_) * sizeof(Meta);
    mem_ = Region(meta_bytes + size_t(max_cap_) * sizeof(Slot));
    meta_ = mem_.as<Meta>();
    slots_ = reinterpret_cast<Slot*>(mem_.as<uint8_t>() + meta_bytes);
    mask_ = (region_paging() == Paging::OnDemand ? std::min(max_cap_, kGrowFrom) : max_cap_) - 1;
  }
  uint64_t hash(const Key& k) const { return Hash{}(k, seed_); }
  // The entry for `k`, created (value-initialised) when absent, aged out or evicted.
  Value& find_or_make(const Key& k, uint64_t now) { return find_or_make(k, hash(k), now); }
  // The same, `h` = hash(k) computed already.
  Value& find_or_make(const Key& k, uint64_t h, uint64_t now) {
    uint32_t sig = uint32_t(h >> 32) | 1;  // 0 marks a free slot
    uint32_t now_s = uint32_t(now / 1'000'000'000ull);
    for (;;) {
      uint32_t set = uint32_t(h) & mask_ & ~(kWays - 1);
      Meta* m = meta_ + set;
      uint32_t victim = 0;
      for (uint32_t i = 0; i < kWays; i++) {
        if (m[i].sig == sig && std::memcmp(&slots_[set + i].key, &k, sizeof k) == 0) return found(set + i, now);
        // Prefer a free slot, else the one seen longest ago.
        if (m[victim].sig && (!m[i].sig || m[i].age_s < m[victim].age_s)) victim = i;
      }
      if (m[victim].sig && mask_ + 1 < max_cap_) {
        grow();  // the set is full below capacity: double instead of evicting
        continue;
      }
      Slot& s = slots_[set + victim];
      if (m[victim].sig) {
        ctr.evicted++;
        drop_(s.v);
      } else {
        ctr.created++;
      }
      m[victim] = {sig, now_s};
      s.key = k;
      s.v = Value{};
      return s.v;
    }
  }
  // The entry for `k` if there is one (value-initialised if it aged out), else nullptr.
  Value* find(const Key& k, uint64_t h, uint64_t now) {
    int32_t i = way_of(h, k);
    return i < 0 ? nullptr : &found((uint32_t(h) & mask_ & ~(kWays - 1)) + uint32_t(i), now);
  }
  // Frees the slot of `v` (a reference find_or_make or find returned).
  void erase(Value& v) {
    size_t at = size_t(reinterpret_cast<Slot*>(reinterpret_cast<uint8_t*>(&v) - offsetof(Slot, v)) - slots_);
    drop_(v);
    meta_[at] = Meta{};
  }
  // Starts loading what find_or_make(k) will touch: the metadata line of k's set (first
  // step), then — once that line is in cache — the slot it will use (second step).
  // `h` = hash(k). prefetch_line, not __builtin_prefetch: see dataplane/prefetch.h.
  void prefetch(uint64_t h, bool slot) const {
    uint32_t set = uint32_t(h) & mask_ & ~(kWays - 1);
    const Meta* m = meta_ + set;
    if (!slot) {
      prefetch_line(m);
      return;
    }
    uint32_t sig = uint32_t(h >> 32) | 1, victim = 0;
    for (uint32_t i = 0; i < kWays; i++) {
      if (m[i].sig == sig) {
        victim = i;
        break;
      }
      if (m[victim].sig && (!m[i].sig || m[i].age_s < m[victim].age_s)) victim = i;
    }
    prefetch_slot(set + victim);
  }
  // Second step for find(k): the slot of k's entry, if its set has k's signature. Returns
  // whether it has.
  bool prefetch_found(uint64_t h) const {
    uint32_t set = uint32_t(h) & mask_ & ~(kWays - 1), sig = uint32_t(h >> 32) | 1;
    for (uint32_t i = 0; i < kWays; i++)
      if (meta_[set + i].sig == sig) {
        prefetch_slot(set + i);
        return true;
      }
    return false;
  }
  // Every live entry in slots [from, to), in slot order (exports: not for the hot path).
  template <class F>
  void for_each(F&& f, uint32_t from = 0, uint32_t to = UINT32_MAX) const {
    for (uint32_t i = from; i <= mask_ && i < to; i++)
      if (meta_[i].sig && slots_[i].v.used()) f(slots_[i].key, slots_[i].v);
  }
  // Bytes of the slots in use (under OnDemand the rest of the region is not touched).
  size_t memory_bytes() const { return size_t(mask_ + 1) * (sizeof(Meta) + sizeof(Slot)); }
  uint32_t slots() const { return mask_ + 1; }
  uint32_t capacity() const { return max_cap_; }
  static uint32_t capacity_for(uint32_t asked) { return std::bit_ceil(std::max<uint32_t>(asked, 64)); }
  BoundedTableCounters ctr;

 private:
  struct Meta {
    uint32_t sig;
    uint32_t age_s;  // latest record start seen, seconds: the eviction order
  };
  static_assert(sizeof(Meta) * kWays == 64, "a set's metadata is one cache line");
  // Every line the slot touches: slots are not line-aligned (24 to 120 bytes), so some
  // span one line more than their size needs.
  void prefetch_slot(uint32_t at) const {
    uintptr_t s = reinterpret_cast<uintptr_t>(slots_ + at);
    for (uintptr_t p = s & ~uintptr_t(63); p < s + sizeof(Slot); p += 64)
      prefetch_line(reinterpret_cast<const void*>(p));
  }
  // The entry in slot `at`, looked up at `now`: its age refreshed, restarted if it was idle
  // past max_age.
  Value& found(uint32_t at, uint64_t now) {
    Value& v = slots_[at].v;
    meta_[at].age_s = std::max(meta_[at].age_s, uint32_t(now / 1'000'000'000ull));
    if (now <= v.last_ns + max_age_) return v;
    ctr.aged_out++;
    drop_(v);
    v = Value{};
    return v;
  }
  // The way holding k in h's set, or -1.
  int32_t way_of(uint64_t h, const Key& k) const {
    uint32_t set = uint32_t(h) & mask_ & ~(kWays - 1), sig = uint32_t(h >> 32) | 1;
    for (uint32_t i = 0; i < kWays; i++)
      if (meta_[set + i].sig == sig && std::memcmp(&slots_[set + i].key, &k, sizeof k) == 0) return int32_t(i);
    return -1;
  }
  // Set s splits into sets s and s + old capacity (one more hash bit): the entries that
  // stay close up in their old order, the others go, in order, to the untouched upper set.
  void grow() {
    uint32_t old_cap = mask_ + 1;
    mask_ = old_cap * 2 - 1;
    for (uint32_t set = 0; set < old_cap; set += kWays) {
      uint32_t keep = 0, moved = 0;
      for (uint32_t i = 0; i < kWays; i++) {
        Meta& m = meta_[set + i];
        if (!m.sig) continue;
        uint64_t h = hash(slots_[set + i].key);
        uint32_t at = (uint32_t(h) & mask_ & ~(kWays - 1)) == set ? set + keep++ : set + old_cap + moved++;
        if (at != set + i) {
          meta_[at] = m;
          slots_[at] = slots_[set + i];
          m = Meta{};
        }
      }
    }
  }

  Region mem_;
  Meta* meta_;
  Slot* slots_;
  uint32_t mask_;
  uint32_t max_cap_;
  uint64_t max_age_, seed_;
  Drop drop_;
};

}  // namespace ls
