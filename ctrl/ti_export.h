// Threat-intel export: server endpoints that detection apps flagged become indicators,
// written as CSV, JSON, a STIX 2.1 bundle and a MISP feed directory. Privacy by
// construction: only server-entity detections are exported (never a client), no client
// address is ever written, and client-derived counts leave only when at least k distinct
// clients contributed, bucketed (docs/ti.md).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "detect/apps.h"
#include "features/pseudonym.h"

namespace ls {

// "2024-01-23T16:53:44.000Z" for a time in ns since the epoch.
std::string iso(uint64_t ns);
const char* proto_name(uint8_t proto);  // tcp, udp, icmp, ipv6-icmp, ip
// Globally routable: private, loopback, link-local, CGN, multicast and reserved addresses
// are someone's inside, never an indicator.
bool is_public(const uint8_t* addr, uint8_t ip_ver);

struct TiExportConfig {
  std::string dir;
  uint32_t k = 5;                 // minimum distinct clients before client counts leave
  std::string producer = "linesight sensor";
  std::string pseudonym_secret;   // empty: no pseudonyms (the default)
  uint64_t pseudonym_rotate_ns = 86'400'000'000'000ull;
};

class TiExporter {
 public:
  explicit TiExporter(TiExportConfig c);
  void add(const Detection& d);
  // Writes every format into cfg.dir (created); returns the files written. Throws with the
  // path on a failed write.
  std::vector<std::string> write(uint64_t now_ns) const;
  size_t indicators() const { return ind_.size(); }
  uint64_t not_public() const { return not_public_; }  // detections of private addresses, not exported

  // Below k: "" (withheld); else 1-4, 5-9, 10-49, 50-99, 100-499, 500+.
  std::string bucket(double clients) const;
  // features/reliability.h over this indicator's evidence at `now_ns`: each listing feed
  // (weight capped at 1, age since its latest listing; undated: fresh), our detections
  // (max score, age since the last), each partner report (their score, age since their
  // last sighting).
  double reliability(uint64_t now_ns, const std::string& ip) const;

 private:
  struct Indicator {
    std::string ip;
    uint8_t ver = 4;
    std::set<uint32_t> ports;  // port << 8 | protocol
    std::set<std::string> apps, threats;
    uint64_t first_ns = UINT64_MAX, last_ns = 0, detections = 0, srv_bytes = 0;
    double score = 0, clients = 0, periodicity = 0, period_s = 0;
    uint32_t feeds = 0;
    double feed_weight = 0;
    int64_t listed_days = 0;  // latest dated listing (0: undated)
    uint32_t partners = 0;    // partners reporting it, their best score and latest sighting
    double partner_score = 0;
    uint64_t partner_last_ns = 0;
    std::map<uint64_t, std::set<std::string>> pseudonyms;  // period → client pseudonyms
  };
  static constexpr size_t kMaxPseudonyms = 64;  // per indicator and period
  TiExportConfig cfg_;
  std::unique_ptr<Pseudonymizer> pseud_;
  std::map<std::string, Indicator> ind_;
  uint64_t not_public_ = 0;
  uint64_t latest_ns_ = 0;  // the latest traffic time seen: reliability is judged then
};

}  // namespace ls
