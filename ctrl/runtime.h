// Control-core view of the DPDK runtime: owns EAL setup, ports, rings, pools and the
// lcore structs; everything here runs on the main (control) lcore.
#pragma once
#include <rte_ring.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "ctrl/config.h"
#include "dataplane/dpdk_lcores.h"
#include "features/sketch_export.h"
#include "dataplane/replay.h"
#include "features/feature_stage.h"

struct rte_mempool;

namespace ls {

class CtlServer;

class Runtime;

// Records from a source on the control core (the collector) into the workers' server
// phase, by the same owner hash as an RX lcore's, through one SP/SC ring per worker.
// A full ring or an empty record pool is waited for by draining the workers into
// `drain_to` (control is their only drainer: waiting without draining would deadlock),
// so a burst of export datagrams waits in the socket buffer instead of being lost. Live,
// a wait lasts at most 100 ms; then records drop (counted) until there is room again — a
// stalled worker must not stall the control core. Flushing (shutdown) waits as long as
// it takes.
class ControlFeed final : public RecordConsumer {
 public:
  void consume(const FlowRecord& r) override;
  // Then drains the workers once: control pushing a burst must also take their output,
  // or their rings to control fill and drop while it pushes.
  void consume_batch(const FlowRecord* const* recs, size_t n) override;
  RingCounters rc;            // records_out, record_ring_full, record_pool_empty, shutdown_waits
  uint64_t live_waits = 0;    // drains done while waiting for room, live
  std::atomic<bool> done{false};
  RecordConsumer* drain_to = nullptr;  // set before the first record
  bool flushing = false;

 private:
  friend class Runtime;
  bool make_room();
  Runtime* rt_ = nullptr;
  rte_mempool* pool_ = nullptr;
  std::vector<rte_ring*> to_worker_;
  uint64_t deadline_tsc_ = 0;
  bool gave_up_ = false;
};

class Runtime {
 public:
  explicit Runtime(Config& cfg) : cfg_(cfg) {}
  ~Runtime();

  void init_eal(const std::vector<std::string>& extra);  // throws with EAL's reason
  void setup();                                          // ports, rings, pools, lcores
  // A record source on the control core (`run --collect`): call before setup(); its
  // records go to control_feed() (set its drain_to first; flushing = true while the
  // source flushes at shutdown, then close_control_feed()).
  void enable_control_feed() { feed_on_ = true; }
  ControlFeed* control_feed() { return feed_.get(); }
  // The source has been told to flush (its records waiting for ring space meanwhile):
  // workers may finish once its rings are empty.
  void close_control_feed();
  void launch();
  // Moves finished records from the workers to `out`; returns how many.
  unsigned drain(RecordConsumer& out);
  void request_stop(const char* why);
  // Fault drill: "workers" stop taking records from the RX rings, or "control" stops
  // draining the workers' rings, for `ms` (1 .. 60000): the rings fill, the drops are
  // counted where they happen, and traffic flows again after. Returns what was done.
  std::string fault_stall(const std::string& stage, uint64_t ms);
  bool stopping() const { return shared_.stop.load(); }
  bool all_done() const;
  bool source_finished() const { return feeder_done_.load(); }
  uint64_t rx_packets() const;
  ReplayResult finish();  // after all_done(): joins lcores, sums counters
  void cleanup();         // stops ports, EAL cleanup

  // Live sampling or capture filter change: publish, wait for a QSBR grace period, free
  // the old settings. A null filter passes every packet.
  void set_sampling(const SamplingConfig& s);
  SamplingConfig sampling() const;
  void set_filter(std::shared_ptr<const PacketFilter> f);
  // After init_eal: the expression for the RX lcores, JIT-compiled for Ethernet when
  // DPDK can (else libpcap's interpreter, and stderr says why). Throws FilterError.
  std::shared_ptr<const PacketFilter> compile_filter(const std::string& expression);
  std::shared_ptr<const PacketFilter> filter() const { return live_->filter; }
  // Rises with every live change (sampling, filter): readers copy settings only when it moved.
  uint64_t live_version() const { return live_version_; }
  std::string stats_json() const;
  nlohmann::json feature_state() const;  // the workers' pair/server/client tables
  // Every worker's endpoint sketches; only once the workers have stopped (finish()).
  void sketches(const std::function<void(const EndpointSketch&)>& f) const;
  // While they run: asks every worker for its sketch lines (false when there is no feature
  // stage or the last ask is still being answered); sketches_gathered() then gives all
  // the lines once every worker has answered.
  bool ask_sketches();
  bool sketches_gathered(std::string& text, size_t& lines);
  std::string ring_summary() const;
  std::string ring_json() const;
  std::string metrics_text(const std::string& exporter_metrics) const;  // Prometheus
  void sample_rates();  // control loop, about once a second: packets/s per RX lcore
  // Asks every RX lcore for its top n active flows and merges them (waits ≤ 2 s).
  std::vector<FlowRecord> top_flows(uint32_t n, bool by_packets);
  // Compiles `path` (throws RuleError, old rules stay) and swaps it into every worker's
  // feature stage; waits up to 2 s for the workers to adopt it.
  std::string reload_rules(const std::string& path);
  void collect_retired_rules();  // control loop: free matchers the workers let go of
  std::function<void(std::shared_ptr<const RuleSet>)> on_rules_;  // called on a reload  // record drops per lcore: ring full, pool empty
  const char* stop_reason() const { return stop_reason_; }

 private:
  void setup_port(uint16_t port, uint16_t nq);
  void setup_memory_replay();
  void feed();

  Config& cfg_;
  RuntimeShared shared_;
  std::vector<uint16_t> ports_;
  std::vector<RxQueueRef> queues_;
  std::vector<std::unique_ptr<RxLcore>> rx_;
  std::vector<std::unique_ptr<WorkerLcore>> workers_;
  std::vector<std::unique_ptr<RecordStage>> stages_;  // one per worker
  std::vector<rte_ring*> rings_;  // every ring, for occupancy and cleanup
  std::vector<rte_ring*> to_control_;
  rte_mempool* mbuf_pool_ = nullptr;
  rte_mempool* replay_pool_ = nullptr;
  std::vector<rte_mbuf*> replay_mbufs_;
  std::vector<uint16_t> replay_queue_;
  std::vector<rte_ring*> replay_rings_;
  std::thread feeder_;
  std::atomic<bool> feeder_done_{true};
  uint64_t start_ns_ = 0, end_ns_ = 0;
 public:
  uint64_t feed_ns_ = 0;  // memory replay: launch → last packet handed to the RX queues
 private:
  bool eal_up_ = false, launched_ = false;
  const char* stop_reason_ = "";
  uint64_t stall_control_until_ns_ = 0;  // fault drill; control thread only
  uint64_t fault_drills_ = 0;
  void publish(std::unique_ptr<LiveSettings> next, const char* what);
  std::unique_ptr<LiveSettings> live_;
  bool feed_on_ = false;
  std::unique_ptr<ControlFeed> feed_;
  uint32_t sketch_gen_ = 0;
  bool sketch_asking_ = false;
  std::vector<uint64_t> rate_last_pk_;
  std::vector<double> rate_pps_;
  uint64_t rate_last_ns_ = 0;
  uint64_t live_version_ = 0;
};

// Registers /help, /stats, /sampling, /config, /shutdown on the control socket.
void register_runtime_commands(CtlServer& s, Runtime& rt, const Config& cfg);

}  // namespace ls
