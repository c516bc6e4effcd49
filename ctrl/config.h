// linesight configuration: YAML file (reference in docs/config.md), overridden by flags.
#pragma once
#include <memory>
#include <stdexcept>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "dataplane/flow_core.h"
#include "features/signatures.h"
#include "features/ti_table.h"
#include "features/partners.h"
#include "features/sketch_export.h"

namespace ls {

struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct DpdkConfig {
  std::vector<std::string> eal;  // EAL arguments; `linesight run ... -- ARGS` appends
  std::vector<uint16_t> ports;   // empty: every port EAL found
  uint16_t rx_queues = 1;        // per port, spread symmetric-RSS
  uint16_t rx_lcores = 1;
  uint16_t workers = 1;
  uint16_t burst = 32;
  uint32_t mbufs = 16383;        // per socket
  uint32_t mbuf_size = 2048;     // data room; af_packet and jumbo frames need more
  uint32_t idle_sleep_us = 0;    // lcores sleep this long after 1024 empty polls (0: pure polling)
  uint32_t ring_size = 4096;     // RX→worker and worker→control rings
  uint32_t records = 65535;      // record buffers in flight
  std::string memory_replay;     // pcap loaded into mbufs and replayed through net_ring
  uint64_t memory_loops = 1;
  uint64_t memory_pps = 0;       // feeder rate limit, packets/s (0: as fast as possible)
};

struct ControlConfig {
  std::string socket = "/run/linesight/linesight.sock";
  uint32_t socket_mode = 0600;
  uint64_t exit_idle_ns = 0;  // stop when no packet arrived for this long (0: never)
  std::string metrics;        // Prometheus HOST:PORT, empty = off
  std::string collect, collect_tcp;  // NetFlow / IPFIX input beside the packets (UDP, TCP)
};

struct Config {
  CoreConfig core;
  DpdkConfig dpdk;
  ControlConfig control;
  bool hash_seed_set = false;  // else a random per-run seed
  uint32_t cores = 1;
  double speed = 0;
  uint64_t loop = 1;
  std::string flows_out;
  uint64_t rotate_bytes = 0, rotate_interval_ns = 0;  // JSON lines rotation (0: off)
  std::string ipfix;  // collector HOST:PORT (UDP), empty = off
  std::string features_out;  // feature rows as CSV (docs/features.md), empty = off
  std::string detections_out;  // detections as JSON lines (docs/detect.md), empty = off
  std::string sketches_out;    // endpoint sketches at exit (features/sketch_export.h), empty = off
  uint64_t sketches_every_ns = 0;  // and every so often in run / collect (0: at exit only)
  SketchClients sketch_clients = SketchClients::address;  // how client lines leave
  // Any output that needs the feature stage.
  bool features_on() const { return !features_out.empty() || !detections_out.empty() || !sketches_out.empty(); }
  std::vector<std::string> apps;  // detection app specs (detect/apps.h parse_app)
  std::string ti_export;          // directory for indicators (CSV, JSON, STIX, MISP), empty = off
  uint32_t privacy_k = 5;         // distinct clients before client counts are exported
  uint64_t ti_export_every_ns = 0;  // scheduled export in run/collect (0: at exit and on demand)
  std::string producer = "linesight sensor";  // names us in STIX/MISP exports
  std::string pseudonym_secret_file;          // keyed client pseudonyms, empty = off
  std::string pseudonym_secret;               // read by finish_config()
  uint64_t pseudonym_rotate_ns = 86'400'000'000'000ull;
  uint32_t pair_capacity = 1u << 18;
  uint32_t first_contact_capacity = 1u << 18;
  uint32_t server_capacity = 1u << 16;
  uint32_t client_capacity = 1u << 16;
  uint64_t sketch_seed = 1;        // distinct counters' hash (features.sketch_seed)
  uint64_t feature_window_ns = 0;  // tumbling window of server/client counts (0: none)
  std::string rules;  // Hyperscan rules file for payload signatures (features/rules/)
  std::string rules_cache;  // directory of compiled rule databases ("": compile every load)
  std::shared_ptr<const RuleSet> loaded_rules;  // compiled once by finish_config()
  std::vector<std::string> ti;                  // feed files / directories
  std::map<std::string, double> ti_weights;     // operator's prior per feed name (0..1)
  std::shared_ptr<const TiTable> loaded_ti;     // built once by finish_config()
  std::vector<std::string> partners;            // partners' indicators.json / .csv
  std::shared_ptr<const PartnerTable> loaded_partners;  // built once by finish_config()
  uint64_t ipfix_template_refresh_ns = 60'000'000'000ull;
  bool payload_out = false;
  std::string summary_json;
  std::string filter;  // capture filter expression (parser.filter, --filter); compiled by finish_config()
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
// "feodo=0.9" (--ti-weight) → weights["feodo"] = 0.9; throws ConfigError.
void add_ti_weight(const std::string& spec, std::map<std::string, double>& weights);
std::string_view full_policy_name(FullPolicy p);

// Final checks after file + flags (e.g. rate with mode off).
void validate(const Config& c);

// Loads the file named by --config among argv (before the flags are applied, so flags
// override it wherever they appear). Throws ConfigError.
void load_config_from_args(int argc, char** argv, Config& c);
// After file and flags: validate() and, unless fixed, a random per-run hash seed.
void finish_config(Config& c);

// Applies one command-line flag shared by `replay` and `run` at argv[i] (advancing i past
// its value). Returns false when the flag is not one of them. Throws ConfigError.
bool apply_common_flag(Config& c, int argc, char** argv, int& i);
extern const char* kCommonFlagsHelp;

// A subcommand's command line: the --config file, then each argument: the common flags,
// else `own(arg, value)` — `value()` takes the next argument (ConfigError when missing);
// `own` returns false for an argument it does not know. Then finish_config(). Returns
// false after printing `usage` + the common flags for -h / --help. Throws ConfigError.
using FlagHandler = std::function<bool(const std::string& arg, const std::function<std::string()>& value)>;
bool parse_command_line(int argc, char** argv, Config& c, const char* usage, const FlagHandler& own);

}  // namespace ls
