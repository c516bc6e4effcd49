// `linesight sketches merge`: several sensors' (or runs') endpoint sketches combined per
// kind, endpoint and window (features/sketch_export.h).
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "ctrl/commands.h"
#include "features/sketch_export.h"
#include "features/sketch_set.h"

namespace ls {

namespace {

const char* kSketchUsage = R"(usage: linesight sketches merge FILE... [-o FILE] [--top N] [--kind server|client] [--json]

Reads the endpoint sketches that replay, collect and run write with --sketches-out, from
several sensors or runs, and combines them per endpoint (and per window, with
features.window), as the union of their HyperLogLog registers:
  servers: distinct clients, client /24s (/48s) and ports offered; flows, bytes and
           failed contacts summed; first and last seen;
  clients: distinct servers, server ports and periodically contacted servers (fan-out
           and scans); flows and failed contacts summed; first and last seen.
Every input must come from the same features.sketch_seed and features.window, and name
clients alike (--sketch-clients: by address, or by pseudonym under the same secret and
rotation). Version 1 files (servers only) are read too.

  -o FILE        also write the merged sketches (they merge again, with other files)
  --top N        print the N servers with the most distinct clients and the N clients
                 with the most distinct servers (20; 0: all)
  --kind KIND    print only servers or only clients (-o still writes both)
  --json         print one JSON object per endpoint instead of tables
)";

int usage() {
  std::fputs(kSketchUsage, stderr);
  return 2;
}

void print_table(const SketchSet& set, SketchKind kind, const std::vector<uint32_t>& order) {
  if (kind == SketchKind::server)
    std::printf("%-40s %8s %7s %10s %11s %6s %10s %14s %7s\n", "server", "window", "sensors", "clients",
                "client_nets", "ports", "flows", "bytes", "failed");
  else  // the merge refuses to mix clients by address and by pseudonym
    std::printf("%-40s %8s %7s %10s %6s %8s %10s %7s\n",
                order.empty() || set.at(order[0]).pseudonym_key.empty() ? "client" : "client (pseudonym)", "window",
                "sensors", "servers", "ports", "periodic", "flows", "failed");
  for (uint32_t i : order) {
    const EndpointSketch s = set.at(i);
    double failed = s.flows ? double(s.failed) / double(s.flows) : 0;
    if (kind == SketchKind::server)
      std::printf("%-40s %8llu %7u %10.0f %11.0f %6.0f %10llu %14llu %6.1f%%\n", s.addr.c_str(),
                  (unsigned long long)s.window, s.sensors, s.a.estimate(), s.b.estimate(), s.c.estimate(),
                  (unsigned long long)s.flows, (unsigned long long)s.bytes, 100 * failed);
    else
      std::printf("%-40s %8llu %7u %10.0f %6.0f %8.0f %10llu %6.1f%%\n", s.addr.c_str(), (unsigned long long)s.window,
                  s.sensors, s.a.estimate(), s.b.estimate(), s.c.estimate(), (unsigned long long)s.flows,
                  100 * failed);
  }
}

void print_json(const EndpointSketch& s) {
  double failed = s.flows ? double(s.failed) / double(s.flows) : 0;
  nlohmann::ordered_json j;
  j["kind"] = kind_name(s.kind);
  if (s.pseudonym_key.empty()) {
    j[kind_name(s.kind)] = s.addr;
  } else {
    j["client_pseudonym"] = s.addr;
    j["pseudonym_key"] = s.pseudonym_key;
  }
  j["window"] = s.window;
  j["sensors"] = s.sensors;
  if (s.kind == SketchKind::server) {
    j["clients"] = s.a.estimate();
    j["client_nets"] = s.b.estimate();
    j["ports"] = s.c.estimate();
  } else {
    j["servers"] = s.a.estimate();
    j["ports"] = s.b.estimate();
    j["periodic_servers"] = s.c.estimate();
  }
  j["flows"] = s.flows;
  if (s.kind == SketchKind::server) j["bytes"] = s.bytes;
  j["failed_share"] = failed;
  j["first_ns"] = s.first_ns;
  j["last_ns"] = s.last_ns;
  std::printf("%s\n", j.dump().c_str());
}

int merge(int argc, char** argv) {
  std::vector<std::string> files;
  std::string out;
  size_t top = 20;
  std::optional<SketchKind> only;  // --kind
  bool json = false;
  for (int i = 0; i < argc; i++) {
    std::string a = argv[i];
    if ((a == "-o" || a == "--top" || a == "--kind") && i + 1 >= argc) return usage();
    if (a == "-o") {
      out = argv[++i];
    } else if (a == "--top") {
      char* end = nullptr;
      top = std::strtoull(argv[++i], &end, 10);
      if (!*argv[i] || *end) {
        std::fprintf(stderr, "linesight: --top needs a number, not '%s'\n", argv[i]);
        return 2;
      }
    } else if (a == "--kind") {
      std::string k = argv[++i];
      if (k != "server" && k != "client") {
        std::fprintf(stderr, "linesight: --kind is server or client, not '%s'\n", k.c_str());
        return 2;
      }
      only = k == "server" ? SketchKind::server : SketchKind::client;
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
  SketchSet merged;
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
        merged.add(parse_sketch_line(line));
        lines++;
      } catch (const SketchError& e) {
        std::fprintf(stderr, "linesight: %s:%zu: %s\n", f.c_str(), no, e.what());
        return 2;
      }
    }
  }
  if (!out.empty()) {
    try {
      write_sketches(out, [&](const auto& each) {
        for (uint32_t i : merged.in_order()) each(merged.at(i));
      });
    } catch (const SketchError& e) {
      std::fprintf(stderr, "linesight: %s\n", e.what());
      return 1;
    }
  }
  if (!json)
    std::printf("%zu sketches from %zu files: %zu servers, %zu clients\n", lines, files.size(),
                merged.count(SketchKind::server), merged.count(SketchKind::client));
  for (SketchKind kind : {SketchKind::server, SketchKind::client}) {
    if ((only && *only != kind) || !merged.count(kind)) continue;
    std::vector<uint32_t> order = merged.top(kind, top);
    if (json) {
      for (uint32_t i : order) print_json(merged.at(i));
    } else {
      std::printf("\n");
      print_table(merged, kind, order);
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
