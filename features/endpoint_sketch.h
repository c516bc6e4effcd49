// The three distinct counters of one endpoint (a server's clients, client prefixes and
// ports; a client's servers, ports and periodic servers): HyperLogLogs of 2^8, 2^8 and
// 2^6 registers, 624 bytes dense. Most endpoints meet a handful of distinct peers (on the
// synthetic benchmark 99 % meet one or two), so an endpoint keeps its non-zero registers
// inline as (index, rank) pairs, kSparse per counter, and moves all three counters to a
// dense block from its table's pool when one outgrows that. An estimate is computed
// from the same registers either way: bit-identical to a dense sketch fed the same values
// (unit-tested), so rows, detections and merges do not depend on the form.
#pragma once
#include <cstdint>
#include <type_traits>

#include "features/block_pool.h"
#include "features/hll.h"

namespace ls {

struct DenseSketches {
  Hll<8> a, b;
  Hll<6> c;
};

using SketchPool = BlockPool<DenseSketches>;

struct EndpointSketches {
  static constexpr uint32_t kSparse = 6;
  template <int S>
  using Prec = std::conditional_t<S == 2, Hll<6>, Hll<8>>;
  uint32_t dense = 0;             // pool block + 1; 0 while sparse
  uint8_t n[3] = {};              // sparse registers in use per counter
  uint16_t reg[3][kSparse] = {};  // index << 8 | rank

  template <int S>
  void add(uint64_t h, SketchPool& pool) {
    if (dense) return raise<S>(pool.at(dense - 1), Prec<S>::index_of(h), Prec<S>::rank_of(h));
    uint16_t idx = uint16_t(Prec<S>::index_of(h)), rho = Prec<S>::rank_of(h);
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
    raise<S>(d, idx, uint8_t(rho));
  }
  template <int S>
  double estimate(const SketchPool& pool) const {
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
  template <int S>
  void to_dense(const SketchPool& pool, Prec<S>& out) const {
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
  void release(SketchPool& pool) {
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
