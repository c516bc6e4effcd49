// Signature rules loader (parse + Hyperscan compile): any text is a rule set or an error.
#include <cstdint>
#include <string>

#include "features/signatures.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* d, size_t n) {
  if (n > 4096) return 0;  // Hyperscan compiles are slow; long inputs add nothing
  try {
    ls::RuleSet::load_string(std::string(reinterpret_cast<const char*>(d), n), "fuzz");
  } catch (const std::exception&) {
  }
  return 0;
}
