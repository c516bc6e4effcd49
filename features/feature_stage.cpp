#include "features/feature_stage.h"

#include "dataplane/output_file.h"
#include "dataplane/text.h"

#include <algorithm>
#include <bit>
#include <charconv>
#include <cmath>
#include <cstring>
#include <stdexcept>

namespace ls {

FeatureStage::FeatureStage(const FeatureConfig& c)
    : cfg_(c),
      histories_(decltype(pairs_)::capacity_for(c.pair_capacity)),
      pairs_(c.pair_capacity, c.pair_max_age_ns, c.hash_seed, {&histories_}),
      first_(c.first_contact_capacity, c.pair_max_age_ns, c.hash_seed),
      server_sketches_(decltype(servers_)::capacity_for(c.server_capacity)),
      client_sketches_(decltype(clients_)::capacity_for(c.client_capacity)),
      servers_(c.server_capacity, c.pair_max_age_ns, c.hash_seed ^ 0x5e4e7, {&server_sketches_}),
      clients_(c.client_capacity, c.pair_max_age_ns, c.hash_seed ^ 0xc11e47, {&client_sketches_}) {
  if (c.rules) matcher_ = std::make_unique<SignatureMatcher>(c.rules);
  if (c.sketch_clients == SketchClients::pseudonym) {
    // A pseudonym's period is its window's: sensors agree on it without a common clock.
    if (!c.window_ns) throw std::invalid_argument("client sketches by pseudonym need a feature window");
    pseudonyms_ = std::make_unique<Pseudonymizer>(c.pseudonym_secret, c.pseudonym_rotate_ns);
    pseudonym_key_ = pseudonyms_->key_id();
  }
}

bool FeatureStage::offer_rules(std::unique_ptr<SignatureMatcher> m) {
  if (pending_.load(std::memory_order_acquire) || retired_.load(std::memory_order_acquire)) return false;
  offered_.fetch_add(1, std::memory_order_relaxed);
  pending_.store(m.release(), std::memory_order_release);
  return true;
}

void FeatureStage::adopt_pending_rules() {
  SignatureMatcher* p = pending_.load(std::memory_order_acquire);
  if (!p) return;
  pending_.store(nullptr, std::memory_order_relaxed);
  retired_.store(matcher_.release(), std::memory_order_release);
  matcher_.reset(p);
  adopted_.fetch_add(1, std::memory_order_release);
}

std::unique_ptr<SignatureMatcher> FeatureStage::take_retired() {
  return std::unique_ptr<SignatureMatcher>(retired_.exchange(nullptr, std::memory_order_acq_rel));
}

namespace {
constexpr size_t kSigStep = 64;  // records matched before their other features are computed
}

void FeatureStage::compute_batch(const FlowRecord* const* recs, size_t n, FeatureRow* rows) {
  adopt_pending_rules();  // once: every record of the batch is matched with the same rules
  uint64_t sigs[kSigStep];
  for (size_t done = 0; done < n; done += kSigStep) {
    size_t m = std::min(kSigStep, n - done);
    for (size_t i = 0; i < m; i++) sigs[i] = recs[done + i]->pair.valid ? 0 : signatures(*recs[done + i]);
    for (size_t i = 0; i < m; i++) compute_matched(*recs[done + i], rows[done + i], sigs[i]);
  }
}

void FeatureStage::process_batch(FlowRecord* const* rs, unsigned n) {
  adopt_pending_rules();
  uint64_t sigs[kSigStep];
  for (size_t done = 0; done < n; done += kSigStep) {
    size_t m = std::min(kSigStep, n - done);
    for (size_t i = 0; i < m; i++) sigs[i] = signatures(*rs[done + i]);
    for (size_t i = 0; i < m; i++) rs[done + i]->pair = pair_features(*rs[done + i], sigs[i]);
  }
}

void FeatureStage::compute_matched(const FlowRecord& r, FeatureRow& f, uint64_t sigs) {
  const FlowEntry& e = r.e;
  int fw = e.init_lo ? 0 : 1;
  uint64_t n = uint64_t(e.pkts[0]) + e.pkts[1];
  uint64_t bytes = e.bytes[0] + e.bytes[1];
  f.rec = &r;
  f.duration_s = double(e.last_ns - e.first_ns) / 1e9;
  f.bytes_ratio = bytes ? double(e.bytes[fw]) / double(bytes) : 0;
  if (n >= 2) {
    double gaps = double(n - 1);
    f.iat_mean_us = double(e.last_ns - e.first_ns) / 1e3 / gaps;
    f.iat_std_us = std::sqrt(std::max(0.0, e.iat_sq / gaps - f.iat_mean_us * f.iat_mean_us));
    f.iat_cv = f.iat_mean_us > 0 ? f.iat_std_us / f.iat_mean_us : 0;
    f.iat_min_us = e.iat_min_us;
    f.iat_max_us = e.iat_max_us;
  } else {
    f.iat_mean_us = f.iat_std_us = f.iat_cv = 0;
    f.iat_min_us = f.iat_max_us = 0;
  }
  f.payloadless_share = n ? double(e.empty_pkts) / double(n) : 0;
  f.rtt_us = e.rtt_us;
  f.size_mean = n ? double(bytes) / double(n) : 0;
  f.size_std = n ? std::sqrt(std::max(0.0, e.size_sq / double(n) - f.size_mean * f.size_mean)) : 0;
  bool tcp = e.key.proto == 6;
  f.handshake = tcp && (e.tcp_state & TCP_ESTABLISHED);
  f.syn_only = tcp && (e.tcp_state & TCP_SYN) && !(e.tcp_state & TCP_SYNACK);
  f.rst = tcp && (e.tcp_state & TCP_RST);
  f.fin_both = tcp && (e.tcp_state & (TCP_FIN_LO | TCP_FIN_HI)) == (TCP_FIN_LO | TCP_FIN_HI);

  f.ti_dst_hit = f.ti_src_hit = false;
  if (cfg_.ti) {
    f.ti_dst_hit = cfg_.ti->lookup(fw == 0 ? e.key.hi : e.key.lo, e.key.ip_ver, f.ti_dst);
    f.ti_src_hit = cfg_.ti->lookup(fw == 0 ? e.key.lo : e.key.hi, e.key.ip_ver, f.ti_src);
  }
  f.partner = cfg_.partners ? cfg_.partners->lookup(fw == 0 ? e.key.hi : e.key.lo, e.key.ip_ver) : nullptr;
  f.pair = r.pair.valid ? r.pair : pair_features(r, sigs);
  f.client = r.client.valid ? r.client : client_features(r, f.pair);
  ctr_.rows++;
}

namespace {
// A contact that failed: a SYN never answered, or a reset before the handshake completed.
// A continuation record (active timeout) is not a new contact.
bool failed_contact(const FlowEntry& e) {
  if (e.key.proto != 6 || (e.tcp_state & FLOW_CONTINUED)) return false;
  return ((e.tcp_state & TCP_SYN) && !(e.tcp_state & TCP_SYNACK)) ||
         ((e.tcp_state & TCP_RST) && !(e.tcp_state & TCP_ESTABLISHED));
}

const uint8_t* client_addr(const FlowEntry& e) { return e.init_lo ? e.key.lo : e.key.hi; }
const uint8_t* server_addr(const FlowEntry& e) { return e.init_lo ? e.key.hi : e.key.lo; }
}  // namespace

template <class V>
void FeatureStage::roll_window(V& v, uint64_t ts, SketchPool& pool) {
  if (!cfg_.window_ns) return;
  uint64_t w = ts / cfg_.window_ns;
  if (v.used() && w > v.window) {  // a late record of an older window joins this one
    ReleaseSketches{&pool}(v);  // as the table does when it resets an entry
    v = V{};
  }
  if (!v.used()) v.window = w;
}

bool FeatureStage::sketch_lines(std::string& out, uint32_t& pos, uint32_t slots, size_t& lines) {
  // pos: a slot of the servers' table, then kClientSlices + a slot of the clients' (a
  // table grown between slices does not move the other's positions).
  constexpr uint32_t kClientSlices = 1u << 31;
  if (pos >= kClientSlices && cfg_.sketch_clients == SketchClients::none) {
    pos = kClientSlices;
    return true;
  }
  const bool clients = pos >= kClientSlices;
  const uint32_t at = pos - (clients ? kClientSlices : 0), end = clients ? clients_.slots() : servers_.slots();
  const uint32_t to = at + std::min(slots, end - std::min(at, end));
  sketches(clients ? SketchKind::client : SketchKind::server, [&](const EndpointSketch& s) {
    append_sketch_line(out, s);
    lines++;
  }, at, to);
  if (to < end) {
    pos = (clients ? kClientSlices : 0) + to;
    return false;
  }
  pos = kClientSlices;
  return clients;
}

void FeatureStage::sketches(SketchKind kind, const std::function<void(const EndpointSketch&)>& f, uint32_t from,
                            uint32_t to) const {
  EndpointSketch s;
  s.kind = kind;
  s.seed = cfg_.sketch_seed;
  s.window_ns = cfg_.window_ns;
  if (kind == SketchKind::client && cfg_.sketch_clients == SketchClients::none) return;
  s.pseudonym_key = kind == SketchKind::client ? pseudonym_key_ : std::string();
  auto common = [&](const EndpointKey& k, const auto& v) {
    char a[64];
    if (!s.pseudonym_key.empty())
      s.addr = pseudonyms_->of(k.addr, k.ver, v.window * cfg_.window_ns);
    else
      s.addr.assign(a, put_ip(a, k.addr, k.ver));
    s.window = v.window;
    s.first_ns = v.first_ns;
    s.last_ns = v.last_ns;
    s.flows = v.flows;
    s.failed = v.failed;
  };
  if (kind == SketchKind::server)
    servers_.for_each([&](const EndpointKey& k, const Server& v) {
      common(k, v);
      s.bytes = v.bytes;
      v.sk.to_dense<0>(server_sketches_, s.a);
      v.sk.to_dense<1>(server_sketches_, s.b);
      v.sk.to_dense<2>(server_sketches_, s.c);
      f(s);
    }, from, to);
  else
    clients_.for_each([&](const EndpointKey& k, const Client& v) {
      common(k, v);
      v.sk.to_dense<0>(client_sketches_, s.a);
      v.sk.to_dense<1>(client_sketches_, s.b);
      v.sk.to_dense<2>(client_sketches_, s.c);
      f(s);
    }, from, to);
}

void FeatureStage::prefetch_client(const FlowRecord& r, bool slot) {
  if (!slot || r.hashed_by[1] != this) {
    r.table_hash[2] = clients_.hash(endpoint_key(client_addr(r.e), r.e.key.ip_ver));
    r.hashed_by[1] = this;
  }
  clients_.prefetch(r.table_hash[2], slot);
}

FeatureStage::PairKey FeatureStage::pair_key(const FlowEntry& e) {
  PairKey k{};
  std::memcpy(k.client, client_addr(e), 16);
  std::memcpy(k.server, server_addr(e), 16);
  k.port = e.init_lo ? e.key.hi_port : e.key.lo_port;
  k.proto = e.key.proto;
  k.ver = e.key.ip_ver;
  return k;
}

ClientFeatures FeatureStage::client_features(const FlowRecord& r, const PairFeatures& p) {
  const FlowEntry& e = r.e;
  EndpointKey ck = endpoint_key(client_addr(e), e.key.ip_ver);
  uint64_t h;
  if (r.hashed_by[1] == this) {  // prefetch_client() hashed the key: use it, once
    h = r.table_hash[2];
    r.hashed_by[1] = nullptr;
  } else {
    h = clients_.hash(ck);
  }
  Client& c = clients_.find_or_make(ck, h, e.first_ns);
  roll_window(c, e.first_ns, client_sketches_);
  if (!c.used()) c.first_ns = c.last_ns = e.first_ns;
  c.flows++;
  c.failed += failed_contact(e);
  const uint8_t* srv = server_addr(e);
  uint64_t hs = XXH3_64bits_withSeed(srv, 16, cfg_.sketch_seed);
  SketchPool& pool = client_sketches_;
  c.sk.add<0>(hs, pool);
  uint32_t pp = uint32_t(e.init_lo ? e.key.hi_port : e.key.lo_port) << 8 | e.key.proto;
  c.sk.add<1>(XXH3_64bits_withSeed(&pp, sizeof pp, cfg_.sketch_seed), pool);
  if (p.valid && p.score >= cfg_.periodic_threshold) c.sk.add<2>(hs, pool);
  c.first_ns = std::min(c.first_ns, e.first_ns);
  c.last_ns = std::max(c.last_ns, e.last_ns);
  return {true, c.sk.estimate<0>(pool), c.sk.estimate<1>(pool), c.sk.estimate<2>(pool),
          double(c.failed) / double(c.flows), double(c.last_ns - c.first_ns) / 1e9, c.flows};
}

PairFeatures FeatureStage::pair_features(const FlowRecord& r, uint64_t sigs) {
  const FlowEntry& e = r.e;
  PairKey k = pair_key(e);
  EndpointKey sk = endpoint_key(k.server, k.ver);
  uint64_t hp, hs;
  if (r.hashed_by[0] == this) {  // prefetch() hashed the keys: use them, once
    hp = r.table_hash[0];
    hs = r.table_hash[1];
    r.hashed_by[0] = nullptr;
  } else {
    hp = pairs_.hash(k);
    hs = servers_.hash(sk);
  }
  // A record continuing a long flow (active timeout) is the same contact. Decided by the
  // record alone, so the pair's state does not depend on the order records arrive in.
  bool new_contact = !(e.tcp_state & FLOW_CONTINUED);
  Pair one;  // the state of a pair's first record, kept as a FirstContact
  Pair* pe = pairs_.find(k, hp, e.first_ns);
  FirstContact* fc = nullptr;
  if (!pe) {
    fc = &first_.find_or_make(uint32_t(hp), hp, e.first_ns);
    if (!fc->used()) {
      one = Pair{};
      pe = &one;
    } else {  // the second record: the Pair the first one would have made, then as usual
      FirstContact was = *fc;
      first_.erase(*fc);
      fc = nullptr;
      pe = &pairs_.find_or_make(k, hp, e.first_ns);
      pe->first_ns = pe->base_ns = was.first_ns;
      pe->last_ns = was.last_ns;
      pe->contacts = was.contacts;
      pe->used_starts = uint8_t(was.contacts);
      pe->inline_ms[0] = 0;  // its start, ms from base_ns
    }
  }
  Pair& p = *pe;
  if (!p.used()) p.first_ns = p.last_ns = p.base_ns = e.first_ns;
  int32_t* st = p.history ? histories_.at(p.history - 1).ms : p.inline_ms;  // the kept starts
  if (new_contact) {
    // Whole milliseconds of absolute time, so offsets do not depend on which start is the base.
    int64_t off = int64_t(e.first_ns / 1'000'000) - int64_t(p.base_ns / 1'000'000);
    if (off > INT32_MAX || off < INT32_MIN) {  // ±24 days from the first contact: start over
      p.base_ns = e.first_ns;
      p.used_starts = 0;
      off = 0;
    }
    // Keep the kHistory most recent starts in time order, whatever order records arrive
    // in (cores emit them as flows end).
    int32_t v = int32_t(off);
    if (p.used_starts < kHistory || v > st[0]) {
      uint32_t n = p.used_starts;
      if (n == kInlineStarts && !p.history) {  // outgrows the entry: to a pool block
        uint32_t b = histories_.acquire();
        std::memcpy(histories_.at(b).ms, p.inline_ms, sizeof p.inline_ms);
        p.history = b + 1;
        st = histories_.at(b).ms;
      }
      if (n == kHistory) {  // drop the oldest
        std::memmove(st, st + 1, (kHistory - 1) * sizeof(int32_t));
        n--;
      }
      uint32_t at = n;
      while (at > 0 && st[at - 1] > v) {
        st[at] = st[at - 1];
        at--;
      }
      st[at] = v;
      p.used_starts = uint8_t(n + 1);
    }
    p.contacts++;
  }
  p.first_ns = std::min(p.first_ns, e.first_ns);
  p.last_ns = std::max(p.last_ns, e.last_ns);
  if (fc) *fc = {p.first_ns, p.last_ns, p.contacts};
  // Exact integer ms from the earliest kept start: the same contacts give bit-identical
  // intervals whatever the pair's base (which depends on arrival order).
  double starts[kHistory];
  for (uint32_t i = 0; i < p.used_starts; i++) starts[i] = double(st[i] - st[0]) / 1e3;
  Periodicity s = score_periodicity(starts, p.used_starts);

  // The server endpoint: everyone who talked to it (owned by this worker: records are
  // routed by server).
  Server& sv = servers_.find_or_make(sk, hs, e.first_ns);
  roll_window(sv, e.first_ns, server_sketches_);
  if (!sv.used()) sv.first_ns = sv.last_ns = e.first_ns;
  sv.flows++;
  sv.bytes += e.bytes[0] + e.bytes[1];
  sv.failed += failed_contact(e);
  SketchPool& pool = server_sketches_;
  sv.sk.add<0>(XXH3_64bits_withSeed(k.client, 16, cfg_.sketch_seed), pool);
  uint8_t net[16] = {};
  std::memcpy(net, k.client, k.ver == 4 ? 3 : 6);  // /24 or /48
  sv.sk.add<1>(XXH3_64bits_withSeed(net, 16, cfg_.sketch_seed), pool);
  uint32_t pp = uint32_t(k.port) << 8 | k.proto;
  sv.sk.add<2>(XXH3_64bits_withSeed(&pp, sizeof pp, cfg_.sketch_seed), pool);
  sv.first_ns = std::min(sv.first_ns, e.first_ns);
  sv.last_ns = std::max(sv.last_ns, e.last_ns);

  return {true, p.contacts, s.intervals, double(p.last_ns - p.first_ns) / 1e9, s.mean_s, s.cv,
          s.period_s, s.mode_share, s.score, sigs,
          matcher_ ? static_cast<const void*>(&matcher_->rules()) : nullptr,
          sv.sk.estimate<0>(pool), sv.sk.estimate<1>(pool), sv.sk.estimate<2>(pool),
          double(sv.failed) / double(sv.flows), double(sv.last_ns - sv.first_ns) / 1e9, sv.flows,
          sv.bytes};
}

const char* FeatureStage::csv_header() {
  return "first_ns,last_ns,src,dst,sport,dport,proto,ip_version,end_reason,"
         "duration_s,packets_fwd,packets_rev,bytes_fwd,bytes_rev,bytes_ratio,"
         "iat_mean_us,iat_std_us,iat_min_us,iat_max_us,iat_cv,size_mean,size_std,"
         "tcp_flags_fwd,tcp_flags_rev,tcp_handshake,tcp_syn_only,tcp_rst,tcp_fin_both,"
         "pair_contacts,pair_age_s,pair_intervals,pair_interval_mean_s,pair_interval_cv,"
         "pair_period_s,pair_mode_share,pair_periodicity,sig_hits,"
         "ti_dst_feeds,ti_dst_max_weight,ti_dst_categories,ti_dst_days_since_first,"
         "ti_dst_days_since_last,ti_src_feeds,"
         "srv_clients,srv_client_nets,srv_ports,srv_flows,srv_bytes,srv_failed_share,srv_age_s,"
         "payloadless_share,tcp_rtt_ms,"
         "cli_servers,cli_ports,cli_flows,cli_failed_share,cli_periodic_servers,cli_age_s,"
         "partner_reports,partner_score,partner_port_match,partner_detections,partner_days_since_first,"
         "partner_days_since_last\n";
}


void FeatureStage::csv_row(const FeatureRow& f, const RuleSet* rules, std::string& o) {
  const FlowEntry& e = f.rec->e;
  int fw = e.init_lo ? 0 : 1, rv = 1 - fw;
  TextBuf w(o);
  w.run<8>()
      .num(e.first_ns).c()
      .num(e.last_ns).c()
      .ip(fw == 0 ? e.key.lo : e.key.hi, e.key.ip_ver).c()
      .ip(fw == 0 ? e.key.hi : e.key.lo, e.key.ip_ver).c()
      .num(fw == 0 ? e.key.lo_port : e.key.hi_port).c()
      .num(fw == 0 ? e.key.hi_port : e.key.lo_port).c()
      .num(e.key.proto).c()
      .num(e.key.ip_ver).c();
  w.text(end_reason_name(f.rec->why));
  w.run<28>()
      .c().g6(f.duration_s)
      .c().num(e.pkts[fw])
      .c().num(e.pkts[rv])
      .c().num(e.bytes[fw])
      .c().num(e.bytes[rv])
      .c().g6(f.bytes_ratio)
      .c().g6(f.iat_mean_us)
      .c().g6(f.iat_std_us)
      .c().num(f.iat_min_us)
      .c().num(f.iat_max_us)
      .c().g6(f.iat_cv)
      .c().g6(f.size_mean)
      .c().g6(f.size_std)
      .c().num(e.flags[fw])
      .c().num(e.flags[rv])
      .c().num(f.handshake)
      .c().num(f.syn_only)
      .c().num(f.rst)
      .c().num(f.fin_both)
      .c().num(f.pair.contacts)
      .c().g6(f.pair.age_s)
      .c().num(f.pair.intervals)
      .c().g6(f.pair.mean_s)
      .c().g6(f.pair.cv)
      .c().g6(f.pair.period_s)
      .c().g6(f.pair.mode_share)
      .c().g6(f.pair.score)
      .c();
  if (rules) w.text(hit_ids(*rules, f.pair.sig_mask));
  w.run<3>()
      .c().num(f.ti_dst_hit ? f.ti_dst.feeds : 0)
      .c().g6(f.ti_dst_hit ? f.ti_dst.max_weight : 0)
      .c();
  if (f.ti_dst_hit) w.text(f.ti_dst.categories);
  {
    TextBuf::Run r = w.run<27>();
    r.c();
    // Days from the listing dates to the record: negative = listed only after the flow.
    int64_t day = int64_t(e.first_ns / 86'400'000'000'000ull);
    if (f.ti_dst_hit && f.ti_dst.first_days) r.sint(day - f.ti_dst.first_days);
    r.c();
    if (f.ti_dst_hit && f.ti_dst.last_days) r.sint(day - f.ti_dst.last_days);
    r.c();
    r.num(f.ti_src_hit ? f.ti_src.feeds : 0).c()
        .rounded(f.pair.srv_clients).c()
        .rounded(f.pair.srv_client_nets).c()
        .rounded(f.pair.srv_ports).c()
        .num(f.pair.srv_flows).c()
        .num(f.pair.srv_bytes).c()
        .g6(f.pair.srv_failed_share).c()
        .g6(f.pair.srv_age_s).c()
        .g6(f.payloadless_share).c();
    if (f.rtt_us) r.g6(f.rtt_us / 1e3);
    r.c()
        .rounded(f.client.servers).c()
        .rounded(f.client.ports).c()
        .num(f.client.flows).c()
        .g6(f.client.failed_share).c()
        .rounded(f.client.periodic_servers).c()
        .g6(f.client.age_s).c();
    // Partner reports: empty cells (missing) where no partner reported the server.
    const PartnerHit* p = f.partner;
    r.num(p ? p->reports : 0).c();
    if (p) r.g6(p->score);
    r.c();
    r.num(p && p->has_port(fw == 0 ? e.key.hi_port : e.key.lo_port)).c();
    r.num(p ? p->detections : 0).c();
    if (p && p->first_ns) r.g6(partner_days(e.first_ns, p->first_ns));
    r.c();
    if (p && p->last_ns) r.g6(partner_days(e.first_ns, p->last_ns));
    r.c('\n');
  }
}

FeatureWriter::FeatureWriter(const std::string& path, const FeatureConfig& c)
    : stage_(c), path_(path) {
  add_rules(c.rules);
  if (path.empty()) return;
  f_ = path == "-" ? stdout : std::fopen(path.c_str(), "w");
  if (!f_) throw std::runtime_error(path + ": " + std::strerror(errno));
  std::fputs("# linesight features v3\n", f_);
  std::fputs(FeatureStage::csv_header(), f_);
}

FeatureWriter::~FeatureWriter() {
  if (f_ && f_ != stdout) std::fclose(f_);
}

void FeatureWriter::add_rules(std::shared_ptr<const RuleSet> rs) {
  if (!rs) return;
  known_.push_back(std::move(rs));
  if (known_.size() > 4) known_.erase(known_.begin());  // records in flight span ≤ 2 sets
}

void FeatureWriter::consume_batch(const FlowRecord* const* recs, size_t n) {
  for (size_t done = 0; done < n; done += kRows) {
    size_t m = std::min(kRows, n - done);
    stage_.compute_batch(recs + done, m, rows_.data());
    for (size_t i = 0; i < m; i++) {
      // Name the hits with the rule set that produced them (a reload may be under way).
      rules_[i] = stage_.rules();
      for (auto& k : known_)
        if (k.get() == rows_[i].pair.sig_rules) rules_[i] = k.get();
    }
    if (on_rows) on_rows(rows_.data(), rules_, m);
    if (!f_) continue;
    line_.clear();  // the batch's rows in one write: stdio locks and copies per call
    for (size_t i = 0; i < m; i++) FeatureStage::csv_row(rows_[i], rules_[i], line_);
    if (std::fwrite(line_.data(), 1, line_.size(), f_) != line_.size()) bad_ = true;
  }
}

void FeatureWriter::close() { close_output(f_, bad_, path_); }

}  // namespace ls
