// linesight command line: `linesight replay FILE... [options]`.
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <bit>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>

#include "ctrl/collector.h"
#include "ctrl/commands.h"
#include "ctrl/config.h"
#include "ctrl/flow_writer.h"
#include "ctrl/metrics_server.h"
#include "ctrl/outputs.h"
#include "dataplane/capture_input.h"
#include "dataplane/clock.h"
#include "dataplane/mem.h"
#include "dataplane/replay.h"

using namespace ls;

namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop.store(true); }

const char* kUsage = R"(usage: linesight replay FILE... [options]
       linesight run --config FILE [options] [-- EAL arguments]
       linesight collect --listen HOST:PORT | --listen-tcp HOST:PORT [options]
       linesight model check|predict MODEL.json [FEATURES.csv]
       linesight report --detections PATH --feeds PATH [--partner PATH] [options]
       linesight ti compile PATH... -o FILE | ti lookup --ti PATH ADDRESS...
       linesight ti pseudonym --secret FILE --at TIME ADDRESS...
       linesight sketches merge FILE... [-o FILE] [--top N] [--kind server|client] [--json]
       linesight --version

replay:  pcap/pcapng files through the flow pipeline, one JSON line per flow; gzip-, zstd- or
         xz-compressed files are read as they are, and "-" reads standard input.
run:     the DPDK runtime on NIC ports or virtual devices (linesight run --help).
collect: NetFlow v1 / v5 / v7 / v9 / IPFIX / sFlow v5 from routers, switches or probes over
         UDP, joined into the same flow records and features (docs/collector.md).
report:  what our detections add to threat-intel feeds (linesight report --help).
ti:      compile feeds into one table that loads in milliseconds; look addresses up;
         compute your addresses' keyed pseudonyms (linesight ti --help, docs/ti.md).
sketches: several sensors' --sketches-out combined: distinct clients per server and
         servers / ports per client across links (linesight sketches --help, docs/features.md).

replay options (override the config file):
  --cores K              per-core flow tables, packets dispatched by address hash (1)
  --speed X              replay at recorded speed × X (0 = as fast as possible)
  --loop N               play the input N times from memory, rewriting addresses per loop
  --quiet                no progress line and no summary
  --prefault             fault in every table page at start, as `run` does (default:
                         pages come in as flows use them, feature tables grow as needed)

collect options:
  --listen HOST:PORT     UDP address to receive NetFlow v1 / v5 / v7 / v9 / IPFIX / sFlow v5
                         on (e.g. 0.0.0.0:2055; each datagram's version says which)
  --listen-tcp HOST:PORT TCP address to receive IPFIX on (RFC 7011 10.4; e.g. 0.0.0.0:4739)
  --exit-idle D          stop once nothing has arrived for D (e.g. 3s)
  --metrics HOST:PORT    Prometheus metrics at http://HOST:PORT/metrics (off by default)
  --filter EXPR          keeps the exported records (sFlow samples too) it passes, each seen
                         as one packet of its addresses, ports, protocol and TCP flags
                         (docs/collector.md); the others count as records_filtered
)";

[[noreturn]] void die(const std::string& m) {
  std::fprintf(stderr, "linesight: %s\n", m.c_str());
  std::exit(2);
}

template <class T>
T to_num(const std::string& flag, const std::string& v) {
  T x{};
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
  if (ec != std::errc() || p != v.data() + v.size()) die(flag + ": '" + v + "' is not a valid number");
  return x;
}

std::unique_ptr<Outputs> open_outputs(const Config& cfg) {
  try {
    return std::make_unique<Outputs>(cfg);
  } catch (const std::exception& e) {
    die(e.what());
  }
}

// SIGINT / SIGTERM end the input; every active flow is flushed into the outputs.
void stop_on_signals() {
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
}

// A capture of B bytes holds at most B / 32 flows: each starts with a packet that costs a
// record header (16 bytes in pcap, 32 in pcapng) and at least 34 bytes of headers. Tables
// larger than 4× that (so no 8-way set ever fills) only cost start-up time and memory: a
// 1 MB capture got 450 MB of flow and feature tables. Shrinks, never grows, and only
// for regular files that are not compressed (a compressed capture of B bytes may hold
// any number of flows: an xz'd SYN flood packs 40,000 into 65 KB); every loop of --loop
// rewrites addresses, so brings new flows.
void fit_tables_to_input(Config& cfg, const std::vector<std::string>& files) {
  uint64_t bytes = 0;
  for (auto& f : files) {
    struct stat st {};
    if (::stat(f.c_str(), &st) != 0 || !S_ISREG(st.st_mode)) return;
    uint8_t magic[4];
    int fd = ::open(f.c_str(), O_RDONLY | O_CLOEXEC);
    ssize_t n = fd < 0 ? -1 : pread(fd, magic, sizeof magic, 0);
    if (fd >= 0) ::close(fd);
    if (n < 0 || compression_of(magic, size_t(n))) return;
    bytes += uint64_t(st.st_size);
  }
  uint64_t flows = bytes / 32 * std::max<uint64_t>(cfg.loop, 1);
  if (flows > (1ull << 30)) return;
  uint64_t cap = std::bit_ceil(std::max<uint64_t>(4096, flows * 4));
  for (uint32_t* c : {&cfg.core.table.capacity, &cfg.pair_capacity, &cfg.first_contact_capacity, &cfg.server_capacity,
                      &cfg.client_capacity})
    if (cap < *c) *c = uint32_t(cap);
}

int cmd_replay(int argc, char** argv) {
  Config cfg;
  std::vector<std::string> files;
  bool quiet = false, prefault = false;
  try {
    if (!parse_command_line(argc, argv, cfg, kUsage, [&](const std::string& a, const auto& val) {
          if (a == "--cores") {
            cfg.cores = to_num<uint32_t>(a, val());
            if (cfg.cores == 0 || cfg.cores > 64) die("--cores must be 1 .. 64");
          } else if (a == "--speed") {
            cfg.speed = to_num<double>(a, val());
            if (!(cfg.speed >= 0)) die("--speed must be >= 0");
          } else if (a == "--loop") {
            cfg.loop = to_num<uint64_t>(a, val());
            if (!cfg.loop) die("--loop must be >= 1");
          } else if (a == "--quiet") {
            quiet = true;
          } else if (a == "--prefault") {
            prefault = true;
          } else if (a.size() > 1 && a[0] == '-') {
            return false;
          } else {
            files.push_back(a);
          }
          return true;
        }))
      return 0;
  } catch (const ConfigError& e) {
    die(e.what());
  }
  if (files.empty()) die("replay needs at least one pcap/pcapng file");
  fit_tables_to_input(cfg, files);
  // A replay may take page faults: its memory then follows the capture, not the capacity.
  if (!prefault) region_paging() = Paging::OnDemand;

  std::unique_ptr<PacketSource> src;
  try {
    src = cfg.loop > 1 ? open_memory_loop(files, cfg.loop) : open_pcap_files(files);
  } catch (const std::exception& e) {
    die(e.what());
  }
  auto outputs = open_outputs(cfg);
  SummaryCollector summary(&outputs->fanout);
  summary.track_hosts = !quiet;
  stop_on_signals();

  ReplayOptions opt;
  opt.cores = cfg.cores;
  opt.speed = cfg.speed;
  opt.stop = &g_stop;
  bool tty = isatty(2) && !quiet;
  if (tty)
    opt.progress = [](const ReplayProgress& p) {
      std::fprintf(stderr, "\r%12lu packets %8.2f Mpps %10lu records ", (unsigned long)p.packets,
                   p.wall_s > 0 ? double(p.packets) / p.wall_s / 1e6 : 0.0,
                   (unsigned long)p.records);
    };
  ReplayResult r;
  try {
    r = run_replay(*src, cfg.core, summary, opt);
  } catch (const std::exception& e) {
    die(e.what());
  }
  if (tty) std::fputs("\r\033[K", stderr);
  r.warnings = src->stats().warnings;
  for (auto& w : r.warnings) std::fprintf(stderr, "linesight: warning: %s\n", w.c_str());
  int rc = finish_outputs(*outputs, r, summary, cfg, cfg.cores, quiet);
  // Every flow was written; an input that could not be read still fails the run.
  return rc == 0 && src->stats().unread_files ? 1 : rc;
}

int cmd_collect(int argc, char** argv) {
  Config cfg;
  std::string listen, listen_tcp, metrics_at;
  uint64_t exit_idle = 0;
  bool quiet = false;
  try {
    if (!parse_command_line(argc, argv, cfg, kUsage, [&](const std::string& a, const auto& val) {
          if (a == "--listen") listen = val();
          else if (a == "--listen-tcp") listen_tcp = val();
          else if (a == "--metrics") metrics_at = val();
          else if (a == "--exit-idle") exit_idle = parse_duration_ns(val());
          else if (a == "--quiet") quiet = true;
          else return false;
          return true;
        }))
      return 0;
  } catch (const ConfigError& e) {
    die(e.what());
  }
  if (listen.empty() && listen_tcp.empty()) die("collect needs --listen HOST:PORT (UDP) or --listen-tcp HOST:PORT");
  if (auto& f = cfg.core.parse.filter) {
    unsigned len;
    if (!f->program(LinkType::RAW, len))  // e.g. "ether host …", "vlan": it would pass nothing
      die("filter '" + f->expression() + "' needs a link layer, which exported flow records do not carry");
  }
  auto outputs = open_outputs(cfg);
  SummaryCollector summary(&outputs->fanout);
  summary.track_hosts = !quiet;
  stop_on_signals();
  Collector col(cfg.core, summary, true);
  col.set_filter(cfg.core.parse.filter);  // on each record, as a packet of its 5-tuple
  uint64_t t0 = mono_ns();
  std::unique_ptr<MetricsServer> metrics;
  try {
    if (!metrics_at.empty())
      metrics = std::make_unique<MetricsServer>(metrics_at, [&] { return col.metrics_text() + outputs->metrics(); });
    serve(col, listen, listen_tcp, g_stop, exit_idle, [&] {
      outputs->tick(wall_ns());
      if (metrics) metrics->poll();
    });
  } catch (const std::exception& e) {
    die(e.what());
  }
  col.finish();
  ReplayResult r;
  r.total = col.table_counters();
  r.per_core = {r.total};
  r.wall_ns = mono_ns() - t0;
  r.table_bytes = col.table_bytes();
  r.interrupted = g_stop.load();
  return finish_outputs(*outputs, r, summary, cfg, 1, quiet, col.summary_text(), {{"netflow", col.netflow_json()}});
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "--help") ||
      !std::strcmp(argv[1], "help")) {
    std::fprintf(argc < 2 ? stderr : stdout, "%s%s", kUsage, kCommonFlagsHelp);
    return argc < 2 ? 2 : 0;
  }
#ifdef LS_HAVE_DPDK
  if (!std::strcmp(argv[1], "run")) return cmd_run(argc - 2, argv + 2);
#else
  if (!std::strcmp(argv[1], "run")) {
    std::fputs("linesight: built without DPDK (install dpdk-dev and rebuild)\n", stderr);
    return 2;
  }
#endif
  if (!std::strcmp(argv[1], "--version")) {
    std::puts("linesight " LS_VERSION);
    return 0;
  }
  if (!std::strcmp(argv[1], "replay")) return cmd_replay(argc - 2, argv + 2);
  if (!std::strcmp(argv[1], "collect")) return cmd_collect(argc - 2, argv + 2);
  if (!std::strcmp(argv[1], "model")) return cmd_model(argc - 2, argv + 2);
  if (!std::strcmp(argv[1], "report")) return cmd_report(argc - 2, argv + 2);
  if (!std::strcmp(argv[1], "ti")) return cmd_ti(argc - 2, argv + 2);
  if (!std::strcmp(argv[1], "sketches")) return cmd_sketches(argc - 2, argv + 2);
  std::fprintf(stderr, "linesight: unknown command '%s' (see --help)\n", argv[1]);
  return 2;
}
