#include "ctrl/ti_export.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "dataplane/text.h"
#include "features/reliability.h"

namespace ls {

namespace {

using Json = nlohmann::ordered_json;

// A stable UUID (version 4 layout) derived from a name: the same indicator gets the same
// id in every export, so partners can update rather than duplicate.
std::string uuid_of(const std::string& name) {
  XXH128_hash_t h = XXH3_128bits(name.data(), name.size());
  uint8_t b[16];
  for (int i = 0; i < 8; i++) {
    b[i] = uint8_t(h.high64 >> (56 - 8 * i));
    b[8 + i] = uint8_t(h.low64 >> (56 - 8 * i));
  }
  b[6] = uint8_t((b[6] & 0x0F) | 0x40);
  b[8] = uint8_t((b[8] & 0x3F) | 0x80);
  char s[40];
  std::snprintf(s, sizeof s, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
                b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
  return s;
}

void write_file(const std::string& path, const std::string& text, std::vector<std::string>& written) {
  std::ofstream f(path, std::ios::binary);
  f << text;
  f.close();
  if (!f) throw std::runtime_error(path + ": write failed: " + std::strerror(errno));
  written.push_back(path);
}

std::string join(const std::set<std::string>& s, const char* sep) {
  std::string o;
  for (auto& x : s) o += (o.empty() ? "" : sep) + x;
  return o;
}

}  // namespace

std::string iso(uint64_t ns) {
  time_t s = time_t(ns / 1'000'000'000ull);
  tm t{};
  gmtime_r(&s, &t);
  char b[96];
  std::snprintf(b, sizeof b, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", t.tm_year + 1900, t.tm_mon + 1, t.tm_mday,
                t.tm_hour, t.tm_min, t.tm_sec, unsigned(ns / 1'000'000ull % 1000));
  return b;
}

const char* proto_name(uint8_t p) { return p == 6 ? "tcp" : p == 17 ? "udp" : p == 1 ? "icmp" : p == 58 ? "ipv6-icmp" : "ip"; }

// Only globally routable addresses are indicators: private, loopback, link-local,
// shared (CGN), multicast and reserved ones are someone's inside, not threat intel.
bool is_public(const uint8_t* a, uint8_t ver) {
  if (ver == 4) {
    if (a[0] == 0 || a[0] == 10 || a[0] == 127 || a[0] >= 224) return false;
    if (a[0] == 169 && a[1] == 254) return false;
    if (a[0] == 172 && (a[1] & 0xF0) == 16) return false;
    if (a[0] == 192 && a[1] == 168) return false;
    if (a[0] == 100 && (a[1] & 0xC0) == 64) return false;
    return true;
  }
  static const uint8_t zero[16] = {};
  if (std::memcmp(a, zero, 15) == 0) return false;            // :: and ::1
  if ((a[0] & 0xFE) == 0xFC || a[0] == 0xFF) return false;    // unique local, multicast
  if (a[0] == 0xFE && (a[1] & 0xC0) == 0x80) return false;    // link-local
  if (std::memcmp(a, zero, 10) == 0 && a[10] == 0xFF && a[11] == 0xFF) return is_public(a + 12, 4);  // v4-mapped
  return true;
}

TiExporter::TiExporter(TiExportConfig c) : cfg_(std::move(c)) {
  if (!cfg_.pseudonym_secret.empty())
    pseud_ = std::make_unique<Pseudonymizer>(cfg_.pseudonym_secret, cfg_.pseudonym_rotate_ns);
}

double TiExporter::reliability(uint64_t now_ns, const std::string& ip) const {
  const Indicator& x = ind_.at(ip);
  double today = double(now_ns) / 86'400e9;
  std::vector<Evidence> feeds, own{{x.score, std::max(0.0, today - double(x.last_ns) / 86'400e9)}};
  double listed_age = x.listed_days ? std::max(0.0, today - double(x.listed_days)) : 0;
  // ipsum-style weights count lists: any weight ≥ 1 is a full-strength listing.
  for (uint32_t i = 0; i < x.feeds; i++) feeds.push_back({std::min(1.0, x.feed_weight > 0 ? x.feed_weight : 1.0), listed_age});
  std::vector<Evidence> partners;
  double partner_age = x.partner_last_ns ? std::max(0.0, today - double(x.partner_last_ns) / 86'400e9) : 0;
  for (uint32_t i = 0; i < x.partners; i++) partners.push_back({x.partner_score, partner_age});
  return ls::reliability(ReliabilityModel{}, feeds, own, partners);
}

std::string TiExporter::bucket(double clients) const {
  double c = std::round(clients);
  if (c < double(std::max<uint32_t>(cfg_.k, 1))) return "";
  const double edges[] = {1, 5, 10, 50, 100, 500};
  const char* names[] = {"1-4", "5-9", "10-49", "50-99", "100-499", "500+"};
  std::string b;
  for (int i = 0; i < 6; i++)
    if (c >= edges[i]) b = names[i];
  return b;
}

void TiExporter::add(const Detection& d) {
  if (d.entity != Entity::SERVER) return;  // clients are customers: never exported
  if (!is_public(d.server, d.ip_ver)) {
    not_public_++;
    return;
  }
  std::string ip = format_ip(d.server, d.ip_ver);
  Indicator& x = ind_[ip];
  x.ip = ip;
  x.ver = d.ip_ver;
  if (x.ports.size() < 16) x.ports.insert(uint32_t(d.dport) << 8 | d.proto);
  x.apps.insert(d.app);
  for (size_t a = 0, b; a < d.ti_categories.size(); a = b + 1) {
    b = d.ti_categories.find(';', a);
    if (b == std::string::npos) b = d.ti_categories.size();
    if (b > a && x.threats.size() < 8) x.threats.insert(d.ti_categories.substr(a, b - a));
  }
  for (size_t a = 0, b; a < d.sig_names.size(); a = b + 1) {
    b = d.sig_names.find(';', a);
    if (b == std::string::npos) b = d.sig_names.size();
    if (b > a && x.threats.size() < 8) x.threats.insert(d.sig_names.substr(a, b - a));
  }
  x.first_ns = std::min(x.first_ns, d.first_ns);
  x.last_ns = std::max(x.last_ns, d.last_ns);
  latest_ns_ = std::max(latest_ns_, d.last_ns);
  x.detections++;
  if (pseud_ && d.client) {  // the address is hashed here and never kept
    auto& ps = x.pseudonyms[pseud_->period(d.first_ns)];
    if (ps.size() < kMaxPseudonyms) ps.insert(pseud_->of(d.client, d.ip_ver, d.first_ns));
  }
  x.score = std::max(x.score, d.score);
  x.clients = std::max(x.clients, d.srv_clients);
  x.periodicity = std::max(x.periodicity, d.periodicity);
  if (d.periodicity >= x.periodicity) x.period_s = d.period_s;
  x.srv_bytes = std::max(x.srv_bytes, d.srv_bytes);
  x.feeds = std::max(x.feeds, d.ti_feeds);
  x.feed_weight = std::max(x.feed_weight, d.ti_max_weight);
  x.listed_days = std::max(x.listed_days, d.ti_last_days);
  if (d.partner) {
    x.partners = std::max(x.partners, d.partner->reports);
    x.partner_score = std::max(x.partner_score, d.partner->score);
    x.partner_last_ns = std::max(x.partner_last_ns, d.partner->last_ns ? d.partner->last_ns : d.partner->first_ns);
  }
}

std::vector<std::string> TiExporter::write(uint64_t now_ns) const {
  std::string misp = cfg_.dir + "/misp";
  std::error_code ec;
  std::filesystem::create_directories(misp, ec);
  if (ec) throw std::runtime_error(misp + ": " + ec.message());
  std::vector<std::string> written;
  std::string now = iso(now_ns);
  std::string producer_id = "identity--" + uuid_of("producer:" + cfg_.producer);

  // CSV and JSON
  std::string csv = "indicator,ip_version,ports,first_seen,last_seen,apps,score,reliability,threats,"
                    "clients_bucket,periodicity,period_s,bytes,detections";
  csv += pseud_ ? ",client_pseudonyms\n" : "\n";
  Json arr = Json::array();
  Json stix = Json::array();
  stix.push_back({{"type", "identity"}, {"spec_version", "2.1"}, {"id", producer_id}, {"created", now},
                  {"modified", now}, {"name", cfg_.producer}, {"identity_class", "organization"}});
  Json attrs = Json::array();
  std::string event_uuid = uuid_of("misp-event:" + cfg_.producer + ":" + now.substr(0, 10));
  for (auto& [ip, x] : ind_) {
    std::string ports;
    Json jports = Json::array();
    for (uint32_t pp : x.ports) {
      std::string p = std::to_string(pp >> 8) + "/" + proto_name(uint8_t(pp));
      ports += (ports.empty() ? "" : ";") + p;
      jports.push_back(p);
    }
    // As of the traffic's clock (a replay of an old capture is judged at its own time).
    double rel = reliability(latest_ns_, ip);
    std::string cb = bucket(x.clients);
    std::string line;
    line += ip + "," + std::to_string(x.ver) + "," + ports + "," + iso(x.first_ns) + "," + iso(x.last_ns) + "," +
            join(x.apps, ";") + ",";
    append_general6(line, x.score);
    line += ',';
    append_general6(line, rel);
    line += "," + join(x.threats, ";") + "," + cb + ",";
    append_general6(line, x.periodicity);
    line += ',';
    append_general6(line, x.period_s);
    line += "," + std::to_string(x.srv_bytes) + "," + std::to_string(x.detections);
    // Pseudonyms per rotation period: partners compare them within the same period only.
    Json jpseud = Json::array();
    if (pseud_) {
      line += ',';
      bool first = true;
      for (auto& [period, ids] : x.pseudonyms) {
        std::string start = iso(period * pseud_->rotate_ns());
        jpseud.push_back({{"period_start", start}, {"period_s", pseud_->rotate_ns() / 1'000'000'000ull}, {"ids", ids}});
        for (auto& id : ids) {
          if (!first) line += ';';
          first = false;
          line += start + "/" + id;
        }
      }
    }
    line += '\n';
    csv += line;
    Json j{{"indicator", ip}, {"ip_version", x.ver}, {"ports", jports}, {"first_seen", iso(x.first_ns)},
           {"last_seen", iso(x.last_ns)}, {"apps", x.apps}, {"score", x.score}, {"reliability", rel},
           {"threats", x.threats}, {"periodicity", x.periodicity}, {"period_s", x.period_s},
           {"bytes", x.srv_bytes}, {"detections", x.detections}};
    if (!cb.empty()) j["clients_bucket"] = cb;
    if (pseud_) j["client_pseudonyms"] = jpseud;
    arr.push_back(j);

    // STIX 2.1: the address (SCO), what we observed, the indicator, and their link.
    std::string sco_type = x.ver == 4 ? "ipv4-addr" : "ipv6-addr";
    std::string sco_id = sco_type + "--" + uuid_of("sco:" + ip);
    std::string ind_id = "indicator--" + uuid_of("indicator:" + cfg_.producer + ":" + ip);
    std::string obs_id = "observed-data--" + uuid_of("observed:" + cfg_.producer + ":" + ip + ":" + now);
    stix.push_back({{"type", sco_type}, {"spec_version", "2.1"}, {"id", sco_id}, {"value", ip}});
    std::string desc = "flagged by " + join(x.apps, ", ") + " on " + ports;
    if (x.periodicity > 0) desc += "; contact periodicity " + std::to_string(x.periodicity).substr(0, 4);
    if (!cb.empty()) desc += "; distinct clients " + cb;
    Json ind{{"type", "indicator"}, {"spec_version", "2.1"}, {"id", ind_id}, {"created_by_ref", producer_id},
             {"created", now}, {"modified", now}, {"name", "C&C-like server " + ip},
             {"description", desc}, {"indicator_types", {"malicious-activity"}},
             {"pattern", "[" + sco_type + ":value = '" + ip + "']"}, {"pattern_type", "stix"},
             {"valid_from", iso(x.first_ns)}, {"confidence", int(std::lround(rel * 100))},
             {"labels", x.apps}};
    for (auto& t : x.threats) ind["labels"].push_back(t);
    stix.push_back(ind);
    Json obs{{"type", "observed-data"}, {"spec_version", "2.1"}, {"id", obs_id}, {"created_by_ref", producer_id},
             {"created", now}, {"modified", now}, {"first_observed", iso(x.first_ns)},
             {"last_observed", iso(std::max(x.last_ns, x.first_ns))},
             {"number_observed", std::max<uint64_t>(1, x.detections)}, {"object_refs", {sco_id}}};
    if (pseud_) obs["x_linesight_client_pseudonyms"] = jpseud;  // a STIX custom property
    stix.push_back(obs);
    stix.push_back({{"type", "relationship"}, {"spec_version", "2.1"},
                    {"id", "relationship--" + uuid_of("rel:" + ind_id + obs_id)}, {"created_by_ref", producer_id},
                    {"created", now}, {"modified", now}, {"relationship_type", "based-on"},
                    {"source_ref", ind_id}, {"target_ref", obs_id}});

    // MISP: one attribute per (address, port)
    for (uint32_t pp : x.ports) {
      std::string value = ip + "|" + std::to_string(pp >> 8);
      attrs.push_back({{"uuid", uuid_of("misp-attr:" + event_uuid + value)}, {"type", "ip-dst|port"},
                       {"category", "Network activity"}, {"to_ids", true}, {"value", value},
                       {"timestamp", std::to_string(x.last_ns / 1'000'000'000ull)},
                       {"comment", desc + "; reliability " + std::to_string(rel).substr(0, 4)}});
    }
  }
  write_file(cfg_.dir + "/indicators.csv", csv, written);
  write_file(cfg_.dir + "/indicators.json", arr.dump(1) + "\n", written);
  Json bundle{{"type", "bundle"}, {"id", "bundle--" + uuid_of("bundle:" + cfg_.producer + ":" + now)}, {"objects", stix}};
  write_file(cfg_.dir + "/stix-bundle.json", bundle.dump(1) + "\n", written);

  std::string date = now.substr(0, 10);
  std::string ts = std::to_string(now_ns / 1'000'000'000ull);
  Json org{{"name", cfg_.producer}, {"uuid", uuid_of("org:" + cfg_.producer)}};
  Json event{{"Event",
              {{"uuid", event_uuid}, {"info", "linesight detections " + date}, {"date", date}, {"timestamp", ts},
               {"publish_timestamp", ts}, {"published", true}, {"analysis", "2"}, {"threat_level_id", "2"},
               {"distribution", "3"}, {"Orgc", org}, {"Tag", Json::array({{{"name", "tlp:amber"}}})},
               {"Attribute", attrs}}}};
  write_file(misp + "/" + event_uuid + ".json", event.dump(1) + "\n", written);
  Json manifest{{event_uuid,
                 {{"info", "linesight detections " + date}, {"date", date}, {"timestamp", ts},
                  {"analysis", "2"}, {"threat_level_id", "2"}, {"Orgc", org},
                  {"Tag", Json::array({{{"name", "tlp:amber"}}})}}}};
  // manifest.json + one event file is what a MISP feed subscription reads (hashes.csv is
  // an optional cache MISP rebuilds itself).
  write_file(misp + "/manifest.json", manifest.dump(1) + "\n", written);
  return written;
}

}  // namespace ls
