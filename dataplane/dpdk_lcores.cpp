#include "dataplane/dpdk_lcores.h"

#include <rte_cycles.h>
#include <rte_ethdev.h>
#include <rte_mbuf_dyn.h>
#include <rte_pause.h>

#include <algorithm>

#include "dataplane/clock.h"
#include "dataplane/lcore_handoff.h"

namespace ls {

namespace {
uint16_t owner_of(const uint8_t* addr, uint8_t ver, uint16_t workers) {
  uint64_t h = XXH3_64bits(addr, ver == 4 ? 4 : 16);
  return uint16_t((unsigned __int128)h * workers >> 64);
}
}  // namespace

uint16_t worker_of(const FlowRecord& r, uint16_t workers) {
  return owner_of(r.e.init_lo ? r.e.key.hi : r.e.key.lo, r.e.key.ip_ver, workers);
}

uint16_t client_worker_of(const FlowRecord& r, uint16_t workers) {
  return owner_of(r.e.init_lo ? r.e.key.lo : r.e.key.hi, r.e.key.ip_ver, workers);
}

namespace {

constexpr uint32_t kMaxBurst = 256;
constexpr uint32_t kCheckEvery = 64;  // bursts between looks at published settings
constexpr uint32_t kIdlePolls = 1024;  // empty polls before an optional idle sleep

// Pure polling is right on isolated cores; where lcores share CPUs (tests, small VMs)
// an idle lcore yields its CPU for a moment. Never happens while packets flow.
inline void idle(const RuntimeShared& sh, uint32_t& empty) {
  if (++empty < kIdlePolls) {
    rte_pause();
    return;
  }
  empty = 0;
  if (sh.idle_sleep_us) rte_delay_us_sleep(sh.idle_sleep_us);
}

// Records leave the RX lcore into the owning worker's ring. Live traffic never waits:
// a full ring or empty pool drops the record and counts it. At shutdown the flush waits
// (control is draining) so that no record is lost.
class RingRecordSink final : public RecordSink {
 public:
  explicit RingRecordSink(RxLcore* l) : l_(l) {}
  void emit(const FlowEntry& e, const uint8_t* pay, uint16_t cap, EndReason why) override {
    RuntimeShared& sh = *l_->shared;
    void* obj;
    bool flushing = sh.stop.load(std::memory_order_relaxed);
    while (!pool_get(sh.record_pool, &obj)) {
      if (!flushing) {
        l_->rc.record_pool_empty++;
        return;
      }
      l_->rc.shutdown_waits++;
      rte_pause();
    }
    auto* r = static_cast<FlowRecord*>(obj);
    r->fill(e, pay, cap, why, l_->index, l_->core->sampler.config());
    rte_ring* ring = l_->to_worker[worker_of(*r, uint16_t(l_->to_worker.size()))];
    while (!ring_put(ring, r)) {
      if (!flushing) {
        l_->rc.record_ring_full++;
        pool_put(sh.record_pool, r);
        return;
      }
      l_->rc.shutdown_waits++;
      rte_pause();
    }
    l_->rc.records_out++;
  }

 private:
  RxLcore* l_;
};

inline uint64_t now_ns(const RuntimeShared& sh) {
  return sh.wall0_ns + (rte_rdtsc() - sh.tsc0) * 1'000'000'000ull / sh.tsc_hz;
}

constexpr uint32_t kTopSlice = 8192;  // table entries scanned per check point

uint64_t top_key(const FlowEntry& e, bool pk) {
  return pk ? uint64_t(e.pkts[0]) + e.pkts[1] : e.bytes[0] + e.bytes[1];
}

// One slice of a /flows/top scan: keeps the N largest in `result` as a min-heap.
void top_step(RxLcore& l) {
  TopRequest& t = l.top;
  uint32_t asked = t.asked.load(std::memory_order_acquire);
  if (!t.scanning) {
    if (asked == t.serving) return;
    t.serving = asked;
    t.scanning = true;
    t.pos = 0;
    t.result.clear();
  }
  auto cmp = [pk = t.by_packets](const FlowEntry& a, const FlowEntry& b) {
    return top_key(a, pk) > top_key(b, pk);
  };
  const FlowTable& tab = l.core->table;
  tab.for_range(t.pos, t.pos + kTopSlice, [&](const FlowEntry& e) {
    if (t.result.size() < t.n) {
      t.result.push_back(e);
      std::push_heap(t.result.begin(), t.result.end(), cmp);
    } else if (top_key(e, t.by_packets) > top_key(t.result.front(), t.by_packets)) {
      std::pop_heap(t.result.begin(), t.result.end(), cmp);
      t.result.back() = e;
      std::push_heap(t.result.begin(), t.result.end(), cmp);
    }
  });
  t.pos += kTopSlice;
  if (t.pos >= tab.high_water()) {
    t.scanning = false;
    t.done.store(t.serving, std::memory_order_release);
  }
}

}  // namespace

void rx_lcore_init(RxLcore& l, const CoreConfig& cfg) {
  l.sink = std::make_unique<RingRecordSink>(&l);
  l.core = std::make_unique<FlowCore>(cfg, *l.sink, l.index);
  l.top.result.reserve(TopRequest::kMax);
}

int rx_lcore_main(void* arg) {
  auto* l = static_cast<RxLcore*>(arg);
  RuntimeShared& sh = *l->shared;
  rte_mbuf* mb[kMaxBurst];
  PacketView v[kMaxBurst];
  const uint16_t burst = sh.burst;
  uint64_t total = 0;
  uint32_t n_bursts = 0, empty = 0;
  ClockGuard guard(l->core->table.config().backward_tolerance_ns);
  rte_rcu_qsbr_thread_register(sh.qsbr, l->index);
  rte_rcu_qsbr_thread_online(sh.qsbr, l->index);
  while (!sh.stop.load(std::memory_order_relaxed)) {
    bool got = false;
    for (const RxQueueRef& q : l->queues) {
      uint16_t n = rte_eth_rx_burst(q.port, q.queue, mb, burst);
      if (n == 0) continue;
      tsan_adopt(reinterpret_cast<void* const*>(mb), n);  // the memory-replay feeder's mbufs
      got = true;
      empty = 0;
      uint64_t clock = sh.ts_dynfield < 0 ? now_ns(sh) : 0;
      for (uint16_t i = 0; i < n; i++) {
        rte_mbuf* m = mb[i];
        uint64_t ts = clock;
        if (sh.ts_dynfield >= 0 && (m->ol_flags & sh.ts_dynflag))
          ts = device_ts_ns(*RTE_MBUF_DYNFIELD(m, sh.ts_dynfield, uint64_t*), sh.ts_mul);
        else if (!ts)
          ts = now_ns(sh);
        // Memory replay tags each mbuf with its pass (low 32 bits) and the clock epoch
        // the feeder decided (high bits), as the replay reader does for pcap files.
        uint64_t tag = sh.loop_dynfield >= 0 ? *RTE_MBUF_DYNFIELD(m, sh.loop_dynfield, uint64_t*) : 0;
        // Multi-segment mbufs: the parser sees the first segment, the record counts the
        // whole frame.
        uint32_t wire = sh.wire_dynfield >= 0 ? *RTE_MBUF_DYNFIELD(m, sh.wire_dynfield, uint32_t*)
                                              : rte_pktmbuf_pkt_len(m);
        v[i] = {rte_pktmbuf_mtod(m, const uint8_t*), rte_pktmbuf_data_len(m), wire, ts, uint32_t(tag), LinkType::ETHERNET, uint16_t(tag >> 32)};
        if (sh.packet_clock && sh.loop_dynfield < 0) guard.stamp(v[i]);
      }
      l->core->process_raw(v, n);
      for (uint16_t i = 0; i < n; i++) tsan_handoff(mb[i]);  // rte_pktmbuf_free_bulk is in the library
      rte_pktmbuf_free_bulk(mb, n);
      total += n;
    }
    if (++n_bursts % kCheckEvery == 0) {
      l->rx_packets.store(total, std::memory_order_relaxed);
      l->flows.store(l->core->table.size(), std::memory_order_relaxed);
      LiveSettings* s = sh.live.load(std::memory_order_acquire);
      if (s && s->version != l->settings_version) {
        l->core->set_sampling(s->sampling);
        l->core->set_filter(s->filter);
        l->settings_version = s->version;
      }
      if (!sh.packet_clock) {
        // Idle links still age their flows: advance the table clock to wall time.
        l->core->table.advance_clock(now_ns(sh), 0);
        l->core->table.expire();
      }
      top_step(*l);
      tsan_handoff(sh.qsbr);  // QSBR's grace period is the edge to the control core's free
      rte_rcu_qsbr_quiescent(sh.qsbr, l->index);
    }
    if (!got) idle(sh, empty);
  }
  tsan_handoff(sh.qsbr);
  rte_rcu_qsbr_thread_offline(sh.qsbr, l->index);
  rte_rcu_qsbr_thread_unregister(sh.qsbr, l->index);
  l->core->finish();  // every active flow becomes a record (waiting for ring space)
  l->rx_packets.store(total, std::memory_order_relaxed);
  l->flows.store(0, std::memory_order_relaxed);
  l->done.store(true, std::memory_order_release);
  return 0;
}

namespace {

// Client phase, then control. Live mode drops on a full ring (counted); a shutdown
// flush waits, control is always draining.
void finish_record(WorkerLcore& w, RuntimeShared& sh, FlowRecord* r) {
  if (w.stage) w.stage->process_client(*r);
  bool flushing = sh.stop.load(std::memory_order_relaxed);
  while (!ring_put(w.to_control, r)) {
    if (!flushing) {
      w.rc.record_ring_full++;
      pool_put(sh.record_pool, r);
      return;
    }
    w.rc.shutdown_waits++;
    rte_pause();
  }
  w.rc.records_out++;
}

// The burst's table sets, then the slots in them, before the first record is processed:
// the misses overlap instead of stalling one record after another.
template <class F>
void prefetch_burst(void* const* objs, unsigned n, F&& prefetch) {
  for (bool slot : {false, true})
    for (unsigned i = 0; i < n; i++) prefetch(*static_cast<const FlowRecord*>(objs[i]), slot);
}

unsigned drain_clients(WorkerLcore& w, RuntimeShared& sh) {
  void* objs[kMaxBurst];
  unsigned got = 0;
  for (rte_ring* in : w.from_worker) {
    if (!in) continue;
    unsigned n = ring_take(in, objs, kMaxBurst);
    if (w.stage) prefetch_burst(objs, n, [&](const FlowRecord& r, bool slot) { w.stage->prefetch_client(r, slot); });
    for (unsigned i = 0; i < n; i++) finish_record(w, sh, static_cast<FlowRecord*>(objs[i]));
    got += n;
  }
  return got;
}

// Server phase done; hand the record to its client's owner.
void to_client_owner(WorkerLcore& w, RuntimeShared& sh, FlowRecord* r) {
  uint16_t o = w.to_worker.empty() ? w.index : client_worker_of(*r, uint16_t(w.to_worker.size()));
  if (o == w.index) return finish_record(w, sh, r);
  bool flushing = sh.stop.load(std::memory_order_relaxed);
  while (!ring_put(w.to_worker[o], r)) {
    if (!flushing) {
      w.client_ring_full++;
      pool_put(sh.record_pool, r);
      return;
    }
    // Two workers waiting on each other's full rings would deadlock: serve ours meanwhile.
    w.rc.shutdown_waits++;
    drain_clients(w, sh);
    rte_pause();
  }
}

}  // namespace

int worker_lcore_main(void* arg) {
  auto* w = static_cast<WorkerLcore*>(arg);
  RuntimeShared& sh = *w->shared;
  void* objs[kMaxBurst];
  uint64_t n_rec = 0;
  uint32_t empty = 0;
  for (;;) {
    if (uint64_t until = sh.stall_workers_until_tsc.load(std::memory_order_relaxed)) {
      if (rte_rdtsc() < until && !sh.stop.load(std::memory_order_relaxed)) {
        idle(sh, empty);  // a drill: the RX→worker rings fill and RX counts what it drops
        continue;
      }
      sh.stall_workers_until_tsc.compare_exchange_strong(until, 0, std::memory_order_relaxed);  // over
    }
    if (uint32_t a = w->sketches.asked.load(std::memory_order_acquire);
        a != w->sketches.done.load(std::memory_order_relaxed) && w->stage) {
      SketchRequest& s = w->sketches;
      if (s.serving != a) {
        s.serving = a;
        s.pos = 0;
        s.lines = 0;
        s.text.clear();
      }
      if (w->stage->sketch_lines(s.text, s.pos, SketchRequest::kSlice, s.lines))
        s.done.store(a, std::memory_order_release);
    }
    // Read the "done" flags before draining, so a record enqueued before them is seen.
    bool rx_done = true;
    for (auto& r : *w->rx) rx_done &= r->done.load(std::memory_order_acquire);
    if (w->feed_done) rx_done &= w->feed_done->load(std::memory_order_acquire);
    bool peers_done = true;
    for (auto& p : *w->peers) peers_done &= p->server_done.load(std::memory_order_acquire);
    unsigned got_rx = 0;
    for (rte_ring* in : w->from_rx) {
      unsigned n = ring_take(in, objs, kMaxBurst);
      got_rx += n;
      if (w->stage) {
        prefetch_burst(objs, n, [&](const FlowRecord& r, bool slot) { w->stage->prefetch(r, slot); });
        w->stage->process_batch(reinterpret_cast<FlowRecord* const*>(objs), n);
      }
      for (unsigned i = 0; i < n; i++) to_client_owner(*w, sh, static_cast<FlowRecord*>(objs[i]));
    }
    n_rec += got_rx;
    unsigned got = got_rx + drain_clients(*w, sh);
    w->records.store(n_rec, std::memory_order_relaxed);
    if (rx_done && !got_rx) w->server_done.store(true, std::memory_order_release);
    if (!got) {
      if (peers_done) break;
      idle(sh, empty);
    } else {
      empty = 0;
    }
  }
  w->done.store(true, std::memory_order_release);
  return 0;
}

}  // namespace ls
