#include "features/ti_table.h"

#include "dataplane/text.h"

#include <arpa/inet.h>
#include <sys/stat.h>

#include <algorithm>
#include <cctype>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>
#include <unordered_map>
#include <sstream>

namespace ls {

namespace {


// "Tue Jan 23 16:53:44 UTC 2024" or "2024-01-23" → days since the epoch (0 if unparsable).
int64_t parse_date_days(const std::string& s) {
  tm t{};
  const char* end = strptime(s.c_str(), "%Y-%m-%d", &t);
  if (!end) end = strptime(s.c_str(), "%a %b %d %H:%M:%S UTC %Y", &t);
  if (!end) end = strptime(s.c_str(), "%a, %d %b %Y %H:%M:%S", &t);
  if (!end) return 0;
  return int64_t(timegm(&t) / 86400);
}

struct Prefix {
  bool v6;
  unsigned __int128 lo, hi;
  uint32_t feed;
};

unsigned __int128 load128(const uint8_t* a) {
  unsigned __int128 x = 0;
  for (int i = 0; i < 16; i++) x = x << 8 | a[i];
  return x;
}

// "1.2.3.0/24", "1.2.3.4", "2001:db8::/32" → prefix; false when malformed.
bool parse_prefix(const std::string& s, uint32_t feed, Prefix& p) {
  std::string addr = s;
  int len = -1;
  size_t slash = s.find('/');
  if (slash != std::string::npos) {
    addr = s.substr(0, slash);
    try {
      size_t used;
      len = std::stoi(s.substr(slash + 1), &used);
      if (used != s.size() - slash - 1) return false;
    } catch (...) {
      return false;
    }
  }
  uint8_t b[16];
  if (inet_pton(AF_INET, addr.c_str(), b) == 1) {
    if (len < 0) len = 32;
    if (len > 32) return false;
    uint32_t a = uint32_t(b[0]) << 24 | uint32_t(b[1]) << 16 | uint32_t(b[2]) << 8 | b[3];
    uint32_t mask = len == 0 ? 0 : ~uint32_t(0) << (32 - len);
    p = {false, a & mask, (a & mask) | ~mask, feed};
    return true;
  }
  if (inet_pton(AF_INET6, addr.c_str(), b) == 1) {
    if (len < 0) len = 128;
    if (len > 128) return false;
    unsigned __int128 a = load128(b);
    unsigned __int128 mask = len == 0 ? 0 : ~(unsigned __int128)0 << (128 - len);
    p = {true, a & mask, (a & mask) | ~mask, feed};
    return true;
  }
  return false;
}

std::vector<std::string> split_csv(const std::string& line) {
  std::vector<std::string> out;
  std::string cur;
  bool q = false;
  for (char c : line) {
    if (c == '"') q = !q;
    else if (c == ',' && !q) {
      out.push_back(trim(cur));
      cur.clear();
    } else cur += c;
  }
  out.push_back(trim(cur));
  return out;
}

}  // namespace

struct TiBuilder {
  std::vector<TiFeed> feeds;
  // IPv4 ranges (12 bytes each: most of a big feed set) apart from IPv6 ones.
  struct Range4 {
    uint32_t lo, hi, feed;
  };
  std::vector<Range4> v4;
  std::vector<Prefix> v6;
  TiTable::Big<TiTable::PortEntry> ports;

  void add(const Prefix& p) {
    if (p.v6) v6.push_back(p);
    else v4.push_back({uint32_t(p.lo), uint32_t(p.hi), p.feed});
  }

  // A port named for a single address (not a range: a netset's port means nothing).
  void add_port(const Prefix& p, uint32_t port) {
    if (p.lo != p.hi || port == 0 || port > 65535) return;
    ports.push_back({p.lo, uint8_t(p.v6 ? 6 : 4), uint16_t(port), p.feed});
  }

  // "443", "443/tcp", "443/tcp;8080/tcp", "443 8080" → each port number.
  void add_ports(const Prefix& p, const std::string& list) {
    uint32_t v = 0;
    bool in = false, skip = false;  // skip: digits after '/' or in a word (not a port)
    for (size_t i = 0; i <= list.size(); i++) {
      char c = i < list.size() ? list[i] : ';';
      if (c >= '0' && c <= '9' && !skip) {
        v = v * 10 + uint32_t(c - '0');
        in = v <= 65535;
        if (!in) skip = true;
        continue;
      }
      if (c == ';' || c == ' ' || c == '|' || c == ',') {
        if (in) add_port(p, v);
        v = 0;
        in = skip = false;
      } else {
        if (in) add_port(p, v);
        v = 0;
        in = false;
        skip = true;  // "/tcp" and the like until the next separator
      }
    }
  }

  // Dated snapshot directories (".../firehol-2024-01-24/x.ipset") date their files.
  static int64_t dir_date(const std::filesystem::path& p) {
    std::string d = p.parent_path().filename().string();
    size_t dash = d.find_first_of("0123456789");
    return dash == std::string::npos ? 0 : parse_date_days(d.substr(dash));
  }

  // The feed instance for (category, date) within one file, made from `base` on first use
  // (the weight of the row that created it).
  uint32_t instance(std::map<std::string, uint32_t>& m, const TiFeed& base, const std::string& category,
                    int64_t day, double weight) {
    auto [it, fresh] = m.try_emplace(category + "|" + std::to_string(day), uint32_t(feeds.size()));
    if (fresh) {
      TiFeed s = base;
      s.category = category;
      s.date_days = day;
      s.weight = weight;
      feeds.push_back(s);
    }
    return it->second;
  }

  // Addresses quoted after `ipv4-addr:value`, `ipv6-addr:value` or `dst_ref.value` /
  // `src_ref.value` comparisons in a STIX pattern ("[ipv4-addr:value = '1.2.3.4']").
  static std::vector<std::string> stix_addresses(const std::string& pat) {
    std::vector<std::string> out;
    for (const char* key : {"ipv4-addr:value", "ipv6-addr:value", "dst_ref.value", "src_ref.value"}) {
      for (size_t at = pat.find(key); at != std::string::npos; at = pat.find(key, at + 1)) {
        size_t q = pat.find('\'', at);
        size_t eq = pat.find('=', at);
        if (q == std::string::npos || eq == std::string::npos || eq > q) continue;
        size_t e = pat.find('\'', q + 1);
        if (e == std::string::npos) continue;
        out.push_back(pat.substr(q + 1, e - q - 1));
      }
    }
    return out;
  }

  // `network-traffic:dst_port = 443` comparisons in a STIX pattern.
  static std::vector<uint32_t> stix_ports(const std::string& pat) {
    std::vector<uint32_t> out;
    const std::string key = "dst_port";
    for (size_t at = pat.find(key); at != std::string::npos; at = pat.find(key, at + 1)) {
      size_t i = at + key.size();
      while (i < pat.size() && (pat[i] == ' ' || pat[i] == '=')) i++;
      uint32_t v = 0;
      size_t d = i;
      while (d < pat.size() && d - i < 6 && pat[d] >= '0' && pat[d] <= '9') v = v * 10 + uint32_t(pat[d++] - '0');
      if (d > i && v && v <= 65535) out.push_back(v);
    }
    return out;
  }

  // STIX 2.1 bundle (indicators with STIX patterns) or a MISP event file (attributes
  // ip-dst, ip-src, ip-dst|port, ip-src|port, also inside objects). A MISP feed
  // directory is its event files; manifest.json is skipped by the caller.
  void load_json(const std::filesystem::path& p, std::ifstream& f) {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(f);
    } catch (const nlohmann::json::exception& e) {
      throw TiError(p.string() + ": not JSON (" + e.what() + ")");
    }
    TiFeed feed;
    feed.path = p.string();
    feed.name = p.stem().string();
    feed.date_days = dir_date(p);
    auto str = [](const nlohmann::json& o, const char* k) {
      return o.is_object() && o.contains(k) && o[k].is_string() ? o[k].get<std::string>() : std::string();
    };
    std::map<std::string, uint32_t> sub;  // (category|date) → feed instance
    auto add = [&](const std::string& value, const std::string& category, int64_t day, double weight,
                   const std::string& port_list = "") -> bool {
      Prefix pr;
      if (!parse_prefix(value, 0, pr)) {
        feed.skipped++;
        return false;
      }
      pr.feed = instance(sub, feed, category, day, weight);
      feeds[pr.feed].entries++;
      this->add(pr);
      add_ports(pr, port_list);
      return true;
    };
    if (str(j, "type") == "bundle" && j.contains("objects") && j["objects"].is_array()) {
      std::map<std::string, std::string> names;  // identity id → name: the producer names the feed
      for (auto& o : j["objects"])
        if (str(o, "type") == "identity") names[str(o, "id")] = str(o, "name");
      for (auto& o : j["objects"]) {
        if (str(o, "type") != "indicator") continue;
        if (str(o, "pattern_type") != "stix" || str(o, "pattern").empty()) {
          feed.skipped++;
          continue;
        }
        auto addrs = stix_addresses(str(o, "pattern"));
        if (addrs.empty()) {
          feed.skipped++;  // file hashes, domains, …: not addresses
          continue;
        }
        std::string category;
        if (o.contains("labels") && o["labels"].is_array())
          for (auto& l : o["labels"])
            if (l.is_string()) category += (category.empty() ? "" : ";") + l.get<std::string>();
        double w = o.contains("confidence") && o["confidence"].is_number() ? o["confidence"].get<double>() / 100 : 1;
        int64_t day = parse_date_days(str(o, "valid_from"));
        if (names.count(str(o, "created_by_ref"))) feed.name = names[str(o, "created_by_ref")];
        std::string port_list;
        for (uint32_t pt : stix_ports(str(o, "pattern"))) port_list += std::to_string(pt) + ";";
        for (auto& a : addrs) add(a, category, day ? day : feed.date_days, w, port_list);
      }
    } else if (j.is_object() && j.contains("Event") && j["Event"].is_object()) {
      const auto& ev = j["Event"];
      if (ev.contains("Orgc") && !str(ev["Orgc"], "name").empty()) feed.name = str(ev["Orgc"], "name");
      std::string category = str(ev, "info");
      int64_t day = parse_date_days(str(ev, "date"));
      auto attrs = [&](const nlohmann::json& list) {
        if (!list.is_array()) return;
        for (auto& a : list) {
          std::string type = str(a, "type"), value = str(a, "value");
          if (type != "ip-dst" && type != "ip-src" && type != "ip-dst|port" && type != "ip-src|port") continue;
          std::string port;
          if (type.find('|') != std::string::npos && value.find('|') != std::string::npos) {
            port = value.substr(value.find('|') + 1);
            value = value.substr(0, value.find('|'));
          }
          add(value, category, day ? day : feed.date_days, 1, port);
        }
      };
      if (ev.contains("Attribute")) attrs(ev["Attribute"]);
      if (ev.contains("Object") && ev["Object"].is_array())
        for (auto& o : ev["Object"])
          if (o.contains("Attribute")) attrs(o["Attribute"]);
    } else if (j.is_array() && !j.empty() && j[0].is_object() && j[0].contains("indicator")) {
      // linesight's indicators.json (a partner sensor's export): reliability → weight,
      // first_seen and last_seen → two dated listings, threats → category.
      for (auto& o : j) {
        std::string category;
        if (o.contains("threats") && o["threats"].is_array())
          for (auto& t : o["threats"])
            if (t.is_string()) {
              if (!category.empty()) category += ';';
              category += t.get<std::string>();
            }
        double w = o.contains("reliability") && o["reliability"].is_number() ? o["reliability"].get<double>() : 1;
        std::string port_list;
        if (o.contains("ports") && o["ports"].is_array())
          for (auto& pt : o["ports"])
            if (pt.is_string()) port_list += pt.get<std::string>() + ";";
        int64_t first = parse_date_days(str(o, "first_seen")), last = parse_date_days(str(o, "last_seen"));
        if (!add(str(o, "indicator"), category, first ? first : feed.date_days, w, port_list)) continue;
        if (last > first) add(str(o, "indicator"), category, last, w);
      }
    } else {
      throw TiError(p.string() + ": JSON but neither a STIX 2.1 bundle, a MISP event nor linesight indicators");
    }
    if (sub.empty()) feeds.push_back(feed);  // visible with its skipped count
    else
      for (auto& [k, i] : sub) feeds[i].skipped = feed.skipped;
  }

  void load_file(const std::filesystem::path& p) {
    std::ifstream f(p);
    if (!f) throw TiError(p.string() + ": cannot open feed");
    std::string ext = p.extension().string();
    if (ext == ".json") return load_json(p, f);
    TiFeed feed;
    feed.path = p.string();
    feed.name = p.stem().string();
    feed.date_days = dir_date(p);
    uint32_t id = uint32_t(feeds.size());
    std::string line;
    double max_w = 0;
    if (ext == ".csv") {
      std::vector<std::string> hdr;
      int ip = -1, cat = -1, date = -1, last = -1, w = -1, port = -1;
      bool percent = false;  // a `confidence` column is 0-100
      std::map<std::string, uint32_t> per_cat;  // CSV rows with categories become sub-feeds
      while (std::getline(f, line)) {
        std::string t = trim(line);
        if (t.empty() || t[0] == '#') continue;
        auto c = split_csv(t);
        if (hdr.empty()) {
          hdr = c;
          for (size_t i = 0; i < c.size(); i++) {
            std::string h = c[i];
            std::transform(h.begin(), h.end(), h.begin(), ::tolower);
            if (h == "ip" || h == "ip_address" || h == "indicator") ip = int(i);
            else if (h == "category" || h == "family" || h == "report_title" || h == "threat" || h == "threats") {
              if (cat < 0 || h == "family") cat = int(i);
            } else if (h == "date" || h == "report_date" || h == "first_seen") date = int(i);
            else if (h == "last_seen") last = int(i);
            else if (h == "weight" || h == "confidence" || h == "reliability") {
              w = int(i);
              percent = h == "confidence";
            } else if (h == "port" || h == "ports" || h == "dst_port") port = int(i);
          }
          if (ip < 0) throw TiError(p.string() + ": CSV header has no ip column (ip, ip_address, indicator)");
          continue;
        }
        Prefix pr;
        if (int(c.size()) <= ip || !parse_prefix(c[size_t(ip)], id, pr)) {
          feed.skipped++;
          continue;
        }
        // Each distinct date in the file is its own instance (report-dated IOC lists).
        int64_t d = date >= 0 && int(c.size()) > date ? parse_date_days(c[size_t(date)]) : feed.date_days;
        std::string category = cat >= 0 && int(c.size()) > cat ? c[size_t(cat)] : "";
        double weight = feed.weight;
        if (w >= 0 && int(c.size()) > w) {
          try { weight = std::stod(c[size_t(w)]); } catch (...) {}
          if (percent && weight > 1) weight /= 100;
        }
        pr.feed = instance(per_cat, feed, category, d, weight);
        feeds[pr.feed].entries++;
        add(pr);
        if (port >= 0 && int(c.size()) > port) add_ports(pr, c[size_t(port)]);
        // A last_seen column: the address was listed on that day too.
        int64_t l = last >= 0 && int(c.size()) > last ? parse_date_days(c[size_t(last)]) : 0;
        if (l > d) {
          Prefix again = pr;
          again.feed = instance(per_cat, feed, category, l, weight);
          feeds[again.feed].entries++;
          add(again);
        }
      }
      if (per_cat.empty()) {
        feeds.push_back(feed);  // keep the (empty) feed visible with its skipped count
      } else {
        for (auto& [k, i] : per_cat) feeds[i].skipped = feed.skipped;
      }
      return;
    }
    // .ipset / .netset / plain lists
    int header_line = 0;
    while (std::getline(f, line)) {
      std::string t = trim(line);
      if (t.empty()) continue;
      if (t[0] == '#') {
        std::string body = trim(t.substr(1));
        if (++header_line == 2 && !body.empty() && body.find(':') == std::string::npos) feed.name = body;
        size_t colon = body.find(':');
        if (colon != std::string::npos) {
          std::string k = trim(body.substr(0, colon)), v = trim(body.substr(colon + 1));
          if (k == "Category") feed.category = v;
          else if (k == "Source File Date" && parse_date_days(v)) feed.date_days = parse_date_days(v);
        }
        continue;
      }
      // First token the address, an optional second one a weight (split by hand:
      // an istringstream per line was a visible share of loading 1M-line feeds).
      size_t e1 = t.find_first_of(" \t");
      std::string tok = t.substr(0, e1), wtok;
      if (e1 != std::string::npos) {
        size_t b2 = t.find_first_not_of(" \t", e1);
        if (b2 != std::string::npos) wtok = t.substr(b2, t.find_first_of(" \t", b2) - b2);
      }
      Prefix pr;
      if (!parse_prefix(tok, id, pr)) {
        feed.skipped++;
        continue;
      }
      if (!wtok.empty()) {  // ipsum: number of lists naming the address
        try { max_w = std::max(max_w, std::stod(wtok)); } catch (...) {}
      }
      feed.entries++;
      add(pr);
    }
    if (max_w > 0) feed.weight = max_w;
    feeds.push_back(feed);
  }
};

TiTable::Source TiTable::stat_source(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return {path, 0, 0};
  return {path, uint64_t(st.st_size), int64_t(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec};
}

std::shared_ptr<const TiTable> TiTable::load(const std::vector<std::string>& paths,
                                             const std::map<std::string, double>& weights) {
  for (auto& p : paths)
    if (is_compiled(p)) {
      if (paths.size() != 1)
        throw TiError(p + ": a compiled table must be the only threat-intel path (compile every feed into it)");
      return load_compiled(p, weights);
    }
  TiBuilder b;
  std::vector<std::pair<std::filesystem::path, bool>> files;  // (path, found in a directory)
  for (auto& p : paths) {
    std::error_code ec;
    if (std::filesystem::is_directory(p, ec)) {
      for (auto& e : std::filesystem::recursive_directory_iterator(p)) {
        std::string ext = e.path().extension().string();
        // .json: STIX bundles and MISP event files (a MISP feed's manifest.json lists them)
        if (e.is_regular_file() && (ext == ".ipset" || ext == ".netset" || ext == ".txt" || ext == ".csv" ||
                                    (ext == ".json" && e.path().filename() != "manifest.json")))
          files.push_back({e.path(), true});
      }
    } else if (std::filesystem::exists(p, ec)) {
      files.push_back({p, false});
    } else {
      throw TiError(p + ": no such feed file or directory");
    }
  }
  std::sort(files.begin(), files.end());
  auto t = std::shared_ptr<TiTable>(new TiTable());
  for (auto& [f, in_dir] : files) {
    t->sources_.push_back(stat_source(f.string()));
    try {
      b.load_file(f);
    } catch (const TiError& e) {
      if (!in_dir) throw;
      t->warnings_.push_back(std::string(e.what()) + " (skipped)");
    }
  }
  t->feeds_ = std::move(b.feeds);
  for (auto& f : t->feeds_) {
    auto w = weights.find(f.name);
    if (w != weights.end()) f.weight = w->second;
  }
  t->ports_ = std::move(b.ports);
  std::sort(t->ports_.begin(), t->ports_.end());

  // Sweep line over interval edges: each elementary interval gets the set of feeds open
  // over it. The open set is a count per feed plus a 64-bit XOR of a random key per open
  // feed, so naming the set at an edge costs a hash lookup, not building and comparing
  // vectors; two different sets share a key with probability 2^-64 per pair (~1e-12 for
  // the shared feeds' few thousand sets). Sets are built only when first seen.
  const size_t nf = t->feeds_.size();
  if (nf >= (1u << 23)) throw TiError("more than 8M feed instances: not supported");
  std::vector<uint32_t> open_count(nf, 0);
  std::vector<uint64_t> feed_key(nf);
  uint64_t x = 0x9E3779B97F4A7C15ull;
  for (auto& k : feed_key) {  // splitmix64: fixed, so a table is reproducible
    x += 0x9E3779B97F4A7C15ull;
    uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    k = z ^ (z >> 31);
  }
  uint64_t open_key = 0;
  uint32_t open_n = 0;
  std::unordered_map<uint64_t, uint32_t> set_ids;
  auto toggle = [&](uint32_t f, bool start) {
    if (start ? open_count[f]++ == 0 : --open_count[f] == 0) {
      open_key ^= feed_key[f];
      open_n += start ? 1 : uint32_t(-1);
    }
  };
  auto current_set = [&]() -> uint32_t {
    if (open_n == 0) return UINT32_MAX;
    auto [it, fresh] = set_ids.try_emplace(open_key, uint32_t(t->sets_.size()));
    if (fresh) {
      std::vector<uint32_t> members;
      for (uint32_t f = 0; f < nf; f++)
        if (open_count[f]) members.push_back(f);
      t->sets_.push_back(std::move(members));
    }
    return it->second;
  };
  // IPv4: an edge is one 64-bit word — position (33 bits: hi + 1 may be 2^32), start or
  // end, feed — so the sort is over plain integers.
  {
    std::vector<uint64_t> ev;
    ev.reserve(b.v4.size() * 2);
    for (auto& r : b.v4) {
      ev.push_back(uint64_t(r.lo) << 24 | 1u << 23 | r.feed);
      if (r.hi != 0xFFFFFFFFu) ev.push_back((uint64_t(r.hi) + 1) << 24 | r.feed);
    }
    std::sort(ev.begin(), ev.end());
    for (size_t i = 0; i < ev.size();) {
      uint64_t at = ev[i] >> 24;
      for (; i < ev.size() && ev[i] >> 24 == at; i++) toggle(uint32_t(ev[i] & 0x7FFFFF), ev[i] >> 23 & 1);
      uint32_t s = current_set();
      if (t->v4_.empty() || t->v4_.back().set != s) t->v4_.push_back({uint32_t(at), s});
    }
  }
  // A range up to 255.255.255.255 has no end edge: start IPv6 with nothing open.
  std::fill(open_count.begin(), open_count.end(), 0);
  open_key = 0;
  open_n = 0;
  {
    std::vector<std::pair<unsigned __int128, int64_t>> ev;  // +feed+1 at lo, -(feed+1) at hi+1
    ev.reserve(b.v6.size() * 2);
    for (auto& p : b.v6) {
      ev.push_back({p.lo, int64_t(p.feed) + 1});
      if (p.hi != ~(unsigned __int128)0) ev.push_back({p.hi + 1, -(int64_t(p.feed) + 1)});
    }
    std::sort(ev.begin(), ev.end());
    for (size_t i = 0; i < ev.size();) {
      unsigned __int128 at = ev[i].first;
      for (; i < ev.size() && ev[i].first == at; i++)
        toggle(uint32_t((ev[i].second > 0 ? ev[i].second : -ev[i].second) - 1), ev[i].second > 0);
      uint32_t s = current_set();
      if (t->v6_.empty() || t->v6_.back().set != s) t->v6_.push_back({at, s});
    }
  }
  t->compute_hits();
  t->index_v4();
  return t;
}

namespace {
// A category goes unquoted into feature CSV cells, detection JSON strings and ';'-joined
// lists, and comes from free text (MISP `info`, CSV report titles): keep only what needs
// no escaping in any of them. , " \ and control bytes become ' ', bytes that are not
// UTF-8 '?'. (';' already separates categories: split on it first.)
std::string clean_category(const std::string& s) {
  std::string o;
  o.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    unsigned char c = static_cast<unsigned char>(s[i]);
    size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    bool ok = n > 0 && i + n <= s.size();
    for (size_t k = 1; ok && k < n; k++) ok = (static_cast<unsigned char>(s[i + k]) >> 6) == 2;
    if (!ok) {
      o += '?';
      i++;
    } else if (n == 1) {
      o += (c < 0x20 || c == 0x7f || c == ',' || c == '"' || c == '\\') ? ' ' : char(c);
      i++;
    } else {
      o.append(s, i, n);
      i += n;
    }
  }
  return std::string(trim(o));
}
}  // namespace

void TiTable::index_v4() {
  v4_by16_.clear();
  if (v4_.size() < kIndexFrom) return;
  v4_by16_.assign(65537, uint32_t(v4_.size()));
  for (size_t i = v4_.size(); i-- > 0;) v4_by16_[v4_[i].lo >> 16] = uint32_t(i);
  for (size_t p = 65536; p-- > 0;) v4_by16_[p] = std::min(v4_by16_[p], v4_by16_[p + 1]);
}

void TiTable::compute_hits() {
  // Names and cleaned categories are ranked once per feed (a set lists a few of the
  // feeds, and there are 10^5 sets): a set's distinct names and categories are then small
  // integer sorts, and rank order is the strings' order.
  std::map<std::string, uint32_t> name_rank, cat_rank;
  std::vector<std::vector<std::string>> feed_cats(feeds_.size());
  for (size_t f = 0; f < feeds_.size(); f++) {
    name_rank[feeds_[f].name] = 0;
    const std::string& cs = feeds_[f].category;
    for (size_t a = 0, b; a < cs.size(); a = b + 1) {
      b = std::min(cs.find(';', a), cs.size());
      std::string c = clean_category(cs.substr(a, b - a));
      if (c.empty()) continue;
      cat_rank[c] = 0;
      feed_cats[f].push_back(std::move(c));
    }
  }
  std::vector<const std::string*> cat_name;
  uint32_t k = 0;
  for (auto& kv : name_rank) kv.second = k++;
  k = 0;
  for (auto& kv : cat_rank) {
    kv.second = k++;
    cat_name.push_back(&kv.first);
  }
  std::vector<uint32_t> feed_name(feeds_.size());
  std::vector<std::vector<uint32_t>> feed_cat(feeds_.size());
  for (size_t f = 0; f < feeds_.size(); f++) {
    feed_name[f] = name_rank[feeds_[f].name];
    for (auto& c : feed_cats[f]) feed_cat[f].push_back(cat_rank[c]);
  }
  set_hits_.clear();
  set_hits_.reserve(sets_.size());
  std::vector<uint32_t> names, cats;
  for (auto& s : sets_) {
    TiHit h;
    names.clear();
    cats.clear();
    for (uint32_t f : s) {
      const TiFeed& fd = feeds_[f];
      names.push_back(feed_name[f]);
      cats.insert(cats.end(), feed_cat[f].begin(), feed_cat[f].end());
      h.max_weight = std::max(h.max_weight, fd.weight);
      if (fd.date_days) {
        h.first_days = h.first_days ? std::min(h.first_days, fd.date_days) : fd.date_days;
        h.last_days = std::max(h.last_days, fd.date_days);
      }
    }
    std::sort(names.begin(), names.end());
    h.feeds = uint32_t(std::unique(names.begin(), names.end()) - names.begin());
    std::sort(cats.begin(), cats.end());
    cats.erase(std::unique(cats.begin(), cats.end()), cats.end());
    for (uint32_t c : cats) {
      if (!h.categories.empty()) h.categories += ';';
      h.categories += *cat_name[c];
    }
    set_hits_.push_back(std::move(h));
  }
}

int TiTable::set_of(const uint8_t* a, uint8_t ver) const {
  uint32_t set = UINT32_MAX;
  if (ver == 4) {
    uint32_t x = uint32_t(a[0]) << 24 | uint32_t(a[1]) << 16 | uint32_t(a[2]) << 8 | a[3];
    // The interval holding x is the last starting at or before x: in x's /16, or the last
    // one before that /16.
    auto lo = v4_.begin(), hi = v4_.end();
    if (!v4_by16_.empty()) lo = v4_.begin() + v4_by16_[x >> 16], hi = v4_.begin() + v4_by16_[(x >> 16) + 1];
    auto it = std::upper_bound(lo, hi, x, [](uint32_t v, const Iv4& iv) { return v < iv.lo; });
    if (it != v4_.begin()) set = std::prev(it)->set;
  } else {
    unsigned __int128 x = load128(a);
    auto it = std::upper_bound(v6_.begin(), v6_.end(), x, [](unsigned __int128 v, const Iv6& iv) { return v < iv.lo; });
    if (it != v6_.begin()) set = std::prev(it)->set;
  }
  return set == UINT32_MAX ? -1 : int(set);
}

bool TiTable::lookup(const uint8_t* a, uint8_t ver, TiHit& out) const {
  int set = set_of(a, ver);
  if (set < 0) return false;
  out = set_hits_[size_t(set)];
  return true;
}

const std::vector<uint32_t>& TiTable::listing(const uint8_t* a, uint8_t ver) const {
  static const std::vector<uint32_t> none;
  int set = set_of(a, ver);
  return set < 0 ? none : sets_[size_t(set)];
}

std::vector<std::pair<uint32_t, uint16_t>> TiTable::listed_ports(const uint8_t* a, uint8_t ver) const {
  PortEntry key{ver == 4 ? uint32_t(a[0]) << 24 | uint32_t(a[1]) << 16 | uint32_t(a[2]) << 8 | a[3] : load128(a),
                ver, 0, 0};
  std::vector<std::pair<uint32_t, uint16_t>> out;
  for (auto it = std::lower_bound(ports_.begin(), ports_.end(), key);
       it != ports_.end() && it->ver == ver && it->addr == key.addr; ++it)
    out.push_back({it->feed, it->port});
  return out;
}

size_t TiTable::memory_bytes() const {
  size_t n = v4_.size() * sizeof(Iv4) + v4_by16_.size() * 4 + v6_.size() * sizeof(Iv6) + set_hits_.size() * sizeof(TiHit) +
             ports_.size() * sizeof(PortEntry);
  for (auto& s : sets_) n += s.size() * sizeof(uint32_t);
  return n;
}

}  // namespace ls
