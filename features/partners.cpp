#include "features/partners.h"

#include <arpa/inet.h>

#include <algorithm>
#include <ctime>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "dataplane/text.h"

namespace ls {

uint64_t parse_iso8601_ns(const std::string& s) {
  tm t{};
  const char* end = strptime(s.c_str(), "%Y-%m-%dT%H:%M:%S", &t);
  if (!end) return 0;
  uint64_t ns = uint64_t(timegm(&t)) * 1'000'000'000ull;
  if (*end == '.') {
    uint64_t scale = 100'000'000ull;
    for (end++; *end >= '0' && *end <= '9'; end++, scale /= 10) ns += uint64_t(*end - '0') * scale;
  }
  return ns;
}

namespace {

struct Record {
  std::string ip;
  double score = 0;
  uint64_t first_ns = 0, last_ns = 0, detections = 1;
  std::vector<uint16_t> ports;
  std::vector<std::string> threats;
};

// "443/tcp" → 443 (0 if not a port)
uint16_t port_of(const std::string& s) {
  unsigned v = 0;
  size_t i = 0;
  for (; i < s.size() && i < 5 && s[i] >= '0' && s[i] <= '9'; i++) v = v * 10 + unsigned(s[i] - '0');
  return i && v <= 65535 ? uint16_t(v) : 0;
}

std::vector<std::string> split(const std::string& s, char sep) {
  std::vector<std::string> v;
  std::string cur;
  std::istringstream in(s);
  while (std::getline(in, cur, sep)) v.push_back(trim(cur));
  if (!s.empty() && s.back() == sep) v.push_back("");
  return v;
}

void read_json(std::ifstream& f, const std::string& path, std::vector<Record>& out, uint64_t& skipped) {
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(f);
  } catch (const nlohmann::json::exception& e) {
    throw PartnerError(path + ": not JSON (" + e.what() + ")");
  }
  if (!j.is_array()) throw PartnerError(path + ": expected a linesight indicators.json array");
  for (auto& o : j) {
    if (!o.is_object() || !o.contains("indicator") || !o["indicator"].is_string()) {
      skipped++;
      continue;
    }
    Record r;
    r.ip = o["indicator"].get<std::string>();
    if (o.contains("score") && o["score"].is_number()) r.score = o["score"].get<double>();
    r.first_ns = o.contains("first_seen") && o["first_seen"].is_string() ? parse_iso8601_ns(o["first_seen"]) : 0;
    r.last_ns = o.contains("last_seen") && o["last_seen"].is_string() ? parse_iso8601_ns(o["last_seen"]) : 0;
    if (o.contains("detections") && o["detections"].is_number_unsigned()) r.detections = o["detections"].get<uint64_t>();
    if (o.contains("ports") && o["ports"].is_array())
      for (auto& p : o["ports"])
        if (p.is_string() && port_of(p.get<std::string>())) r.ports.push_back(port_of(p.get<std::string>()));
    if (o.contains("threats") && o["threats"].is_array())
      for (auto& t : o["threats"])
        if (t.is_string()) r.threats.push_back(t.get<std::string>());
    out.push_back(std::move(r));
  }
}

void read_csv(std::ifstream& f, const std::string& path, std::vector<Record>& out, uint64_t& skipped) {
  std::string line;
  std::map<std::string, size_t> col;
  while (std::getline(f, line)) {
    if (line.empty() || line[0] == '#') continue;
    auto c = split(line, ',');
    if (col.empty()) {
      for (size_t i = 0; i < c.size(); i++) col[c[i]] = i;
      if (!col.count("indicator")) throw PartnerError(path + ": CSV header has no indicator column (a linesight indicators.csv)");
      continue;
    }
    auto get = [&](const char* k) { return col.count(k) && col[k] < c.size() ? c[col[k]] : std::string(); };
    Record r;
    r.ip = get("indicator");
    try {
      if (!get("score").empty()) r.score = std::stod(get("score"));
      if (!get("detections").empty()) r.detections = std::stoull(get("detections"));
    } catch (...) {
      skipped++;
      continue;
    }
    r.first_ns = parse_iso8601_ns(get("first_seen"));
    r.last_ns = parse_iso8601_ns(get("last_seen"));
    for (auto& p : split(get("ports"), ';'))
      if (port_of(p)) r.ports.push_back(port_of(p));
    for (auto& t : split(get("threats"), ';'))
      if (!t.empty()) r.threats.push_back(t);
    out.push_back(std::move(r));
  }
  if (col.empty()) throw PartnerError(path + ": empty CSV");
}

}  // namespace

PartnerTable::Key PartnerTable::key_of(const uint8_t* a, uint8_t ver) {
  unsigned __int128 x = 0;
  if (ver == 4) x = uint32_t(a[0]) << 24 | uint32_t(a[1]) << 16 | uint32_t(a[2]) << 8 | a[3];
  else
    for (int i = 0; i < 16; i++) x = x << 8 | a[i];
  return {x, ver};
}

std::shared_ptr<const PartnerTable> PartnerTable::load(const std::vector<std::string>& paths) {
  auto t = std::shared_ptr<PartnerTable>(new PartnerTable());
  struct Acc {
    PartnerHit h;
    std::set<uint16_t> ports;
    std::set<std::string> threats;
  };
  std::map<Key, Acc> acc;
  for (auto& path : paths) {
    std::ifstream f(path);
    if (!f) throw PartnerError(path + ": cannot open partner file");
    PartnerFile pf{path, 0, 0};
    std::vector<Record> recs;
    int c = f.peek();
    while (c == ' ' || c == '\n' || c == '\r' || c == '\t') {
      f.get();
      c = f.peek();
    }
    if (c == '[') read_json(f, path, recs, pf.skipped);
    else read_csv(f, path, recs, pf.skipped);
    std::set<Key> seen_here;  // one report per partner and server
    for (auto& r : recs) {
      uint8_t a[16] = {};
      uint8_t ver = r.ip.find(':') == std::string::npos ? 4 : 6;
      if (inet_pton(ver == 4 ? AF_INET : AF_INET6, r.ip.c_str(), a) != 1) {
        pf.skipped++;
        continue;
      }
      pf.records++;
      Key k = key_of(a, ver);
      Acc& x = acc[k];
      if (seen_here.insert(k).second) x.h.reports++;
      x.h.score = std::max(x.h.score, r.score);
      if (r.first_ns) x.h.first_ns = x.h.first_ns ? std::min(x.h.first_ns, r.first_ns) : r.first_ns;
      x.h.last_ns = std::max(x.h.last_ns, r.last_ns);
      x.h.detections += r.detections;
      x.ports.insert(r.ports.begin(), r.ports.end());
      x.threats.insert(r.threats.begin(), r.threats.end());
    }
    t->files_.push_back(pf);
  }
  for (auto& [k, x] : acc) {
    size_t i = 0;
    for (uint16_t p : x.ports)
      if (i < 15) x.h.ports[i++] = p;  // the last slot stays 0: the terminator
    for (auto& th : x.threats) {
      if (!x.h.threats.empty()) x.h.threats += ';';
      x.h.threats += th;
    }
    t->keys_.push_back(k);
    t->hits_.push_back(std::move(x.h));
  }
  return t;
}

const PartnerHit* PartnerTable::lookup(const uint8_t* addr, uint8_t ver) const {
  Key k = key_of(addr, ver);
  auto it = std::lower_bound(keys_.begin(), keys_.end(), k);
  if (it == keys_.end() || !(*it == k)) return nullptr;
  return &hits_[size_t(it - keys_.begin())];
}

}  // namespace ls
