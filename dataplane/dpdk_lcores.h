// DPDK datapath: RX lcores (ethdev queues → FlowCore) and worker lcores (records routed
// by server endpoint). No syscalls, no logging, no allocation in these loops; control
// talks to them only through published pointers and rings.
#pragma once
#include <rte_mbuf.h>
#include <rte_mempool.h>
#include <rte_rcu_qsbr.h>
#include <rte_ring.h>

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "dataplane/flow_core.h"
#include "dataplane/record.h"

namespace ls {

// Ring and pool drops, per lcore, owned by the lcore that counts them.
struct alignas(64) RingCounters {
  OwnedCounter records_out;            // records enqueued downstream
  OwnedCounter record_ring_full;       // dropped: downstream ring full (live mode)
  OwnedCounter record_pool_empty;      // dropped: no free record buffer
  OwnedCounter shutdown_waits;         // shutdown flush waited for ring space (no drop)
};

// Settings the control core may change while running. Published as a whole by pointer
// swap; lcores pick it up at their next quiescent point; the old one is freed after a
// QSBR grace period.
struct LiveSettings {
  SamplingConfig sampling;
  std::shared_ptr<const PacketFilter> filter;
  uint64_t version = 0;
};

struct RxQueueRef {
  uint16_t port;
  uint16_t queue;
};

// Shared by all lcores, written by control only before launch (except the atomics).
struct RuntimeShared {
  std::atomic<bool> stop{false};
  std::atomic<LiveSettings*> live{nullptr};
  rte_rcu_qsbr* qsbr = nullptr;
  rte_mempool* record_pool = nullptr;  // FlowRecord buffers
  int ts_dynfield = -1;                // mbuf RX timestamp field, -1 = use TSC
  uint64_t ts_dynflag = 0;
  uint64_t ts_mul = 1;                 // field units → ns (net_pcap in DPDK 22.11: µs)
  uint64_t tsc_hz = 0, tsc0 = 0, wall0_ns = 0;
  int loop_dynfield = -1;              // memory replay: pass (low 32) | clock epoch << 32
  int wire_dynfield = -1;              // memory replay: original frame length (snaplen-cut captures)
  uint16_t burst = 32;
  uint32_t idle_sleep_us = 0;  // see DpdkConfig::idle_sleep_us
  bool packet_clock = false;  // true: time only advances with packet timestamps (pcap vdevs)
  // Fault drill (/fault/stall): workers take nothing from their rings until this TSC
  // value (0 = none); a shutdown ends it.
  std::atomic<uint64_t> stall_workers_until_tsc{0};
};

// /flows/top: control asks, the RX lcore scans its own table a slice per check point and
// publishes its top N; control never reads a table.
struct TopRequest {
  static constexpr uint32_t kMax = 1000;
  std::atomic<uint32_t> asked{0};  // control: bump after setting n and by_packets
  std::atomic<uint32_t> done{0};   // lcore: = asked once `result` is complete
  uint32_t n = 20;
  bool by_packets = false;
  std::vector<FlowEntry> result;   // capacity reserved at start: no allocation on the lcore
  // lcore-private scan state
  uint32_t serving = 0, pos = 0;
  bool scanning = false;
};

// --sketches-every in run: control asks, the worker appends its server and client sketches
// to `text`, a slice of a table per pass, and publishes; control reads `text` (and `lines`)
// only once done == asked, and asks again only after that.
struct SketchRequest {
  static constexpr uint32_t kSlice = 64;  // endpoint table slots per pass
  std::atomic<uint32_t> asked{0};
  std::atomic<uint32_t> done{0};
  std::string text;  // grows on the worker (malloc, once per export period)
  size_t lines = 0;
  // lcore-private
  uint32_t serving = 0, pos = 0;
};

// One RX lcore: its queues, its flow table, its output rings (one per worker).
struct alignas(64) RxLcore {
  unsigned lcore_id = 0;
  uint16_t index = 0;  // RX lcore number; also its QSBR thread id
  std::vector<RxQueueRef> queues;
  std::unique_ptr<RecordSink> sink;  // into to_worker rings
  std::unique_ptr<FlowCore> core;
  std::vector<rte_ring*> to_worker;  // SP/SC
  RingCounters rc;
  uint64_t settings_version = 0;
  std::atomic<bool> done{false};
  std::atomic<uint64_t> rx_packets{0};  // published for /stats and idle detection
  std::atomic<uint32_t> flows{0};
  TopRequest top;
  RuntimeShared* shared = nullptr;
};

// One worker lcore. Server phase: drains the rings from every RX lcore and runs its stage
// on the server endpoints it owns. Client phase: the record goes on to the worker owning
// its client endpoint (itself: no ring), whose stage adds the client view; then control.
struct alignas(64) WorkerLcore {
  unsigned lcore_id = 0;
  uint16_t index = 0;
  std::vector<rte_ring*> from_rx;  // one per RX lcore
  // index = worker; null for itself. Empty when there is no stage (no client phase).
  std::vector<rte_ring*> to_worker, from_worker;
  rte_ring* to_control = nullptr;  // SP/SC
  RecordStage* stage = nullptr;    // e.g. the feature stage; owned by the runtime
  RingCounters rc;
  OwnedCounter client_ring_full;   // dropped: the client owner's ring was full (live mode)
  std::atomic<bool> server_done{false};  // every RX record seen and passed on
  std::atomic<bool> done{false};
  std::atomic<uint64_t> records{0};
  const std::vector<std::unique_ptr<RxLcore>>* rx = nullptr;  // to know when RX is done
  // A source on the control core (the collector in `run`), whose ring is the last of
  // from_rx; it is done like an RX lcore when this is set. Null: no such source.
  const std::atomic<bool>* feed_done = nullptr;
  const std::vector<std::unique_ptr<WorkerLcore>>* peers = nullptr;  // all workers
  SketchRequest sketches;
  RuntimeShared* shared = nullptr;
};

// Creates the lcore's flow table (preallocated here, on the control core, before launch).
void rx_lcore_init(RxLcore& l, const CoreConfig& cfg);
int rx_lcore_main(void* arg);      // arg: RxLcore*
int worker_lcore_main(void* arg);  // arg: WorkerLcore*

// The worker that owns a record: by the server endpoint (the initiator's peer), so every
// record about one server lands on one worker.
uint16_t worker_of(const FlowRecord& r, uint16_t workers);
// The worker that owns a record's client endpoint (the initiator).
uint16_t client_worker_of(const FlowRecord& r, uint16_t workers);

}  // namespace ls
