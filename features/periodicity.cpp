#include "features/periodicity.h"

#include <algorithm>
#include <cmath>

namespace ls {
namespace {

constexpr size_t kMax = 64;

inline double tol(double x, const PeriodicityParams& p) { return std::max(p.rel_tol * x, p.abs_tol_s); }

// Densest window: the interval c with the most intervals within tol(c) of it. `v` is
// sorted, so both window edges only move right as c grows (tol is monotone): O(n).
struct Mode {
  double centre = 0;
  uint32_t count = 0;
};

Mode densest(const double* v, size_t n, const PeriodicityParams& p) {
  Mode best;
  double pre[kMax + 1];
  pre[0] = 0;
  for (size_t i = 0; i < n; i++) pre[i + 1] = pre[i] + v[i];
  size_t lo = 0, hi = 0;
  for (size_t i = 0; i < n; i++) {
    double c = v[i], t = tol(c, p);
    while (v[lo] < c - t) lo++;
    if (hi < i) hi = i;
    while (hi + 1 < n && v[hi + 1] <= c + t) hi++;
    uint32_t k = uint32_t(hi - lo + 1);
    if (k > best.count) best = {(pre[hi + 1] - pre[lo]) / k, k};
  }
  return best;
}

}  // namespace

Periodicity score_periodicity(const double* starts_s, size_t n, const PeriodicityParams& p) {
  Periodicity r;
  if (n > kMax) {
    starts_s += n - kMax;
    n = kMax;
  }
  if (n < 3) return r;
  double s[kMax], iv[kMax];
  std::copy(starts_s, starts_s + n, s);
  // The feature stage keeps a pair's starts in time order: check, rather than sort again.
  if (!std::is_sorted(s, s + n)) std::sort(s, s + n);
  size_t m = 0;
  // Parallel or back-to-back starts (A and AAAA lookups, browser connection bursts) are
  // one contact: measure from the burst's first start.
  double prev = s[0];
  for (size_t i = 1; i < n; i++) {
    double d = s[i] - prev;
    if (d < p.burst_gap_s) continue;
    iv[m++] = d;
    prev = s[i];
  }
  if (m < 2) return r;
  r.intervals = uint32_t(m);
  double sum = 0, sq = 0;
  for (size_t i = 0; i < m; i++) {
    sum += iv[i];
    sq += iv[i] * iv[i];
  }
  r.mean_s = sum / double(m);
  r.cv = r.mean_s > 0 ? std::sqrt(std::max(0.0, sq / double(m) - r.mean_s * r.mean_s)) / r.mean_s : 0;

  std::sort(iv, iv + m);
  bool used[kMax] = {};
  Mode a = densest(iv, m, p);
  double explained = 0;
  for (size_t i = 0; i < m; i++)
    if (std::fabs(iv[i] - a.centre) <= tol(a.centre, p)) {
      used[i] = true;
      explained += 1;
    }
  // Missed beats: k × the main mode (half weight: they also fit random traffic more easily).
  for (size_t i = 0; i < m; i++) {
    if (used[i]) continue;
    for (uint32_t k = 2; k <= p.max_multiple; k++)
      if (std::fabs(iv[i] - k * a.centre) <= tol(k * a.centre, p)) {
        used[i] = true;
        explained += 0.5;
        break;
      }
  }
  // A second phase counts only when it is a real mode, not a stray interval.
  double rest[kMax];
  size_t nr = 0;
  for (size_t i = 0; i < m; i++)
    if (!used[i]) rest[nr++] = iv[i];
  Mode b = densest(rest, nr, p);
  if (b.count >= 2 && b.count * 4 >= a.count)
    for (size_t i = 0; i < m; i++)
      if (!used[i] && std::fabs(iv[i] - b.centre) <= tol(b.centre, p)) {
        used[i] = true;
        explained += 1;
      }
  r.period_s = a.centre;
  r.mode_share = explained / double(m);
  double conf = std::min(1.0, double(m) / double(p.full_confidence));
  r.score = r.mode_share * conf;
  return r;
}

}  // namespace ls
