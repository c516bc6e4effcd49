#include <gtest/gtest.h>

#include "ctrl/config.h"

using namespace ls;

namespace {

std::string error_of(const std::string& yaml) {
  Config c;
  try {
    load_config_string(yaml, c, "t.yaml");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(Config, FullExample) {
  Config c;
  load_config_string(R"(
parser: {decap_gtpu: true, vxlan_port: 8472}
flow_key: {zone: true}
table:
  capacity: 4096
  payload_bytes: 32
  idle_timeout: 15s
  active_timeout: 2m
  tcp_end_timeout: 500ms
  full_policy: drop_new
  hash_seed: 7
sampling: {mode: flow_hash, rate: 64, seed: 3}
replay: {cores: 2, speed: 1.5, loop: 3}
output: {flows: out.jsonl, payload: true}
features: {pair_capacity: 1024, first_contact_capacity: 2048, server_capacity: 512, client_capacity: 256, window: 10m}
)", c);
  EXPECT_EQ(c.client_capacity, 256u);
  EXPECT_EQ(c.feature_window_ns, 600'000'000'000ull);
  EXPECT_EQ(c.pair_capacity, 1024u);
  EXPECT_EQ(c.first_contact_capacity, 2048u);
  EXPECT_EQ(c.server_capacity, 512u);
  EXPECT_TRUE(c.core.parse.decap_gtpu);
  EXPECT_EQ(c.core.parse.vxlan_port, 8472);
  EXPECT_TRUE(c.core.key.use_zone);
  EXPECT_EQ(c.core.table.capacity, 4096u);
  EXPECT_EQ(c.core.table.payload_bytes, 32);
  EXPECT_EQ(c.core.table.idle_timeout_ns, 15'000'000'000ull);
  EXPECT_EQ(c.core.table.active_timeout_ns, 120'000'000'000ull);
  EXPECT_EQ(c.core.table.tcp_end_timeout_ns, 500'000'000ull);
  EXPECT_EQ(c.core.table.full_policy, FullPolicy::DROP_NEW);
  EXPECT_TRUE(c.hash_seed_set);
  EXPECT_EQ(c.core.sampling.mode, SampleMode::FLOW_HASH);
  EXPECT_EQ(c.core.sampling.rate, 64u);
  EXPECT_EQ(c.cores, 2u);
  EXPECT_EQ(c.loop, 3u);
  EXPECT_EQ(c.flows_out, "out.jsonl");
  validate(c);
}

TEST(Config, ErrorsNameFileLineAndKey) {
  EXPECT_EQ(error_of("table:\n  capacty: 5\n"),
            "t.yaml:2: .table.capacty: unknown key (known: active_timeout, backward_tolerance, "
            "capacity, full_policy, hash_seed, idle_timeout, payload_bytes, sweep_period, "
            "tcp_end_timeout)");
  EXPECT_NE(error_of("table: {idle_timeout: 5 parsecs}").find("unknown unit"), std::string::npos);
  EXPECT_NE(error_of("table: {capacity: lots}").find("expected an integer, got 'lots'"), std::string::npos);
  EXPECT_NE(error_of("table: {capacity: 0}").find("must be 1"), std::string::npos);
  EXPECT_NE(error_of("table: {payload_bytes: 1000}").find("0 .. 256"), std::string::npos);
  EXPECT_NE(error_of("sampling: {mode: sometimes}").find("unknown mode 'sometimes'"), std::string::npos);
  EXPECT_NE(error_of("table: [1, 2]").find("expected a mapping"), std::string::npos);
  EXPECT_NE(error_of("table: {capacity: 5").find("t.yaml:"), std::string::npos);
  EXPECT_EQ(error_of(""), "");
}

TEST(Config, Durations) {
  EXPECT_EQ(parse_duration_ns("30"), 30'000'000'000ull);
  EXPECT_EQ(parse_duration_ns("250us"), 250'000ull);
  EXPECT_EQ(parse_duration_ns("1h"), 3600'000'000'000ull);
  EXPECT_EQ(parse_duration_ns("1d"), 86400'000'000'000ull);
  EXPECT_THROW(parse_duration_ns("-1s"), ConfigError);
  EXPECT_THROW(parse_duration_ns("s"), ConfigError);
}

TEST(Config, DetectAndTiExportSections) {
  Config c;
  load_config_string(R"(
output: {detections: det.jsonl}
detect:
  apps: ["beacon:server:rule:periodicity=0.8,contacts=10", "miner:server:rule:sig=1001"]
ti_export:
  dir: /var/lib/linesight/ti
  every: 1h
  privacy_k: 10
  producer: ISP-X sensor
  pseudonym_secret: /etc/linesight/pseudonym.key
  pseudonym_rotate: 1d
)", c, "t.yaml");
  EXPECT_EQ(c.detections_out, "det.jsonl");
  ASSERT_EQ(c.apps.size(), 2u);
  EXPECT_EQ(c.ti_export, "/var/lib/linesight/ti");
  EXPECT_EQ(c.ti_export_every_ns, 3600'000'000'000ull);
  EXPECT_EQ(c.privacy_k, 10u);
  EXPECT_EQ(c.producer, "ISP-X sensor");
  EXPECT_EQ(c.pseudonym_secret_file, "/etc/linesight/pseudonym.key");
  EXPECT_EQ(c.pseudonym_rotate_ns, 86400'000'000'000ull);
  EXPECT_NE(error_of("ti_export: {every: soon}").find("t.yaml:1"), std::string::npos);
  Config w;
  load_config_string("features: {ti_weights: {feodo: 0.9, blocklist_de: 0.3}}", w, "t.yaml");
  EXPECT_DOUBLE_EQ(w.ti_weights["feodo"], 0.9);
  EXPECT_DOUBLE_EQ(w.ti_weights["blocklist_de"], 0.3);
  EXPECT_NE(error_of("features: {ti_weights: {feodo: 2}}").find("0 .. 1"), std::string::npos);
  EXPECT_NE(error_of("features: {ti_weights: [feodo]}").find("expected a mapping"), std::string::npos);
  EXPECT_NE(error_of("detect: {apps: beacon}").find("expected a list"), std::string::npos);
  EXPECT_NE(error_of("ti_export: {secret: x}").find("secret"), std::string::npos);  // unknown key named
}

// output.sketch_clients: named values only; pseudonyms need a secret and a feature window
// (validate() says which is missing).
TEST(Config, SketchClients) {
  Config c;
  load_config_string("output: {sketches: s.jsonl, sketch_clients: none}", c, "t.yaml");
  EXPECT_EQ(c.sketch_clients, SketchClients::none);
  validate(c);
  EXPECT_NE(error_of("output: {sketch_clients: hashed}").find("t.yaml:1: .output.sketch_clients: expected address, "
                                                             "pseudonym or none, got 'hashed'"),
            std::string::npos);
  auto invalid = [](const std::string& yaml) {
    Config p;
    load_config_string(yaml, p, "t.yaml");
    try {
      validate(p);
    } catch (const ConfigError& e) {
      return std::string(e.what());
    }
    return std::string();
  };
  EXPECT_NE(invalid("output: {sketch_clients: none}").find("needs --sketches-out"), std::string::npos);
  EXPECT_NE(invalid("output: {sketches: s, sketch_clients: pseudonym}").find("needs --pseudonym-secret"),
            std::string::npos);
  EXPECT_NE(invalid("output: {sketches: s, sketch_clients: pseudonym}\nti_export: {pseudonym_secret: k}")
                .find("needs features.window"),
            std::string::npos);
  EXPECT_EQ(invalid("output: {sketches: s, sketch_clients: pseudonym}\nti_export: {pseudonym_secret: k}\n"
                    "features: {window: 5m}"),
            "");
}

TEST(Config, SamplingSpec) {
  auto s = parse_sampling_spec("flow_hash:100:42");
  EXPECT_EQ(s.mode, SampleMode::FLOW_HASH);
  EXPECT_EQ(s.rate, 100u);
  EXPECT_EQ(s.seed, 42u);
  EXPECT_EQ(parse_sampling_spec("off").mode, SampleMode::OFF);
  EXPECT_THROW(parse_sampling_spec("packet"), ConfigError);
  EXPECT_THROW(parse_sampling_spec("packet:0"), ConfigError);
  EXPECT_THROW(parse_sampling_spec("packet:1x"), ConfigError);
  EXPECT_THROW(parse_sampling_spec("flow_hash:8:seed"), ConfigError);
}

TEST(Config, ValidateRejectsRateWithModeOff) {
  Config c;
  c.core.sampling.rate = 10;
  EXPECT_THROW(validate(c), ConfigError);
}

}  // namespace
