#include "features/signatures.h"

#include "dataplane/text.h"

#include <cctype>
#include <fstream>
#include <sstream>

namespace ls {

namespace {


}  // namespace

std::shared_ptr<const RuleSet> RuleSet::load_file(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw RuleError(path + ": cannot open rules file");
  std::stringstream ss;
  ss << f.rdbuf();
  return load_string(ss.str(), path);
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
    Rule r{id, t.substr(start, end - start), "", HS_FLAG_SINGLEMATCH, ln};
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

std::shared_ptr<const RuleSet> RuleSet::load_string(const std::string& text, const std::string& name) {
  std::shared_ptr<RuleSet> rs(new RuleSet());
  rs->source_ = name;
  rs->rules_ = parse(text, name);
  std::vector<const char*> pats;
  std::vector<unsigned> flags, ids;
  for (size_t i = 0; i < rs->rules_.size(); i++) {
    pats.push_back(rs->rules_[i].pattern.c_str());
    flags.push_back(rs->rules_[i].flags);
    ids.push_back(unsigned(i));  // Hyperscan reports the index: the feature bit
  }
  hs_compile_error_t* ce = nullptr;
  if (hs_compile_multi(pats.data(), flags.data(), ids.data(), unsigned(pats.size()), HS_MODE_BLOCK,
                       nullptr, &rs->db_, &ce) != HS_SUCCESS) {
    std::string msg = ce ? ce->message : "compile failed";
    int at = ce ? ce->expression : -1;
    hs_free_compile_error(ce);
    if (at >= 0 && size_t(at) < rs->rules_.size())
      throw RuleError(name + ":" + std::to_string(rs->rules_[size_t(at)].line) + ": rule " +
                      std::to_string(rs->rules_[size_t(at)].id) + ": " + msg);
    throw RuleError(name + ": " + msg);
  }
  if (hs_alloc_scratch(rs->db_, &rs->proto_) != HS_SUCCESS) throw RuleError(name + ": cannot allocate scratch");
  return rs;
}

RuleSet::~RuleSet() {
  if (proto_) hs_free_scratch(proto_);
  if (db_) hs_free_database(db_);
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
  for (int d = 0; d < 2; d++) {
    if (!r.paylen[d]) continue;
    if (hs_scan(rs_->db(), reinterpret_cast<const char*>(r.payload[d]), r.paylen[d], 0, scratch_,
                on_match, &mask) != HS_SUCCESS)
      scan_errors++;
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
