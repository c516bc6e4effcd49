#include <gtest/gtest.h>

#include <cmath>

#include "dataplane/sampler.h"

using namespace ls;

namespace {

TEST(Sampler, DeterministicPacketIsExactlyOneInN) {
  Sampler s({SampleMode::PACKET_DET, 10, 0});
  int kept = 0;
  for (int i = 0; i < 1000; i++) kept += s.keep_packet();
  EXPECT_EQ(kept, 100);
}

// Binomial(n, 1/N): with a fixed seed the count is within 4 standard deviations.
void expect_rate(double kept, double n, double rate) {
  double p = 1.0 / rate, sd = std::sqrt(n * p * (1 - p));
  EXPECT_NEAR(kept, n * p, 4 * sd);
}

TEST(Sampler, RandomPacketRate) {
  Sampler s({SampleMode::PACKET_RANDOM, 100, 12345});
  int kept = 0, n = 1000000;
  for (int i = 0; i < n; i++) kept += s.keep_packet();
  expect_rate(kept, n, 100);
}

TEST(Sampler, FlowHashIsConsistentAcrossSensors) {
  Sampler a({SampleMode::FLOW_HASH, 8, 777}), b({SampleMode::FLOW_HASH, 8, 777}),
      other({SampleMode::FLOW_HASH, 8, 778});
  int kept = 0, agree_other = 0, n = 200000;
  for (int i = 0; i < n; i++) {
    FlowKey k{};
    k.ip_ver = 4;
    k.proto = 6;
    std::memcpy(k.lo, &i, sizeof i);
    bool ka = a.keep_flow(k);
    EXPECT_EQ(ka, b.keep_flow(k));
    agree_other += ka && other.keep_flow(k);
    kept += ka;
  }
  expect_rate(kept, n, 8);
  expect_rate(agree_other, n, 64);  // a different seed selects an independent set
}

TEST(Sampler, SampleAndHoldAdmission) {
  Sampler s({SampleMode::SAMPLE_HOLD, 50, 9});
  int kept = 0, n = 500000;
  for (int i = 0; i < n; i++) kept += s.admit_new_flow();
  expect_rate(kept, n, 50);
  Sampler off;
  EXPECT_TRUE(off.admit_new_flow());
  EXPECT_FALSE(off.packet_level());
}

TEST(Sampler, ModeNamesRoundTrip) {
  for (auto m : {SampleMode::OFF, SampleMode::PACKET_DET, SampleMode::PACKET_RANDOM,
                 SampleMode::FLOW_HASH, SampleMode::SAMPLE_HOLD})
    EXPECT_EQ(parse_sample_mode(sample_mode_name(m)), m);
  EXPECT_FALSE(parse_sample_mode("bogus"));
}

}  // namespace
