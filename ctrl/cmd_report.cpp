// `linesight report`: the assessment report (ctrl/report.h) as a terminal table, JSON and
// a PNG plot of the per-feed overlap (scripts/report_plot.py, Debian's python3-matplotlib).
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "ctrl/commands.h"
#include "ctrl/report.h"

extern char** environ;

namespace ls {

namespace {

const char* kReportUsage = R"(usage: linesight report --detections PATH --feeds PATH [options]

Compares the servers our detections reported with threat-intel feeds (docs/ti.md).

  --detections PATH   detection JSON lines (--detections-out) or a sensor's indicators.json;
                      a directory is searched for .jsonl/.ndjson/.json (repeatable)
  --feeds PATH        feed file or directory (every format --ti reads; repeatable)
  --partner PATH      a partner's shared indicators (their indicators.json/.csv, STIX
                      bundle or MISP feed; repeatable)
  --app NAME          only detections of this app (repeatable; default all)
  --at YYYY-MM-DD     judge reliability on this day (default: the latest detection's)
  --top N             rows of the per-feed table (20)
  --json FILE         the report as JSON
  --png FILE          a plot of the per-feed overlap and of the reliability of what only
                      we report (needs /usr/bin/python3 with matplotlib)
)";

// scripts/report_plot.py: beside the source tree of a build, or installed in share/.
std::string plot_script() {
  if (const char* d = std::getenv("LINESIGHT_SCRIPTS")) return std::string(d) + "/report_plot.py";
  std::error_code ec;
  auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec)
    for (auto rel : {"../../scripts/report_plot.py", "../share/linesight/report_plot.py", "../scripts/report_plot.py"}) {
      auto p = (exe.parent_path() / rel).lexically_normal();
      if (std::filesystem::exists(p, ec)) return p.string();
    }
  return "";
}

int run_plot(const std::string& json, const std::string& png) {
  std::string script = plot_script();
  if (script.empty()) {
    std::fprintf(stderr, "linesight: --png: report_plot.py not found (set LINESIGHT_SCRIPTS)\n");
    return 1;
  }
  std::vector<std::string> args{"/usr/bin/python3", script, json, png};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  pid_t pid;
  if (int e = posix_spawn(&pid, argv[0], nullptr, nullptr, argv.data(), environ)) {
    std::fprintf(stderr, "linesight: --png: cannot run %s: %s\n", argv[0], std::strerror(e));
    return 1;
  }
  int status = 0;
  waitpid(pid, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status)) {
    std::fprintf(stderr, "linesight: --png: %s failed\n", script.c_str());
    return 1;
  }
  return 0;
}

}  // namespace

int cmd_report(int argc, char** argv) {
  std::vector<std::string> detections, feeds, partner;
  std::set<std::string> apps;
  std::string json_out, png_out;
  size_t top = 20;
  int64_t at_day = 0;
  for (int i = 0; i < argc; i++) {
    std::string a = argv[i];
    if (a == "-h" || a == "--help") {
      std::fputs(kReportUsage, stdout);
      return 0;
    }
    if (i + 1 >= argc) {
      std::fprintf(stderr, "linesight: report: %s needs a value (see --help)\n", a.c_str());
      return 2;
    }
    std::string v = argv[++i];
    if (a == "--detections") detections.push_back(v);
    else if (a == "--feeds") feeds.push_back(v);
    else if (a == "--partner") partner.push_back(v);
    else if (a == "--app") apps.insert(v);
    else if (a == "--json") json_out = v;
    else if (a == "--png") png_out = v;
    else if (a == "--top") {
      char* end;
      top = std::strtoul(v.c_str(), &end, 10);
      if (*end || v.empty()) {
        std::fprintf(stderr, "linesight: report: --top: '%s' is not a number\n", v.c_str());
        return 2;
      }
    } else if (a == "--at") {
      tm t{};
      const char* end = strptime(v.c_str(), "%Y-%m-%d", &t);
      if (!end || *end) {
        std::fprintf(stderr, "linesight: report: --at: '%s' is not YYYY-MM-DD\n", v.c_str());
        return 2;
      }
      at_day = int64_t(timegm(&t) / 86400);
    } else {
      std::fprintf(stderr, "linesight: report: unknown option '%s' (see --help)\n", a.c_str());
      return 2;
    }
  }
  if (detections.empty() || feeds.empty()) {
    std::fputs(kReportUsage, stderr);
    return 2;
  }
  try {
    Sightings in = read_sightings(detections, apps);
    if (in.malformed)
      std::fprintf(stderr, "linesight: report: %llu malformed records skipped (first: %s)\n",
                   (unsigned long long)in.malformed, in.first_malformed.c_str());
    auto table = TiTable::load(feeds);
    for (auto& w : table->warnings()) std::fprintf(stderr, "linesight: %s\n", w.c_str());
    std::shared_ptr<const TiTable> ptable;
    if (!partner.empty()) ptable = TiTable::load(partner);
    Report r = build_report(std::move(in), *table, ptable.get(), at_day);
    std::fputs(report_table(r, top).c_str(), stdout);
    std::string json_path = json_out;
    if (json_path.empty() && !png_out.empty()) json_path = png_out + ".json";
    if (!json_path.empty()) {
      std::ofstream f(json_path);
      f << report_json(r);
      f.close();
      if (!f) {
        std::fprintf(stderr, "linesight: report: %s: write failed\n", json_path.c_str());
        return 1;
      }
    }
    if (!png_out.empty()) {
      int rc = run_plot(json_path, png_out);
      if (json_out.empty()) std::remove(json_path.c_str());
      if (rc) return rc;
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "linesight: report: %s\n", e.what());
    return 2;
  }
  return 0;
}

}  // namespace ls
