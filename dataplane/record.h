// A finished flow as it leaves a core: the entry's state, why it ended, and the captured
// payload prefix. Consumers (writers, later the worker stages) get these, never entries.
#pragma once
#include <cstring>
#include <string>
#include <vector>

#include "dataplane/flow_table.h"
#include "dataplane/sampler.h"

namespace ls {

// Features attached by the worker that owns the server endpoint (features/feature_stage.h):
// the client→server pair's history and the payload signature hits. `valid` is false
// until a stage has filled them.
struct PairFeatures {
  bool valid;
  uint32_t contacts, intervals;
  double age_s, mean_s, cv, period_s, mode_share, score;
  uint64_t sig_mask;      // bit i: rule i of `sig_rules` matched a payload prefix
  const void* sig_rules;  // identity of the rule set that produced sig_mask (never dereferenced here)
  // the server endpoint (responder address), all its contacts so far
  double srv_clients, srv_client_nets, srv_ports, srv_failed_share, srv_age_s;
  uint64_t srv_flows, srv_bytes;
};

// Features attached by the worker that owns the client endpoint (the initiator), after the
// server's worker attached `pair` (it counts the client's periodic servers).
struct ClientFeatures {
  bool valid;
  double servers, ports, periodic_servers, failed_share, age_s;
  uint64_t flows;
};

struct FlowRecord {
  FlowEntry e;
  EndReason why;
  uint16_t core;
  uint16_t paylen[2];
  // Scratch of the feature stage that will process the record on this thread: its tables'
  // key hashes, computed at the first prefetch step so that the second step and the
  // lookups do not hash the keys again. [0]: pair and server hashes (table_hash[0], [1]),
  // [1]: client hash (table_hash[2]); each is used only by the stage it names, once. Here,
  // in the line after the entry, which the stages read anyway: not beyond the payload.
  mutable const void* hashed_by[2] = {};
  mutable uint64_t table_hash[3];
  SamplingConfig sampling;
  PairFeatures pair;
  ClientFeatures client;
  uint8_t payload[2][FlowTable::kMaxPayload];

  void fill(const FlowEntry& fe, const uint8_t* pay, uint16_t cap, EndReason r,
            uint16_t core_id, const SamplingConfig& s) {
    e = fe;
    why = r;
    pair.valid = false;
    client.valid = false;
    hashed_by[0] = hashed_by[1] = nullptr;
    core = core_id;
    sampling = s;
    for (int d = 0; d < 2; d++) {
      paylen[d] = pay ? fe.paylen[d] : 0;
      if (paylen[d]) std::memcpy(payload[d], pay + size_t(d) * cap, paylen[d]);
    }
  }
};

// A stage that annotates records in place on worker lcores (features, later detection).
// A record visits the worker owning its server endpoint (`process`), then the worker
// owning its client endpoint (`process_client`), then the control core.
struct RecordStage {
  virtual ~RecordStage() = default;
  virtual void process(FlowRecord& r) = 0;
  // process() over a burst; a stage may reorder its own work across the records.
  virtual void process_batch(FlowRecord* const* rs, unsigned n) {
    for (unsigned i = 0; i < n; i++) process(*rs[i]);
  }
  virtual void process_client(FlowRecord&) {}
  // A record process() / process_client() will see soon: start loading the state it
  // touches (table sets are DRAM misses), reading nothing another thread writes (it may
  // leave its key hashes in the record's scratch: the calling thread owns the record).
  // Two steps: slot = false first, slot = true some time later.
  virtual void prefetch(const FlowRecord&, bool /*slot*/) {}
  virtual void prefetch_client(const FlowRecord&, bool /*slot*/) {}
  // Appends the sketch lines (features/sketch_export.h) of the endpoints (servers, then
  // clients) in the next `slots` slots from `pos` (0 to begin) to `out`, advancing pos;
  // true once past the last slot. A slice at a time, so a worker exporting keeps taking
  // records between slices.
  virtual bool sketch_lines(std::string& /*out*/, uint32_t& /*pos*/, uint32_t /*slots*/, size_t& /*lines*/) {
    return true;
  }
};

struct RecordConsumer {
  virtual ~RecordConsumer() = default;
  virtual void consume(const FlowRecord& r) = 0;
  // Several records in order, as consume() one after another would see them (a consumer
  // that gains from seeing them together overrides this).
  virtual void consume_batch(const FlowRecord* const* recs, size_t n) {
    for (size_t i = 0; i < n; i++) consume(*recs[i]);
  }
  // A record consume() will see soon (same thread): start loading what it touches.
  virtual void prefetch(const FlowRecord&, bool /*slot*/) {}
};

// Records held between their producer and a consumer on the same thread, up to kHold:
// each one's first prefetch step is issued when it is added, the second and the
// consume_batch() at flush() (or when the hold is full) — so the consumer's table misses
// overlap the producer's work in between, and models score the records together. The
// consumer sees every record, in order; call flush() before the consumer must have them.
class RecordHold {
 public:
  static constexpr uint32_t kHold = 32;
  explicit RecordHold(RecordConsumer& out) : out_(out), held_(kHold) {}
  FlowRecord& slot() { return held_[n_]; }  // fill it, then commit()
  void commit() {
    out_.prefetch(held_[n_], false);
    added++;
    if (++n_ == kHold) flush();
  }
  void flush() {
    const FlowRecord* recs[kHold];
    for (uint32_t i = 0; i < n_; i++) {
      out_.prefetch(held_[i], true);
      recs[i] = &held_[i];
    }
    if (n_) out_.consume_batch(recs, n_);
    n_ = 0;
  }
  uint64_t added = 0;

 private:
  RecordConsumer& out_;
  std::vector<FlowRecord> held_;
  uint32_t n_ = 0;
};

}  // namespace ls
