// Payload signatures with Hyperscan. A rule set is parsed and compiled on the control
// core (RuleSet::load_*), then shared read-only; each worker matches with its own scratch
// (SignatureMatcher). Rules match the first payload bytes of each direction kept by the
// flow table, in block mode. Rule file format, one rule per line:
//
//   [TRANSPORTS] [DIRECTION] ID:/PATTERN/FLAGS   name words...        # comment
//
// TRANSPORTS (optional, as the protocol of a Suricata rule header): a comma list of tcp,
// udp, icmp (ICMP and ICMPv6), other (any other IP protocol) or ip (all, the default).
// DIRECTION (optional, as Suricata's flow:to_server): to_server (what the flow's
// initiator sent) or to_client; both by default. A rule only runs over the payloads of
// its transports and direction: one Hyperscan database per transport, so a DNS rule
// costs nothing on TCP payloads; hits outside a rule's direction are dropped (a database
// per direction as well cut scanning by 3 % and tripled the compile time).
// FLAGS: i caseless, s dot-all, m multi-line, 8 UTF-8, W Unicode classes. Every rule is
// single-match (a hit is a feature bit); at most 64 rules, rule i is bit i. Names cannot
// contain '/'.
#pragma once
#include <hs/hs.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "dataplane/record.h"

namespace ls {

struct RuleError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// Transport classes a rule can be scoped to (Rule::scope is a mask of 1 << class).
enum Transport : uint8_t { kTcp, kUdp, kIcmp, kOtherIp, kTransports };
constexpr uint8_t kAllTransports = (1u << kTransports) - 1;

inline Transport transport_of(uint8_t ip_proto) {
  switch (ip_proto) {
    case 6: return kTcp;
    case 17: return kUdp;
    case 1:
    case 58: return kIcmp;
    default: return kOtherIp;
  }
}

// Which side's payload: what the flow's initiator sent, or what it received.
enum Direction : uint8_t { kToServer, kToClient };
constexpr uint8_t kBothDirections = 3;

struct Rule {
  uint32_t id;
  std::string pattern, name;
  unsigned flags;
  size_t line;
  uint8_t scope = kAllTransports;  // transports it runs over
  uint8_t dirs = kBothDirections;  // bit 1 << Direction
};

class RuleSet {
 public:
  static constexpr size_t kMaxRules = 64;
  // Throw RuleError "FILE:LINE: reason" (Hyperscan's own message for bad patterns).
  // `cache_dir` (optional, as Suricata's sgh-mpm-caching): compiled databases are kept
  // there, keyed by the rules' text, Hyperscan's version and this CPU, so a later load of
  // the same rules skips the compile (~0.1 s for the default set). A missing, stale or
  // damaged cache entry means a compile, never an error; cache_status() says which.
  static std::shared_ptr<const RuleSet> load_file(const std::string& path, const std::string& cache_dir = {});
  static std::shared_ptr<const RuleSet> load_string(const std::string& text, const std::string& name,
                                                    const std::string& cache_dir = {});
  // The rules of a file's text, checked for everything but the patterns themselves
  // (Hyperscan judges those when load_* compiles them). Throws RuleError as above.
  static std::vector<Rule> parse(const std::string& text, const std::string& name);
  ~RuleSet();
  const std::vector<Rule>& rules() const { return rules_; }
  // The database for one transport's payloads; null when no rule runs over it.
  const hs_database_t* db(Transport t) const { return by_transport_[t]; }
  // The rules (bit i: rule i) that run over transport t's payloads in direction d.
  uint64_t lane_mask(Transport t, Direction d) const { return lane_mask_[t][d]; }
  hs_scratch_t* clone_scratch() const;  // one per worker; caller frees with hs_free_scratch
  const std::string& source() const { return source_; }
  // "compiled" (no cache), "cache hit", "compiled, cached as FILE", or, when the cache
  // could not serve: "compiled; cache FILE not written: REASON" or
  // "compiled; cache FILE unusable: REASON; rewritten".
  const std::string& cache_status() const { return cache_status_; }
  // Unique per loaded set for the process's life (an address can be reused after a
  // reload frees the old set; this cannot): what caches of per-set facts key on.
  uint64_t serial() const { return serial_; }

 private:
  RuleSet();
  uint64_t serial_;
  std::vector<Rule> rules_;
  std::vector<hs_database_t*> dbs_;  // distinct rule subsets, one database each
  const hs_database_t* by_transport_[kTransports] = {};
  uint64_t lane_mask_[kTransports][2] = {};
  void set_transports(const int (&of)[kTransports]);  // of[t]: index in dbs_ of t's database, or -1
  hs_scratch_t* proto_ = nullptr;
  std::string source_, cache_status_ = "compiled";
  void compile(const std::string& name);
  bool load_cached(const std::string& file);  // dbs_ from the file; false (status says why) if unusable
  void save_cached(const std::string& dir, const std::string& file);
};

class SignatureMatcher {
 public:
  explicit SignatureMatcher(std::shared_ptr<const RuleSet> rs);
  ~SignatureMatcher();
  SignatureMatcher(const SignatureMatcher&) = delete;
  // Bit i set when rule i matched either direction's payload prefix.
  uint64_t match(const FlowRecord& r);
  const RuleSet& rules() const { return *rs_; }
  uint64_t scan_errors = 0;

 private:
  std::shared_ptr<const RuleSet> rs_;
  hs_scratch_t* scratch_ = nullptr;
};

// "1001;1002" for the bits set in `mask` (rule ids, in rule order).
std::string hit_ids(const RuleSet& rs, uint64_t mask);

}  // namespace ls
