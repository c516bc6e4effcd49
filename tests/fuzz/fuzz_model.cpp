// Model loader: any text is a model or a ModelError; a loaded model predicts on a vector
// of NaNs and zeros without reading outside its arrays.
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "detect/tree_model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* d, size_t n) {
  try {
    auto m = ls::TreeModel::load_string(std::string(reinterpret_cast<const char*>(d), n), "fuzz");
    std::vector<float> x(m.num_features(), 0.0f), out(m.num_outputs());
    m.predict(x.data(), out.data());
    for (size_t i = 0; i < x.size(); i += 2) x[i] = std::nanf("");
    m.predict(x.data(), out.data());
  } catch (const ls::ModelError&) {
  }
  return 0;
}
