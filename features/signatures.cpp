#include "features/signatures.h"

#include "dataplane/text.h"

#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <atomic>
#include <cctype>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>
#include <thread>

namespace ls {

namespace {

// Cache file: magic, XXH3-64 of the body, the body's length, the body: the number of
// databases (one byte), then each serialized database after its 8-byte length.
constexpr char kCacheMagic[8] = {'L', 'S', 'H', 'S', 'D', 'B', '2', '\n'};
constexpr char kCacheMagicV1[8] = {'L', 'S', 'H', 'S', 'D', 'B', '1', '\n'};

// The rule subsets to compile, in a fixed order: for each transport, the mask of rules
// that run over it; transports with the same subset share one database. `of[t]` is the
// index of transport t's subset, or -1 when no rule runs over it.
struct Subsets {
  std::vector<uint64_t> masks;
  int of[kTransports];
};

Subsets subsets(const std::vector<Rule>& rules) {
  Subsets g;
  for (int t = 0; t < kTransports; t++) {
    uint64_t m = 0;
    for (size_t i = 0; i < rules.size(); i++)
      if (rules[i].scope & (1u << t)) m |= 1ull << i;
    g.of[t] = -1;
    if (!m) continue;
    for (size_t k = 0; k < g.masks.size() && g.of[t] < 0; k++)
      if (g.masks[k] == m) g.of[t] = int(k);
    if (g.of[t] < 0) {
      g.of[t] = int(g.masks.size());
      g.masks.push_back(m);
    }
  }
  return g;
}

// The cache key: what the compiled databases depend on — the rules' text, the Hyperscan
// build, and the CPU features it tunes for.
std::string cache_key(const std::string& text) {
  hs_platform_info_t pl{};
  hs_populate_platform(&pl);
  std::string k = text;
  k += '\0';
  k += hs_version();
  char b[64];
  std::snprintf(b, sizeof b, "|%u|%llu", pl.tune, static_cast<unsigned long long>(pl.cpu_features));
  k += b;
  XXH128_hash_t h = XXH3_128bits(k.data(), k.size());
  std::snprintf(b, sizeof b, "%016llx%016llx", static_cast<unsigned long long>(h.high64),
                static_cast<unsigned long long>(h.low64));
  return b;
}

}  // namespace

std::shared_ptr<const RuleSet> RuleSet::load_file(const std::string& path, const std::string& cache_dir) {
  std::ifstream f(path);
  if (!f) throw RuleError(path + ": cannot open rules file");
  std::stringstream ss;
  ss << f.rdbuf();
  return load_string(ss.str(), path, cache_dir);
}

bool RuleSet::load_cached(const std::string& file) {
  std::ifstream f(file, std::ios::binary);
  if (!f) return false;  // not cached yet: not worth a status
  std::string body((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  auto unusable = [&](const std::string& why) {
    for (auto* db : dbs_) hs_free_database(db);
    dbs_.clear();
    cache_status_ = "compiled; cache " + file + " unusable: " + why;
    return false;
  };
  if (body.size() >= 8 && std::memcmp(body.data(), kCacheMagicV1, 8) == 0)
    return unusable("written by an older linesight");
  uint64_t sum, len;
  if (body.size() < 24 || std::memcmp(body.data(), kCacheMagic, 8) != 0) return unusable("not a linesight rules cache");
  std::memcpy(&sum, body.data() + 8, 8);
  std::memcpy(&len, body.data() + 16, 8);
  if (len != body.size() - 24 || XXH3_64bits(body.data() + 24, len) != sum) return unusable("damaged");
  const Subsets g = subsets(rules_);
  size_t at = 24;
  if (len < 1 || uint8_t(body[at]) != g.masks.size()) return unusable("damaged");
  at++;
  for (size_t k = 0; k < g.masks.size(); k++) {
    uint64_t n;
    if (body.size() - at < 8) return unusable("damaged");
    std::memcpy(&n, body.data() + at, 8);
    at += 8;
    if (n > body.size() - at) return unusable("damaged");
    hs_database_t* db = nullptr;
    if (hs_deserialize_database(body.data() + at, n, &db) != HS_SUCCESS) return unusable("Hyperscan refused it");
    dbs_.push_back(db);
    at += n;
    if (hs_alloc_scratch(db, &proto_) != HS_SUCCESS) return unusable("Hyperscan refused it on this CPU");
  }
  set_transports(g.of);
  cache_status_ = "cache hit";
  return true;
}

void RuleSet::save_cached(const std::string& dir, const std::string& file) {
  std::string payload(1, char(dbs_.size()));
  for (auto* db : dbs_) {
    char* bytes = nullptr;
    size_t len = 0;
    if (hs_serialize_database(db, &bytes, &len) != HS_SUCCESS) {
      cache_status_ = "compiled; cache " + file + " not written: Hyperscan could not serialize";
      return;
    }
    uint64_t n = len;
    payload.append(reinterpret_cast<const char*>(&n), 8);
    payload.append(bytes, len);
    std::free(bytes);  // hs_serialize_database allocates with the misc allocator: malloc
  }
  std::string body(kCacheMagic, 8);
  uint64_t sum = XXH3_64bits(payload.data(), payload.size()), n = payload.size();
  body.append(reinterpret_cast<const char*>(&sum), 8);
  body.append(reinterpret_cast<const char*>(&n), 8);
  body += payload;
  // Written whole under a temporary name, then renamed: a concurrent load sees the old
  // state or the new file, never half of one.
  ::mkdir(dir.c_str(), 0755);
  std::string tmp = file + ".tmp." + std::to_string(::getpid());
  std::ofstream o(tmp, std::ios::binary);
  o.write(body.data(), std::streamsize(body.size()));
  o.close();
  if (!o || std::rename(tmp.c_str(), file.c_str()) != 0) {
    cache_status_ = "compiled; cache " + file + " not written: " + std::strerror(errno);
    std::remove(tmp.c_str());
    return;
  }
  bool was_bad = cache_status_.rfind("compiled;", 0) == 0;  // load_cached found it unusable
  cache_status_ = was_bad ? cache_status_ + "; rewritten" : "compiled, cached as " + file;
}

std::vector<Rule> RuleSet::parse(const std::string& text, const std::string& name) {
  std::vector<Rule> rules;
  std::istringstream in(text);
  std::string line;
  for (size_t ln = 1; std::getline(in, line); ln++) {
    std::string t = trim(line);
    if (t.empty() || t[0] == '#') continue;
    auto bad = [&](const std::string& why) {
      return RuleError(name + ":" + std::to_string(ln) + ": " + why);
    };
    uint8_t scope = kAllTransports, dirs = kBothDirections;
    bool have_scope = false, have_dir = false;
    // Words before the id (an id is digits, then ':'): a transport list, a direction.
    for (;;) {
      size_t word_end = t.find_first_of(" \t"), first_colon = t.find(':');
      if (!std::isalpha(static_cast<unsigned char>(t[0])) || (first_colon != std::string::npos && first_colon < word_end))
        break;
      if (word_end == std::string::npos) throw bad("expected [TRANSPORTS] [DIRECTION] ID:/PATTERN/FLAGS [name]");
      std::string word = t.substr(0, word_end);
      t = trim(t.substr(word_end));
      if (word == "to_server" || word == "to_client") {
        if (have_dir) throw bad("more than one direction");
        have_dir = true;
        dirs = uint8_t(1u << (word == "to_server" ? kToServer : kToClient));
        continue;
      }
      if (have_scope || have_dir) throw bad("'" + word + "': transports come first, once");
      have_scope = true;
      scope = 0;
      for (size_t b = 0; b <= word.size();) {
        size_t e = std::min(word.find(',', b), word.size());
        std::string w = word.substr(b, e - b);
        static const char* kNames[kTransports] = {"tcp", "udp", "icmp", "other"};
        uint8_t bit = w == "ip" ? kAllTransports : 0;
        for (int k = 0; k < kTransports; k++)
          if (w == kNames[k]) bit = uint8_t(1u << k);
        if (!bit) throw bad("unknown transport '" + w + "' (tcp udp icmp other ip; directions: to_server to_client)");
        scope |= bit;
        b = e + 1;
      }
    }
    size_t colon = t.find(':');
    if (colon == std::string::npos || colon + 1 >= t.size() || t[colon + 1] != '/')
      throw bad("expected ID:/PATTERN/FLAGS [name]");
    uint32_t id;
    try {
      size_t used;
      unsigned long v = std::stoul(t.substr(0, colon), &used);
      if (used != colon || v > UINT32_MAX) throw std::invalid_argument("id");
      id = uint32_t(v);
    } catch (const std::exception&) {
      throw bad("rule id '" + t.substr(0, colon) + "' is not an unsigned integer");
    }
    // The pattern ends at the last '/' followed by a run of letters/digits (the flags)
    // and then whitespace or the end of the line; names therefore cannot contain '/'.
    size_t start = colon + 2, end = std::string::npos;
    for (size_t i = t.size(); i-- > start;) {
      if (t[i] != '/') continue;
      size_t k = i + 1;
      while (k < t.size() && std::isalnum(static_cast<unsigned char>(t[k]))) k++;
      if (k == t.size() || t[k] == ' ' || t[k] == '\t') {
        end = i;
        break;
      }
    }
    if (end == std::string::npos || end == start) throw bad("pattern must be /PATTERN/ followed by flags");
    Rule r{id, t.substr(start, end - start), "", HS_FLAG_SINGLEMATCH, ln, scope, dirs};
    size_t sp = t.find_first_of(" \t", end + 1);
    std::string flags = t.substr(end + 1, sp == std::string::npos ? std::string::npos : sp - end - 1);
    for (char c : flags) {
      switch (c) {
        case 'i': r.flags |= HS_FLAG_CASELESS; break;
        case 's': r.flags |= HS_FLAG_DOTALL; break;
        case 'm': r.flags |= HS_FLAG_MULTILINE; break;
        case '8': r.flags |= HS_FLAG_UTF8; break;
        case 'W': r.flags |= HS_FLAG_UCP; break;
        case 'H': break;  // single-match is always on
        default: throw bad(std::string("unknown flag '") + c + "' (i s m 8 W)");
      }
    }
    if (sp != std::string::npos) {
      std::string rest = t.substr(sp);
      size_t hash = rest.find('#');
      r.name = trim(rest.substr(0, hash));
    }
    for (auto& o : rules)
      if (o.id == id) throw bad("duplicate rule id " + std::to_string(id) + " (line " + std::to_string(o.line) + ")");
    if (rules.size() == kMaxRules) throw bad("more than 64 rules (one feature bit each)");
    rules.push_back(std::move(r));
  }
  if (rules.empty()) throw RuleError(name + ": no rules");
  return rules;
}

std::shared_ptr<const RuleSet> RuleSet::load_string(const std::string& text, const std::string& name,
                                                    const std::string& cache_dir) {
  std::shared_ptr<RuleSet> rs(new RuleSet());
  rs->source_ = name;
  rs->rules_ = parse(text, name);
  std::string cached = cache_dir.empty() ? "" : cache_dir + "/rules-" + cache_key(text) + ".hsdb";
  if (!cached.empty() && rs->load_cached(cached)) return rs;
  rs->compile(name);
  if (!cached.empty()) rs->save_cached(cache_dir, cached);
  return rs;
}

// One database per distinct transport subset, compiled side by side (Hyperscan's compiler
// is reentrant): the default set's subsets take 0.14 s one after the other, 0.12 s on two
// cores (its TCP subset alone takes 0.11 s). The first failing subset, in order, names
// the error, as a sequential compile would.
void RuleSet::compile(const std::string& name) {
  const Subsets g = subsets(rules_);
  struct Job {
    uint64_t mask;
    hs_database_t* db = nullptr;
    std::string error;
  };
  std::vector<Job> jobs;
  for (uint64_t m : g.masks) jobs.push_back({m});
  auto run = [&](Job& j) {
    std::vector<const char*> pats;
    std::vector<unsigned> flags, ids;
    for (size_t i = 0; i < rules_.size(); i++) {
      if (!(j.mask & (1ull << i))) continue;
      pats.push_back(rules_[i].pattern.c_str());
      flags.push_back(rules_[i].flags);
      ids.push_back(unsigned(i));  // Hyperscan reports the index: the feature bit
    }
    hs_compile_error_t* ce = nullptr;
    if (hs_compile_multi(pats.data(), flags.data(), ids.data(), unsigned(pats.size()), HS_MODE_BLOCK, nullptr,
                         &j.db, &ce) == HS_SUCCESS)
      return;
    std::string msg = ce ? ce->message : "compile failed";
    int at = ce ? ce->expression : -1;
    hs_free_compile_error(ce);
    j.db = nullptr;
    if (at >= 0 && size_t(at) < ids.size()) {
      const Rule& r = rules_[ids[size_t(at)]];
      j.error = name + ":" + std::to_string(r.line) + ": rule " + std::to_string(r.id) + ": " + msg;
    } else {
      j.error = name + ": " + msg;
    }
  };
  std::vector<std::thread> helpers;
  size_t workers = std::min<size_t>(jobs.size(), std::max(1u, std::thread::hardware_concurrency()));
  std::atomic<size_t> next{0};
  auto drain = [&] {
    for (size_t k; (k = next.fetch_add(1)) < jobs.size();) run(jobs[k]);
  };
  for (size_t w = 1; w < workers; w++) helpers.emplace_back(drain);
  drain();
  for (auto& t : helpers) t.join();
  for (auto& j : jobs)
    if (j.db) dbs_.push_back(j.db);  // owned now: freed by the destructor if anything throws
  for (auto& j : jobs)
    if (!j.error.empty()) throw RuleError(j.error);
  for (auto* db : dbs_)
    if (hs_alloc_scratch(db, &proto_) != HS_SUCCESS) throw RuleError(name + ": cannot allocate scratch");
  set_transports(g.of);
}

void RuleSet::set_transports(const int (&of)[kTransports]) {
  for (int t = 0; t < kTransports; t++) {
    by_transport_[t] = of[t] < 0 ? nullptr : dbs_[size_t(of[t])];
    for (int d = 0; d < 2; d++) {
      lane_mask_[t][d] = 0;
      for (size_t i = 0; i < rules_.size(); i++)
        if ((rules_[i].scope & (1u << t)) && (rules_[i].dirs & (1u << d))) lane_mask_[t][d] |= 1ull << i;
    }
  }
}

RuleSet::RuleSet() {
  static std::atomic<uint64_t> next{1};
  serial_ = next.fetch_add(1, std::memory_order_relaxed);
}

RuleSet::~RuleSet() {
  if (proto_) hs_free_scratch(proto_);
  for (auto* db : dbs_) hs_free_database(db);
}

hs_scratch_t* RuleSet::clone_scratch() const {
  hs_scratch_t* s = nullptr;
  if (hs_clone_scratch(proto_, &s) != HS_SUCCESS) throw RuleError("cannot clone Hyperscan scratch");
  return s;
}

SignatureMatcher::SignatureMatcher(std::shared_ptr<const RuleSet> rs) : rs_(std::move(rs)) {
  scratch_ = rs_->clone_scratch();
}

SignatureMatcher::~SignatureMatcher() {
  if (scratch_) hs_free_scratch(scratch_);
}

// ICMP error messages quote the packet that caused them (RFC 792, RFC 4443): their
// payload is someone else's header, not content of this flow.
static bool icmp_error(const FlowEntry& e) {
  if (e.key.lo_port != 0 && e.key.hi_port != 0) return false;  // echo flows key on the id
  unsigned type = (e.key.lo_port | e.key.hi_port) >> 8;
  if (e.key.proto == 1) return type == 3 || type == 4 || type == 5 || type == 11 || type == 12;
  if (e.key.proto == 58) return type >= 1 && type <= 4;
  return false;
}

uint64_t SignatureMatcher::match(const FlowRecord& r) {
  uint64_t mask = 0;
  if (icmp_error(r.e)) return 0;
  auto on_match = [](unsigned id, unsigned long long, unsigned long long, unsigned, void* ctx) -> int {
    *static_cast<uint64_t*>(ctx) |= 1ull << id;
    return 0;
  };
  const Transport t = transport_of(r.e.key.proto);
  const hs_database_t* db = rs_->db(t);
  for (int d = 0; d < 2; d++) {  // d = 0: sent by key.lo
    uint64_t lane = rs_->lane_mask(t, (d == 0) == bool(r.e.init_lo) ? kToServer : kToClient);
    if (!r.paylen[d] || !lane) continue;  // no rule reads this side
    uint64_t hits = 0;
    if (hs_scan(db, reinterpret_cast<const char*>(r.payload[d]), r.paylen[d], 0, scratch_, on_match, &hits) !=
        HS_SUCCESS)
      scan_errors++;
    mask |= hits & lane;
  }
  return mask;
}

std::string hit_ids(const RuleSet& rs, uint64_t mask) {
  std::string o;
  for (size_t i = 0; i < rs.rules().size() && mask; i++)
    if (mask & (1ull << i)) {
      if (!o.empty()) o += ';';
      o += std::to_string(rs.rules()[i].id);
    }
  return o;
}

}  // namespace ls
