// Signature rules file parser (ours: transports, directions, ids, /pattern/ delimiting,
// flags, names, limits): any text is a list of rules or a RuleError. Without Hyperscan's
// compile, so it runs millions of inputs; fuzz_rules_hs covers the whole load, compile
// included.
#include <cstdint>
#include <cstdlib>
#include <string>

#include "features/signatures.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* d, size_t n) {
  try {
    auto rules = ls::RuleSet::parse(std::string(reinterpret_cast<const char*>(d), n), "fuzz");
    if (rules.empty() || rules.size() > ls::RuleSet::kMaxRules) std::abort();
    for (auto& r : rules)
      if (r.pattern.empty() || !r.scope || (r.scope & ~ls::kAllTransports) || !r.dirs ||
          (r.dirs & ~ls::kBothDirections))
        std::abort();
  } catch (const ls::RuleError&) {
  }
  return 0;
}
