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

// A NIC/PMD timestamp field in units of `mul` ns, to ns. DPDK 22.11's net_pcap computes
// its µs as (uint64_t)tv_sec * 1e6 + tv_usec from libpcap's signed 32-bit seconds, so
// a capture stamped 2038-2106 arrives as a negative number: add back the 2^32 s wrap.
// Past 2^64 ns (year 2554) saturate rather than wrap to an earlier time.
inline uint64_t device_ts_ns(uint64_t raw, uint64_t mul) {
  if (mul == 1000 && int64_t(raw) < 0) raw += (uint64_t(1) << 32) * 1'000'000ull;
  if (mul > 1 && raw > UINT64_MAX / mul) return UINT64_MAX / mul * mul;
  return raw * mul;
}

}  // namespace ls
