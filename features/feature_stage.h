// The feature stage: flow record in, feature row out, one pass shared by every later
// detection app. Owns per client→server pair contact history in a bounded table (fixed
// capacity, oldest pair evicted), so it can run on the worker that owns the server
// endpoint without locks. Schema: docs/features.md (version 3).
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "dataplane/mem.h"
#include "dataplane/record.h"
#include "features/bounded_table.h"
#include "features/endpoint_sketch.h"
#include "features/pseudonym.h"
#include "features/sketch_export.h"
#include "features/partners.h"
#include "features/periodicity.h"
#include "features/signatures.h"
#include "features/ti_table.h"

namespace ls {

struct FeatureConfig {
  uint32_t pair_capacity = 1u << 18;                // client→server pairs seen in two records or more
  uint32_t first_contact_capacity = 1u << 18;       // pairs seen in one record so far (32 B each)
  uint32_t server_capacity = 1u << 16;              // server endpoints tracked
  uint32_t client_capacity = 1u << 16;              // client endpoints tracked
  uint64_t pair_max_age_ns = 3'600'000'000'000ull;  // idle pairs older than this restart
  // Tumbling window for the server and client counts (0: since first seen, restarted
  // after pair_max_age_ns idle). Windows are aligned to multiples of it since the epoch.
  uint64_t window_ns = 0;
  double periodic_threshold = 0.7;  // pair_periodicity from which a server counts as periodic
  uint64_t hash_seed = 0;  // the tables' sets (random per run by default: no set flooding)
  // The distinct counters' hash (HyperLogLog registers). Fixed, not the tables' seed: the
  // same traffic gives the same counts on every run, and sketches merge only between
  // sensors hashing alike.
  uint64_t sketch_seed = 1;  // 1: what --hash-seed 1 gave before (the shipped models' training)
  // Exported client sketches (--sketch-clients): by address, by keyed pseudonym (under
  // pseudonym_secret, rotated every pseudonym_rotate_ns; needs window_ns) or none.
  SketchClients sketch_clients = SketchClients::address;
  std::string pseudonym_secret;
  uint64_t pseudonym_rotate_ns = 86'400'000'000'000ull;
  std::shared_ptr<const RuleSet> rules;  // payload signatures; null = none
  std::shared_ptr<const TiTable> ti;     // threat-intel feeds; null = none
  std::shared_ptr<const PartnerTable> partners;  // partner enriched features; null = none
};

struct FeatureRow {
  const FlowRecord* rec;
  // flow timing
  double duration_s, bytes_ratio, iat_mean_us, iat_std_us, iat_cv, size_mean, size_std;
  double payloadless_share;
  uint32_t iat_min_us, iat_max_us, rtt_us;
  bool handshake, syn_only, rst, fin_both;
  // threat intel: the server (dst) and the client (src)
  bool ti_dst_hit, ti_src_hit;
  TiHit ti_dst, ti_src;
  const PartnerHit* partner;  // the server as partners reported it; null = not reported
  // client → server pair (the flow's initiator → responder, responder port, protocol)
  PairFeatures pair;
  // the client endpoint (initiator), all its contacts so far
  ClientFeatures client;
};

struct FeatureCounters {
  OwnedCounter rows;
  // pairs: contacted in two records or more; first_contacts: in one so far
  BoundedTableCounters pairs, servers, clients, first_contacts;
};

class FeatureStage final : public RecordStage {
 public:
  static constexpr uint32_t kHistory = 32;  // contact starts kept per pair

  explicit FeatureStage(const FeatureConfig& c);
  // Fills `row`: the flow's own features, and the pair features — taken from the record
  // when a worker already attached them, else computed here (updating the pair history:
  // a new contact unless the record continues a long TCP flow).
  void compute(const FlowRecord& r, FeatureRow& row) {
    adopt_pending_rules();
    compute_matched(r, row, r.pair.valid ? 0 : signatures(r));
  }
  // compute() over n records: the payload signatures of all of them first, then the
  // rest — Hyperscan's code and database stay in cache through the batch instead of being
  // evicted by the table work between two records.
  void compute_batch(const FlowRecord* const* recs, size_t n, FeatureRow* rows);
  // Worker side: updates the pair history and attaches the pair features to `r`.
  void process(FlowRecord& r) override {
    adopt_pending_rules();
    r.pair = pair_features(r, signatures(r));
  }
  // Signatures of the whole burst first, as compute_batch().
  void process_batch(FlowRecord* const* rs, unsigned n) override;
  // Worker owning the client: after process() ran on the server's worker.
  void process_client(FlowRecord& r) override { r.client = client_features(r, r.pair); }
  // The pair and server sets process() will touch; the client set for process_client().
  void prefetch(const FlowRecord& r, bool slot) override {
    if (!slot || r.hashed_by[0] != this) {
      PairKey k = pair_key(r.e);
      r.table_hash[0] = pairs_.hash(k);
      r.table_hash[1] = servers_.hash(endpoint_key(k.server, k.ver));
      r.hashed_by[0] = this;
    }
    uint64_t h = r.table_hash[0];
    if (!slot) {
      pairs_.prefetch(h, false);
      first_.prefetch(h, false);
    } else if (!pairs_.prefetch_found(h)) {  // the pair's slot is needed only when it is there
      first_.prefetch(h, true);
    }
    servers_.prefetch(r.table_hash[1], slot);
  }
  void prefetch_client(const FlowRecord& r, bool slot) override;
  const RuleSet* rules() const { return matcher_ ? &matcher_->rules() : nullptr; }

  // Rule reload without locks: the control core builds a matcher (own scratch) for this
  // stage and offers it; the stage's thread adopts it before its next record and hands the
  // old one back; control frees what was handed back. Returns false if an offer is still
  // pending (call again later).
  bool offer_rules(std::unique_ptr<SignatureMatcher> m);
  // Control side: the matcher replaced by the last adoption, once the stage let go of it.
  std::unique_ptr<SignatureMatcher> take_retired();
  uint64_t rules_generation() const { return adopted_.load(std::memory_order_acquire); }
  // TI lookups run on the thread that calls compute(): swap the table on that thread.
  void set_ti(std::shared_ptr<const TiTable> t) { cfg_.ti = std::move(t); }
  void set_partners(std::shared_ptr<const PartnerTable> p) { cfg_.partners = std::move(p); }
  // `sigs`: signatures(r), matched with the stage's current rules.
  PairFeatures pair_features(const FlowRecord& r, uint64_t sigs);
  uint64_t signatures(const FlowRecord& r) { return matcher_ ? matcher_->match(r) : 0; }
  ClientFeatures client_features(const FlowRecord& r, const PairFeatures& p);
  // `overflowed`: live entries holding a pool block (a pair history past kInlineStarts,
  // endpoint counters past the sparse form: features/endpoint_sketch.h).
  FeatureCounters counters() const {
    FeatureCounters c{ctr_.rows, pairs_.ctr, servers_.ctr, clients_.ctr, first_.ctr};
    c.pairs.overflowed = histories_.in_use();
    c.servers.overflowed = server_sketches_.in_use();
    c.clients.overflowed = client_sketches_.in_use();
    return c;
  }
  size_t memory_bytes() const {
    return pairs_.memory_bytes() + first_.memory_bytes() + servers_.memory_bytes() + clients_.memory_bytes() +
           histories_.memory_bytes() + server_sketches_.memory_bytes() + client_sketches_.memory_bytes();
  }

  // Every endpoint held (servers, then clients as cfg.sketch_clients says), as a sketch to
  // export (features/sketch_export.h). Call on the stage's thread, or once it has stopped.
  void sketches(const std::function<void(const EndpointSketch&)>& f) const {
    sketches(SketchKind::server, f, 0, UINT32_MAX);
    sketches(SketchKind::client, f, 0, UINT32_MAX);
  }
  bool sketch_lines(std::string& out, uint32_t& pos, uint32_t slots, size_t& lines) override;

  static const char* csv_header();
  static void csv_row(const FeatureRow& f, const RuleSet* rules, std::string& out);

 private:
  struct PairKey {
    uint8_t client[16], server[16];
    uint16_t port;
    uint8_t proto, ver;
  };
  static constexpr uint32_t kInlineStarts = 7;  // fills the value's last cache line
  struct History {
    int32_t ms[kHistory];
  };
  struct Pair {
    uint64_t first_ns, last_ns;
    uint64_t base_ns;             // the first start seen: offsets are relative to it
    uint32_t contacts;
    // The most recent starts by time, ascending, ms from base_ns: inline while there are
    // at most kInlineStarts (most pairs), then in a pool block (history - 1) of kHistory.
    uint32_t history;
    int32_t inline_ms[kInlineStarts];
    uint8_t used_starts;
    bool used() const { return last_ns != 0; }
  };
  // A pair seen in one record so far — most pairs (scans, spoofed floods, one-off
  // lookups) — is kept as this instead: what its Pair would hold then, in 32 bytes with
  // its key and the table's metadata instead of 112. It becomes a Pair at its second
  // record, so floods of one-off pairs do not evict the pairs that recur. Keyed by the
  // pair hash: its low half is the key, the high half the table's signature (63 bits
  // compared).
  struct [[gnu::packed]] FirstContact {
    uint64_t first_ns, last_ns;  // the record's first and max(first, last)
    uint32_t contacts;           // 0 if the record continued a long flow, else 1
    bool used() const { return last_ns != 0; }
  };
  struct KeyIsHash {  // the key is the low half of the pair hash: grow() splits sets by it
    uint64_t operator()(uint32_t k, uint64_t) const { return k; }
  };
  struct EndpointKey {
    uint8_t addr[16];
    uint8_t ver, pad[3];
  };
  struct Server {
    uint64_t first_ns, last_ns, window, flows, bytes, failed;
    // 0: distinct client addresses, 1: client /24s (IPv4) or /48s (IPv6), 2: distinct
    // (port, protocol) offered
    EndpointSketches sk;
    bool used() const { return last_ns != 0; }
  };
  struct Client {
    uint64_t first_ns, last_ns, window, flows, failed;
    // 0: distinct server addresses, 1: distinct (server port, protocol) — the vertical-scan
    // signal, 2: distinct servers contacted periodically
    EndpointSketches sk;
    bool used() const { return last_ns != 0; }
  };
  struct ReleaseHistory {  // a pair reset gives its history block back
    BlockPool<History>* pool;
    void operator()(Pair& p) const {
      if (p.history) pool->release(p.history - 1);
    }
  };
  struct ReleaseSketches {  // an endpoint reset gives its dense block back
    SketchPool* pool;
    template <class V>
    void operator()(V& v) const { v.sk.release(*pool); }
  };

  static PairKey pair_key(const FlowEntry& e);
  static EndpointKey endpoint_key(const uint8_t* addr, uint8_t ver) {
    EndpointKey k{};
    std::memcpy(k.addr, addr, 16);
    k.ver = ver;
    return k;
  }
  void adopt_pending_rules();
  void compute_matched(const FlowRecord& r, FeatureRow& row, uint64_t sigs);
  // Restarts an endpoint's counts when `ts` falls in a later tumbling window (its dense
  // sketches go back to `pool`).
  template <class V>
  void roll_window(V& v, uint64_t ts, SketchPool& pool);
  // The endpoints of one kind in slots [from, to) of its table.
  void sketches(SketchKind kind, const std::function<void(const EndpointSketch&)>& f, uint32_t from,
                uint32_t to) const;

  FeatureConfig cfg_;
  // sketch_clients == pseudonym: the stage's own (it caches the period key). Mutable: the
  // const export derives keys.
  mutable std::unique_ptr<Pseudonymizer> pseudonyms_;
  std::string pseudonym_key_;
  std::unique_ptr<SignatureMatcher> matcher_;  // own Hyperscan scratch
  std::atomic<SignatureMatcher*> pending_{nullptr};  // control → stage
  std::atomic<SignatureMatcher*> retired_{nullptr};  // stage → control
  std::atomic<uint64_t> offered_{0}, adopted_{0};
  // Pools before the tables that release into them.
  BlockPool<History> histories_;
  BoundedTable<PairKey, Pair, ReleaseHistory> pairs_;
  BoundedTable<uint32_t, FirstContact, DropNothing<FirstContact>, KeyIsHash> first_;
  static_assert(sizeof(decltype(first_)::Slot) == 24, "a first contact is 24 bytes and 8 of metadata");
  SketchPool server_sketches_, client_sketches_;
  BoundedTable<EndpointKey, Server, ReleaseSketches> servers_;
  BoundedTable<EndpointKey, Client, ReleaseSketches> clients_;
  FeatureCounters ctr_;
};

// Writes feature rows as CSV (first line "# linesight features v3", then the header).
class FeatureWriter final : public RecordConsumer {
 public:
  // path "" = rows only for on_rows (no CSV).
  FeatureWriter(const std::string& path, const FeatureConfig& c);  // throws
  ~FeatureWriter() override;
  void consume(const FlowRecord& r) override {
    const FlowRecord* p = &r;
    consume_batch(&p, 1);
  }
  // Rows for up to kRows records at a time, handed to on_rows together (the apps' models
  // score them in one batch), then written in order.
  void consume_batch(const FlowRecord* const* recs, size_t n) override;
  static constexpr size_t kRows = 64;
  void prefetch(const FlowRecord& r, bool slot) override {
    if (!r.pair.valid) stage_.prefetch(r, slot);  // else a worker computed the pair features
    if (!r.client.valid) stage_.prefetch_client(r, slot);
  }
  void close();  // throws on a failed write
  const FeatureStage& stage() const { return stage_; }
  // Rule sets whose hits may appear in records (the loaded one, then each reload).
  void add_rules(std::shared_ptr<const RuleSet> rs);
  void set_ti(std::shared_ptr<const TiTable> t) { stage_.set_ti(std::move(t)); }
  void set_partners(std::shared_ptr<const PartnerTable> p) { stage_.set_partners(std::move(p)); }
  // Every row also goes here (the detection apps), in the same pass: rows[i] with the
  // rule set that named its hits, rows in record order.
  std::function<void(const FeatureRow* rows, const RuleSet* const* rules, size_t n)> on_rows;

 private:
  FeatureStage stage_;
  std::vector<std::shared_ptr<const RuleSet>> known_;
  std::vector<FeatureRow> rows_ = std::vector<FeatureRow>(kRows);  // reused: no allocation per row
  const RuleSet* rules_[kRows];
  FILE* f_ = nullptr;
  std::string path_, line_;
  bool bad_ = false;
};

}  // namespace ls
