#include "dataplane/sampler.h"

namespace ls {

std::string_view sample_mode_name(SampleMode m) {
  switch (m) {
    case SampleMode::OFF: return "off";
    case SampleMode::PACKET_DET: return "packet";
    case SampleMode::PACKET_RANDOM: return "packet_random";
    case SampleMode::FLOW_HASH: return "flow_hash";
    case SampleMode::SAMPLE_HOLD: return "sample_hold";
  }
  return "?";
}

std::optional<SampleMode> parse_sample_mode(std::string_view s) {
  for (auto m : {SampleMode::OFF, SampleMode::PACKET_DET, SampleMode::PACKET_RANDOM,
                 SampleMode::FLOW_HASH, SampleMode::SAMPLE_HOLD})
    if (s == sample_mode_name(m)) return m;
  return std::nullopt;
}

std::string check_sampling(const SamplingConfig& s) {
  if (s.rate == 0) return "sampling rate must be >= 1 (1:N)";
  if (s.mode == SampleMode::OFF && s.rate != 1) return "sampling rate given but mode is off";
  return {};
}

}  // namespace ls
