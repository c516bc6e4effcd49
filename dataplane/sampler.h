// Sampling before the flow table. Packet modes skip packets; flow-hash mode keeps a flow
// or not by its key hash under a seed shared between sensors (so two sensors keep the
// same flows); sample-and-hold admits a new flow with probability 1/N and then counts
// every one of its packets, which keeps elephants nearly exact.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "dataplane/flow_key.h"

namespace ls {

enum class SampleMode : uint8_t { OFF, PACKET_DET, PACKET_RANDOM, FLOW_HASH, SAMPLE_HOLD };

std::string_view sample_mode_name(SampleMode m);
std::optional<SampleMode> parse_sample_mode(std::string_view s);

struct SamplingConfig {
  SampleMode mode = SampleMode::OFF;
  uint32_t rate = 1;  // 1:N
  uint64_t seed = 0;  // shared between sensors for FLOW_HASH; RNG seed otherwise
};

// Validates and explains: empty string when the setting is usable.
std::string check_sampling(const SamplingConfig& s);

class Sampler {
 public:
  explicit Sampler(const SamplingConfig& c = {}) { configure(c); }
  void configure(const SamplingConfig& c) {
    cfg_ = c;
    if (cfg_.rate == 0) cfg_.rate = 1;
    rng_ = c.seed ^ 0x9E3779B97F4A7C15ull;
    if (!rng_) rng_ = 1;
    countdown_ = cfg_.rate;
    // Keep a flow when its hash falls in the lowest 1/N of the 64-bit range.
    flow_threshold_ = cfg_.rate <= 1 ? UINT64_MAX : UINT64_MAX / cfg_.rate;
  }
  const SamplingConfig& config() const { return cfg_; }
  bool packet_level() const {
    return cfg_.rate > 1 && (cfg_.mode == SampleMode::PACKET_DET || cfg_.mode == SampleMode::PACKET_RANDOM);
  }

  // True when the packet is kept (packet modes only).
  bool keep_packet() {
    if (cfg_.mode == SampleMode::PACKET_DET) {
      if (--countdown_) return false;
      countdown_ = cfg_.rate;
      return true;
    }
    return one_in_n();
  }
  bool keep_flow(const FlowKey& k) const {
    return cfg_.rate <= 1 || hash_key(k, cfg_.seed) <= flow_threshold_;
  }
  bool admit_new_flow() {
    return cfg_.mode != SampleMode::SAMPLE_HOLD || cfg_.rate <= 1 || one_in_n();
  }

 private:
  bool one_in_n() {
    // xorshift64*: cheap, good enough for sampling decisions, reproducible by seed.
    rng_ ^= rng_ >> 12;
    rng_ ^= rng_ << 25;
    rng_ ^= rng_ >> 27;
    uint64_t r = (rng_ * 0x2545F4914F6CDD1Dull) >> 32;
    return ((r * cfg_.rate) >> 32) == 0;
  }

  SamplingConfig cfg_;
  uint64_t rng_ = 1;
  uint32_t countdown_ = 1;
  uint64_t flow_threshold_ = UINT64_MAX;
};

}  // namespace ls
