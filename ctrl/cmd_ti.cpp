// `linesight ti compile` and `linesight ti lookup`: build a compiled threat-intel table
// once (a replay with --ti DIR re-parses every feed each time: 1.4 s for the shared
// feeds), and ask a table what it says about addresses. `linesight ti pseudonym`: one's
// own addresses' keyed pseudonyms, to match against exports and merged sketches.
#include <arpa/inet.h>

#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <set>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "ctrl/commands.h"
#include "ctrl/config.h"
#include "ctrl/ti_export.h"
#include "dataplane/text.h"
#include "features/partners.h"
#include "features/pseudonym.h"
#include "features/ti_table.h"

namespace ls {

namespace {

const char* kTiUsage = R"(usage: linesight ti compile PATH... -o FILE [--ti-weight FEED=W ...]
       linesight ti lookup --ti PATH [--ti PATH ...] ADDRESS...
       linesight ti pseudonym --secret FILE [--rotate D] --at TIME [--periods N] ADDRESS... | -

compile: reads feed files and directories (every format --ti reads, docs/ti.md) and
         writes one compiled table; `--ti FILE` then loads it in milliseconds. Weights
         given here are stored; --ti-weight at load time still overrides them. A
         compiled table notes its sources' sizes and times: loading it warns when a
         feed changed since.
lookup:  what the table says about each address: feeds, weight, categories, dates
         (one JSON line per address).
pseudonym: the keyed pseudonyms of your own addresses (- : one per line on stdin), as
         --pseudonym-secret FILE gives them in TI exports and client sketches: one JSON
         line per address and rotation period (--rotate, 1d), N periods (1) from the one
         holding TIME (ISO 8601 UTC, a date, or ns since the epoch: for a sketch line,
         window × window_ns). Match them against a partner's export or a merge.
)";

int usage() {
  std::fputs(kTiUsage, stderr);
  return 2;
}

// --ti-weight as the other commands read it; false (message printed) when malformed.
bool weight_arg(const std::string& v, std::map<std::string, double>& weights) {
  try {
    add_ti_weight(v, weights);
    return true;
  } catch (const ConfigError& e) {
    std::fprintf(stderr, "linesight: %s\n", e.what());
    return false;
  }
}

// Calls f(addr, ver) for each address argument; one that is none is named on stderr and
// makes the result 2 (the others still run).
template <class F>
int each_address(const std::vector<std::string>& addrs, F f) {
  int rc = 0;
  for (auto& s : addrs) {
    uint8_t a[16] = {};
    uint8_t ver = inet_pton(AF_INET, s.c_str(), a) == 1 ? 4 : inet_pton(AF_INET6, s.c_str(), a) == 1 ? 6 : 0;
    if (ver) {
      f(a, ver);
    } else {
      std::fprintf(stderr, "linesight: %s: not an IPv4 or IPv6 address\n", s.c_str());
      rc = 2;
    }
  }
  return rc;
}

int compile(int argc, char** argv) {
  std::vector<std::string> paths;
  std::string out;
  std::map<std::string, double> weights;
  for (int i = 0; i < argc; i++) {
    std::string a = argv[i];
    if ((a == "-o" || a == "--ti-weight") && i + 1 >= argc) return usage();
    if (a == "-o") {
      out = argv[++i];
    } else if (a == "--ti-weight") {
      if (!weight_arg(argv[++i], weights)) return 2;
    } else {
      paths.push_back(a);
    }
  }
  if (paths.empty() || out.empty()) return usage();
  auto t0 = std::chrono::steady_clock::now();
  auto t = TiTable::load(paths, weights);
  auto t1 = std::chrono::steady_clock::now();
  t->save(out);
  for (auto& w : t->warnings()) std::fprintf(stderr, "linesight: %s\n", w.c_str());
  uint64_t entries = 0;
  for (auto& f : t->feeds()) entries += f.entries;
  std::printf("%s: %zu feed files, %llu entries, %zu intervals, %zu KB; parsed in %.2f s\n", out.c_str(),
              t->feeds().size(), (unsigned long long)entries, t->intervals(), t->memory_bytes() / 1024,
              std::chrono::duration<double>(t1 - t0).count());
  return 0;
}

int lookup(int argc, char** argv) {
  std::vector<std::string> paths, addrs;
  std::map<std::string, double> weights;
  for (int i = 0; i < argc; i++) {
    std::string a = argv[i];
    if ((a == "--ti" || a == "--ti-weight") && i + 1 >= argc) return usage();
    if (a == "--ti") paths.push_back(argv[++i]);
    else if (a == "--ti-weight") {
      if (!weight_arg(argv[++i], weights)) return 2;
    } else {
      addrs.push_back(a);
    }
  }
  if (paths.empty() || addrs.empty()) return usage();
  auto t = TiTable::load(paths, weights);
  for (auto& w : t->warnings()) std::fprintf(stderr, "linesight: %s\n", w.c_str());
  return each_address(addrs, [&](const uint8_t* a, uint8_t ver) {
    TiHit h;
    nlohmann::ordered_json o = {{"address", format_ip(a, ver)}, {"listed", t->lookup(a, ver, h)}};
    if (o["listed"]) {
      o["feeds"] = h.feeds;
      o["max_weight"] = h.max_weight;
      o["categories"] = h.categories;
      o["first_days"] = h.first_days;
      o["last_days"] = h.last_days;
      std::set<std::string> names;  // a feed's dated snapshots are one name
      for (uint32_t f : t->listing(a, ver)) names.insert(t->feeds()[f].name);
      o["listed_by"] = names;
    }
    // Feed names come from files: bytes that are not UTF-8 are replaced, not fatal.
    std::puts(o.dump(-1, ' ', false, nlohmann::ordered_json::error_handler_t::replace).c_str());
  });
}

// ISO 8601 UTC ("2018-03-09T21:00:00Z"), a date ("2018-03-09") or ns since the epoch.
// A time with an offset is refused: periods are UTC, and a silently dropped offset
// would give the pseudonyms of the wrong period.
bool parse_time_ns(const std::string& v, uint64_t& ns) {
  if (!v.empty() && v.find_first_not_of("0123456789") == std::string::npos) {
    auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), ns);
    return ec == std::errc();
  }
  const size_t t = v.find('T');
  if (t != std::string::npos && v.find_first_not_of("0123456789:.Z", t + 1) != std::string::npos) return false;
  ns = parse_iso8601_ns(t == std::string::npos ? v + "T00:00:00" : v);
  return ns != 0;
}

int pseudonym(int argc, char** argv) {
  std::string secret_file;
  std::vector<std::string> addrs;
  uint64_t rotate_ns = 86'400'000'000'000ull, at_ns = 0, periods = 1;
  bool at = false;
  for (int i = 0; i < argc; i++) {
    std::string a = argv[i];
    if ((a == "--secret" || a == "--rotate" || a == "--at" || a == "--periods") && i + 1 >= argc) return usage();
    if (a == "--secret") {
      secret_file = argv[++i];
    } else if (a == "--rotate") {
      try {
        rotate_ns = parse_duration_ns(argv[++i]);
      } catch (const ConfigError& e) {
        std::fprintf(stderr, "linesight: --rotate: %s\n", e.what());
        return 2;
      }
    } else if (a == "--at") {
      if (!(at = parse_time_ns(argv[++i], at_ns))) {
        std::fprintf(stderr, "linesight: --at: '%s' is not an ISO 8601 UTC time, a date or ns since the epoch\n",
                     argv[i]);
        return 2;
      }
    } else if (a == "--periods") {
      std::string v = argv[++i];
      auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), periods);
      if (ec != std::errc() || p != v.data() + v.size() || !periods || periods > 100'000) {
        std::fprintf(stderr, "linesight: --periods: '%s' is not a number from 1 to 100000\n", v.c_str());
        return 2;
      }
    } else if (a == "-") {  // a host list: blanks around an address, empty and # lines ignored
      for (std::string line; std::getline(std::cin, line);) {
        line = line.substr(0, line.find('#'));
        const size_t b = line.find_first_not_of(" \t\r"), e = line.find_last_not_of(" \t\r");
        if (b != std::string::npos) addrs.push_back(line.substr(b, e - b + 1));
      }
    } else {
      addrs.push_back(a);
    }
  }
  if (secret_file.empty() || !at || !rotate_ns) return usage();
  std::unique_ptr<Pseudonymizer> ps;
  try {
    ps = std::make_unique<Pseudonymizer>(Pseudonymizer::read_secret(secret_file), rotate_ns);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "linesight: %s\n", e.what());
    return 2;
  }
  const std::string key = ps->key_id();
  return each_address(addrs, [&](const uint8_t* a, uint8_t ver) {
    for (uint64_t p = ps->period(at_ns); p < ps->period(at_ns) + periods; p++) {
      nlohmann::ordered_json o = {{"address", format_ip(a, ver)}, {"period_start", iso(p * rotate_ns)},
                                  {"period_s", rotate_ns / 1'000'000'000ull}, {"pseudonym", ps->of(a, ver, p * rotate_ns)},
                                  {"pseudonym_key", key}};
      std::puts(o.dump().c_str());
    }
  });
}

}  // namespace

int cmd_ti(int argc, char** argv) {
  if (argc < 1) return usage();
  if (!std::strcmp(argv[0], "-h") || !std::strcmp(argv[0], "--help")) {
    std::fputs(kTiUsage, stdout);
    return 0;
  }
  try {
    if (!std::strcmp(argv[0], "compile")) return compile(argc - 1, argv + 1);
    if (!std::strcmp(argv[0], "lookup")) return lookup(argc - 1, argv + 1);
    if (!std::strcmp(argv[0], "pseudonym")) return pseudonym(argc - 1, argv + 1);
  } catch (const TiError& e) {
    std::fprintf(stderr, "linesight: %s\n", e.what());
    return 2;
  }
  return usage();
}

}  // namespace ls
