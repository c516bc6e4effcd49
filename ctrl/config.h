// linesight configuration: YAML file (reference in docs/config.md), overridden by flags.
#pragma once
#include <stdexcept>
#include <string>
#include <vector>

#include "dataplane/flow_core.h"

namespace ls {

struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct Config {
  CoreConfig core;
  bool hash_seed_set = false;  // else a random per-run seed
  uint32_t cores = 1;
  double speed = 0;
  uint64_t loop = 1;
  std::string flows_out;
  bool payload_out = false;
  std::string summary_json;
};

// Merges the YAML file into `c`. Unknown keys and bad values throw ConfigError with
// "file:line: key: reason".
void load_config_file(const std::string& path, Config& c);
void load_config_string(const std::string& yaml, Config& c, const std::string& name = "<config>");

// "30", "30s", "500ms", "5m", "1h", "250us" → nanoseconds; throws ConfigError.
uint64_t parse_duration_ns(const std::string& s);
// "flow_hash:100[:seed]", "packet:10", "off" → sampling; throws ConfigError.
SamplingConfig parse_sampling_spec(const std::string& s);
FullPolicy parse_full_policy(const std::string& s);
std::string_view full_policy_name(FullPolicy p);

// Final checks after file + flags (e.g. rate with mode off).
void validate(const Config& c);

}  // namespace ls
