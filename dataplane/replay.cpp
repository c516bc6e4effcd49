#include "dataplane/replay.h"

#include <time.h>

#include <memory>
#include <thread>

#include "dataplane/clock.h"
#include "dataplane/spsc_ring.h"

namespace ls {
namespace {

constexpr uint32_t kBurst = 256;

// Recorded-speed pacing: packet i is due at wall0 + (ts_i - ts0) / speed. A backward
// timestamp step restarts the schedule instead of bursting.
class Pacer {
 public:
  explicit Pacer(double speed) : speed_(speed) {}
  void wait(uint64_t ts) {
    if (speed_ <= 0) return;
    uint64_t now = mono_ns();
    if (!started_ || ts < ts0_) {
      started_ = true;
      ts0_ = ts;
      wall0_ = now;
      return;
    }
    uint64_t due = wall0_ + uint64_t(double(ts - ts0_) / speed_);
    if (due > now) {
      timespec t{time_t(due / 1'000'000'000ull), long(due % 1'000'000'000ull)};
      clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &t, nullptr);
    }
  }
  bool active() const { return speed_ > 0; }

 private:
  double speed_;
  bool started_ = false;
  uint64_t ts0_ = 0, wall0_ = 0;
};

struct Progress {
  const ReplayOptions& opt;
  uint64_t t0 = mono_ns(), next = t0 + 1'000'000'000ull;
  void maybe(uint64_t pkts, uint64_t recs) {
    if (!opt.progress) return;
    uint64_t now = mono_ns();
    if (now < next) return;
    next = now + 1'000'000'000ull;
    opt.progress({pkts, recs, double(now - t0) / 1e9});
  }
};

// Hands records to the consumer on the same thread through a RecordHold: each one's
// prefetch is issued when the flow ends and its consume() runs after the burst (or the
// hold) is done. flush() after every burst and at the end.
class DirectSink final : public RecordSink {
 public:
  DirectSink(RecordConsumer& c, uint16_t core) : hold_(c), core_(core) {}
  void emit(const FlowEntry& e, const uint8_t* pay, uint16_t cap, EndReason why) override {
    hold_.slot().fill(e, pay, cap, why, core_, sampler->config());
    hold_.commit();
  }
  void flush() { hold_.flush(); }
  uint64_t records() const { return hold_.added; }
  const Sampler* sampler = nullptr;

 private:
  RecordHold hold_;
  uint16_t core_;
};

bool stopped(const ReplayOptions& o) { return o.stop && o.stop->load(std::memory_order_relaxed); }

ReplayResult run_inline(PacketSource& src, const CoreConfig& cfg, RecordConsumer& out,
                        const ReplayOptions& opt) {
  ReplayResult r;
  DirectSink sink(out, 0);
  auto core = std::make_unique<FlowCore>(cfg, sink, 0);
  sink.sampler = &core->sampler;
  Arena arena;
  PacketView v[kBurst];
  Pacer pacer(opt.speed);
  Progress prog{opt};
  uint64_t t0 = mono_ns();
  ClockGuard clock(cfg.table.backward_tolerance_ns);
  for (uint32_t n; (n = src.next_burst(v, pacer.active() ? 1 : kBurst, arena));) {
    if (pacer.active()) pacer.wait(v[0].ts_ns);
    for (uint32_t i = 0; i < n; i++) clock.stamp(v[i]);
    core->process_raw(v, n);
    sink.flush();
    prog.maybe(core->ctr.get(Ctr::packets), sink.records());
    if (stopped(opt)) {
      r.interrupted = true;
      break;
    }
  }
  core->finish();
  sink.flush();
  r.wall_ns = mono_ns() - t0;
  r.per_core.push_back(core->ctr);
  r.total = core->ctr;
  r.table_bytes = core->table.memory_bytes();
  return r;
}

// ---- K > 1 ----

struct Batch {
  uint64_t seq = 0;  // 1, 2, ... in reading order
  Arena arena;
  PacketView views[kBurst];
  PacketMeta metas[kBurst];
  std::vector<uint16_t> idx;  // K × kBurst: packet indices per core
  std::vector<uint16_t> cnt;  // per core
  std::atomic<uint32_t> refs{0};
  Batch(uint32_t k) : arena(1u << 20), idx(size_t(k) * kBurst), cnt(k) {}
};

// A record and the batch its core was processing when it was emitted; the flush at the
// end is stamped in chunks from kFlushBase up, so cores' final records interleave.
struct Stamped {
  uint64_t seq;
  FlowRecord r;
};
constexpr uint64_t kFlushBase = 1ull << 62, kFinal = UINT64_MAX;
constexpr uint32_t kFlushChunk = 256;
constexpr size_t kPendingMax = 1024;  // records held per core out of turn (~0.9 MB)

// A core's records held by the reader: a fixed ring (a deque allocated an aligned node
// per record, and the heap fragmented: +160 MB peak on the synthetic capture).
class Pending {
 public:
  Pending() : buf_(kPendingMax + 1) {}
  bool empty() const { return n_ == 0; }
  bool full() const { return n_ == buf_.size(); }
  const Stamped& front() const { return buf_[head_]; }
  const Stamped& back() const { return buf_[(head_ + n_ - 1) % buf_.size()]; }
  Stamped& slot() { return buf_[(head_ + n_) % buf_.size()]; }  // the next free one
  void commit() { n_++; }  // slot() was filled
  void pop_front() {
    head_ = (head_ + 1) % buf_.size();
    n_--;
  }

 private:
  std::vector<Stamped> buf_;
  size_t head_ = 0, n_ = 0;
};

// Records leave a core through its own ring; a full ring makes the core wait (replay
// loses nothing) and the wait is counted.
class RingSink final : public RecordSink {
 public:
  RingSink(uint16_t core) : ring(1024), core_(core) {}
  void emit(const FlowEntry& e, const uint8_t* pay, uint16_t cap, EndReason why) override {
    if (seq >= kFlushBase && ++in_chunk > kFlushChunk) {  // this chunk of the flush is complete
      done.store(seq, std::memory_order_release);
      seq++;
      in_chunk = 1;
    }
    rec_.seq = seq;
    rec_.r.fill(e, pay, cap, why, core_, sampler->config());
    while (!ring.push(rec_)) {
      waits++;
      std::this_thread::yield();
    }
  }
  SpscRing<Stamped> ring;  // records by value: no allocation on the core
  const Sampler* sampler = nullptr;
  uint64_t waits = 0;
  uint64_t seq = 0;  // set by the core before each batch, and to kFlushBase before finish()
  // The last stamp this core finished (kFinal after finish()): every record it stamped
  // up to there is in the ring.
  std::atomic<uint64_t> done{0};

 private:
  uint32_t in_chunk = 0;
  uint16_t core_;
  Stamped rec_;
};

ReplayResult run_multi(PacketSource& src, const CoreConfig& cfg, RecordConsumer& out,
                       const ReplayOptions& opt) {
  const uint32_t k = opt.cores;
  ReplayResult r;
  std::vector<std::unique_ptr<RingSink>> sinks;
  std::vector<std::unique_ptr<FlowCore>> cores;
  std::vector<std::unique_ptr<SpscRing<Batch*>>> in, back;
  for (uint32_t c = 0; c < k; c++) {
    sinks.push_back(std::make_unique<RingSink>(uint16_t(c)));
    cores.push_back(std::make_unique<FlowCore>(cfg, *sinks[c], uint16_t(c)));
    sinks[c]->sampler = &cores[c]->sampler;
    in.push_back(std::make_unique<SpscRing<Batch*>>(64));
    back.push_back(std::make_unique<SpscRing<Batch*>>(256));
  }
  std::vector<std::unique_ptr<Batch>> pool;
  std::vector<Batch*> free_list;
  for (uint32_t i = 0; i < 16 * k; i++) {
    pool.push_back(std::make_unique<Batch>(k));
    free_list.push_back(pool.back().get());
  }
  std::atomic<uint32_t> done{0};
  std::vector<std::thread> threads;
  for (uint32_t c = 0; c < k; c++) {
    threads.emplace_back([&, c] {
      FlowCore& core = *cores[c];
      PacketMeta* ptrs[kBurst];
      for (;;) {
        Batch* b;
        if (!in[c]->pop(b)) {
          std::this_thread::yield();
          continue;
        }
        if (!b) break;  // end of input
        uint16_t n = b->cnt[c];
        const uint16_t* ix = &b->idx[size_t(c) * kBurst];
        for (uint16_t i = 0; i < n; i++) ptrs[i] = &b->metas[ix[i]];
        uint64_t seq = b->seq;
        sinks[c]->seq = seq;
        if (n) core.process(ptrs, n);
        if (b->refs.fetch_sub(1, std::memory_order_acq_rel) == 1)
          while (!back[c]->push(b)) std::this_thread::yield();
        sinks[c]->done.store(seq, std::memory_order_release);
      }
      sinks[c]->seq = kFlushBase;
      core.finish();
      sinks[c]->done.store(kFinal, std::memory_order_release);
      done.fetch_add(1, std::memory_order_release);
    });
  }

  // Records reach the consumer in one order whatever the threads' timing: by stamp (the
  // batch that emitted them), then by core, then as the core emitted them. Records of the
  // current (stamp, core) go on as they arrive; the others wait here until their turn (up
  // to kPendingMax per core, then in their core's ring, and then the core waits: counted).
  // Handed over through a RecordHold, as DirectSink does.
  std::vector<Pending> pending(k);
  RecordHold hold(out);
  uint64_t assigned = 0, cur_s = 1;  // batches stamped so far; the stamp being handed over
  uint32_t cur_c = 0;
  bool ended = false;  // no batch after `assigned`
  // Moves one record from core c's ring into its pending ring; false if none (or no room).
  auto take = [&](uint32_t c) {
    Pending& q = pending[c];
    if (q.full() || !sinks[c]->ring.pop(q.slot())) return false;
    q.commit();
    return true;
  };
  auto drain = [&] {
    for (;;) {
      RingSink& sk = *sinks[cur_c];
      uint64_t d = sk.done.load(std::memory_order_acquire);  // before popping: all of ≤ d is in
      // This core's records of cur_s, until one of a later stamp shows or its ring is empty.
      for (Pending& q = pending[cur_c];;) {
        for (; !q.empty() && q.front().seq == cur_s; q.pop_front()) {
          hold.slot() = q.front().r;
          hold.commit();
        }
        if (!q.empty() || !take(cur_c)) break;
      }
      if (d < cur_s) break;  // core cur_c may still emit records of this stamp
      if (cur_c + 1 < k) {
        cur_c++;
        continue;
      }
      uint64_t next = cur_s >= kFlushBase ? cur_s + 1 : cur_s < assigned ? cur_s + 1 : ended ? kFlushBase : 0;
      if (!next) break;  // the next batch is not read yet
      if (cur_s >= kFlushBase) {  // past the flush's last chunk once every core is done
        bool all = true;
        for (uint32_t c = 0; c < k; c++) {
          bool finished = sinks[c]->done.load(std::memory_order_acquire) == kFinal;
          take(c);
          all = all && finished && pending[c].empty();
        }
        if (all) break;
      }
      cur_c = 0;
      cur_s = next;
    }
    // Other cores' records wait here, up to a bound: past it their rings fill and those
    // cores wait (counted) — and yield the CPU to the core whose turn it is.
    for (uint32_t c = 0; c < k; c++)
      while (take(c)) {
      }
    hold.flush();
    for (uint32_t c = 0; c < k; c++) {
      Batch* b;
      while (back[c]->pop(b)) free_list.push_back(b);
    }
  };
  auto push_wait = [&](uint32_t c, Batch* b) {
    while (!in[c]->push(b)) {
      drain();
      std::this_thread::yield();
    }
  };

  Counters reader;  // parse-stage INFO counters, owned by this thread
  ParseConfig pcfg = cfg.parse;
  Pacer pacer(opt.speed);
  Progress prog{opt};
  ClockGuard clock(cfg.table.backward_tolerance_ns);
  uint64_t t0 = mono_ns(), pkts = 0;
  for (;;) {
    while (free_list.empty()) {
      drain();
      std::this_thread::yield();
    }
    Batch* b = free_list.back();
    uint32_t n = src.next_burst(b->views, pacer.active() ? 1 : kBurst, b->arena);
    if (!n) break;
    free_list.pop_back();
    if (pacer.active()) pacer.wait(b->views[0].ts_ns);
    std::fill(b->cnt.begin(), b->cnt.end(), 0);
    for (uint32_t i = 0; i < n; i++) {
      if (i + 4 < n) __builtin_prefetch(b->views[i + 4].data);
      PacketMeta& m = b->metas[i];
      PacketView& v = b->views[i];
      clock.stamp(v);
      uint32_t c = 0;
      if (parse_packet(v, v.link, pcfg, m, reader)) {
        rewrite_addresses(m, v.rewrite);
        c = dispatch_core(m, k);
      }
      b->idx[size_t(c) * kBurst + b->cnt[c]++] = uint16_t(i);
    }
    // Every core gets every batch, its share possibly empty: finishing it tells the
    // reader that no record of this batch is still to come from that core.
    b->seq = ++assigned;
    b->refs.store(k, std::memory_order_relaxed);
    for (uint32_t c = 0; c < k; c++) push_wait(c, b);
    pkts += n;
    drain();
    prog.maybe(pkts, hold.added);
    if (stopped(opt)) {
      r.interrupted = true;
      break;
    }
  }
  ended = true;
  for (uint32_t c = 0; c < k; c++) push_wait(c, nullptr);
  while (done.load(std::memory_order_acquire) < k) {
    drain();
    std::this_thread::yield();
  }
  for (auto& t : threads) t.join();
  drain();
  r.wall_ns = mono_ns() - t0;
  r.total = reader;
  for (uint32_t c = 0; c < k; c++) {
    r.per_core.push_back(cores[c]->ctr);
    r.total += cores[c]->ctr;
    r.table_bytes += cores[c]->table.memory_bytes();
    r.record_ring_waits += sinks[c]->waits;
  }
  return r;
}

}  // namespace

ReplayResult run_replay(PacketSource& src, const CoreConfig& cfg, RecordConsumer& out,
                        const ReplayOptions& opt) {
  if (opt.cores <= 1) return run_inline(src, cfg, out, opt);
  return run_multi(src, cfg, out, opt);
}

}  // namespace ls
