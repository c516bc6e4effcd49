#include "ctrl/report.h"

#include <arpa/inet.h>

#include <algorithm>
#include <cmath>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "ctrl/ti_export.h"
#include "features/partners.h"
#include "features/reliability.h"

namespace ls {

namespace {

using Json = nlohmann::ordered_json;
constexpr double kDayNs = 86'400e9;

std::string day_str(int64_t day) {
  if (!day) return "";
  return iso(uint64_t(day) * 86'400'000'000'000ull).substr(0, 10);
}

// o += sep + x, without a leading sep (and without GCC 12's -Wrestrict false positive on
// `(c ? "" : sep) + x`).
void append_sep(std::string& o, const char* sep, const std::string& x) {
  if (!o.empty()) o += sep;
  o += x;
}

std::string port_str(uint32_t pp) { return std::to_string(pp >> 8) + "/" + proto_name(uint8_t(pp)); }

struct Reader {
  Sightings out;
  const std::set<std::string>& apps;

  // nullptr: not an address (`bad`) or not a public one (counted, kept home).
  Sighting* sighting(const std::string& ip, bool& bad) {
    uint8_t a[16] = {};
    uint8_t ver = ip.find(':') == std::string::npos ? 4 : 6;
    bad = inet_pton(ver == 4 ? AF_INET : AF_INET6, ip.c_str(), a) != 1;
    if (bad) return nullptr;
    if (!is_public(a, ver)) {
      out.not_public++;
      return nullptr;
    }
    Sighting& s = out.by_ip[ip];
    std::copy(a, a + 16, s.addr);
    s.ver = ver;
    return &s;
  }

  void malformed(const std::string& where, const std::string& what) {
    if (!out.malformed++) out.first_malformed = where + ": " + what;
  }

  // One detection record (a JSON line of --detections-out).
  void detection(const Json& j, const std::string& where) {
    if (!j.is_object() || !j.contains("endpoint") || !j["endpoint"].is_string() || !j.contains("time_ns") ||
        !j["time_ns"].is_number_unsigned()) {
      return malformed(where, "not a detection record (endpoint, time_ns)");
    }
    std::string app = j.value("app", "");
    if (!apps.empty() && !apps.count(app)) return;
    out.records++;
    if (j.value("entity", "server") != "server") {
      out.not_server++;  // clients and flows are the operator's own business, never reported
      return;
    }
    bool bad;
    Sighting* s = sighting(j["endpoint"].get<std::string>(), bad);
    if (!s) {
      if (bad) malformed(where, "endpoint is not an address");
      return;
    }
    uint64_t t = j["time_ns"].get<uint64_t>();
    s->first_ns = std::min(s->first_ns, t);
    s->last_ns = std::max(s->last_ns, t);
    s->detections++;
    if (j.contains("score") && j["score"].is_number()) s->score = std::max(s->score, j["score"].get<double>());
    if (!app.empty()) s->apps.insert(app);
    if (j.contains("evidence") && j["evidence"].is_object()) {
      const Json& e = j["evidence"];
      if (e.contains("dport") && e["dport"].is_number_unsigned() && e.contains("proto") && e["proto"].is_number_unsigned())
        s->ports.insert(e["dport"].get<uint32_t>() << 8 | (e["proto"].get<uint32_t>() & 0xFF));
    }
  }

  // One indicator of a sensor's indicators.json export.
  void indicator(const Json& j, const std::string& where) {
    if (!j.is_object() || !j.contains("indicator") || !j["indicator"].is_string())
      return malformed(where, "not an indicator (indicator)");
    bool match = apps.empty();
    if (j.contains("apps") && j["apps"].is_array())
      for (auto& a : j["apps"])
        if (a.is_string() && apps.count(a.get<std::string>())) match = true;
    if (!match) return;
    out.records++;
    uint64_t first = parse_iso8601_ns(j.value("first_seen", "")), last = parse_iso8601_ns(j.value("last_seen", ""));
    if (!first) return malformed(where, "no first_seen time");
    bool bad;
    Sighting* s = sighting(j["indicator"].get<std::string>(), bad);
    if (!s) {
      if (bad) malformed(where, "indicator is not an address");
      return;
    }
    s->first_ns = std::min(s->first_ns, first);
    s->last_ns = std::max({s->last_ns, last, first});
    s->detections += j.contains("detections") && j["detections"].is_number_unsigned() ? j["detections"].get<uint64_t>() : 1;
    if (j.contains("score") && j["score"].is_number()) s->score = std::max(s->score, j["score"].get<double>());
    if (j.contains("apps") && j["apps"].is_array())
      for (auto& a : j["apps"])
        if (a.is_string()) s->apps.insert(a.get<std::string>());
    if (j.contains("ports") && j["ports"].is_array())
      for (auto& p : j["ports"]) {
        if (!p.is_string()) continue;
        std::string v = p.get<std::string>();
        size_t slash = v.find('/');
        uint32_t port = uint32_t(std::atoi(v.substr(0, slash).c_str()));
        std::string proto = slash == std::string::npos ? "" : v.substr(slash + 1);
        uint32_t pr = proto == "tcp" ? 6 : proto == "udp" ? 17 : proto == "icmp" ? 1 : proto == "ipv6-icmp" ? 58 : 0;
        if (port && port < 65536) s->ports.insert(port << 8 | pr);
      }
  }

  void file(const std::filesystem::path& p) {
    std::ifstream f(p);
    if (!f) throw ReportError(p.string() + ": cannot open");
    int first = f.peek();
    while (first == ' ' || first == '\n' || first == '\r' || first == '\t') {
      f.get();
      first = f.peek();
    }
    if (first == '[') {  // an indicators.json export
      Json arr;
      try {
        arr = Json::parse(f);
      } catch (const Json::exception& e) {
        return malformed(p.string(), std::string("not JSON: ") + e.what());
      }
      for (size_t i = 0; i < arr.size(); i++) indicator(arr[i], p.string() + "[" + std::to_string(i) + "]");
      return;
    }
    std::string line;
    for (size_t n = 1; std::getline(f, line); n++) {
      if (line.empty()) continue;
      Json j = Json::parse(line, nullptr, false);
      if (j.is_discarded()) {
        malformed(p.string() + ":" + std::to_string(n), "not JSON");
        continue;
      }
      detection(j, p.string() + ":" + std::to_string(n));
    }
  }
};

}  // namespace

Sightings read_sightings(const std::vector<std::string>& paths, const std::set<std::string>& apps) {
  Reader r{{}, apps};
  for (auto& p : paths) {
    std::error_code ec;
    if (std::filesystem::is_directory(p, ec)) {
      std::vector<std::filesystem::path> files;
      for (auto& e : std::filesystem::recursive_directory_iterator(p)) {
        std::string ext = e.path().extension().string();
        if (e.is_regular_file() && (ext == ".jsonl" || ext == ".ndjson" || ext == ".json")) files.push_back(e.path());
      }
      std::sort(files.begin(), files.end());
      for (auto& f : files) r.file(f);
    } else if (std::filesystem::exists(p, ec)) {
      r.file(p);
    } else {
      throw ReportError(p + ": no such detections file or directory");
    }
  }
  return std::move(r.out);
}

Report build_report(Sightings in, const TiTable& feeds, const TiTable* partner, int64_t at_day) {
  Report r;
  r.in = std::move(in);
  r.has_partner = partner != nullptr;
  r.feed_instances = feeds.feeds().size();
  r.now_day = at_day;

  std::map<std::string, FeedOverlap> per_feed;
  for (auto& f : feeds.feeds()) {
    FeedOverlap& o = per_feed[f.name];
    if (o.name.empty()) {
      o.name = f.name;
      o.category = f.category;
    } else if (o.category != f.category) {
      o.category = "(several)";
    }
    o.listings += f.entries;
  }
  std::map<std::string, std::set<int64_t>> dates;
  for (auto& f : feeds.feeds())
    if (f.date_days) dates[f.name].insert(f.date_days);
  for (auto& [name, d] : dates) per_feed[name].snapshots = uint32_t(d.size());
  r.feed_names = per_feed.size();

  size_t feed_sum = 0;
  for (auto& [ip, s] : r.in.by_ip) {
    ReportRow row;
    row.ip = ip;
    row.s = &s;
    int64_t our_day = int64_t(double(s.first_ns) / kDayNs);
    // Reliability as of `at_day`, or as the sensor judged it when it last saw the server.
    double now = at_day ? double(at_day) : double(s.last_ns) / kDayNs;
    // Per feed name: strongest weight and latest listing of this address known by `now`
    // (a listing dated after it is not evidence yet); undated listings always count.
    std::map<std::string, std::pair<double, int64_t>> evidence_by;
    std::set<std::string> listed_by;
    auto known = [&](const TiFeed& f, std::map<std::string, std::pair<double, int64_t>>& by) {
      if (f.date_days && double(f.date_days) > now) return;
      auto& [w, last] = by[f.name];
      w = std::max(w, f.weight);
      last = std::max(last, f.date_days);
    };
    for (uint32_t i : feeds.listing(s.addr, s.ver)) {
      const TiFeed& f = feeds.feeds()[i];
      listed_by.insert(f.name);
      known(f, evidence_by);
      if (f.date_days) {
        row.first_listed_day = row.first_listed_day ? std::min(row.first_listed_day, f.date_days) : f.date_days;
        FeedOverlap& o = per_feed[f.name];
        o.first_day = o.first_day ? std::min(o.first_day, f.date_days) : f.date_days;
      }
    }
    for (auto& name : listed_by) {
      row.feeds.push_back(name);
      per_feed[name].ours++;
    }
    for (auto& [feed, port] : feeds.listed_ports(s.addr, s.ver)) row.feed_ports.insert(port);
    // ipsum-style weights count lists: any weight ≥ 1 is a full-strength listing.
    auto as_evidence = [&](const std::map<std::string, std::pair<double, int64_t>>& by) {
      std::vector<Evidence> v;
      for (auto& [name, wl] : by)
        v.push_back({std::min(1.0, wl.first > 0 ? wl.first : 1.0), wl.second ? std::max(0.0, now - double(wl.second)) : 0});
      return v;
    };
    std::vector<Evidence> own{{s.score, std::max(0.0, now - double(s.last_ns) / kDayNs)}}, pe;
    if (partner) {
      std::map<std::string, std::pair<double, int64_t>> by;
      for (uint32_t i : partner->listing(s.addr, s.ver)) {
        row.partner = true;
        known(partner->feeds()[i], by);
      }
      pe = as_evidence(by);
    }
    row.reliability = reliability(ReliabilityModel{}, as_evidence(evidence_by), own, pe);

    if (!row.feeds.empty()) {
      r.listed++;
      feed_sum += row.feeds.size();
      if (!row.first_listed_day) {
        r.undated++;
      } else if (our_day < row.first_listed_day) {
        r.ahead++;
        r.lead_days.push_back(row.first_listed_day - our_day);
      }
      for (uint32_t pp : s.ports)
        if (!row.feed_ports.count(pp >> 8)) row.new_ports.push_back(pp);
      if (!row.new_ports.empty()) {
        r.new_port_servers++;
        r.new_port_pairs += row.new_ports.size();
      }
    } else {
      r.unknown_feeds++;
      if (!row.partner) r.unknown_all++;
      int b = std::min(4, int(row.reliability * 5));
      r.unique_reliability[b]++;
    }
    r.partner_listed += row.partner;
    r.rows.push_back(std::move(row));
  }
  r.reported = r.rows.size();
  r.mean_feeds_per_listed = r.listed ? double(feed_sum) / double(r.listed) : 0;
  std::sort(r.lead_days.begin(), r.lead_days.end());
  for (auto& [n, o] : per_feed) r.feeds.push_back(o);
  std::stable_sort(r.feeds.begin(), r.feeds.end(),
                   [](const FeedOverlap& a, const FeedOverlap& b) { return a.ours > b.ours; });
  return r;
}

namespace {

std::string pct(size_t n, size_t of) {
  char b[32];
  std::snprintf(b, sizeof b, "%.1f%%", of ? 100.0 * double(n) / double(of) : 0.0);
  return b;
}

// v sorted.
double median(const std::vector<int64_t>& v) {
  return v.empty() ? 0 : double(v[(v.size() - 1) / 2] + v[v.size() / 2]) / 2;
}

std::string fmt_days(double d) {
  char b[32];
  std::snprintf(b, sizeof b, "%g", d);
  return b;
}

}  // namespace

std::string report_table(const Report& r, size_t top) {
  std::string o;
  char b[512];
  auto line = [&](const char* label, size_t n, const std::string& extra = "") {
    std::snprintf(b, sizeof b, "  %-42s %6zu%s\n", label, n, extra.c_str());
    o += b;
  };
  uint64_t first = UINT64_MAX, last = 0;
  std::set<std::string> apps;
  for (auto& row : r.rows) {
    first = std::min(first, row.s->first_ns);
    last = std::max(last, row.s->last_ns);
    apps.insert(row.s->apps.begin(), row.s->apps.end());
  }
  o += "linesight assessment report\n";
  std::snprintf(b, sizeof b, "  detections: %llu server records",
                (unsigned long long)(r.in.records - r.in.not_server));
  o += b;
  if (!r.rows.empty()) o += ", " + iso(first).substr(0, 10) + " to " + iso(last).substr(0, 10);
  std::string app_list;
  for (auto& a : apps) append_sep(app_list, ", ", a);
  if (!app_list.empty()) o += " (" + app_list + ")";
  o += "\n";
  std::snprintf(b, sizeof b, "  feeds: %zu feeds (%zu instances: feed x date x category)%s\n  reliability judged %s\n\n",
                r.feed_names, r.feed_instances, r.has_partner ? " + partner" : "",
                r.now_day ? ("on " + day_str(r.now_day)).c_str() : "at each server's last sighting (as exported then)");
  o += b;
  line("servers reported (public addresses)", r.reported);
  line("unknown to every feed", r.unknown_feeds, "  " + pct(r.unknown_feeds, r.reported));
  if (r.has_partner) {
    line("listed by the partner", r.partner_listed);
    line("unknown to every feed and to the partner", r.unknown_all, "  " + pct(r.unknown_all, r.reported));
  }
  line("listed by at least one feed", r.listed, "  " + pct(r.listed, r.reported));
  line("  seen by us before any feed listed them", r.ahead,
       r.ahead ? "  median lead " + fmt_days(median(r.lead_days)) + " days" : "");
  line("  listed without a date", r.undated);
  std::snprintf(b, sizeof b, "  %-42s %6.2f\n", "  feeds per listed server (mean)", r.mean_feeds_per_listed);
  o += b;
  line("  new ports of interest (server, port)", r.new_port_pairs,
       "  on " + std::to_string(r.new_port_servers) + " listed servers");
  if (r.in.not_server || r.in.not_public || r.in.malformed) {
    std::snprintf(b, sizeof b, "  not reported: %llu client/flow detections, %llu non-public endpoints, %llu malformed\n",
                  (unsigned long long)r.in.not_server, (unsigned long long)r.in.not_public,
                  (unsigned long long)r.in.malformed);
    o += b;
  }

  size_t overlapping = 0;
  for (auto& f : r.feeds) overlapping += f.ours > 0;
  std::snprintf(b, sizeof b, "\nper-feed overlap (top %zu of %zu feeds listing any of ours)\n", std::min(top, overlapping),
                overlapping);
  o += b;
  std::snprintf(b, sizeof b, "  %-28s %-18s %9s %5s %6s %9s %s\n", "feed", "category", "listings", "dates", "ours",
                "% of ours", "first listing");
  o += b;
  for (size_t i = 0; i < r.feeds.size() && i < top && r.feeds[i].ours; i++) {
    const FeedOverlap& f = r.feeds[i];
    std::snprintf(b, sizeof b, "  %-28.28s %-18.18s %9llu %5u %6u %9s %s\n", f.name.c_str(), f.category.c_str(),
                  (unsigned long long)f.listings, f.snapshots, f.ours, pct(f.ours, r.reported).c_str(),
                  day_str(f.first_day).c_str());
    o += b;
  }

  o += "\nreliability of the servers only we report (" + std::to_string(r.unknown_feeds) + ")\n";
  for (int i = 0; i < 5; i++) {
    std::snprintf(b, sizeof b, "  %.1f-%.1f %5zu %s\n", i / 5.0, (i + 1) / 5.0, r.unique_reliability[i],
                  std::string(std::min<size_t>(r.unique_reliability[i], 60), '#').c_str());
    o += b;
  }

  o += "\nservers\n";
  std::snprintf(b, sizeof b, "  %-39s %-10s %5s %5s %-10s %-10s %s\n", "address", "first seen", "score", "rel", "feeds",
                "listed", "new ports");
  o += b;
  for (auto& row : r.rows) {
    std::string np;
    for (uint32_t pp : row.new_ports) append_sep(np, " ", port_str(pp));
    std::string fe = std::to_string(row.feeds.size()) + (row.partner ? "+p" : "");
    std::snprintf(b, sizeof b, "  %-39s %-10s %5.2f %5.2f %-10s %-10s %s\n", row.ip.c_str(),
                  iso(row.s->first_ns).substr(0, 10).c_str(), row.s->score, row.reliability, fe.c_str(),
                  day_str(row.first_listed_day).c_str(), np.c_str());
    o += b;
  }
  return o;
}

std::string report_json(const Report& r) {
  Json j;
  j["report"] = "linesight assessment";
  j["judged_on"] = r.now_day ? day_str(r.now_day) : "last sighting";
  j["input"] = {{"records", r.in.records}, {"not_server", r.in.not_server}, {"not_public", r.in.not_public},
                {"malformed", r.in.malformed}};
  if (r.in.malformed) j["input"]["first_malformed"] = r.in.first_malformed;
  j["feeds_loaded"] = {{"feeds", r.feed_names}, {"instances", r.feed_instances}, {"partner", r.has_partner}};
  Json s{{"reported", r.reported}, {"unknown_to_feeds", r.unknown_feeds}, {"listed", r.listed},
         {"seen_before_feeds", r.ahead}, {"lead_days", r.lead_days}, {"listed_undated", r.undated},
         {"mean_feeds_per_listed", r.mean_feeds_per_listed}, {"new_port_pairs", r.new_port_pairs},
         {"new_port_servers", r.new_port_servers}};
  if (r.has_partner) {
    s["partner_listed"] = r.partner_listed;
    s["unknown_to_feeds_and_partner"] = r.unknown_all;
  }
  j["summary"] = s;
  Json feeds = Json::array();
  for (auto& f : r.feeds) {
    if (!f.ours) continue;
    feeds.push_back({{"feed", f.name}, {"category", f.category}, {"listings", f.listings}, {"dates", f.snapshots},
                     {"ours", f.ours}, {"overlap_pct", r.reported ? 100.0 * f.ours / double(r.reported) : 0.0},
                     {"first_listing", day_str(f.first_day)}});
  }
  j["feed_overlap"] = feeds;
  j["unique_reliability"] = Json::array();
  for (int i = 0; i < 5; i++)
    j["unique_reliability"].push_back({{"from", i / 5.0}, {"to", (i + 1) / 5.0}, {"servers", r.unique_reliability[i]}});
  Json rows = Json::array();
  for (auto& row : r.rows) {
    Json ports = Json::array(), np = Json::array();
    for (uint32_t pp : row.s->ports) ports.push_back(port_str(pp));
    for (uint32_t pp : row.new_ports) np.push_back(port_str(pp));
    Json x{{"server", row.ip}, {"first_seen", iso(row.s->first_ns)}, {"last_seen", iso(row.s->last_ns)},
           {"apps", row.s->apps}, {"score", row.s->score}, {"detections", row.s->detections}, {"ports", ports},
           {"feeds", row.feeds}, {"first_listed", day_str(row.first_listed_day)}, {"feed_ports", row.feed_ports},
           {"new_ports", np}, {"reliability", row.reliability}};
    if (r.has_partner) x["partner"] = row.partner;
    rows.push_back(x);
  }
  j["servers"] = rows;
  return j.dump(1) + "\n";
}

}  // namespace ls
