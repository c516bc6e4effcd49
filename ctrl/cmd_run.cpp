// `linesight run`: the DPDK runtime. The main lcore is the control core: it sets up EAL,
// ports, rings and pools, launches RX and worker lcores, then drains records into the
// exporters, serves the control socket and sums counters. It never writes per-lcore
// state; live changes go through LiveSettings and a QSBR grace period.
#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_mbuf_dyn.h>
#include <rte_mempool.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <memory>
#include <string>
#include <vector>

#include "dataplane/clock.h"
#include "ctrl/collector.h"
#include "ctrl/commands.h"
#include "ctrl/config.h"
#include "ctrl/ctl_server.h"
#include "ctrl/flow_writer.h"
#include "ctrl/metrics_server.h"
#include "ctrl/outputs.h"
#include "ctrl/runtime.h"
#include "dataplane/dpdk_lcores.h"

namespace ls {
namespace {

std::atomic<bool> g_signal{false};
void on_signal(int) { g_signal.store(true); }

const char* kRunUsage = R"(usage: linesight run --config FILE [options] [-- EAL arguments]

Runs the DPDK pipeline: RX lcores (one or more queues each, symmetric RSS) → per-core flow
tables → worker lcores → this control core (records, control socket, counters).
EAL arguments come from the config's dpdk.eal list, then from after "--".

options (override the config file):
  --rx-lcores N          RX lcores (queues are spread over them)
  --rx-queues N          RX queues per port
  --workers N            worker lcores
  --socket PATH          control socket (linesightctl), "" disables
  --metrics HOST:PORT    Prometheus metrics at http://HOST:PORT/metrics (off by default)
  --exit-idle D          stop once no packet (nor export datagram) has arrived for D
  --collect HOST:PORT    also take NetFlow v1 / v5 / v7 / v9 / IPFIX / sFlow v5 over UDP on
                         HOST:PORT: the records join the packets' in the same workers
                         (docs/collector.md)
  --collect-tcp HOST:PORT  ... and IPFIX over TCP
  --memory-replay FILE   load FILE into mbufs and replay it through net_ring queues
  --loop N               memory replay: N passes, addresses rewritten per pass
  --replay-pps N         memory replay: feed at most N packets/s (default: line rate of the lcores)
  --idle-sleep-us N      sleep N µs after 1024 empty polls (shared CPUs; 0 = pure polling)
  --mbuf-size N          mbuf data room in bytes (2048; af_packet needs its frame size)
  --quiet                no summary
)";

[[noreturn]] void die(const std::string& m) {
  std::fprintf(stderr, "linesight: %s\n", m.c_str());
  std::exit(2);
}



// The files a /…/reload command loads: {"paths": [...]} or the configured ones.
std::vector<std::string> reload_paths(const CtlRequest& r, const std::vector<std::string>& configured, bool features) {
  if (!features) throw CtlError("no feature stage running (start with --features-out)");
  std::vector<std::string> paths = configured;
  if (r.body.contains("paths")) {
    if (!r.body["paths"].is_array()) throw CtlError("paths must be a list");
    paths.clear();
    for (auto& p : r.body["paths"]) {
      if (!p.is_string()) throw CtlError("paths must be strings");
      paths.push_back(p.get<std::string>());
    }
  }
  if (paths.empty()) throw CtlError("nothing configured: give {\"paths\": [...]}");
  return paths;
}

}  // namespace

int cmd_run(int argc, char** argv) {
  // First: config loading (feeds, rules), EAL start-up and the memory-replay load take
  // seconds; a stop requested meanwhile (systemd, Ctrl-C) is an orderly stop that writes
  // the summary, not a kill.
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  // A daemon: a peer that went away (control client, scraper) is an error to handle, not a
  // reason to die.
  signal(SIGPIPE, SIG_IGN);

  Config cfg;
  bool quiet = false;
  std::vector<std::string> eal_extra;
  int dashdash = argc;
  for (int i = 0; i < argc; i++)
    if (!std::strcmp(argv[i], "--")) {
      dashdash = i;
      break;
    }
  for (int i = dashdash + 1; i < argc; i++) eal_extra.push_back(argv[i]);
  try {
    if (!parse_command_line(dashdash, argv, cfg, kRunUsage, [&](const std::string& a, const auto& val) {
          auto num = [&](unsigned lo, unsigned hi) {
            std::string v = val();
            char* end;
            unsigned long x = std::strtoul(v.c_str(), &end, 10);
            if (*end || v.empty() || x < lo || x > hi)
              die(a + " must be " + std::to_string(lo) + " .. " + std::to_string(hi) + ", got '" + v + "'");
            return unsigned(x);
          };
          if (a == "--rx-lcores") cfg.dpdk.rx_lcores = uint16_t(num(1, 128));
          else if (a == "--rx-queues") cfg.dpdk.rx_queues = uint16_t(num(1, 128));
          else if (a == "--workers") cfg.dpdk.workers = uint16_t(num(1, 128));
          else if (a == "--socket") cfg.control.socket = val();
          else if (a == "--metrics") cfg.control.metrics = val();
          else if (a == "--collect") cfg.control.collect = val();
          else if (a == "--collect-tcp") cfg.control.collect_tcp = val();
          else if (a == "--exit-idle") cfg.control.exit_idle_ns = parse_duration_ns(val());
          else if (a == "--memory-replay") cfg.dpdk.memory_replay = val();
          else if (a == "--loop") cfg.dpdk.memory_loops = num(1, 1u << 30);
          else if (a == "--replay-pps") cfg.dpdk.memory_pps = num(1, 4000000000u);
          else if (a == "--idle-sleep-us") cfg.dpdk.idle_sleep_us = num(0, 100000);
          else if (a == "--mbuf-size") cfg.dpdk.mbuf_size = num(512, 65000);
          else if (a == "--quiet") quiet = true;
          else return false;
          return true;
        }))
      return 0;
  } catch (const ConfigError& e) {
    die(e.what());
  }

  Runtime rt(cfg);
  bool collecting = !cfg.control.collect.empty() || !cfg.control.collect_tcp.empty();
  if (collecting) rt.enable_control_feed();
  try {
    rt.init_eal(eal_extra);
    rt.setup();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "linesight: %s\n", e.what());
    rt.cleanup();  // close the probed devices (a pcap vdev holds an open capture) and EAL
    return 2;
  }

  std::unique_ptr<Outputs> outputs;
  try {
    outputs = std::make_unique<Outputs>(cfg, /*workers_attach_features=*/true);
  } catch (const std::exception& e) {
    die(e.what());
  }
  SummaryCollector summary(&outputs->fanout);
  // Router flow input beside the packets: decoded and joined here on the control lcore,
  // then into the workers' server phase like an RX lcore's records.
  std::unique_ptr<Collector> collector;
  std::unique_ptr<CollectorListener> listener;
  if (collecting) {
    try {
      rt.control_feed()->drain_to = &summary;
      collector = std::make_unique<Collector>(cfg.core, *rt.control_feed(), /*payload=*/true);
      listener = std::make_unique<CollectorListener>(*collector, cfg.control.collect, cfg.control.collect_tcp,
                                                     "--collect", "--collect-tcp");
    } catch (const std::exception& e) {
      std::fprintf(stderr, "linesight: %s\n", e.what());
      rt.cleanup();
      return 2;
    }
  }
  if (outputs->features) rt.on_rules_ = [&](auto rs) { outputs->features->add_rules(rs); };
  summary.track_hosts = !quiet;

  // --sketches-every: asked of the workers on schedule, written once all have answered.
  uint64_t sketch_exports = 0, sketch_errors = 0, next_sketches = cfg.sketches_every_ns ? wall_ns() + cfg.sketches_every_ns : 0;
  size_t sketch_lines = 0;
  std::string sketch_text;
  std::unique_ptr<CtlServer> ctl;
  if (!cfg.control.socket.empty()) {
    try {
      ctl = std::make_unique<CtlServer>(cfg.control.socket, cfg.control.socket_mode);
      register_runtime_commands(*ctl, rt, cfg);
      ctl->add("/ti/reload",
               "reload the threat-intel feeds (the configured paths, or {\"paths\": [...]}); "
               "a feed that cannot be read is refused and the old table stays",
               [&](const CtlRequest& r) {
                 auto paths = reload_paths(r, cfg.ti, outputs->features != nullptr);
                 std::shared_ptr<const TiTable> t;
                 try {
                   t = TiTable::load(paths, cfg.ti_weights);
                 } catch (const TiError& e) {
                   throw CtlError(e.what());
                 }
                 // Rows are written (and TI looked up) on this control thread: a plain swap.
                 outputs->features->set_ti(t);
                 cfg.ti = paths;
                 cfg.loaded_ti = t;
                 uint64_t entries = 0;
                 for (auto& f : t->feeds()) entries += f.entries;
                 return nlohmann::json{{"feeds", t->feeds().size()}, {"entries", entries},
                                       {"intervals", t->intervals()}, {"warnings", t->warnings()}};
               });
      ctl->add("/partners/reload",
               "reload partners' shared indicators (the configured files, or {\"paths\": [...]}); "
               "a file that cannot be read is refused and the old table stays",
               [&](const CtlRequest& r) {
                 auto paths = reload_paths(r, cfg.partners, outputs->features != nullptr);
                 std::shared_ptr<const PartnerTable> t;
                 try {
                   t = PartnerTable::load(paths);
                 } catch (const PartnerError& e) {
                   throw CtlError(e.what());
                 }
                 outputs->features->set_partners(t);  // rows are computed on this thread
                 cfg.partners = paths;
                 cfg.loaded_partners = t;
                 return nlohmann::json{{"servers", t->size()}, {"files", t->files().size()}};
               });
      // Apps score rows on this control thread: swaps need no grace period.
      ctl->add("/models", "detection apps: entity, model file, trees, threshold, rows scored, detections",
               [&](const CtlRequest&) {
                 if (!outputs->detect) throw CtlError("no detection apps running (start with --detections-out)");
                 return nlohmann::json::parse(outputs->detect->describe());
               });
      ctl->add("/models/reload",
               "reload every app's model file; all or none: a bad file is refused with its error and the "
               "old models stay",
               [&](const CtlRequest&) {
                 if (!outputs->detect) throw CtlError("no detection apps running (start with --detections-out)");
                 try {
                   return nlohmann::json{{"reloaded", outputs->detect->reload_models()}};
                 } catch (const std::exception& e) {
                   throw CtlError(e.what());
                 }
               });
      if (outputs->detect)
        for (const auto& name : outputs->detect->app_names())
          ctl->add("/apps/" + name + "/threshold", "get, or set with {\"set\": 0.7}, the threshold of app " + name,
                   [&, name](const CtlRequest& r) {
                     if (r.body.contains("set")) {
                       if (!r.body["set"].is_number()) throw CtlError("set must be a number");
                       try {
                         outputs->detect->set_threshold(name, r.body["set"].get<double>());
                       } catch (const std::exception& e) {
                         throw CtlError(e.what());
                       }
                     }
                     for (auto& a : nlohmann::json::parse(outputs->detect->describe()))
                       if (a["name"] == name) return a;
                     return nlohmann::json();
                   });
      ctl->add("/ti/feeds", "loaded threat-intel feeds: name, category, date, entries, skipped lines",
               [&](const CtlRequest&) {
                 nlohmann::json a = nlohmann::json::array();
                 if (cfg.loaded_ti)
                   for (auto& f : cfg.loaded_ti->feeds())
                     a.push_back({{"name", f.name}, {"category", f.category}, {"path", f.path},
                                  {"date_days", f.date_days}, {"weight", f.weight},
                                  {"entries", f.entries}, {"skipped", f.skipped}});
                 return a;
               });
      ctl->add("/ti/export", "write the indicators of flagged servers now (CSV, JSON, STIX 2.1, MISP) to --ti-export",
               [&](const CtlRequest&) {
                 if (!outputs->ti_export) throw CtlError("no TI export configured (start with --ti-export DIR)");
                 try {
                   auto files = outputs->ti_export->write(wall_ns());
                   return nlohmann::json{{"indicators", outputs->ti_export->indicators()}, {"files", files}};
                 } catch (const std::exception& e) {
                   throw CtlError(e.what());
                 }
               });
      ctl->add("/sketches/export",
               "rewrite --sketches-out now: the workers format their server and client sketches a slice at a time "
               "between records, and the file is replaced once all have (see /export for when)",
               [&](const CtlRequest&) {
                 if (cfg.sketches_out.empty()) throw CtlError("no sketch file configured (start with --sketches-out FILE)");
                 if (!rt.ask_sketches()) throw CtlError("an export is still being gathered from the workers");
                 return nlohmann::json{{"asked", true}, {"path", cfg.sketches_out}};
               });
      ctl->add("/collector", "router flow input (--collect): the decoder's counters, exporters, templates, flows held, "
               "and records dropped on the way to the workers",
               [&](const CtlRequest&) {
                 if (!collector) throw CtlError("no collector running (start with --collect HOST:PORT)");
                 const ControlFeed& f = *rt.control_feed();
                 return nlohmann::json{{"netflow", collector->netflow_json()},
                                       {"exported_records", collector->uniflows},
                                       {"flows_active", collector->flows_active()},
                                       {"records_out", uint64_t(f.rc.records_out)},
                                       {"record_ring_full", uint64_t(f.rc.record_ring_full)},
                                       {"record_pool_empty", uint64_t(f.rc.record_pool_empty)},
                                       {"waits", f.live_waits},
                                       {"table_full_drop", collector->table_counters().get(Ctr::table_full_drop)}};
               });
      ctl->add("/export", "exporter status: records, files, rotations, IPFIX messages and errors",
               [&](const CtlRequest&) {
                 nlohmann::json j{{"records", summary.records}};
                 if (outputs->writer)
                   j["json"] = {{"path", cfg.flows_out}, {"rotations", outputs->writer->rotations()},
                                {"write_errors", outputs->writer->write_errors()}};
                 if (outputs->ipfix) {
                   const auto& s = outputs->ipfix->stats;
                   j["ipfix"] = {{"collector", cfg.ipfix}, {"data_records", s.data_records},
                                 {"messages", s.messages}, {"send_errors", s.send_errors},
                                 {"template_sends", s.template_sends}};
                 }
                 if (outputs->detect) {
                   const auto& d = outputs->detect->output();
                   j["detections"] = {{"path", cfg.detections_out}, {"lines", d.stats().lines},
                                      {"spooled_bytes", d.spooled()}, {"spooled_peak", d.stats().spooled_peak},
                                      {"write_errors", d.stats().write_errors},
                                      {"dropped", d.stats().dropped_lines}};
                 }
                 if (!cfg.sketches_out.empty())
                   j["sketches"] = {{"path", cfg.sketches_out}, {"every_s", cfg.sketches_every_ns / 1'000'000'000ull},
                                    {"exports", sketch_exports}, {"endpoints", sketch_lines},
                                    {"errors", sketch_errors}, {"clients", sketch_clients_name(cfg.sketch_clients)}};
                 if (outputs->ti_export)
                   j["ti_export"] = {{"dir", cfg.ti_export}, {"indicators", outputs->ti_export->indicators()},
                                     {"every_s", cfg.ti_export_every_ns / 1'000'000'000ull},
                                     {"scheduled_exports", outputs->scheduled_exports},
                                     {"errors", outputs->export_errors}};
                 return j;
               });
    } catch (const std::exception& e) {
      die(e.what());
    }
  }

  std::unique_ptr<MetricsServer> metrics;
  if (!cfg.control.metrics.empty()) {
    try {
      metrics = std::make_unique<MetricsServer>(cfg.control.metrics, [&] {
        return rt.metrics_text((collector ? collector->metrics_text(false) : "") + outputs->metrics());
      });
    } catch (const std::exception& e) {
      die(e.what());
    }
  }

  rt.launch();
  uint64_t last_pkts = UINT64_MAX, last_change = wall_ns();
  uint64_t next_check = 0, last_flush = wall_ns(), last_datagram = 0;
  uint64_t collector_live = UINT64_MAX;
  for (;;) {
    unsigned n = rt.drain(summary);
    if (listener) {
      if (rt.live_version() != collector_live) {  // the records pass the filter the ports' packets do
        collector_live = rt.live_version();
        collector->set_filter(rt.filter());
      }
      listener->poll(0);
    }
    if (ctl) ctl->poll(n ? 0 : 1);
    if (metrics) metrics->poll();
    if (g_signal.load()) rt.request_stop("signal");
    if (rt.stopping() && listener) {
      // Every flow the collector holds goes to the workers before they may finish;
      // rings full meanwhile are drained into the outputs, nothing is dropped.
      rt.control_feed()->flushing = true;
      // Datagrams queued on the sockets were sent before the stop: read them first
      // (bounded: a flood must not hold the shutdown).
      for (int round = 0; round < 64 && listener->poll(0); round++) {
      }
      listener.reset();
      collector->finish();
      rt.close_control_feed();
    }
    uint64_t now = wall_ns();
    if (now >= next_check) {
      next_check = now + 50'000'000ull;
      // Live links: records should not sit in a half-full IPFIX message for long.
      if (now - last_flush >= 1'000'000'000ull) {
        rt.sample_rates();
        rt.collect_retired_rules();
        if (outputs->ipfix) outputs->ipfix->flush();
        if (outputs->writer) outputs->writer->tick();
        outputs->tick(now);
        last_flush = now;
      }
      if (next_sketches && now >= next_sketches && !rt.stopping() && rt.ask_sketches())
        next_sketches = now + cfg.sketches_every_ns;
      if (rt.sketches_gathered(sketch_text, sketch_lines)) {
        try {
          write_sketch_text(cfg.sketches_out, sketch_text);
          sketch_exports++;
        } catch (const SketchError& e) {
          sketch_errors++;
          std::fprintf(stderr, "linesight: sketch export failed: %s\n", e.what());
        }
      }
      uint64_t pk = rt.rx_packets();
      uint64_t dg = listener ? listener->last_input_ns() : 0;
      if (pk != last_pkts || dg != last_datagram) {
        last_pkts = pk;
        last_datagram = dg;
        last_change = now;
      } else if (cfg.control.exit_idle_ns && now - last_change >= cfg.control.exit_idle_ns &&
                 rt.source_finished()) {
        rt.request_stop("input idle");
      }
    }
    if (rt.stopping() && rt.all_done() && !n) {
      if (!rt.drain(summary)) break;
    }
    if (!n && !ctl) usleep(metrics ? 100 : 200);
  }
  ReplayResult res = rt.finish();
  outputs->sketch_source = [&rt](const auto& each) { rt.sketches(each); };  // workers stopped
  nlohmann::json extra = {{"rings", nlohmann::json::parse(rt.ring_json())}, {"stop_reason", rt.stop_reason()}};
  if (rt.feed_ns_) extra["feed_ns"] = rt.feed_ns_;
  if (outputs->features) extra["feature_state"] = rt.feature_state();
  std::string text = rt.ring_summary();
  if (collector) {
    extra["netflow"] = collector->netflow_json();
    text += collector->summary_text();
  }
  int rc = finish_outputs(*outputs, res, summary, cfg, uint32_t(res.per_core.size()), quiet, text, extra);
  ctl.reset();
  rt.cleanup();
  return rc;
}

}  // namespace ls
