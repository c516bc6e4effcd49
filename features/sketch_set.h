// Many sensors' endpoint sketches merged per kind, endpoint and window (`linesight
// sketches merge`). A merge host may hold tens of millions of endpoints, and most meet a
// handful of peers, so an endpoint keeps its registers in the sparse form of the feature
// tables (features/endpoint_sketch.h) until a counter outgrows it: ≈ 0.2 KB per small
// endpoint instead of the 0.6 KB of dense registers. Counts, registers and the merged
// lines are exactly those of merging dense sketches with merge_sketch (unit-tested).
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <unordered_set>
#include <vector>

#include "features/endpoint_sketch.h"
#include "features/sketch_export.h"

namespace ls {

class SketchSet {
 public:
  SketchSet();
  SketchSet(const SketchSet&) = delete;  // the index's functors point at entries_
  SketchSet& operator=(const SketchSet&) = delete;

  // Merges s in. Every sketch must share the first's seed and window length, and every
  // client line the first client line's pseudonym key; SketchError names the difference,
  // and a refused sketch changes nothing.
  void add(const EndpointSketch& s);
  size_t size() const { return entries_.size(); }
  size_t count(SketchKind k) const { return kinds_[static_cast<int>(k)]; }
  // Endpoints in (kind, address, window) order: the order merged files are written in.
  std::vector<uint32_t> in_order() const;
  // The endpoints of one kind by their first counter's estimate (servers by distinct
  // clients, clients by distinct servers), largest first, ties in in_order()'s order;
  // at most n of them (0: all).
  std::vector<uint32_t> top(SketchKind k, size_t n) const;
  // Endpoint i as one merged sketch (dense registers: build them one at a time).
  EndpointSketch at(uint32_t i) const;
  // Bytes held: entries, their index and address text, dense blocks.
  size_t memory_bytes() const;

 private:
  struct Entry {
    std::string addr;
    uint64_t window, first_ns, last_ns, flows, bytes, failed;
    uint32_t sensors;
    SketchKind kind;
    EndpointSketches regs;
  };
  // Entries in chunks: never moved as the set grows, at most one chunk's slack.
  class Entries {
   public:
    Entry& operator[](uint32_t i) { return chunks_[i / kChunk][i % kChunk]; }
    const Entry& operator[](uint32_t i) const { return chunks_[i / kChunk][i % kChunk]; }
    uint32_t size() const { return n_; }
    void push_back(Entry e);
    void pop_back();
    size_t memory_bytes() const { return chunks_.size() * kChunk * sizeof(Entry); }

   private:
    static constexpr uint32_t kChunk = 4096;
    std::vector<std::vector<Entry>> chunks_;  // each reserved whole, filled as entries come
    uint32_t n_ = 0;
  };
  struct Hash {
    const Entries* e;
    size_t operator()(uint32_t i) const;
  };
  struct Same {
    const Entries* e;
    bool operator()(uint32_t a, uint32_t b) const;
  };
  void check(const EndpointSketch& s);

  Entries entries_;
  std::unordered_set<uint32_t, Hash, Same> index_;  // of entries_
  GrowingSketchPool pool_;
  size_t kinds_[2] = {};
  std::optional<EndpointSketch> first_;     // seed and window length of the first line
  std::optional<std::string> client_key_;   // the first client line's pseudonym key
};

}  // namespace ls
