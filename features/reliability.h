// Reliability of a threat-intel indicator: how much to trust "this address is malicious"
// given independent sources, each decaying with age (docs/ti.md):
//   feeds listing it (their prior weight, decayed since they last listed it),
//   our own detections (their score, decayed since our last C&C-like evidence),
//   partner reports (their score, decayed since reported).
// Sources combine as a noisy-OR: R = 1 − Π (1 − eᵢ). So an address every feed dropped but
// still showing live C&C-like traffic keeps (or regains) reliability through our own
// evidence (false-negative correction), and one listed but never corroborated falls as its
// listing ages (false-positive correction).
#pragma once
#include <cmath>
#include <vector>

namespace ls {

struct ReliabilityModel {
  double feed_half_life_days = 30;  // a listing loses half its weight per month unrenewed
  double own_half_life_days = 7;    // our traffic evidence is fresher: a week
  double partner_half_life_days = 14;
};

struct Evidence {
  double strength;  // 0..1: feed weight, detection score, partner score
  double age_days;  // since the source last asserted it (≥ 0)
};

inline double decayed(const Evidence& e, double half_life) {
  double s = std::fmin(1.0, std::fmax(0.0, e.strength));
  return s * std::exp2(-std::fmax(0.0, e.age_days) / half_life);
}

inline double reliability(const ReliabilityModel& m, const std::vector<Evidence>& feeds,
                          const std::vector<Evidence>& own, const std::vector<Evidence>& partners) {
  double doubt = 1;
  for (auto& e : feeds) doubt *= 1 - decayed(e, m.feed_half_life_days);
  for (auto& e : own) doubt *= 1 - decayed(e, m.own_half_life_days);
  for (auto& e : partners) doubt *= 1 - decayed(e, m.partner_half_life_days);
  return 1 - doubt;
}

}  // namespace ls
