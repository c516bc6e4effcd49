// The exporters a run writes to, built from the config: JSON lines, IPFIX.
#pragma once
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <memory>
#include <string>

#include "ctrl/config.h"
#include "ctrl/flow_writer.h"
#include "ctrl/ipfix.h"
#include "ctrl/ti_export.h"
#include "dataplane/clock.h"
#include "dataplane/output_file.h"
#include "detect/apps.h"
#include "features/feature_stage.h"

namespace ls {

// The rule set was compiled once by finish_config(); every stage shares it read-only.
// The TI and partner tables are not in it: only the stage that writes rows looks them up
// (Outputs gives them to it, reloads swap them there); a worker's stage holding them
// would keep every replaced table in memory.
inline FeatureConfig feature_config(const Config& c) {
  FeatureConfig fc;
  fc.pair_capacity = c.pair_capacity;
  fc.first_contact_capacity = c.first_contact_capacity;
  fc.server_capacity = c.server_capacity;
  fc.client_capacity = c.client_capacity;
  fc.window_ns = c.feature_window_ns;
  fc.hash_seed = c.core.table.hash_seed;
  fc.sketch_seed = c.sketch_seed;
  fc.sketch_clients = c.sketch_clients;
  fc.pseudonym_secret = c.pseudonym_secret;
  fc.pseudonym_rotate_ns = c.pseudonym_rotate_ns;
  fc.rules = c.loaded_rules;
  return fc;
}

struct Outputs {
  std::unique_ptr<FlowWriter> writer;
  std::unique_ptr<IpfixExporter> ipfix;
  std::unique_ptr<FeatureWriter> features;
  std::unique_ptr<DetectStage> detect;
  std::unique_ptr<TiExporter> ti_export;

  // Expert-rule apps used when --detections-out comes without --app (docs/detect.md).
  static std::vector<std::string> default_apps() {
    return {"beacon:server:rule:periodicity=0.8,contacts=10",
            "c2-signature:server:rule:sig=1401+1402+1501+1502+1503",
            "miner:server:rule:sig=1001+1002",
            "exploit:server:rule:sig=1101+1102+1201+1202+1203",
            // vertical scan: one client, many ports, mostly unanswered
            "scanner:client:rule:cli_ports>=100,cli_failed_share>=0.5",
            // a client beaconing to several servers at once
            "bot-host:client:rule:cli_periodic_servers>=3,pair_periodicity>=0.8"};
  }
  Fanout fanout;

 private:
  uint64_t next_export_ns_ = 0, export_every_ns_ = 0, next_sketches_ns_ = 0, sketches_every_ns_ = 0;
  std::string sketches_out_;

 public:

  bool state_on_workers = false;  // run: pair/server/client state lives in the workers' stages
  // Where --sketches-out's endpoint sketches come from: the writer's stage, or (run) the
  // workers' stages once they stopped.
  SketchSource sketch_source;
  size_t sketches_written = 0;

  // Throws std::runtime_error naming the file or collector that failed. With
  // `workers_attach_features` (linesight run) the workers fill the stateful features, so
  // the writer's own stage keeps minimal tables.
  explicit Outputs(const Config& c, bool workers_attach_features = false)
      : state_on_workers(workers_attach_features) {
    if (!c.flows_out.empty())
      writer = std::make_unique<FlowWriter>(c.flows_out, c.payload_out,
                                            RotateConfig{c.rotate_bytes, c.rotate_interval_ns});
    if (!c.ipfix.empty()) {
      IpfixConfig ic;
      ic.collector = c.ipfix;
      ic.template_refresh_ns = c.ipfix_template_refresh_ns;
      ipfix = std::make_unique<IpfixExporter>(ic);
    }
    sketches_out_ = c.sketches_out;
    sketches_every_ns_ = c.sketches_every_ns;
    next_sketches_ns_ = c.sketches_every_ns ? wall_ns() + c.sketches_every_ns : 0;
    if (!c.sketches_out.empty()) check_replaceable(c.sketches_out);
    if (c.features_on()) {
      FeatureConfig fc = feature_config(c);
      fc.ti = c.loaded_ti;
      fc.partners = c.loaded_partners;
      if (workers_attach_features)
        fc.pair_capacity = fc.first_contact_capacity = fc.server_capacity = fc.client_capacity = 64;
      features = std::make_unique<FeatureWriter>(c.features_out, fc);
      if (!workers_attach_features)
        sketch_source = [f = features.get()](const auto& each) { f->stage().sketches(each); };
    }
    if (!c.detections_out.empty()) {
      std::vector<std::string> specs;  // "--app defaults" stands for the default apps
      for (auto& s : c.apps.empty() ? std::vector<std::string>{"defaults"} : c.apps)
        if (s == "defaults") {
          auto d = default_apps();
          specs.insert(specs.end(), d.begin(), d.end());
        } else {
          specs.push_back(s);
        }
      std::vector<AppConfig> apps;
      for (auto& s : specs) {
        apps.push_back(parse_app(s));
        if (!apps.back().sig_ids.empty() && !c.loaded_rules)
          std::fprintf(stderr, "linesight: warning: app %s matches signatures: it stays silent without --rules\n",
                       apps.back().name.c_str());
      }
      detect = std::make_unique<DetectStage>(apps, c.detections_out);
      features->on_rows = [d = detect.get()](const FeatureRow* r, const RuleSet* const* rs, size_t n) {
        d->score(r, rs, n);
      };
      if (!c.ti_export.empty()) {
        ti_export = std::make_unique<TiExporter>(TiExportConfig{c.ti_export, c.privacy_k, c.producer,
                                                                c.pseudonym_secret, c.pseudonym_rotate_ns});
        next_export_ns_ = c.ti_export_every_ns ? wall_ns() + c.ti_export_every_ns : 0;
        export_every_ns_ = c.ti_export_every_ns;
        detect->on_detection = [t = ti_export.get()](const Detection& d) { t->add(d); };
      }
    }
    fanout.add(writer.get());
    fanout.add(ipfix.get());
    fanout.add(features.get());
  }
  // Called about once a second by long-running commands: the scheduled TI export. A
  // failed write is reported and counted, and tried again at the next period.
  void tick(uint64_t now_wall_ns) {
    if (detect) detect->tick();  // retries detections spooled while their file refused them
    // collect: the stage is on this thread, so the file is written here; run asks its workers.
    if (sketch_source && !state_on_workers && next_sketches_ns_ && now_wall_ns >= next_sketches_ns_) {
      next_sketches_ns_ = now_wall_ns + sketches_every_ns_;
      try {
        sketches_written = write_sketches(sketches_out_, sketch_source);
        scheduled_sketches++;
      } catch (const SketchError& e) {
        sketch_errors++;
        std::fprintf(stderr, "linesight: sketch export failed: %s\n", e.what());
      }
    }
    if (!ti_export || !next_export_ns_ || now_wall_ns < next_export_ns_) return;
    next_export_ns_ = now_wall_ns + export_every_ns_;
    try {
      ti_export->write(now_wall_ns);
      scheduled_exports++;
    } catch (const std::exception& e) {
      export_errors++;
      std::fprintf(stderr, "linesight: scheduled TI export failed: %s\n", e.what());
    }
  }
  uint64_t scheduled_exports = 0, export_errors = 0, scheduled_sketches = 0, sketch_errors = 0;

  // Flushes everything; returns an error message (empty when all went out).
  std::string close() {
    std::string err;
    if (ipfix) ipfix->flush();
    for (auto close : {std::function<void()>([&] { if (writer) writer->close(); }),
                       std::function<void()>([&] { if (features) features->close(); }),
                       std::function<void()>([&] { if (detect) detect->close(); }),
                       std::function<void()>([&] { if (ti_export) ti_export->write(wall_ns()); })}) {
      try {
        close();
      } catch (const std::exception& e) {
        err = e.what();
      }
    }
    return err;
  }
  std::string metrics() const {
    std::string o;
    if (detect) {
      const auto& d = detect->output();
      o += "# HELP linesight_detections_spooled_bytes Detections waiting for their file to accept them.\n"
           "# TYPE linesight_detections_spooled_bytes gauge\nlinesight_detections_spooled_bytes " +
           std::to_string(d.spooled()) +
           "\n# HELP linesight_detections_dropped_total Detections dropped with the spool full.\n"
           "# TYPE linesight_detections_dropped_total counter\nlinesight_detections_dropped_total " +
           std::to_string(d.stats().dropped_lines) + "\n";
    }
    if (!ipfix) return o;
    const auto& s = ipfix->stats;
    return o + "# HELP linesight_ipfix_records_total IPFIX data records exported.\n"
           "# TYPE linesight_ipfix_records_total counter\nlinesight_ipfix_records_total " +
           std::to_string(s.data_records) +
           "\n# HELP linesight_ipfix_send_errors_total IPFIX messages that could not be sent.\n"
           "# TYPE linesight_ipfix_send_errors_total counter\nlinesight_ipfix_send_errors_total " +
           std::to_string(s.send_errors) + "\n";
  }
  std::string summary(const Config& c) const {
    std::string o;
    if (ipfix) {
      const auto& s = ipfix->stats;
      o += "ipfix: " + std::to_string(s.data_records) + " data records in " +
           std::to_string(s.messages) + " messages, " + std::to_string(s.send_errors) +
           " send errors\n";
    }
    if (detect) {
      o += "detections: " + std::to_string(detect->detections()) + " -> " + c.detections_out + "\n";
      const auto& ds = detect->output().stats();
      if (ds.write_errors)
        o += "  output refused " + std::to_string(ds.write_errors) + " times (" + std::strerror(ds.last_errno) +
             "): spooled up to " + std::to_string(ds.spooled_peak) + " B, " + std::to_string(detect->output().spooled()) +
             " B never written, " + std::to_string(ds.dropped_lines) + " detections dropped\n";
      if (ti_export)
        o += "ti export: " + std::to_string(ti_export->indicators()) + " indicators -> " + c.ti_export + " (" +
             std::to_string(ti_export->not_public()) + " flagged rows about private addresses kept home)\n";
      for (auto& a : detect->stats())
        o += "  " + a.name + ": " + std::to_string(a.fired) + " fired, " + std::to_string(a.cooled) +
             " within cool-down, " + std::to_string(a.scored) + " rows scored\n";
    }
    if (c.loaded_partners) {
      uint64_t skipped = 0;
      for (auto& f : c.loaded_partners->files()) skipped += f.skipped;
      o += "partners: " + std::to_string(c.loaded_partners->size()) + " servers reported in " +
           std::to_string(c.loaded_partners->files().size()) + " files (" + std::to_string(skipped) +
           " malformed records skipped)\n";
    }
    if (c.loaded_ti) {
      uint64_t entries = 0, skipped = 0;
      for (auto& f : c.loaded_ti->feeds()) {
        entries += f.entries;
        skipped += f.skipped;
      }
      o += "ti: " + std::to_string(c.loaded_ti->feeds().size()) + " feed instances, " +
           std::to_string(entries) + " entries (" + std::to_string(skipped) +
           " malformed lines skipped), " + std::to_string(c.loaded_ti->intervals()) +
           " intervals, " + std::to_string(c.loaded_ti->memory_bytes() / 1024) + " KB\n";
      for (auto& w : c.loaded_ti->warnings()) o += "ti: " + w + "\n";
    }
    return o;
  }
};

// Occupancy of the feature state (pairs, servers, clients), summed over stages. Evictions
// mean a table is smaller than the traffic's working set (docs/operations.md).
inline nlohmann::json feature_state_json(const std::vector<FeatureCounters>& cs, size_t memory_bytes) {
  nlohmann::json j;
  auto add = [&](const char* name, const BoundedTableCounters FeatureCounters::*t) {
    uint64_t c = 0, e = 0, a = 0, o = 0;
    for (auto& x : cs) {
      c += (x.*t).created;
      e += (x.*t).evicted;
      a += (x.*t).aged_out;
      o += (x.*t).overflowed;
    }
    j[name] = {{"created", c}, {"evicted", e}, {"aged_out", a}, {"overflowed", o}};
  };
  add("first_contacts", &FeatureCounters::first_contacts);
  add("pairs", &FeatureCounters::pairs);
  add("servers", &FeatureCounters::servers);
  add("clients", &FeatureCounters::clients);
  uint64_t rows = 0;
  for (auto& x : cs) rows += x.rows;
  j["rows"] = rows;
  j["memory_bytes"] = memory_bytes;
  return j;
}

inline std::string feature_state_text(const nlohmann::json& j) {
  std::string o = "feature state (" + std::to_string(j["memory_bytes"].get<uint64_t>() >> 20) + " MB):";
  const char* sep = " ";
  for (const char* t : {"first_contacts", "pairs", "servers", "clients"}) {
    auto& x = j[t];
    o += sep + std::string(t) + " " + std::to_string(x["created"].get<uint64_t>()) + " created, " +
         std::to_string(x["evicted"].get<uint64_t>()) + " evicted, " + std::to_string(x["aged_out"].get<uint64_t>()) +
         " aged out, " + std::to_string(x["overflowed"].get<uint64_t>()) + " overflowed";
    sep = "; ";
  }
  return o + "\n";
}

// End of a replay or run: closes the exporters, prints the human summary (plus `extra`),
// writes the JSON summary (plus `extra_json` fields). Returns the exit code.
inline int finish_outputs(Outputs& out, const ReplayResult& r, const SummaryCollector& s,
                          const Config& c, uint32_t cores, bool quiet, const std::string& extra = "",
                          const nlohmann::json& extra_json = nlohmann::json::object()) {
  int rc = 0;
  std::string extra_text = extra;
  nlohmann::json more = extra_json;
  if (out.features && !out.state_on_workers && !more.contains("feature_state")) {
    const FeatureStage& st = out.features->stage();
    more["feature_state"] = feature_state_json({st.counters()}, st.memory_bytes());
  }
  if (more.contains("feature_state")) extra_text += feature_state_text(more["feature_state"]);
  std::string err = out.close();
  if (!c.sketches_out.empty() && out.sketch_source) {  // every record has reached the stages
    try {
      out.sketches_written = write_sketches(c.sketches_out, out.sketch_source);
      extra_text += "sketches: " + std::to_string(out.sketches_written) + " endpoints -> " + c.sketches_out + "\n";
      more["sketches"] = out.sketches_written;
    } catch (const SketchError& e) {
      err += (err.empty() ? "" : "; ") + std::string(e.what());
    }
  }
  if (!err.empty()) {
    std::fprintf(stderr, "linesight: %s\n", err.c_str());
    rc = 1;
  }
  if (out.detect) {  // after close: its last retries count
    const auto& ds = out.detect->output().stats();
    more["detections"] = {{"count", out.detect->detections()}, {"write_errors", ds.write_errors},
                          {"spooled_peak", ds.spooled_peak}, {"dropped", ds.dropped_lines}};
  }
  if (!quiet) {
    std::string text = format_summary(r, s, cores, c.flows_out == "-" ? "" : c.flows_out);
    text += extra_text + out.summary(c);
    std::fputs(text.c_str(), c.flows_out == "-" ? stderr : stdout);
  }
  if (!c.summary_json.empty()) {
    auto j = nlohmann::json::parse(format_summary_json(r, s, cores));
    j.update(more);
    std::ofstream f(c.summary_json);
    f << j.dump(1) << "\n";
    if (!f) {
      std::fprintf(stderr, "linesight: %s: cannot write summary\n", c.summary_json.c_str());
      rc = 1;
    }
  }
  return rc;
}

}  // namespace ls
