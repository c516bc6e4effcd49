// Partner enriched features: per-server records another operator shared — their
// linesight TI export (indicators.json or indicators.csv: score, ports of interest,
// first/last seen, activity counts, threat names) — loaded on the control core into one
// immutable table that feature stages read without locks (swap the shared_ptr to reload).
// Several files = several partners; an address several partners report is combined.
#pragma once
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace ls {

struct PartnerError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct PartnerHit {
  uint32_t reports = 0;         // partners (files) reporting the server
  double score = 0;             // their highest detection score
  uint64_t first_ns = 0, last_ns = 0;  // earliest first_seen, latest last_seen
  uint64_t detections = 0;      // their detections summed (activity)
  uint16_t ports[16] = {};      // ports of interest, ascending, 0-terminated
  std::string threats;          // ';'-separated
  bool has_port(uint16_t p) const {
    for (uint16_t x : ports) {
      if (!x) break;
      if (x == p) return true;
    }
    return false;
  }
};

// "2024-01-23T16:53:44.123Z" → ns since the epoch; 0 if unparsable.
uint64_t parse_iso8601_ns(const std::string& s);

struct PartnerFile {
  std::string path;
  uint64_t records = 0, skipped = 0;
};

// Days from a partner's time to the flow's (negative: the partner saw it only later),
// rounded to 0.01.
inline double partner_days(uint64_t flow_ns, uint64_t partner_ns) {
  double d = (double(flow_ns) - double(partner_ns)) / 86'400e9;
  return double(int64_t(d * 100 + (d < 0 ? -0.5 : 0.5))) / 100;
}

class PartnerTable {
 public:
  // Throws PartnerError naming the file for unreadable or unrecognised input; malformed
  // records are counted per file.
  static std::shared_ptr<const PartnerTable> load(const std::vector<std::string>& paths);
  const PartnerHit* lookup(const uint8_t* addr, uint8_t ip_ver) const;  // null: not reported
  const std::vector<PartnerFile>& files() const { return files_; }
  size_t size() const { return keys_.size(); }

 private:
  struct Key {
    unsigned __int128 addr;  // IPv4 in the low 32 bits
    uint8_t ver;
    bool operator<(const Key& o) const { return ver != o.ver ? ver < o.ver : addr < o.addr; }
    bool operator==(const Key& o) const { return ver == o.ver && addr == o.addr; }
  };
  static Key key_of(const uint8_t* addr, uint8_t ver);
  std::vector<Key> keys_;         // sorted
  std::vector<PartnerHit> hits_;  // parallel to keys_
  std::vector<PartnerFile> files_;
};

}  // namespace ls
