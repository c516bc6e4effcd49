// A bounded pool of fixed-size blocks beside a BoundedTable (see BlockPool).
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <type_traits>

#include "dataplane/mem.h"

namespace ls {

// Overflow blocks for one table's entries (an endpoint's dense sketches, a busy pair's
// full contact history). At most one block per entry and entries release theirs when they
// are reset (evicted, aged out, a new window), so a pool with the table's capacity never
// runs out. Zeroed memory needs no set-up: fresh blocks come from a counter, released ones
// from an intrusive free list. Under Paging::OnDemand only blocks ever handed out are
// touched; under Prefault (`run`) the first 1/kPrefaultShare of the pool is faulted in at
// start and the rest as entries overflow (a page fault per 2 MB of blocks).
template <class T>
class BlockPool {
  static_assert(sizeof(T) >= sizeof(uint32_t) && std::is_trivially_destructible_v<T>);

 public:
  static constexpr uint32_t kPrefaultShare = 8;
  explicit BlockPool(uint32_t capacity)
      : cap_(capacity), prefaulted_(capacity / kPrefaultShare),
        mem_(size_t(capacity) * sizeof(T), size_t(prefaulted_) * sizeof(T)) {
    blocks_ = mem_.as<T>();
  }
  uint32_t acquire() {
    uint32_t i;
    if (free_ != kNone) {
      i = free_;
      std::memcpy(&free_, static_cast<const void*>(&blocks_[i]), sizeof free_);  // the link a release left
    } else {
      // One block per entry: more means a reset did not release (a bug, not load).
      if (fresh_ == cap_) std::abort();
      i = fresh_;
      __atomic_store_n(&fresh_, i + 1, __ATOMIC_RELAXED);  // memory_bytes() reads it live
    }
    new (&blocks_[i]) T{};
    __atomic_store_n(&in_use_, in_use_ + 1, __ATOMIC_RELAXED);
    return i;
  }
  void release(uint32_t i) {
    std::memcpy(static_cast<void*>(&blocks_[i]), &free_, sizeof free_);  // a freed block holds the next free one
    free_ = i;
    __atomic_store_n(&in_use_, in_use_ - 1, __ATOMIC_RELAXED);
  }
  T& at(uint32_t i) { return blocks_[i]; }
  const T& at(uint32_t i) const { return blocks_[i]; }
  uint32_t in_use() const { return __atomic_load_n(&in_use_, __ATOMIC_RELAXED); }  // any thread (/stats)
  // Blocks ever handed out, or prefaulted: the memory touched. Any thread (/stats).
  size_t memory_bytes() const {
    uint32_t f = __atomic_load_n(&fresh_, __ATOMIC_RELAXED);
    return size_t(region_paging() == Paging::OnDemand ? f : std::max(f, prefaulted_)) * sizeof(T);
  }

 private:
  static constexpr uint32_t kNone = UINT32_MAX;
  uint32_t cap_, prefaulted_, fresh_ = 0, free_ = kNone, in_use_ = 0;
  Region mem_;
  T* blocks_;
};

}  // namespace ls
