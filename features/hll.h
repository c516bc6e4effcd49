// HyperLogLog distinct counter (Flajolet et al. 2007) with 2^P one-byte registers.
// Mergeable: the union of two sketches is the register-wise maximum, so sensors (or
// workers) can combine their counts of distinct clients without sharing addresses.
// Standard error ≈ 1.04 / sqrt(2^P): P = 8 → 6.5 %, 256 bytes.
#pragma once
#include <bit>
#include <cmath>
#include <cstdint>

namespace ls {

template <unsigned P>
struct Hll {
  static constexpr uint32_t kM = 1u << P;
  uint8_t reg[kM] = {};

  void add(uint64_t h) {
    uint32_t idx = uint32_t(h >> (64 - P));
    uint64_t rest = h << P;
    uint8_t rho = uint8_t(rest ? std::countl_zero(rest) + 1 : 64 - P + 1);
    if (rho > reg[idx]) reg[idx] = rho;
  }
  void merge(const Hll& o) {
    for (uint32_t i = 0; i < kM; i++)
      if (o.reg[i] > reg[i]) reg[i] = o.reg[i];
  }
  double estimate() const {
    // 2^-k for every possible register value: a table instead of ldexp per register.
    static const auto kPow = [] {
      struct T {
        double v[66];
      } t{};
      for (int k = 0; k < 66; k++) t.v[k] = std::ldexp(1.0, -k);
      return t;
    }();
    double sum = 0;
    uint32_t zeros = 0;
    for (uint32_t i = 0; i < kM; i++) {
      sum += kPow.v[reg[i]];
      zeros += reg[i] == 0;
    }
    double alpha = kM == 16 ? 0.673 : kM == 32 ? 0.697 : kM == 64 ? 0.709 : 0.7213 / (1 + 1.079 / kM);
    double e = alpha * kM * kM / sum;
    // Small range: linear counting is exact-er while registers are still empty.
    if (e <= 2.5 * kM && zeros) e = kM * std::log(double(kM) / zeros);
    return e;
  }
};

}  // namespace ls
