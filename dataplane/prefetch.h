// A prefetch hint the compiler cannot drop. GCC 12 deletes a call to a function whose
// only effect is __builtin_prefetch when it has not inlined it yet: it takes the function
// for pure, and dead-code elimination removes the call (seen with the feature tables'
// prefetch: every table prefetch gone from the binary, no output changed). A volatile asm
// is never deleted; without a "memory" clobber it does not order other loads and stores.
// tests/test_prefetch_codegen.py checks the optimised binary still holds the prefetches.
#pragma once

namespace ls {

inline void prefetch_line(const void* p) {
#if defined(__x86_64__)
  asm volatile("prefetcht0 (%0)" : : "r"(p));
#else
  __builtin_prefetch(p);
#endif
}

}  // namespace ls
