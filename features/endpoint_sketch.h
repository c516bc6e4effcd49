// The three distinct counters of one endpoint (a server's clients, client prefixes and
// ports; a client's servers, ports and periodic servers): HyperLogLogs of 2^8, 2^8 and
// 2^6 registers, 624 bytes dense. Most endpoints meet a handful of distinct peers (on the
// synthetic benchmark 99 % meet one or two), so an endpoint keeps its non-zero registers
// inline as (index, rank) pairs, kSparse per counter, and moves all three counters to a
// dense block from its table's pool when one outgrows that. An estimate is computed
// from the same registers either way: bit-identical to a dense sketch fed the same values
// (unit-tested), so rows, detections and merges do not depend on the form. `sketches
// merge` keeps its endpoints in the same form (features/sketch_set.h), its blocks in a
// pool that grows: the functions take either pool.
#pragma once
#include <cstdint>
#include <deque>
#include <type_traits>

#include "features/block_pool.h"
#include "features/hll.h"

namespace ls {

struct DenseSketches {
  Hll<8> a, b;
  Hll<6> c;
};

using SketchPool = BlockPool<DenseSketches>;

// Dense blocks for a merge off the hot path (SketchSet): grows as endpoints go dense and
// never releases. A deque, so growing never copies the blocks already there.
class GrowingSketchPool {
 public:
  uint32_t acquire() {
    blocks_.emplace_back();
    return uint32_t(blocks_.size() - 1);
  }
  DenseSketches& at(uint32_t i) { return blocks_[i]; }
  const DenseSketches& at(uint32_t i) const { return blocks_[i]; }
  // A block each (libstdc++ gives blocks over 512 bytes a node of their own): itself,
  // malloc's header and the deque's pointer to it.
  size_t memory_bytes() const { return blocks_.size() * (sizeof(DenseSketches) + 16 + sizeof(void*)); }

 private:
  std::deque<DenseSketches> blocks_;
};

struct EndpointSketches {
  static constexpr uint32_t kSparse = 6;
  template <int S>
  using Prec = std::conditional_t<S == 2, Hll<6>, Hll<8>>;
  uint32_t dense = 0;             // pool block + 1; 0 while sparse
  uint8_t n[3] = {};              // sparse registers in use per counter
  uint16_t reg[3][kSparse] = {};  // index << 8 | rank

  template <int S, class Pool>
  void add(uint64_t h, Pool& pool) {
    put<S>(Prec<S>::index_of(h), Prec<S>::rank_of(h), pool);
  }
  // Register idx of counter S raised to at least rho (an add's effect, or a merge's).
  template <int S, class Pool>
  void put(uint32_t idx, uint8_t rho, Pool& pool) {
    if (dense) return raise<S>(pool.at(dense - 1), idx, rho);
    for (uint32_t i = 0; i < n[S]; i++)
      if (reg[S][i] >> 8 == idx) {
        if ((reg[S][i] & 0xff) < rho) reg[S][i] = uint16_t(idx << 8 | rho);
        return;
      }
    if (n[S] < kSparse) {
      reg[S][n[S]++] = uint16_t(idx << 8 | rho);
      return;
    }
    uint32_t b = pool.acquire();
    DenseSketches& d = pool.at(b);
    spill<0>(d);
    spill<1>(d);
    spill<2>(d);
    dense = b + 1;
    raise<S>(d, idx, rho);
  }
  template <int S, class Pool>
  double estimate(const Pool& pool) const {
    using H = Prec<S>;
    if (dense) {
      const DenseSketches& d = pool.at(dense - 1);
      return S == 0 ? d.a.estimate() : S == 1 ? d.b.estimate() : d.c.estimate();
    }
    // The sum a dense sketch keeps: its registers' terms, the empty ones included.
    uint64_t sum = uint64_t(H::kM - n[S]) << H::kScale;
    for (uint32_t i = 0; i < n[S]; i++) sum += H::term(uint8_t(reg[S][i] & 0xff));
    return H::estimate(sum, H::kM - n[S]);
  }
  // Counter S as a dense sketch (exports, merges): the same registers either way.
  template <int S, class Pool>
  void to_dense(const Pool& pool, Prec<S>& out) const {
    if (dense) {
      const DenseSketches& d = pool.at(dense - 1);
      if constexpr (S == 0) out = d.a;
      else if constexpr (S == 1) out = d.b;
      else out = d.c;
      return;
    }
    out = Prec<S>{};
    for (uint32_t i = 0; i < n[S]; i++) out.raise(reg[S][i] >> 8, uint8_t(reg[S][i] & 0xff));
  }
  template <class Pool>
  void release(Pool& pool) {
    if (dense) pool.release(dense - 1);
    dense = 0;
  }

 private:
  template <int S>
  static void raise(DenseSketches& d, uint32_t idx, uint8_t rho) {
    if constexpr (S == 0) d.a.raise(idx, rho);
    else if constexpr (S == 1) d.b.raise(idx, rho);
    else d.c.raise(idx, rho);
  }
  template <int S>
  void spill(DenseSketches& d) const {
    for (uint32_t i = 0; i < n[S]; i++) raise<S>(d, reg[S][i] >> 8, uint8_t(reg[S][i] & 0xff));
  }
};

}  // namespace ls
