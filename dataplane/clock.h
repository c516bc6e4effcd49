// Clocks for the control side and the replay driver (never per packet on a DPDK lcore,
// which uses the TSC).
#pragma once
#include <time.h>

#include <cstdint>

namespace ls {

inline uint64_t clock_ns(clockid_t id) {
  timespec t;
  clock_gettime(id, &t);
  return uint64_t(t.tv_sec) * 1'000'000'000ull + uint64_t(t.tv_nsec);
}
inline uint64_t wall_ns() { return clock_ns(CLOCK_REALTIME); }
inline uint64_t mono_ns() { return clock_ns(CLOCK_MONOTONIC); }

}  // namespace ls
