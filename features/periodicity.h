// How regular the contacts of one client with one server are: the share of intervals
// between connection starts explained by up to two dominant interval modes (two-phase
// beacons such as njRAT's 9 s / 14 s), or by small multiples of the main mode (missed
// beats), scaled by a confidence that grows with the number of intervals. Robust to
// jitter (±10 % or 20 ms) and to missing beats; ordinary browsing scores low because its
// intervals spread over many magnitudes.
#pragma once
#include <cstddef>
#include <cstdint>

namespace ls {

struct Periodicity {
  double score = 0;      // 0 .. 1
  double period_s = 0;   // centre of the main interval mode
  double mode_share = 0; // intervals explained (before the confidence factor)
  double mean_s = 0;     // mean interval
  double cv = 0;         // coefficient of variation of all intervals
  uint32_t intervals = 0;
};

struct PeriodicityParams {
  double rel_tol = 0.10;
  double abs_tol_s = 0.02;
  double burst_gap_s = 0.05;  // starts closer than this are one contact (A + AAAA lookups)
  uint32_t full_confidence = 8;  // intervals needed for full confidence
  uint32_t max_multiple = 4;     // missed beats: 2×, 3×, 4× the main mode
};

// `starts_s` in seconds, any order; n ≤ 64. Uses no heap.
Periodicity score_periodicity(const double* starts_s, size_t n, const PeriodicityParams& p = {});

}  // namespace ls
