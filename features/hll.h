// HyperLogLog distinct counter (Flajolet et al. 2007) with 2^P one-byte registers.
// Mergeable: the union of two sketches is the register-wise maximum, so sensors (or
// workers) can combine their counts of distinct clients without sharing addresses.
// Standard error ≈ 1.04 / sqrt(2^P): P = 8 → 6.5 %, 256 bytes.
#pragma once
#include <array>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>

namespace ls {

template <unsigned P>
struct Hll {
  static constexpr uint32_t kM = 1u << P;
  static constexpr int kScale = 52;  // the harmonic sum in fixed point: 2^-k × 2^52
  uint8_t reg[kM] = {};
  // Kept as registers change, so an estimate is O(1). Integers: the same registers give
  // the same sum whatever order values arrived in (workers and replays agree bit for bit).
  uint64_t sum = uint64_t(kM) << kScale;
  uint32_t zeros = kM;

  static uint64_t term(uint8_t k) { return k <= kScale ? 1ull << (kScale - k) : 0; }
  // A value's register and rank (leading zeros of the rest, plus one: never 0).
  static uint32_t index_of(uint64_t h) { return uint32_t(h >> (64 - P)); }
  static uint8_t rank_of(uint64_t h) {
    uint64_t rest = h << P;
    return uint8_t(rest ? std::countl_zero(rest) + 1 : 64 - P + 1);
  }
  void add(uint64_t h) { raise(index_of(h), rank_of(h)); }
  // f(index, rank) for each non-zero register, in index order, 8 registers at a time:
  // most endpoints' sketches hold a handful.
  template <class F>
  void each_set(F&& f) const {
    static_assert(kM % 8 == 0 && std::endian::native == std::endian::little);
    for (uint32_t i = 0; i < kM; i += 8) {
      uint64_t word;
      std::memcpy(&word, reg + i, 8);
      while (word) {
        uint32_t byte = uint32_t(std::countr_zero(word)) / 8;
        word &= ~(0xffull << (8 * byte));
        f(i + byte, reg[i + byte]);
      }
    }
  }
  void raise(uint32_t idx, uint8_t rho) {
    uint8_t old = reg[idx];
    if (rho <= old) return;
    sum += term(rho) - term(old);
    zeros -= old == 0;
    reg[idx] = rho;
  }
  void merge(const Hll& o) {
    sum = 0;
    zeros = 0;
    for (uint32_t i = 0; i < kM; i++) {
      if (o.reg[i] > reg[i]) reg[i] = o.reg[i];
      sum += term(reg[i]);
      zeros += reg[i] == 0;
    }
  }
  double estimate() const { return estimate(sum, zeros); }
  // From the harmonic sum and the empty registers alone: a sparse form of the same
  // registers (features/endpoint_sketch.h) gets the same estimate.
  static double estimate(uint64_t sum, uint32_t zeros) {
    double alpha = kM == 16 ? 0.673 : kM == 32 ? 0.697 : kM == 64 ? 0.709 : 0.7213 / (1 + 1.079 / kM);
    // × 2^-kScale is exact in double (the value ldexp gave, without the call).
    double e = alpha * kM * kM / (double(sum) * (1.0 / double(1ull << kScale)));
    // Small range: linear counting is exact-er while registers are still empty. Most
    // endpoints meet few peers, so this is the usual case: one log per possible count of
    // empty registers, computed once by the same expression.
    static const std::array<double, kM + 1> linear = [] {
      std::array<double, kM + 1> t{};
      for (uint32_t z = 1; z <= kM; z++) t[z] = kM * std::log(double(kM) / z);
      return t;
    }();
    if (e <= 2.5 * kM && zeros) e = linear[zeros];
    return e;
  }
};

}  // namespace ls
