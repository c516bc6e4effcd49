// `linesight sketches merge`: several sensors' (or runs') server sketches combined per
// server and window (features/server_sketch.h).
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "ctrl/commands.h"
#include "features/server_sketch.h"

namespace ls {

namespace {

const char* kSketchUsage = R"(usage: linesight sketches merge FILE... [-o FILE] [--top N] [--json]

Reads the server sketches that replay, collect and run write with --sketches-out, from
several sensors or runs, and combines them per server (and per window, with
features.window): distinct clients, client /24s (/48s) and ports as the union of their
HyperLogLog registers; flows, bytes and failed contacts summed; first and last seen.
Every input must come from the same features.sketch_seed and features.window.

  -o FILE    also write the merged sketches (they merge again, with other files)
  --top N    print the N servers with the most distinct clients (20; 0: all)
  --json     print one JSON object per server instead of a table
)";

int usage() {
  std::fputs(kSketchUsage, stderr);
  return 2;
}

double clients_of(const ServerSketch& s) { return s.clients.estimate(); }

int merge(int argc, char** argv) {
  std::vector<std::string> files;
  std::string out;
  size_t top = 20;
  bool json = false;
  for (int i = 0; i < argc; i++) {
    std::string a = argv[i];
    if ((a == "-o" || a == "--top") && i + 1 >= argc) return usage();
    if (a == "-o") {
      out = argv[++i];
    } else if (a == "--top") {
      char* end = nullptr;
      top = std::strtoull(argv[++i], &end, 10);
      if (!*argv[i] || *end) {
        std::fprintf(stderr, "linesight: --top needs a number, not '%s'\n", argv[i]);
        return 2;
      }
    } else if (a == "--json") {
      json = true;
    } else if (!a.empty() && a[0] == '-') {
      std::fprintf(stderr, "linesight: sketches merge: unknown option '%s'\n", a.c_str());
      return usage();
    } else {
      files.push_back(a);
    }
  }
  if (files.empty()) return usage();
  std::map<std::pair<std::string, uint64_t>, ServerSketch> merged;
  ServerSketch first;  // every sketch must share its seed and window length
  size_t lines = 0;
  for (const auto& f : files) {
    std::ifstream in(f);
    if (!in) {
      std::fprintf(stderr, "linesight: %s: cannot read: %s\n", f.c_str(), std::strerror(errno));
      return 2;
    }
    std::string line;
    for (size_t no = 1; std::getline(in, line); no++) {
      if (line.empty()) continue;
      try {
        ServerSketch s = parse_sketch_line(line);
        if (!lines++) first = s;
        if (first.seed != s.seed || first.window_ns != s.window_ns) {  // even for a server seen once
          ServerSketch probe = first;
          probe.server = s.server;
          probe.window = s.window;
          merge_sketch(probe, s);  // throws, naming the difference
        }
        auto [it, fresh] = merged.try_emplace({s.server, s.window}, s);
        if (!fresh) merge_sketch(it->second, s);
      } catch (const SketchError& e) {
        std::fprintf(stderr, "linesight: %s:%zu: %s\n", f.c_str(), no, e.what());
        return 2;
      }
    }
  }
  if (!out.empty()) {
    try {
      write_sketches(out, [&](const auto& each) {
        for (auto& [k, s] : merged) each(s);
      });
    } catch (const SketchError& e) {
      std::fprintf(stderr, "linesight: %s\n", e.what());
      return 1;
    }
  }
  std::vector<const ServerSketch*> order;
  for (auto& [k, s] : merged) order.push_back(&s);
  std::stable_sort(order.begin(), order.end(),
                   [](const ServerSketch* a, const ServerSketch* b) { return clients_of(*a) > clients_of(*b); });
  if (top && order.size() > top) order.resize(top);
  if (!json)
    std::printf("%zu sketches from %zu files: %zu servers\n%-40s %8s %7s %10s %11s %6s %10s %14s %7s\n", lines,
                files.size(), merged.size(), "server", "window", "sensors", "clients", "client_nets", "ports", "flows",
                "bytes", "failed");
  for (const ServerSketch* s : order) {
    double failed = s->flows ? double(s->failed) / double(s->flows) : 0;
    if (json) {
      nlohmann::ordered_json j = {{"server", s->server},        {"window", s->window},
                                  {"sensors", s->sensors},      {"clients", s->clients.estimate()},
                                  {"client_nets", s->nets.estimate()}, {"ports", s->ports.estimate()},
                                  {"flows", s->flows},          {"bytes", s->bytes},
                                  {"failed_share", failed},     {"first_ns", s->first_ns},
                                  {"last_ns", s->last_ns}};
      std::printf("%s\n", j.dump().c_str());
    } else {
      std::printf("%-40s %8llu %7u %10.0f %11.0f %6.0f %10llu %14llu %6.1f%%\n", s->server.c_str(),
                  (unsigned long long)s->window, s->sensors, s->clients.estimate(), s->nets.estimate(),
                  s->ports.estimate(), (unsigned long long)s->flows, (unsigned long long)s->bytes, 100 * failed);
    }
  }
  return 0;
}

}  // namespace

int cmd_sketches(int argc, char** argv) {
  if (argc >= 1 && !std::strcmp(argv[0], "merge")) return merge(argc - 1, argv + 1);
  if (argc >= 1 && (!std::strcmp(argv[0], "-h") || !std::strcmp(argv[0], "--help"))) {
    std::fputs(kSketchUsage, stdout);
    return 0;
  }
  return usage();
}

}  // namespace ls
