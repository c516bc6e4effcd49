#include "detect/apps.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include <nlohmann/json.hpp>

#include "dataplane/output_file.h"
#include "dataplane/text.h"

namespace ls {

namespace {

// Numeric columns of the feature schema, in one order, with how to read each from a row.
// Missing values are NaN (as empty CSV cells in training).
struct Column {
  const char* name;
  float (*get)(const FeatureRow&);
};

int fw(const FeatureRow& r) { return r.rec->e.init_lo ? 0 : 1; }
float nan_if(bool absent, double v) { return absent ? std::nanf("") : float(v); }

const Column kColumns[] = {
    {"dport", [](const FeatureRow& r) { return float(fw(r) == 0 ? r.rec->e.key.hi_port : r.rec->e.key.lo_port); }},
    {"proto", [](const FeatureRow& r) { return float(r.rec->e.key.proto); }},
    {"duration_s", [](const FeatureRow& r) { return float(r.duration_s); }},
    {"packets_fwd", [](const FeatureRow& r) { return float(r.rec->e.pkts[fw(r)]); }},
    {"packets_rev", [](const FeatureRow& r) { return float(r.rec->e.pkts[1 - fw(r)]); }},
    {"bytes_fwd", [](const FeatureRow& r) { return float(r.rec->e.bytes[fw(r)]); }},
    {"bytes_rev", [](const FeatureRow& r) { return float(r.rec->e.bytes[1 - fw(r)]); }},
    {"bytes_ratio", [](const FeatureRow& r) { return float(r.bytes_ratio); }},
    {"iat_mean_us", [](const FeatureRow& r) { return float(r.iat_mean_us); }},
    {"iat_std_us", [](const FeatureRow& r) { return float(r.iat_std_us); }},
    {"iat_cv", [](const FeatureRow& r) { return float(r.iat_cv); }},
    {"size_mean", [](const FeatureRow& r) { return float(r.size_mean); }},
    {"size_std", [](const FeatureRow& r) { return float(r.size_std); }},
    {"tcp_handshake", [](const FeatureRow& r) { return float(r.handshake); }},
    {"tcp_syn_only", [](const FeatureRow& r) { return float(r.syn_only); }},
    {"tcp_rst", [](const FeatureRow& r) { return float(r.rst); }},
    {"pair_contacts", [](const FeatureRow& r) { return float(r.pair.contacts); }},
    {"pair_age_s", [](const FeatureRow& r) { return float(r.pair.age_s); }},
    {"pair_intervals", [](const FeatureRow& r) { return float(r.pair.intervals); }},
    {"pair_interval_mean_s", [](const FeatureRow& r) { return float(r.pair.mean_s); }},
    {"pair_interval_cv", [](const FeatureRow& r) { return float(r.pair.cv); }},
    {"pair_period_s", [](const FeatureRow& r) { return float(r.pair.period_s); }},
    {"pair_mode_share", [](const FeatureRow& r) { return float(r.pair.mode_share); }},
    {"pair_periodicity", [](const FeatureRow& r) { return float(r.pair.score); }},
    {"sig_hit_count", [](const FeatureRow& r) { return float(std::popcount(r.pair.sig_mask)); }},
    {"ti_dst_feeds", [](const FeatureRow& r) { return float(r.ti_dst_hit ? r.ti_dst.feeds : 0); }},
    {"ti_dst_max_weight", [](const FeatureRow& r) { return float(r.ti_dst_hit ? r.ti_dst.max_weight : 0); }},
    {"ti_src_feeds", [](const FeatureRow& r) { return float(r.ti_src_hit ? r.ti_src.feeds : 0); }},
    {"srv_clients", [](const FeatureRow& r) { return float(std::round(r.pair.srv_clients)); }},
    {"srv_client_nets", [](const FeatureRow& r) { return float(std::round(r.pair.srv_client_nets)); }},
    {"srv_ports", [](const FeatureRow& r) { return float(std::round(r.pair.srv_ports)); }},
    {"srv_flows", [](const FeatureRow& r) { return float(r.pair.srv_flows); }},
    {"srv_bytes", [](const FeatureRow& r) { return float(r.pair.srv_bytes); }},
    {"srv_failed_share", [](const FeatureRow& r) { return float(r.pair.srv_failed_share); }},
    {"srv_age_s", [](const FeatureRow& r) { return float(r.pair.srv_age_s); }},
    {"payloadless_share", [](const FeatureRow& r) { return float(r.payloadless_share); }},
    {"tcp_rtt_ms", [](const FeatureRow& r) { return nan_if(!r.rtt_us, r.rtt_us / 1e3); }},
    {"cli_servers", [](const FeatureRow& r) { return float(std::round(r.client.servers)); }},
    {"cli_ports", [](const FeatureRow& r) { return float(std::round(r.client.ports)); }},
    {"cli_flows", [](const FeatureRow& r) { return float(r.client.flows); }},
    {"cli_failed_share", [](const FeatureRow& r) { return float(r.client.failed_share); }},
    {"cli_periodic_servers", [](const FeatureRow& r) { return float(std::round(r.client.periodic_servers)); }},
    {"cli_age_s", [](const FeatureRow& r) { return float(r.client.age_s); }},
    {"partner_reports", [](const FeatureRow& r) { return float(r.partner ? r.partner->reports : 0); }},
    {"partner_score", [](const FeatureRow& r) { return nan_if(!r.partner, r.partner ? r.partner->score : 0); }},
    {"partner_port_match", [](const FeatureRow& r) {
       return float(r.partner && r.partner->has_port(fw(r) == 0 ? r.rec->e.key.hi_port : r.rec->e.key.lo_port));
     }},
    {"partner_detections", [](const FeatureRow& r) { return float(r.partner ? r.partner->detections : 0); }},
    {"partner_days_since_first", [](const FeatureRow& r) {
       return nan_if(!r.partner || !r.partner->first_ns, r.partner ? partner_days(r.rec->e.first_ns, r.partner->first_ns) : 0);
     }},
    {"partner_days_since_last", [](const FeatureRow& r) {
       return nan_if(!r.partner || !r.partner->last_ns, r.partner ? partner_days(r.rec->e.first_ns, r.partner->last_ns) : 0);
     }},
};
constexpr size_t kNumColumns = sizeof kColumns / sizeof kColumns[0];

const char* entity_name(Entity e) { return e == Entity::SERVER ? "server" : e == Entity::CLIENT ? "client" : "flow"; }

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> v;
  size_t a = 0;
  for (;;) {
    size_t b = s.find(sep, a);
    v.push_back(s.substr(a, b == std::string::npos ? std::string::npos : b - a));
    if (b == std::string::npos) return v;
    a = b + 1;
  }
}

double to_double(const std::string& app, const std::string& what, const std::string& v) {
  try {
    size_t used = 0;
    double x = std::stod(v, &used);
    if (used == v.size()) return x;
  } catch (const std::exception&) {
  }
  throw std::runtime_error("app " + app + ": " + what + " '" + v + "' is not a number");
}

}  // namespace

const std::vector<std::string>& feature_column_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> v;
    for (auto& c : kColumns) v.push_back(c.name);
    return v;
  }();
  return names;
}

AppConfig parse_app(const std::string& spec) {
  auto p = split(spec, ':');
  if (p.size() != 4 || p[0].empty())
    throw std::runtime_error("app '" + spec + "': expected NAME:server|client|flow:MODEL.json:THRESHOLD or "
                             "NAME:ENTITY:rule:sig=ID+ID,periodicity=X,contacts=N");
  AppConfig a;
  a.name = p[0];
  if (p[1] == "server") a.entity = Entity::SERVER;
  else if (p[1] == "client") a.entity = Entity::CLIENT;
  else if (p[1] == "flow") a.entity = Entity::FLOW;
  else throw std::runtime_error("app " + a.name + ": entity '" + p[1] + "' is not server, client or flow");
  if (p[2] == "rule") {
    a.threshold = 1;
    for (auto& kv : split(p[3], ',')) {
      auto ge = kv.find(">="), le = kv.find("<=");
      if (ge != std::string::npos || le != std::string::npos) {
        size_t at = ge != std::string::npos ? ge : le;
        std::string col = kv.substr(0, at);
        auto& names = feature_column_names();
        auto it = std::find(names.begin(), names.end(), col);
        if (it == names.end())
          throw std::runtime_error("app " + a.name + ": '" + col + "' is not a feature column (docs/features.md)");
        a.conds.push_back({uint16_t(it - names.begin()), ge != std::string::npos,
                           to_double(a.name, col, kv.substr(at + 2))});
        continue;
      }
      auto eq = kv.find('=');
      std::string k = kv.substr(0, eq), v = eq == std::string::npos ? "" : kv.substr(eq + 1);
      if (k == "sig") {
        for (auto& id : split(v, '+')) a.sig_ids.push_back(uint32_t(to_double(a.name, "signature id", id)));
      } else if (k == "periodicity") {
        a.min_periodicity = to_double(a.name, "periodicity", v);
      } else if (k == "contacts") {
        a.min_contacts = uint32_t(to_double(a.name, "contacts", v));
      } else {
        throw std::runtime_error("app " + a.name + ": unknown rule condition '" + k +
                                 "' (sig=, periodicity=, contacts=, COLUMN>=X, COLUMN<=X)");
      }
    }
  } else {
    a.model = p[2];
    a.threshold = to_double(a.name, "threshold", p[3]);
    if (!(a.threshold >= 0 && a.threshold <= 1)) throw std::runtime_error("app " + a.name + ": threshold must be 0 .. 1");
  }
  return a;
}

namespace {
// Loads an app's model and maps its features to columns; throws naming the app.
std::shared_ptr<const TreeModel> load_app_model(const AppConfig& c, std::vector<uint16_t>& columns) {
  auto m = std::make_shared<TreeModel>(TreeModel::load_file(c.model));
  if (m->num_outputs() != 1)
    throw std::runtime_error("app " + c.name + ": " + c.model + " has " + std::to_string(m->num_outputs()) +
                             " outputs; an app needs one score (binary:logistic)");
  const auto& names = m->feature_names();
  if (names.size() != m->num_features())
    throw std::runtime_error("app " + c.name + ": " + c.model + " has no feature_names: train it on named columns");
  columns.clear();
  for (auto& n : names) {
    auto it = std::find(feature_column_names().begin(), feature_column_names().end(), n);
    if (it == feature_column_names().end())
      throw std::runtime_error("app " + c.name + ": model feature '" + n + "' is not a feature column (docs/features.md)");
    columns.push_back(uint16_t(it - feature_column_names().begin()));
  }
  return m;
}
}  // namespace

DetectStage::DetectStage(const std::vector<AppConfig>& apps, const std::string& out_path) : path_(out_path) {
  for (auto& c : apps) {
    App a;
    a.cfg = c;
    if (!c.model.empty()) a.model = load_app_model(c, a.columns);
    a.seen = std::make_unique<BoundedTable<EntityKey, Seen>>(1u << 16, c.cooldown_ns, 0xde7ec7);
    apps_.push_back(std::move(a));
    stats_.push_back({c.name});
  }
  // Only the columns some app reads are computed per row.
  for (auto& a : apps_) {
    for (uint16_t c : a.columns) needed_.push_back(c);
    for (auto& c : a.cfg.conds) needed_.push_back(c.column);
  }
  std::sort(needed_.begin(), needed_.end());
  needed_.erase(std::unique(needed_.begin(), needed_.end()), needed_.end());
  out_file_ = std::make_unique<SpoolFile>(path_);
}

DetectStage::~DetectStage() = default;

double DetectStage::expert_score(const App& a, const FeatureRow& row, const RuleSet* rules,
                                 const float* values) const {
  // An app that needs signatures never fires without rules (its bits are then 0).
  bool sig = a.cfg.sig_ids.empty() || (rules && (row.pair.sig_mask & a.sig_bits));
  bool ok = sig && row.pair.score >= a.cfg.min_periodicity && row.pair.contacts >= a.cfg.min_contacts;
  for (auto& c : a.cfg.conds) {
    float v = values[c.column];
    ok = ok && (c.at_least ? v >= c.value : v <= c.value);  // NaN compares false
  }
  return ok ? 1 : 0;
}

void DetectStage::score(const FeatureRow* rows, const RuleSet* const* rules, size_t n) {
  // Below this many rows a batch kernel's fixed cost is more than walking the trees.
  constexpr size_t kBatchFrom = 8;
  if (values_.size() < n * kNumColumns) values_.resize(n * kNumColumns);
  if (scores_.size() < n * apps_.size()) scores_.resize(n * apps_.size());
  for (size_t r = 0; r < n; r++)
    for (uint16_t i : needed_) values_[r * kNumColumns + i] = kColumns[i].get(rows[r]);
  for (size_t k = 0; k < apps_.size(); k++) {
    App& a = apps_[k];
    stats_[k].scored += n;
    double* s = &scores_[k * n];
    if (!a.model) {
      for (size_t r = 0; r < n; r++) {
        uint64_t serial = rules[r] ? rules[r]->serial() : 0;
        if (serial != a.bits_of) {
          a.bits_of = serial;
          a.sig_bits = 0;
          if (rules[r])
            for (size_t b = 0; b < rules[r]->rules().size() && b < 64; b++)
              if (std::find(a.cfg.sig_ids.begin(), a.cfg.sig_ids.end(), rules[r]->rules()[b].id) != a.cfg.sig_ids.end())
                a.sig_bits |= 1ull << b;
        }
        s[r] = expert_score(a, rows[r], rules[r], &values_[r * kNumColumns]);
      }
      continue;
    }
    size_t f = a.columns.size();
    if (a.x.size() < n * f) a.x.resize(n * f);
    for (size_t r = 0; r < n; r++)
      for (size_t i = 0; i < f; i++) a.x[r * f + i] = values_[r * kNumColumns + a.columns[i]];
    if (out_.size() < n) out_.resize(n);
    if (n >= kBatchFrom) {
      if (margin_.size() < a.model->margin_floats(n)) margin_.resize(a.model->margin_floats(n));
      a.model->predict_batch(a.x.data(), n, out_.data(), margin_.data());
    } else {
      for (size_t r = 0; r < n; r++) a.model->predict(&a.x[r * f], &out_[r]);
    }
    for (size_t r = 0; r < n; r++) s[r] = out_[r];
  }
  for (size_t r = 0; r < n; r++)
    for (size_t k = 0; k < apps_.size(); k++) {
      App& a = apps_[k];
      double s = scores_[k * n + r];
      if (s < a.cfg.threshold || s == 0) continue;
      emit(a, rows[r], s, rules[r], a.model ? &a.x[r * a.columns.size()] : nullptr);
    }
}

void DetectStage::emit(App& a, const FeatureRow& row, double score, const RuleSet* rules, const float* x) {
  const FlowEntry& e = row.rec->e;
  int f = e.init_lo ? 0 : 1;
  const uint8_t* client = f == 0 ? e.key.lo : e.key.hi;
  const uint8_t* server = f == 0 ? e.key.hi : e.key.lo;
  uint16_t sport = f == 0 ? e.key.lo_port : e.key.hi_port, dport = f == 0 ? e.key.hi_port : e.key.lo_port;
  EntityKey k{};
  std::memcpy(k.addr, a.cfg.entity == Entity::CLIENT ? client : server, 16);
  k.ver = e.key.ip_ver;
  if (a.cfg.entity != Entity::CLIENT) {
    k.port = dport;
    k.proto = e.key.proto;
  }
  if (a.cfg.entity == Entity::FLOW) {
    std::memcpy(k.client, client, 16);
    k.client_port = sport;
  }
  if (on_detection) {
    static const std::string none;
    std::string names;
    if (rules)
      for (size_t b = 0; b < rules->rules().size() && b < 64; b++)
        if (row.pair.sig_mask >> b & 1) names += (names.empty() ? "" : ";") + rules->rules()[b].name;
    on_detection({a.cfg.name, a.cfg.entity, server, e.key.ip_ver, e.key.proto, dport, score, e.first_ns, e.last_ns,
                  row.pair.srv_clients, row.pair.score, row.pair.period_s, row.pair.srv_bytes,
                  row.ti_dst_hit ? row.ti_dst.feeds : 0u, row.ti_dst_hit ? row.ti_dst.max_weight : 0.0,
                  row.ti_dst_hit ? row.ti_dst.last_days : 0, row.ti_dst_hit ? row.ti_dst.categories : none, names,
                  client, row.partner});
  }
  Seen& seen = a.seen->find_or_make(k, e.first_ns);
  size_t idx = size_t(&a - apps_.data());
  if (seen.used()) {  // within the cool-down: counted, not repeated
    stats_[idx].cooled++;
    seen.last_ns = std::max(seen.last_ns, e.first_ns);
    return;
  }
  seen.last_ns = std::max<uint64_t>(e.first_ns, 1);
  stats_[idx].fired++;
  detections_++;
  std::string& o = line_;
  o.clear();
  o += "{\"time_ns\":"; append_uint(o, e.first_ns);
  o += ",\"app\":\""; o += a.cfg.name;
  o += "\",\"entity\":\""; o += entity_name(a.cfg.entity);
  o += "\",\"endpoint\":\""; o += format_ip(a.cfg.entity == Entity::CLIENT ? client : server, e.key.ip_ver);
  o += "\",\"score\":"; append_general6(o, score);
  o += ",\"threshold\":"; append_general6(o, a.cfg.threshold);
  if (a.model) {
    // Features split on along the paths, most used first: what decided the score.
    std::vector<uint32_t> counts(a.model->num_features(), 0);
    a.model->path_counts(x, counts.data());
    std::vector<size_t> order(counts.size());
    for (size_t i = 0; i < order.size(); i++) order[i] = i;
    std::sort(order.begin(), order.end(), [&](size_t x, size_t y) { return counts[x] > counts[y]; });
    o += ",\"top_features\":[";
    for (size_t i = 0; i < order.size() && i < 5 && counts[order[i]]; i++) {
      if (i) o += ',';
      o += "{\"name\":\""; o += a.model->feature_names()[order[i]];
      o += "\",\"value\":"; append_general6(o, std::isnan(x[order[i]]) ? 0 : x[order[i]]);
      o += ",\"splits\":"; append_uint(o, counts[order[i]]);
      o += '}';
    }
    o += ']';
  }
  o += ",\"evidence\":{\"client\":\"";
  // The client is evidence for the operator's own SOC; exports for partners drop it.
  o += format_ip(client, e.key.ip_ver);
  o += "\",\"server\":\""; o += format_ip(server, e.key.ip_ver);
  o += "\",\"sport\":"; append_uint(o, sport);
  o += ",\"dport\":"; append_uint(o, dport);
  o += ",\"proto\":"; append_uint(o, e.key.proto);
  o += ",\"pair_contacts\":"; append_uint(o, row.pair.contacts);
  o += ",\"pair_period_s\":"; append_general6(o, row.pair.period_s);
  o += ",\"pair_periodicity\":"; append_general6(o, row.pair.score);
  o += ",\"srv_clients\":"; append_general6(o, std::round(row.pair.srv_clients));
  o += ",\"sig_hits\":\""; if (rules) o += hit_ids(*rules, row.pair.sig_mask);
  o += "\",\"ti_dst_feeds\":"; append_uint(o, row.ti_dst_hit ? row.ti_dst.feeds : 0);
  o += ",\"ti_dst_categories\":\""; if (row.ti_dst_hit) o += row.ti_dst.categories;
  o += "\"},\"sampling\":{\"method\":\""; o += sample_mode_name(row.rec->sampling.mode);
  o += "\",\"rate\":"; append_uint(o, row.rec->sampling.rate);
  o += "}}\n";
  out_file_->write(o);
}

std::string DetectStage::describe() const {
  nlohmann::json a = nlohmann::json::array();
  for (size_t i = 0; i < apps_.size(); i++) {
    const App& x = apps_[i];
    nlohmann::json j{{"name", x.cfg.name}, {"entity", entity_name(x.cfg.entity)}, {"threshold", x.cfg.threshold},
                     {"scored", stats_[i].scored}, {"fired", stats_[i].fired}, {"cooled", stats_[i].cooled}};
    if (x.model)
      j.update({{"model", x.cfg.model}, {"objective", x.model->objective()}, {"trees", x.model->num_trees()},
                {"features", x.model->feature_names()}, {"reloads", x.reloads}});
    else
      j["rule"] = true;
    a.push_back(j);
  }
  return a.dump();
}

std::string DetectStage::reload_models() {
  std::vector<std::shared_ptr<const TreeModel>> fresh(apps_.size());
  std::vector<std::vector<uint16_t>> cols(apps_.size());
  for (size_t i = 0; i < apps_.size(); i++)
    if (apps_[i].model) fresh[i] = load_app_model(apps_[i].cfg, cols[i]);  // throws: nothing swapped
  size_t n = 0;
  for (size_t i = 0; i < apps_.size(); i++) {
    if (!fresh[i]) continue;
    apps_[i].model = std::move(fresh[i]);
    apps_[i].columns = std::move(cols[i]);
    apps_[i].reloads++;
    n++;
  }
  return std::to_string(n) + " model" + (n == 1 ? "" : "s") + " reloaded";
}

void DetectStage::set_threshold(const std::string& app, double t) {
  if (!(t >= 0 && t <= 1)) throw std::runtime_error("threshold must be 0 .. 1");
  for (auto& a : apps_)
    if (a.cfg.name == app) {
      if (!a.model) throw std::runtime_error("app " + app + " is an expert rule: no threshold to set");
      a.cfg.threshold = t;
      return;
    }
  throw std::runtime_error("no app named " + app);
}

std::vector<std::string> DetectStage::app_names() const {
  std::vector<std::string> v;
  for (auto& a : apps_) v.push_back(a.cfg.name);
  return v;
}

// At the end a stalled reader of the detections gets 10 s to take the spool.
void DetectStage::close() { out_file_->close(10'000); }

}  // namespace ls
