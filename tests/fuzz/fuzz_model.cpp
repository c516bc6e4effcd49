// Model loader: any text is a model or a ModelError; a loaded model predicts on vectors of
// NaNs, zeros and infinities without reading outside its arrays, and every batch kernel
// this CPU runs (scalar, AVX2, AVX-512, both on 8-bit bins) answers exactly as the
// one-vector walk.
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "detect/tree_model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* d, size_t n) {
  try {
    auto m = ls::TreeModel::load_string(std::string(reinterpret_cast<const char*>(d), n), "fuzz");
    const float values[] = {0.0f, std::nanf(""), std::numeric_limits<float>::infinity(),
                            -std::numeric_limits<float>::infinity(), 1.0f, -1.0f};
    // One full block of 16 (two groups of 8) and a partial one; a partial block of the bins.
    constexpr size_t kRows = 17;
    size_t f = m.num_features(), o = m.num_outputs();
    std::vector<float> x(kRows * f), out(kRows * o), one(o), margin(m.margin_floats(kRows));
    for (size_t i = 0; i < x.size(); i++) x[i] = values[(i * 7 + i / f) % 6];
    for (const char* engine : {"scalar", "avx2", "avx2bins", "avx512", "avx512bins"}) {
      if (!m.set_batch_engine(engine)) continue;
      m.predict_batch(x.data(), kRows, out.data(), margin.data());
      for (size_t r = 0; r < kRows; r++) {
        m.predict(x.data() + r * f, one.data());
        if (std::memcmp(one.data(), out.data() + r * o, o * sizeof(float)) != 0) std::abort();
      }
    }
  } catch (const ls::ModelError&) {
  }
  return 0;
}
