// Threat-intelligence lookup table. Feeds are loaded on the control core into one
// immutable table shared read-only by every feature stage: all prefixes (IPv4 and IPv6)
// become disjoint address intervals, each carrying the set of feed instances that cover
// it, so one binary search returns every feed listing an address (not just the longest
// prefix). A feed instance is one feed file at one date: dated snapshots of the same feed
// give first/last-listed dates.
//
// Formats: firehol .ipset / .netset (header: name, category, source file date), plain
// lists (one IP or CIDR per line, optional second column = weight, as ipsum's count), and
// CSV with a header naming an `ip` column (optional: category|family|report_title|threats,
// date|report_date|first_seen, last_seen, weight|confidence|reliability, port|ports),
// STIX 2.1 bundles (indicators with address patterns, `network-traffic:dst_port`; labels →
// category, valid_from → date, confidence → weight), MISP event files / feed directories
// (ip-dst, ip-src, ip-*|port attributes) and linesight's own indicators.json export (a
// partner's sensor: indicator, ports, first/last seen, reliability, threats).
#pragma once
#include <cstdint>
#include <cstdio>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "dataplane/mem.h"

namespace ls {

struct TiError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct TiFeed {
  std::string name, category, path;
  int64_t date_days = 0;  // days since the epoch of the feed's content (0: unknown)
  double weight = 1.0;    // prior reliability
  uint64_t entries = 0, skipped = 0;
};

struct TiHit {
  uint32_t feeds = 0;           // distinct feed names listing the address
  double max_weight = 0;
  int64_t first_days = 0, last_days = 0;  // earliest / latest dated listing (0: undated)
  std::string categories;       // distinct, ';'-separated
};

class TiTable {
 public:
  // Files or directories (searched recursively for .ipset .netset .txt .csv). Throws
  // TiError naming the file for unreadable input; malformed lines are counted per feed.
  // `weights`: the operator's prior per feed name, replacing what the file says (ipsum's
  // counts, a confidence column, 1.0 by default).
  // A compiled table (save(), `linesight ti compile`) given as the only path loads in
  // milliseconds instead of re-parsing the feeds; `weights` still apply.
  static std::shared_ptr<const TiTable> load(const std::vector<std::string>& paths,
                                             const std::map<std::string, double>& weights = {});
  // Writes the table in linesight's compiled format (this machine's byte order), with
  // the size and mtime of every source file so a later load can say which changed.
  // Throws TiError naming the file.
  void save(const std::string& path) const;
  static bool is_compiled(const std::string& path);
  // The compiled table from an open file whose length was `size` when opened: bytes that
  // are gone by the time they are read (the file shrank) make it throw, like any damage.
  static std::shared_ptr<const TiTable> read_compiled(std::FILE* f, uint64_t size, const std::string& path,
                                                      const std::map<std::string, double>& weights = {});
  bool lookup(const uint8_t* addr, uint8_t ip_ver, TiHit& out) const;
  // Every feed instance (index into feeds()) listing the address; empty if none.
  const std::vector<uint32_t>& listing(const uint8_t* addr, uint8_t ip_ver) const;
  // Ports a feed names for exactly this address (CSV port column, MISP ip-dst|port, STIX
  // dst_port): (feed instance, port) pairs. Not used on the hot path.
  std::vector<std::pair<uint32_t, uint16_t>> listed_ports(const uint8_t* addr, uint8_t ip_ver) const;
  const std::vector<TiFeed>& feeds() const { return feeds_; }
  size_t intervals() const { return v4_.size() + v6_.size(); }
  size_t memory_bytes() const;
  bool indexed_v4() const { return !v4_by16_.empty(); }  // large tables: see v4_by16_
  // Files found in directories that are not feeds (e.g. a CSV without an ip column);
  // for a compiled table, also the source files changed since it was compiled.
  const std::vector<std::string>& warnings() const { return warnings_; }
  struct Source {
    std::string path;
    uint64_t size;
    int64_t mtime_ns;
  };
  const std::vector<Source>& sources() const { return sources_; }  // the files read

 private:
  static std::shared_ptr<const TiTable> load_compiled(const std::string& path,
                                                      const std::map<std::string, double>& weights);
  void compute_hits();  // set_hits_ from sets_ and feeds_
  void index_v4();      // v4_by16_ from v4_
  static Source stat_source(const std::string& path);  // size 0, mtime 0: missing
  std::vector<std::string> warnings_;
  std::vector<Source> sources_;
  struct Iv4 {
    uint32_t lo;
    uint32_t set;  // index into sets_, UINT32_MAX = none
  };
  struct Iv6 {
    unsigned __int128 lo;
    uint32_t set;
  };
  std::vector<TiFeed> feeds_;
  std::vector<std::vector<uint32_t>> sets_;  // feed-instance sets, deduplicated
  std::vector<TiHit> set_hits_;              // precomputed answer per set
  // The big arrays (a full feed directory: 1.2M v4 intervals, 300k port entries) on huge
  // pages: a load faults in 2 MB at a time.
  template <class T>
  using Big = std::vector<T, HugeAlloc<T>>;
  Big<Iv4> v4_;
  // v4_by16_[p]: the first interval starting at or after p << 16, for p = 0 .. 65536: a
  // lookup searches one /16's intervals (a few) instead of all of them (1.2M: 20 steps,
  // most of them cache misses). Empty below kIndexFrom intervals: their search stays in
  // cache, and a 256 KB index would cost more to build than it saves (small partner or
  // test feeds, reloaded often).
  static constexpr size_t kIndexFrom = 1024;
  std::vector<uint32_t> v4_by16_;
  Big<Iv6> v6_;
  struct PortEntry {
    unsigned __int128 addr;  // IPv4 in the low 32 bits
    uint8_t ver;
    uint16_t port;
    uint32_t feed;
    bool operator<(const PortEntry& o) const {
      return ver != o.ver ? ver < o.ver : addr != o.addr ? addr < o.addr : port < o.port;
    }
  };
  Big<PortEntry> ports_;  // sorted
  int set_of(const uint8_t* addr, uint8_t ip_ver) const;  // -1: none
  friend struct TiBuilder;
};

}  // namespace ls
