// Detection apps: several apps score the same feature rows in the same pass (adding an app
// adds no pass over the traffic). An app = name + the entity it scores (server endpoint,
// client endpoint, flow) + a model over named feature columns (docs/features.md) or an
// expert rule (signature hits + conditions) + threshold + cool-down per entity.
// Detections are JSON lines with score, the features on the decision paths and evidence.
#pragma once
#include <cstdint>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "dataplane/output_file.h"
#include "detect/tree_model.h"
#include "features/bounded_table.h"
#include "features/feature_stage.h"

namespace ls {

enum class Entity : uint8_t { SERVER, CLIENT, FLOW };

struct AppConfig {
  std::string name;
  Entity entity = Entity::SERVER;
  std::string model;                // XGBoost JSON; empty for an expert rule
  double threshold = 0.5;
  uint64_t cooldown_ns = 3'600'000'000'000ull;  // one detection per entity per hour
  // Expert rule (no model): fires when one of these signature ids hit (empty: any hit
  // matters not) and the pair is at least this periodic over at least `min_contacts`.
  std::vector<uint32_t> sig_ids;
  double min_periodicity = 0;
  uint32_t min_contacts = 0;
  // Any feature column: `name>=x` or `name<=x` (all must hold; NaN fails).
  struct Cond {
    uint16_t column;
    bool at_least;
    double value;
  };
  std::vector<Cond> conds;
};

// "name:entity:model.json:threshold" or
// "name:entity:rule:sig=1001+1002,periodicity=0.5,contacts=8,cli_ports>=100"
AppConfig parse_app(const std::string& spec);  // throws std::runtime_error with the reason

// Numeric feature columns by name: what a model's feature_names may use.
const std::vector<std::string>& feature_column_names();

// One app firing on one feature row (also within the cool-down), for exporters.
struct Detection {
  const std::string& app;
  Entity entity;
  const uint8_t* server;  // 16 bytes, IPv4 in the first 4
  uint8_t ip_ver, proto;
  uint16_t dport;
  double score;
  uint64_t first_ns, last_ns;
  double srv_clients, periodicity, period_s;
  uint64_t srv_bytes;
  uint32_t ti_feeds;
  double ti_max_weight;
  int64_t ti_last_days;  // day of the latest dated listing (0: undated)
  const std::string& ti_categories;
  std::string sig_names;  // `;`-separated rule names
  // The client of the flow: for the operator's own SOC and for keyed pseudonyms only
  // (ctrl/ti_export.h never writes it).
  const uint8_t* client = nullptr;
  const PartnerHit* partner = nullptr;  // the server as partners reported it (--partner)
};

class DetectStage {
 public:
  // Throws (ModelError or std::runtime_error) naming the app and what is wrong.
  DetectStage(const std::vector<AppConfig>& apps, const std::string& out_path);
  ~DetectStage();
  // Feature rows through every app (rules[i]: the rule set that named row i's hits).
  // Detections are written row by row in order, as if each row were scored alone; each
  // model scores the rows in one batch (TreeModel::predict_batch, the same values).
  void score(const FeatureRow* rows, const RuleSet* const* rules, size_t n);
  void score(const FeatureRow& row, const RuleSet* rules) { score(&row, &rules, 1); }
  void close();  // throws on a failed write
  void tick() { out_file_->tick(); }  // retry spooled detections, flush (control, ~1/s)
  const SpoolFile& output() const { return *out_file_; }
  uint64_t detections() const { return detections_; }
  std::function<void(const Detection&)> on_detection;
  struct AppStats {
    std::string name;
    uint64_t scored = 0, fired = 0, cooled = 0;
  };
  const std::vector<AppStats>& stats() const { return stats_; }

  // Control (same thread as score()): the apps as JSON; reload every app's model file —
  // all or none: a file that fails leaves every old model in place (throws the reason);
  // set an app's threshold (throws for an unknown app or a value outside 0 .. 1).
  std::string describe() const;
  std::string reload_models();
  void set_threshold(const std::string& app, double t);
  std::vector<std::string> app_names() const;

 private:
  struct EntityKey {
    uint8_t addr[16];
    uint8_t client[16];  // flow entity only
    uint16_t port, client_port;
    uint8_t ver, proto;
  };
  struct Seen {
    uint64_t last_ns = 0;
    bool used() const { return last_ns != 0; }
  };
  struct App {
    AppConfig cfg;
    std::shared_ptr<const TreeModel> model;
    uint64_t reloads = 0;
    std::vector<uint16_t> columns;  // model feature i ← feature column columns[i]
    std::vector<float> x;           // the batch's model inputs, row after row
    std::unique_ptr<BoundedTable<EntityKey, Seen>> seen;
    // Expert rule: the bits of cfg.sig_ids in the numbering of the rule set with serial
    // `bits_of` (rows name their set; nearly always the same one: computed once per set).
    uint64_t bits_of = 0;
    uint64_t sig_bits = 0;
  };
  // `a.sig_bits` must be those of `rules`.
  double expert_score(const App& a, const FeatureRow& row, const RuleSet* rules, const float* values) const;
  // x: the row's model inputs (null for an expert rule).
  void emit(App& a, const FeatureRow& row, double score, const RuleSet* rules, const float* x);

  std::vector<App> apps_;
  std::vector<AppStats> stats_;
  std::vector<float> values_, out_, margin_;  // values_: kNumColumns per row of the batch
  std::vector<double> scores_;                 // app k, row r at k × n + r
  std::vector<uint16_t> needed_;  // columns read by some app
  std::unique_ptr<SpoolFile> out_file_;  // a full disk spools detections, never drops them silently
  std::string path_, line_;
  uint64_t detections_ = 0;
};

}  // namespace ls
