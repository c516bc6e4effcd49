// Flow records out as JSON lines (schema: docs/records.md), and the replay summary.
#pragma once
#include <cstdio>
#include <string>
#include <unordered_map>
#include <vector>

#include "dataplane/record.h"
#include "dataplane/replay.h"
#include "dataplane/flow_key.h"
#include "dataplane/text.h"

namespace ls {

// Appends one JSON object (no newline) for the record. `initiator` is the flow's
// first packet's source, reported as src.
void format_record(const FlowRecord& r, bool with_payload, std::string& out);

struct RotateConfig {
  uint64_t max_bytes = 0;  // rotate when the file reaches this size (0: never)
  uint64_t max_age_ns = 0; // rotate when the file is this old (0: never)
};

// Writes to `path`; on rotation the full file is renamed to PATH-STEM.YYYYmmddTHHMMSS[.N].EXT
// (complete files only: a reader that picks up rotated files never sees a partial one).
class FlowWriter final : public RecordConsumer {
 public:
  // "-" writes to stdout. Throws std::runtime_error when the file cannot be opened.
  FlowWriter(const std::string& path, bool with_payload, RotateConfig rot = {});
  ~FlowWriter() override;
  void consume(const FlowRecord& r) override;
  void consume_batch(const FlowRecord* const* recs, size_t n) override;
  void tick();   // time-based rotation on an idle link
  void close();  // flushes; throws if a write failed (disk full is an error, not a loss)
  uint64_t rotations() const { return rotations_; }
  uint64_t write_errors() const { return write_errors_; }

 private:
  void open_file();
  void rotate();
  void write_pending();  // line_ to the file
  FILE* f_ = nullptr;
  bool own_ = false, payload_;
  std::string path_, line_;
  std::vector<char> buf_;
  RotateConfig rot_;
  uint64_t bytes_ = 0, opened_ns_ = 0, rotations_ = 0, write_errors_ = 0;
};

// Hands every record to each consumer in turn (JSON file, IPFIX, ...).
class Fanout final : public RecordConsumer {
 public:
  void add(RecordConsumer* c) {
    if (c) outs_.push_back(c);
  }
  void consume(const FlowRecord& r) override {
    for (auto* c : outs_) c->consume(r);
  }
  void consume_batch(const FlowRecord* const* recs, size_t n) override {
    for (auto* c : outs_) c->consume_batch(recs, n);
  }
  void prefetch(const FlowRecord& r, bool slot) override {
    for (auto* c : outs_) c->prefetch(r, slot);
  }

 private:
  std::vector<RecordConsumer*> outs_;
};

// Counts records and keeps per-host byte totals for the human summary; forwards every
// record to `next` when set.
class SummaryCollector final : public RecordConsumer {
 public:
  explicit SummaryCollector(RecordConsumer* next) : next_(next) {}
  void consume(const FlowRecord& r) override;
  void consume_batch(const FlowRecord* const* recs, size_t n) override {
    for (size_t i = 0; i < n; i++) count(*recs[i]);
    if (next_) next_->consume_batch(recs, n);
  }
  void prefetch(const FlowRecord& r, bool slot) override {
    if (next_) next_->prefetch(r, slot);
  }
  uint64_t records = 0;
  uint64_t by_reason[6] = {};
  struct Talker {
    std::string ip;
    uint64_t bytes, packets, flows;
  };
  std::vector<Talker> top(size_t n) const;

 private:
  void count(const FlowRecord& r);
  RecordConsumer* next_;
  struct Addr {
    uint8_t a[16];
    uint8_t ver;
    bool operator==(const Addr& o) const { return std::memcmp(this, &o, sizeof *this) == 0; }
  };
  struct AddrHash {
    size_t operator()(const Addr& x) const { return XXH3_64bits(&x, sizeof x); }
  };
  struct Host {
    uint64_t bytes = 0, packets = 0, flows = 0;
  };
  std::unordered_map<Addr, Host, AddrHash> hosts_;  // control side, not the hot path
 public:
  bool track_hosts = true;  // off when no summary is printed
};

// Human summary: packets, rate, flows, top talkers, every non-zero counter (drops first).
std::string format_summary(const ReplayResult& r, const SummaryCollector& s, uint32_t cores,
                           const std::string& flows_out);
// The same facts for scripts and tests.
std::string format_summary_json(const ReplayResult& r, const SummaryCollector& s,
                                uint32_t cores);

}  // namespace ls
