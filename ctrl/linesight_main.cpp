// linesight command line: `linesight replay FILE... [options]`.
#include <signal.h>
#include <sys/random.h>
#include <unistd.h>

#include <atomic>
#include <charconv>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>

#include "ctrl/config.h"
#include "ctrl/flow_writer.h"
#include "dataplane/replay.h"

using namespace ls;

namespace {

std::atomic<bool> g_stop{false};
void on_signal(int) { g_stop.store(true); }

const char* kUsage = R"(usage: linesight replay FILE... [options]
       linesight --version

Replays pcap/pcapng files through the flow pipeline and writes one JSON line per flow.

options (override the config file):
  --config FILE          YAML config (docs/config.md)
  --cores K              per-core flow tables, packets dispatched by address hash (1)
  --flows-out FILE       flow records as JSON lines ("-" = stdout)
  --payload-out          include the captured payload prefix (hex) in records
  --summary-json FILE    final counters as JSON
  --sampling SPEC        off | packet:N | packet_random:N[:SEED] | flow_hash:N[:SEED] |
                         sample_hold:N[:SEED]
  --speed X              replay at recorded speed × X (0 = as fast as possible)
  --loop N               play the input N times from memory, rewriting addresses per loop
  --capacity N           flows per core table (1048576)
  --payload-bytes N      payload bytes kept per direction, 0 disables (64)
  --idle-timeout D       e.g. 30s, 500ms (30s)
  --active-timeout D     long flows emit a record every D (300s; 0 disables)
  --tcp-end-timeout D    linger after FIN/RST (2s)
  --full-policy P        evict_oldest | drop_new (evict_oldest)
  --hash-seed N          fixed flow-hash seed (default: random per run)
  --zone                 VLAN id / tunnel id is part of the flow key
  --decap-gtpu           decapsulate GTP-U (off by default)
  --no-decap             do not decapsulate GRE, VXLAN, IP-in-IP
  --quiet                no progress line and no summary
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

int cmd_replay(int argc, char** argv) {
  Config cfg;
  std::vector<std::string> files;
  bool quiet = false;
  // The config file first, so flags override it wherever they appear.
  for (int i = 0; i < argc; i++)
    if (!std::strcmp(argv[i], "--config")) {
      if (i + 1 >= argc) die("--config needs a file");
      try {
        load_config_file(argv[i + 1], cfg);
      } catch (const ConfigError& e) {
        die(e.what());
      }
    }
  try {
    for (int i = 0; i < argc; i++) {
      std::string a = argv[i];
      auto val = [&]() -> std::string {
        if (i + 1 >= argc) die(a + " needs a value");
        return argv[++i];
      };
      auto& t = cfg.core.table;
      if (a == "--config") val();
      else if (a == "--cores") {
        cfg.cores = to_num<uint32_t>(a, val());
        if (cfg.cores == 0 || cfg.cores > 64) die("--cores must be 1 .. 64");
      } else if (a == "--flows-out") cfg.flows_out = val();
      else if (a == "--payload-out") cfg.payload_out = true;
      else if (a == "--summary-json") cfg.summary_json = val();
      else if (a == "--sampling") cfg.core.sampling = parse_sampling_spec(val());
      else if (a == "--speed") {
        cfg.speed = to_num<double>(a, val());
        if (!(cfg.speed >= 0)) die("--speed must be >= 0");
      } else if (a == "--loop") {
        cfg.loop = to_num<uint64_t>(a, val());
        if (!cfg.loop) die("--loop must be >= 1");
      } else if (a == "--capacity") {
        uint64_t c = to_num<uint64_t>(a, val());
        if (c == 0 || c > (1ull << 31)) die("--capacity must be 1 .. 2^31");
        t.capacity = uint32_t(c);
      } else if (a == "--payload-bytes") {
        unsigned n = to_num<unsigned>(a, val());
        if (n > FlowTable::kMaxPayload) die("--payload-bytes must be 0 .. 256");
        t.payload_bytes = uint16_t(n);
      } else if (a == "--idle-timeout") t.idle_timeout_ns = parse_duration_ns(val());
      else if (a == "--active-timeout") t.active_timeout_ns = parse_duration_ns(val());
      else if (a == "--tcp-end-timeout") t.tcp_end_timeout_ns = parse_duration_ns(val());
      else if (a == "--full-policy") t.full_policy = parse_full_policy(val());
      else if (a == "--hash-seed") {
        t.hash_seed = to_num<uint64_t>(a, val());
        cfg.hash_seed_set = true;
      } else if (a == "--zone") cfg.core.key.use_zone = true;
      else if (a == "--decap-gtpu") cfg.core.parse.decap_gtpu = true;
      else if (a == "--no-decap") {
        cfg.core.parse.decap_gre = cfg.core.parse.decap_vxlan = cfg.core.parse.decap_ipip = false;
      } else if (a == "--quiet") quiet = true;
      else if (a == "-h" || a == "--help") {
        std::fputs(kUsage, stdout);
        return 0;
      } else if (a.size() > 1 && a[0] == '-') die("unknown option " + a + " (see --help)");
      else files.push_back(a);
    }
    validate(cfg);
  } catch (const ConfigError& e) {
    die(e.what());
  }
  if (files.empty()) die("replay needs at least one pcap/pcapng file");
  if (!cfg.hash_seed_set) {
    uint64_t s = 0;
    if (getrandom(&s, sizeof s, 0) != sizeof s) s = uint64_t(time(nullptr));
    cfg.core.table.hash_seed = s;
  }

  std::unique_ptr<PacketSource> src;
  try {
    src = cfg.loop > 1 ? open_memory_loop(files, cfg.loop) : open_pcap_files(files);
  } catch (const std::exception& e) {
    die(e.what());
  }
  std::unique_ptr<FlowWriter> writer;
  if (!cfg.flows_out.empty()) {
    try {
      writer = std::make_unique<FlowWriter>(cfg.flows_out, cfg.payload_out);
    } catch (const std::exception& e) {
      die(e.what());
    }
  }
  SummaryCollector summary(writer.get());
  summary.track_hosts = !quiet;

  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

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
  int rc = 0;
  if (writer) {
    try {
      writer->close();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "linesight: %s\n", e.what());
      rc = 1;
    }
  }
  for (auto& w : src->stats().warnings) std::fprintf(stderr, "linesight: warning: %s\n", w.c_str());
  if (!quiet) {
    std::string s = format_summary(r, summary, cfg.cores, cfg.flows_out == "-" ? "" : cfg.flows_out);
    std::fputs(s.c_str(), cfg.flows_out == "-" ? stderr : stdout);
  }
  if (!cfg.summary_json.empty()) {
    std::ofstream f(cfg.summary_json);
    f << format_summary_json(r, summary, cfg.cores);
    if (!f) {
      std::fprintf(stderr, "linesight: %s: cannot write summary\n", cfg.summary_json.c_str());
      rc = 1;
    }
  }
  return rc;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2 || !std::strcmp(argv[1], "-h") || !std::strcmp(argv[1], "--help") ||
      !std::strcmp(argv[1], "help")) {
    std::fputs(kUsage, argc < 2 ? stderr : stdout);
    return argc < 2 ? 2 : 0;
  }
  if (!std::strcmp(argv[1], "--version")) {
    std::puts("linesight " LS_VERSION);
    return 0;
  }
  if (!std::strcmp(argv[1], "replay")) return cmd_replay(argc - 2, argv + 2);
  std::fprintf(stderr, "linesight: unknown command '%s' (see --help)\n", argv[1]);
  return 2;
}
