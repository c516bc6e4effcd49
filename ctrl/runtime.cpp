#include "dataplane/clock.h"
#include "ctrl/runtime.h"

#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_eth_ring.h>
#include <rte_ethdev.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_mbuf_dyn.h>
#include <rte_pause.h>
#include <time.h>
#include <unistd.h>

#include <nlohmann/json.hpp>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <stdexcept>

#include "ctrl/ctl_server.h"
#include "ctrl/flow_writer.h"
#include "ctrl/outputs.h"
#include "ctrl/metrics_server.h"
#include "dataplane/filter_jit.h"
#include "dataplane/lcore_handoff.h"

namespace ls {
namespace {

// Symmetric Toeplitz key (the 0x6d5a pattern of Woo & Park, "Scalable TCP Session
// Monitoring with Symmetric Receive-side Scaling"): hash(a→b) == hash(b→a), so both
// directions of a connection reach the same queue and so the same flow table.
uint8_t kSymmetricRssKey[40] = {
    0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a,
    0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a,
    0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a, 0x6d, 0x5a};


std::string err(const std::string& what, int rc) {
  return what + ": " + rte_strerror(rc < 0 ? -rc : rc);
}

}  // namespace

Runtime::~Runtime() { cleanup(); }

void Runtime::init_eal(const std::vector<std::string>& extra) {
  std::vector<std::string> args{"linesight"};
  for (auto& a : cfg_.dpdk.eal) args.push_back(a);
  for (auto& a : extra) args.push_back(a);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  int rc = rte_eal_init(int(args.size()), argv.data());
  if (rc < 0) throw std::runtime_error(err("EAL init failed", rte_errno));
  eal_up_ = true;
}

void Runtime::setup() {
  const auto& d = cfg_.dpdk;
  unsigned need = 1u + d.rx_lcores + d.workers;
  if (rte_lcore_count() < need)
    throw std::runtime_error("need " + std::to_string(need) + " lcores (1 control + " +
                             std::to_string(d.rx_lcores) + " RX + " + std::to_string(d.workers) +
                             " workers), EAL gave " + std::to_string(rte_lcore_count()) +
                             ": use -l / --lcores (lcores may share CPUs: --lcores '(0-3)@(0-1)')");
  shared_.burst = d.burst;
  shared_.idle_sleep_us = d.idle_sleep_us;
  shared_.tsc_hz = rte_get_tsc_hz();
  shared_.tsc0 = rte_rdtsc();
  shared_.wall0_ns = wall_ns();

  // The filter finish_config compiled, again now that the EAL is up: for the JIT.
  if (auto& f = cfg_.core.parse.filter) f = compile_filter(f->expression());
  unsigned socket = rte_socket_id();
  if (!d.memory_replay.empty()) {
    setup_memory_replay();
  } else {
    mbuf_pool_ = rte_pktmbuf_pool_create("ls_mbufs", d.mbufs, 256, 0,
                                         uint16_t(RTE_PKTMBUF_HEADROOM + d.mbuf_size), int(socket));
    if (!mbuf_pool_) throw std::runtime_error(err("mbuf pool", rte_errno));
    if (d.ports.empty()) {
      uint16_t p;
      RTE_ETH_FOREACH_DEV(p) ports_.push_back(p);
    } else {
      ports_ = d.ports;
    }
    if (ports_.empty())
      throw std::runtime_error("no DPDK ports: bind a NIC (docs/deploy.md) or add a --vdev, "
                               "e.g. -- --vdev net_pcap0,rx_pcap=FILE");
    bool all_pcap = true;
    for (uint16_t p : ports_) {
      if (!rte_eth_dev_is_valid_port(p)) throw std::runtime_error("port " + std::to_string(p) + " does not exist");
      rte_eth_dev_info info;
      rte_eth_dev_info_get(p, &info);
      all_pcap &= std::string(info.driver_name) == "net_pcap";
      setup_port(p, d.rx_queues);
    }
    // Only pcap vdevs put capture time (ns since the epoch) in the timestamp field; NIC
    // hardware timestamps are in device clock units, so live ports use the TSC clock.
    if (all_pcap) {
      shared_.ts_dynfield = rte_mbuf_dynfield_lookup(RTE_MBUF_DYNFIELD_TIMESTAMP_NAME, nullptr);
      int bit = rte_mbuf_dynflag_lookup(RTE_MBUF_DYNFLAG_RX_TIMESTAMP_NAME, nullptr);
      if (shared_.ts_dynfield >= 0 && bit >= 0) {
        shared_.ts_dynflag = 1ull << bit;
        shared_.ts_mul = 1000;  // net_pcap (DPDK 22.11) stores microseconds
        shared_.packet_clock = true;
      } else {
        shared_.ts_dynfield = -1;
      }
    }
  }

  // QSBR for live settings: one thread id per RX lcore.
  size_t sz = rte_rcu_qsbr_get_memsize(d.rx_lcores);
  shared_.qsbr = static_cast<rte_rcu_qsbr*>(rte_zmalloc("ls_qsbr", sz, RTE_CACHE_LINE_SIZE));
  if (!shared_.qsbr || rte_rcu_qsbr_init(shared_.qsbr, d.rx_lcores) != 0)
    throw std::runtime_error("QSBR init failed");
  live_ = std::make_unique<LiveSettings>();
  live_->sampling = cfg_.core.sampling;
  live_->filter = cfg_.core.parse.filter;
  live_->version = live_version_ = 0;
  shared_.live.store(live_.get());

  shared_.record_pool = rte_mempool_create("ls_records", d.records, sizeof(FlowRecord), 256, 0,
                                           nullptr, nullptr, nullptr, nullptr, int(socket), 0);
  if (!shared_.record_pool) throw std::runtime_error(err("record pool", rte_errno));

  std::vector<unsigned> lcores;
  unsigned lc;
  RTE_LCORE_FOREACH_WORKER(lc) lcores.push_back(lc);
  auto ring = [&](const std::string& name) {
    rte_ring* r = rte_ring_create(name.c_str(), d.ring_size, int(socket), RING_F_SP_ENQ | RING_F_SC_DEQ);
    if (!r) throw std::runtime_error(err("ring " + name, rte_errno));
    rings_.push_back(r);
    return r;
  };
  for (uint16_t i = 0; i < d.rx_lcores; i++) {
    auto l = std::make_unique<RxLcore>();
    l->lcore_id = lcores[i];
    l->index = i;
    l->shared = &shared_;
    rx_.push_back(std::move(l));
  }
  for (size_t q = 0; q < queues_.size(); q++) rx_[q % rx_.size()]->queues.push_back(queues_[q]);
  for (uint16_t w = 0; w < d.workers; w++) {
    auto wl = std::make_unique<WorkerLcore>();
    wl->lcore_id = lcores[d.rx_lcores + w];
    wl->index = w;
    wl->shared = &shared_;
    wl->rx = &rx_;
    wl->peers = &workers_;
    wl->to_control = ring("ls_w" + std::to_string(w) + "_ctl");
    if (cfg_.features_on()) {
      // Pair state lives on the worker that owns the server endpoint: no sharing.
      stages_.push_back(std::make_unique<FeatureStage>(feature_config(cfg_)));
      wl->stage = stages_.back().get();
    }
    to_control_.push_back(wl->to_control);
    workers_.push_back(std::move(wl));
  }
  // Client phase: worker i hands records to the owner j of their client endpoint.
  if (!stages_.empty() && d.workers > 1) {
    for (auto& a : workers_) a->to_worker.assign(d.workers, nullptr);
    for (auto& b : workers_) b->from_worker.assign(d.workers, nullptr);
    for (auto& a : workers_)
      for (auto& b : workers_)
        if (a != b) {
          rte_ring* r = ring("ls_w" + std::to_string(a->index) + "_w" + std::to_string(b->index));
          a->to_worker[b->index] = r;
          b->from_worker[a->index] = r;
        }
  }
  if (feed_on_) {
    feed_ = std::make_unique<ControlFeed>();
    feed_->rt_ = this;
    feed_->pool_ = shared_.record_pool;
    for (auto& w : workers_) {
      rte_ring* r = ring("ls_ctl_w" + std::to_string(w->index));
      feed_->to_worker_.push_back(r);
      w->from_rx.push_back(r);
      w->feed_done = &feed_->done;
    }
  }
  // Tables from DPDK hugepages on each RX lcore's NUMA node when EAL has hugepages;
  // with --no-huge they stay on transparent huge pages (the test setup).
  for (auto& l : rx_) {
    for (auto& w : workers_) {
      rte_ring* r = ring("ls_rx" + std::to_string(l->index) + "_w" + std::to_string(w->index));
      l->to_worker.push_back(r);
      w->from_rx.push_back(r);
    }
    // Used synchronously by rx_lcore_init below; the allocator is cleared right after.
    int node = int(rte_lcore_to_socket_id(l->lcore_id));
    if (rte_eal_has_hugepages())
      region_allocator() = {
          [](size_t n, void* ctx) { return rte_zmalloc_socket("ls_table", n, 2u << 20, *static_cast<int*>(ctx)); },
          [](void* p, void*) { rte_free(p); }, &node};
    try {
      rx_lcore_init(*l, cfg_.core);
    } catch (const std::bad_alloc&) {
      region_allocator() = {};
      throw std::runtime_error("not enough memory for a flow table of " +
                               std::to_string(cfg_.core.table.capacity) + " flows on NUMA node " +
                               std::to_string(node) + " (lower table.capacity or add hugepages)");
    }
    region_allocator() = {};
  }
}

void Runtime::setup_port(uint16_t port, uint16_t nq) {
  rte_eth_dev_info info;
  int rc = rte_eth_dev_info_get(port, &info);
  if (rc) throw std::runtime_error(err("port " + std::to_string(port) + " info", rc));
  if (nq > info.max_rx_queues)
    throw std::runtime_error("port " + std::to_string(port) + " (" + info.driver_name + ") has " +
                             std::to_string(info.max_rx_queues) + " RX queues, " +
                             std::to_string(nq) + " requested");
  rte_eth_conf conf{};
  if (nq > 1) {
    conf.rxmode.mq_mode = RTE_ETH_MQ_RX_RSS;
    conf.rx_adv_conf.rss_conf.rss_key = kSymmetricRssKey;
    conf.rx_adv_conf.rss_conf.rss_key_len = sizeof kSymmetricRssKey;
    conf.rx_adv_conf.rss_conf.rss_hf =
        (RTE_ETH_RSS_IP | RTE_ETH_RSS_TCP | RTE_ETH_RSS_UDP) & info.flow_type_rss_offloads;
  }
  if ((info.rx_offload_capa & RTE_ETH_RX_OFFLOAD_TIMESTAMP) &&
      std::string(info.driver_name) == "net_pcap")
    conf.rxmode.offloads |= RTE_ETH_RX_OFFLOAD_TIMESTAMP;
  rc = rte_eth_dev_configure(port, nq, 1, &conf);
  if (rc) throw std::runtime_error(err("port " + std::to_string(port) + " configure", rc));
  uint16_t nrx = 1024, ntx = 512;
  rte_eth_dev_adjust_nb_rx_tx_desc(port, &nrx, &ntx);
  int sock = rte_eth_dev_socket_id(port);
  for (uint16_t q = 0; q < nq; q++) {
    rc = rte_eth_rx_queue_setup(port, q, nrx, unsigned(sock < 0 ? 0 : sock), nullptr, mbuf_pool_);
    if (rc) throw std::runtime_error(err("port " + std::to_string(port) + " RX queue", rc));
    queues_.push_back({port, q});
  }
  rc = rte_eth_tx_queue_setup(port, 0, ntx, unsigned(sock < 0 ? 0 : sock), nullptr);
  if (rc) throw std::runtime_error(err("port " + std::to_string(port) + " TX queue", rc));
  rc = rte_eth_dev_start(port);
  if (rc) throw std::runtime_error(err("port " + std::to_string(port) + " start", rc));
  rte_eth_promiscuous_enable(port);  // not every PMD supports it; capture works without
}

void Runtime::setup_memory_replay() {
  const auto& d = cfg_.dpdk;
  unsigned socket = rte_socket_id();
  auto src = open_pcap_files({d.memory_replay});
  std::vector<std::vector<uint8_t>> pk;
  std::vector<uint64_t> ts;
  std::vector<uint32_t> wire;
  Arena a;
  PacketView v[256];
  Counters scratch;
  ParseConfig pc = cfg_.core.parse;
  for (uint32_t n; (n = src->next_burst(v, 256, a));) {
    for (uint32_t i = 0; i < n; i++) {
      if (v[i].link != LinkType::ETHERNET) throw std::runtime_error(d.memory_replay + ": memory replay needs an Ethernet capture");
      pk.emplace_back(v[i].data, v[i].data + v[i].cap_len);
      ts.push_back(v[i].ts_ns);
      wire.push_back(v[i].wire_len);
      // Software symmetric RSS, decided once: both directions of a pair share a queue.
      PacketMeta m;
      uint16_t q = 0;
      if (parse_packet(v[i], v[i].link, pc, m, scratch)) q = uint16_t(dispatch_core(m, d.rx_queues));
      replay_queue_.push_back(q);
    }
  }
  if (pk.empty()) throw std::runtime_error(d.memory_replay + ": no packets");
  // Frames longer than one 2 KB segment are chained: the parser reads headers from the
  // first segment, and pkt_len keeps the whole frame's length for byte counts.
  constexpr size_t kSeg = 2048;
  size_t segs = 0;
  for (auto& p : pk) segs += std::max<size_t>(1, (p.size() + kSeg - 1) / kSeg);
  replay_pool_ = rte_pktmbuf_pool_create("ls_replay", unsigned(segs) + 1, 0, 0,
                                         uint16_t(RTE_PKTMBUF_HEADROOM + kSeg), int(socket));
  if (!replay_pool_) throw std::runtime_error(err("replay mbuf pool", rte_errno));
  static const rte_mbuf_dynfield loop_field = {"linesight_loop", sizeof(uint64_t), alignof(uint64_t), 0};
  static const rte_mbuf_dynfield wire_field = {"linesight_wire_len", sizeof(uint32_t), alignof(uint32_t), 0};
  shared_.loop_dynfield = rte_mbuf_dynfield_register(&loop_field);
  shared_.wire_dynfield = rte_mbuf_dynfield_register(&wire_field);
  if (shared_.loop_dynfield < 0 || shared_.wire_dynfield < 0)
    throw std::runtime_error(err("mbuf dynfield", rte_errno));
  if (rte_mbuf_dyn_rx_timestamp_register(&shared_.ts_dynfield, &shared_.ts_dynflag) != 0)
    throw std::runtime_error(err("timestamp field", rte_errno));
  shared_.packet_clock = true;
  for (size_t i = 0; i < pk.size(); i++) {
    rte_mbuf* m = nullptr;
    for (size_t off = 0; off < pk[i].size() || !m; off += kSeg) {
      rte_mbuf* s = rte_pktmbuf_alloc(replay_pool_);
      if (!s) throw std::runtime_error("replay mbuf pool exhausted");
      size_t len = std::min(kSeg, pk[i].size() - off);
      std::memcpy(rte_pktmbuf_append(s, uint16_t(len)), pk[i].data() + off, len);
      if (!m) m = s;
      else if (rte_pktmbuf_chain(m, s) != 0) throw std::runtime_error("frame needs too many segments");
    }
    *RTE_MBUF_DYNFIELD(m, shared_.ts_dynfield, uint64_t*) = ts[i];
    *RTE_MBUF_DYNFIELD(m, shared_.wire_dynfield, uint32_t*) = wire[i];
    m->ol_flags |= shared_.ts_dynflag;
    replay_mbufs_.push_back(m);
  }
  // One net_ring port whose RX queues are rings the feeder fills.
  for (uint16_t q = 0; q < d.rx_queues; q++) {
    rte_ring* r = rte_ring_create(("ls_mr" + std::to_string(q)).c_str(), 4096, int(socket),
                                  RING_F_SP_ENQ | RING_F_SC_DEQ);
    if (!r) throw std::runtime_error(err("replay ring", rte_errno));
    replay_rings_.push_back(r);
  }
  rte_ring* tx = rte_ring_create("ls_mr_tx", 64, int(socket), 0);
  int port = rte_eth_from_rings("ls_mem", replay_rings_.data(), d.rx_queues, &tx, 1, socket);
  if (port < 0) throw std::runtime_error(err("net_ring port", rte_errno));
  replay_rings_.push_back(tx);
  ports_.push_back(uint16_t(port));
  mbuf_pool_ = rte_pktmbuf_pool_create("ls_mbufs", 1024, 0, 0, RTE_MBUF_DEFAULT_BUF_SIZE, int(socket));
  setup_port(uint16_t(port), d.rx_queues);
  feeder_done_ = false;
}

// Memory replay feeder: every pass enqueues each preloaded mbuf once more (refcount +1,
// so RX frees only its reference), tagging it with the pass for address rewriting and a
// timestamp shifted forward per pass. An mbuf is reused only once RX released it.
void Runtime::feed() {
  const auto& d = cfg_.dpdk;
  uint64_t span = 0;
  {
    uint64_t t0 = *RTE_MBUF_DYNFIELD(replay_mbufs_.front(), shared_.ts_dynfield, uint64_t*);
    uint64_t t1 = *RTE_MBUF_DYNFIELD(replay_mbufs_.back(), shared_.ts_dynfield, uint64_t*);
    span = t1 > t0 ? t1 - t0 : 0;
  }
  std::vector<uint64_t> base(replay_mbufs_.size());
  for (size_t i = 0; i < base.size(); i++)
    base[i] = *RTE_MBUF_DYNFIELD(replay_mbufs_[i], shared_.ts_dynfield, uint64_t*);
  ClockGuard guard(cfg_.core.table.backward_tolerance_ns);
  // Pacing: packet k is due at start + k / pps (checked every 32 packets).
  const uint64_t hz = rte_get_tsc_hz(), t0 = rte_rdtsc();
  uint64_t sent = 0;
  for (uint64_t loop = 0; loop < d.memory_loops && !shared_.stop.load(); loop++) {
    for (size_t i = 0; i < replay_mbufs_.size(); i++) {
      rte_mbuf* m = replay_mbufs_[i];
      // Wait until the RX lcore freed the previous pass's use of this mbuf; acquire pairs
      // with its release in rte_pktmbuf_free (ACQ_REL decrement) before we rewrite the tags.
      while (__atomic_load_n(&m->refcnt, __ATOMIC_ACQUIRE) != 1) {
        if (shared_.stop.load()) goto out;
        rte_pause();
      }
      tsan_adopt(reinterpret_cast<void* const*>(&m), 1);
      PacketView pv{};
      pv.ts_ns = base[i] + loop * (span + 1'000'000'000ull);
      guard.stamp(pv);
      *RTE_MBUF_DYNFIELD(m, shared_.loop_dynfield, uint64_t*) = loop | uint64_t(pv.epoch) << 32;
      *RTE_MBUF_DYNFIELD(m, shared_.ts_dynfield, uint64_t*) = pv.ts_ns;
      if (d.memory_pps && (sent & 31) == 0) {
        uint64_t due = t0 + uint64_t((unsigned __int128)sent * hz / d.memory_pps);
        while (rte_rdtsc() < due) {
          if (shared_.stop.load()) goto out;
          // The feeder is a traffic generator, not datapath: sleep rather than spin.
          if (due - rte_rdtsc() > hz / 10000) usleep(50);
          else rte_pause();
        }
      }
      sent++;
      rte_mbuf_refcnt_update(m, 1);
      while (!ring_put(replay_rings_[replay_queue_[i]], m)) {
        if (shared_.stop.load()) {
          rte_mbuf_refcnt_update(m, -1);
          goto out;
        }
        rte_pause();
      }
    }
  }
out:
  feed_ns_ = wall_ns() - start_ns_;
  feeder_done_.store(true);
}

void Runtime::launch() {
  start_ns_ = wall_ns();
  for (auto& l : rx_)
    if (rte_eal_remote_launch(rx_lcore_main, l.get(), l->lcore_id) != 0)
      throw std::runtime_error("cannot launch RX lcore " + std::to_string(l->lcore_id));
  for (auto& w : workers_)
    if (rte_eal_remote_launch(worker_lcore_main, w.get(), w->lcore_id) != 0)
      throw std::runtime_error("cannot launch worker lcore " + std::to_string(w->lcore_id));
  launched_ = true;
  if (!replay_mbufs_.empty()) feeder_ = std::thread([this] { feed(); });
}

bool ControlFeed::make_room() {
  if (!flushing) {
    if (gave_up_) return false;
    uint64_t now = rte_rdtsc();
    if (!deadline_tsc_) deadline_tsc_ = now + rte_get_tsc_hz() / 10;  // 100 ms
    if (now > deadline_tsc_) {
      gave_up_ = true;
      return false;
    }
    live_waits++;
  } else {
    rc.shutdown_waits++;
  }
  if (!rt_->drain(*drain_to)) rte_pause();
  return true;
}

void ControlFeed::consume(const FlowRecord& rec) {
  void* obj;
  while (!pool_get(pool_, &obj))
    if (!make_room()) {
      rc.record_pool_empty++;
      return;
    }
  auto* r = static_cast<FlowRecord*>(obj);
  *r = rec;
  rte_ring* ring = to_worker_[worker_of(*r, uint16_t(to_worker_.size()))];
  while (!ring_put(ring, r))
    if (!make_room()) {
      rc.record_ring_full++;
      pool_put(pool_, r);
      return;
    }
  deadline_tsc_ = 0;
  gave_up_ = false;
  rc.records_out++;
}

void ControlFeed::consume_batch(const FlowRecord* const* recs, size_t n) {
  for (size_t i = 0; i < n; i++) consume(*recs[i]);
  rt_->drain(*drain_to);
}

void Runtime::close_control_feed() {
  if (!feed_) return;
  feed_->done.store(true, std::memory_order_release);
}

unsigned Runtime::drain(RecordConsumer& out) {
  if (stall_control_until_ns_) {
    if (wall_ns() < stall_control_until_ns_ && !stopping()) return 0;  // a drill: rings fill
    stall_control_until_ns_ = 0;
  }
  void* objs[256];
  const FlowRecord* recs[256];
  unsigned total = 0;
  for (rte_ring* r : to_control_) {
    unsigned n = ring_take(r, objs, 256);
    for (unsigned i = 0; i < n; i++) recs[i] = static_cast<const FlowRecord*>(objs[i]);
    out.consume_batch(recs, n);
    if (n) pool_put_bulk(shared_.record_pool, objs, n);
    total += n;
  }
  return total;
}

std::string Runtime::fault_stall(const std::string& stage, uint64_t ms) {
  if (ms < 1 || ms > 60000) throw std::invalid_argument("ms must be 1 .. 60000");
  if (stopping()) throw std::invalid_argument("shutting down");
  if (stage == "workers")
    shared_.stall_workers_until_tsc.store(rte_rdtsc() + shared_.tsc_hz / 1000 * ms, std::memory_order_relaxed);
  else if (stage == "control")
    stall_control_until_ns_ = wall_ns() + ms * 1000000;
  else
    throw std::invalid_argument("stage must be \"workers\" or \"control\"");
  fault_drills_++;
  std::fprintf(stderr, "linesight: fault drill: %s stalled for %u ms (control request)\n", stage.c_str(), unsigned(ms));
  return stage + " stalled for " + std::to_string(ms) + " ms";
}

void Runtime::request_stop(const char* why) {
  if (!shared_.stop.exchange(true)) {
    stop_reason_ = why;
    end_ns_ = wall_ns();
  }
}

bool Runtime::all_done() const {
  for (auto& w : workers_)
    if (!w->done.load(std::memory_order_acquire)) return false;
  return true;
}

uint64_t Runtime::rx_packets() const {
  uint64_t n = 0;
  for (auto& l : rx_) n += l->rx_packets.load(std::memory_order_relaxed);
  return n;
}

ReplayResult Runtime::finish() {
  if (feeder_.joinable()) feeder_.join();
  rte_eal_mp_wait_lcore();
  launched_ = false;
  ReplayResult r;
  r.wall_ns = (end_ns_ ? end_ns_ : wall_ns()) - start_ns_;
  for (auto& l : rx_) {
    r.per_core.push_back(l->core->ctr);
    r.total += l->core->ctr;
    r.table_bytes += l->core->table.memory_bytes();
  }
  r.interrupted = std::string(stop_reason_) == "signal";
  return r;
}

void Runtime::cleanup() {
  if (!eal_up_) return;
  if (launched_) {
    request_stop("cleanup");
    if (feeder_.joinable()) feeder_.join();
    rte_eal_mp_wait_lcore();
  }
  for (uint16_t p : ports_) {
    rte_eth_dev_stop(p);
    rte_eth_dev_close(p);
  }
  uint16_t p;
  RTE_ETH_FOREACH_DEV(p) rte_eth_dev_close(p);  // probed but never used (set-up failed early)
  for (rte_mbuf* m : replay_mbufs_) rte_pktmbuf_free(m);
  replay_mbufs_.clear();
  rx_.clear();
  workers_.clear();
  for (rte_ring* r : rings_) rte_ring_free(r);
  for (rte_ring* r : replay_rings_) rte_ring_free(r);
  rings_.clear();
  replay_rings_.clear();
  rte_mempool_free(shared_.record_pool);
  rte_mempool_free(mbuf_pool_);
  rte_mempool_free(replay_pool_);
  rte_free(shared_.qsbr);
  rte_eal_cleanup();
  eal_up_ = false;
}

void Runtime::set_sampling(const SamplingConfig& s) {
  auto next = std::make_unique<LiveSettings>(*live_);
  next->sampling = s;
  publish(std::move(next), "sampling");
}

void Runtime::set_filter(std::shared_ptr<const PacketFilter> f) {
  auto next = std::make_unique<LiveSettings>(*live_);
  next->filter = std::move(f);
  publish(std::move(next), "filter");
}

std::shared_ptr<const PacketFilter> Runtime::compile_filter(const std::string& expression) {
  // LINESIGHT_FILTER_JIT=0: libpcap's interpreter, to compare or to rule the JIT out.
  const char* jit = std::getenv("LINESIGHT_FILTER_JIT");
  if (jit && std::string(jit) == "0") return std::make_shared<const PacketFilter>(expression);
  std::string why;
  auto f = compile_lcore_filter(expression, why);
  if (!why.empty())
    std::fprintf(stderr, "linesight: capture filter '%s' runs in libpcap's interpreter: %s\n",
                 expression.c_str(), why.c_str());
  return f;
}

void Runtime::publish(std::unique_ptr<LiveSettings> next, const char* what) {
  // While stopping, RX lcores may wait on rings this thread drains: a grace period could
  // deadlock, and freeing the old settings without one could free them under a reader.
  if (launched_ && stopping()) throw CtlError(std::string("shutting down: ") + what + " not changed");
  next->version = ++live_version_;
  shared_.live.store(next.get(), std::memory_order_release);
  // Every RX lcore passes a quiescent point after the store before the old one goes.
  if (launched_) rte_rcu_qsbr_synchronize(shared_.qsbr, RTE_QSBR_THRID_INVALID);
  void* q = shared_.qsbr;
  tsan_adopt(&q, 1);
  live_ = std::move(next);
}

SamplingConfig Runtime::sampling() const { return live_->sampling; }

std::string Runtime::ring_summary() const {
  std::string o = "rings:\n";
  char line[256];
  for (auto& l : rx_) {
    std::snprintf(line, sizeof line, "  rx lcore %u: %lu records out, %lu ring full, %lu pool empty\n",
                  l->lcore_id, (unsigned long)l->rc.records_out, (unsigned long)l->rc.record_ring_full,
                  (unsigned long)l->rc.record_pool_empty);
    o += line;
  }
  if (feed_) {
    std::snprintf(line, sizeof line, "  collector (control lcore): %lu records out, %lu ring full, %lu pool empty\n",
                  (unsigned long)feed_->rc.records_out, (unsigned long)feed_->rc.record_ring_full,
                  (unsigned long)feed_->rc.record_pool_empty);
    o += line;
  }
  for (auto& w : workers_) {
    std::snprintf(line, sizeof line, "  worker lcore %u: %lu records out, %lu ring full, %lu client ring full\n",
                  w->lcore_id, (unsigned long)w->rc.records_out, (unsigned long)w->rc.record_ring_full,
                  (unsigned long)w->client_ring_full);
    o += line;
  }
  return o;
}

std::vector<FlowRecord> Runtime::top_flows(uint32_t n, bool by_packets) {
  n = std::min(n, TopRequest::kMax);
  std::vector<uint32_t> want;
  for (auto& l : rx_) {
    // The lcore reads n / by_packets only after seeing the new request id (acquire).
    l->top.n = n;
    l->top.by_packets = by_packets;
    want.push_back(l->top.asked.fetch_add(1, std::memory_order_release) + 1);
  }
  uint64_t deadline = wall_ns() + 2'000'000'000ull;
  for (size_t i = 0; i < rx_.size(); i++)
    while (rx_[i]->top.done.load(std::memory_order_acquire) != want[i]) {
      if (wall_ns() > deadline || rx_[i]->done.load()) throw CtlError("RX lcores did not answer within 2 s");
      usleep(100);
    }
  std::vector<FlowRecord> out;
  for (auto& l : rx_)
    for (const FlowEntry& e : l->top.result) {
      out.emplace_back();
      out.back().fill(e, nullptr, 0, EndReason::FLUSH, l->index, sampling());
    }
  auto key = [by_packets](const FlowRecord& r) {
    return by_packets ? uint64_t(r.e.pkts[0]) + r.e.pkts[1] : r.e.bytes[0] + r.e.bytes[1];
  };
  std::sort(out.begin(), out.end(), [&](auto& a, auto& b) { return key(a) > key(b); });
  if (out.size() > n) out.resize(n);
  return out;
}

std::string Runtime::reload_rules(const std::string& path) {
  if (stages_.empty()) throw CtlError("no feature stage running (start with --features-out)");
  if (path.empty()) throw CtlError("no rules file: give {\"path\": FILE}");
  auto rs = RuleSet::load_file(path, cfg_.rules_cache);  // RuleError: the old rules stay
  if (on_rules_) on_rules_(rs);         // the CSV writer must know the new ids first
  collect_retired_rules();
  std::vector<uint64_t> want;
  for (auto& s : stages_) {
    auto* fs = static_cast<FeatureStage*>(s.get());
    want.push_back(fs->rules_generation() + 1);
    if (!fs->offer_rules(std::make_unique<SignatureMatcher>(rs)))
      throw CtlError("a previous reload is still being adopted; try again");
  }
  cfg_.rules = path;
  cfg_.loaded_rules = rs;
  // A worker adopts at its next record; an idle worker adopts when traffic arrives.
  uint64_t deadline = wall_ns() + 2'000'000'000ull;
  size_t adopted = 0;
  while (wall_ns() < deadline) {
    adopted = 0;
    for (size_t i = 0; i < stages_.size(); i++)
      adopted += static_cast<FeatureStage*>(stages_[i].get())->rules_generation() >= want[i];
    if (adopted == stages_.size()) break;
    usleep(1000);
  }
  collect_retired_rules();
  std::string cache = cfg_.rules_cache.empty() ? "" : " (" + rs->cache_status() + ")";
  return std::to_string(rs->rules().size()) + " rules from " + path + cache + "; adopted by " +
         std::to_string(adopted) + " of " + std::to_string(stages_.size()) + " workers" +
         (adopted < stages_.size() ? " (the others adopt at their next record)" : "");
}

void Runtime::collect_retired_rules() {
  for (auto& s : stages_) static_cast<FeatureStage*>(s.get())->take_retired();
}

std::string Runtime::ring_json() const {
  nlohmann::json j;
  uint64_t full = 0, empty = 0;
  for (auto& l : rx_) {
    full += l->rc.record_ring_full;
    empty += l->rc.record_pool_empty;
  }
  for (auto& w : workers_) full += w->rc.record_ring_full + w->client_ring_full;
  if (feed_) {
    full += feed_->rc.record_ring_full;
    empty += feed_->rc.record_pool_empty;
    j["collector_records_out"] = uint64_t(feed_->rc.records_out);
    j["collector_shutdown_waits"] = uint64_t(feed_->rc.shutdown_waits);
    j["collector_record_ring_full"] = uint64_t(feed_->rc.record_ring_full);
  }
  j["record_ring_full"] = full;
  j["record_pool_empty"] = empty;
  return j.dump();
}

void Runtime::sample_rates() {
  uint64_t now = wall_ns();
  rate_last_pk_.resize(rx_.size(), 0);
  rate_pps_.resize(rx_.size(), 0);
  for (size_t i = 0; i < rx_.size(); i++) {
    uint64_t pk = rx_[i]->core->ctr.get(Ctr::packets);
    if (rate_last_ns_ && now > rate_last_ns_)
      rate_pps_[i] = double(pk - rate_last_pk_[i]) * 1e9 / double(now - rate_last_ns_);
    rate_last_pk_[i] = pk;
  }
  rate_last_ns_ = now;
}

std::string Runtime::metrics_text(const std::string& exporter_metrics) const {
  Exposition x;
  auto lc = [](unsigned id) { return "lcore=\"" + std::to_string(id) + "\""; };
  x.family("linesight_packets_per_second", "gauge", "RX lcore packet rate over the last second.");
  for (size_t i = 0; i < rx_.size() && i < rate_pps_.size(); i++)
    x.sample("linesight_packets_per_second", lc(rx_[i]->lcore_id), rate_pps_[i]);
  x.family("linesight_packets_total", "counter", "Packets received by the RX lcore.");
  for (auto& l : rx_) x.sample("linesight_packets_total", lc(l->lcore_id), double(l->core->ctr.get(Ctr::packets)));
  x.family("linesight_bytes_total", "counter", "Frame bytes received by the RX lcore.");
  for (auto& l : rx_) x.sample("linesight_bytes_total", lc(l->lcore_id), double(l->core->ctr.get(Ctr::bytes)));
  x.family("linesight_flows_active", "gauge", "Flows in the RX lcore's table.");
  for (auto& l : rx_) x.sample("linesight_flows_active", lc(l->lcore_id), double(l->flows.load()));
  x.family("linesight_dropped_packets_total", "counter",
           "Packets not in any flow, by reason (parse errors, table full, sampler skips).");
  for (auto& l : rx_)
    for (size_t i = 0; i < kNumCounters; i++)
      if (kCounterKinds[i] == CtrKind::DROP)
        x.sample("linesight_dropped_packets_total",
                 lc(l->lcore_id) + ",reason=\"" + std::string(kCounterNames[i]) + "\"", double(l->core->ctr.at(i)));
  x.family("linesight_events_total", "counter", "Dataplane events: protocols seen, flows created and ended, clock jumps.");
  for (auto& l : rx_)
    for (size_t i = 2; i < kNumCounters; i++)  // 0, 1 are packets and bytes above
      if (kCounterKinds[i] == CtrKind::INFO)
        x.sample("linesight_events_total",
                 lc(l->lcore_id) + ",event=\"" + std::string(kCounterNames[i]) + "\"", double(l->core->ctr.at(i)));
  x.family("linesight_records_dropped_total", "counter", "Flow records dropped: ring full or no free record buffer.");
  for (auto& l : rx_) {
    x.sample("linesight_records_dropped_total", lc(l->lcore_id) + ",reason=\"ring_full\"", double(l->rc.record_ring_full));
    x.sample("linesight_records_dropped_total", lc(l->lcore_id) + ",reason=\"pool_empty\"", double(l->rc.record_pool_empty));
  }
  if (feed_) {  // the collector, on the control lcore
    unsigned id = rte_get_main_lcore();
    x.sample("linesight_records_dropped_total", lc(id) + ",reason=\"ring_full\"", double(feed_->rc.record_ring_full));
    x.sample("linesight_records_dropped_total", lc(id) + ",reason=\"pool_empty\"", double(feed_->rc.record_pool_empty));
  }
  for (auto& w : workers_) {
    x.sample("linesight_records_dropped_total", lc(w->lcore_id) + ",reason=\"ring_full\"", double(w->rc.record_ring_full));
    x.sample("linesight_records_dropped_total", lc(w->lcore_id) + ",reason=\"client_ring_full\"", double(w->client_ring_full));
  }
  if (!stages_.empty()) {
    auto fs = feature_state();
    x.family("linesight_feature_state_evicted_total", "counter",
             "Feature state entries (first contacts, pairs, servers, clients) replaced while still live: the "
             "table is full.");
    for (const char* t : {"first_contacts", "pairs", "servers", "clients"})
      x.sample("linesight_feature_state_evicted_total", std::string("table=\"") + t + "\"",
               double(fs[t]["evicted"].get<uint64_t>()));
    x.family("linesight_feature_state_overflowed", "gauge",
             "Live entries whose state outgrew the entry and holds a pool block (pair histories past 7 "
             "contacts, endpoints past 6 distinct peers in a counter).");
    for (const char* t : {"pairs", "servers", "clients"})
      x.sample("linesight_feature_state_overflowed", std::string("table=\"") + t + "\"",
               double(fs[t]["overflowed"].get<uint64_t>()));
  }
  x.family("linesight_ring_entries", "gauge", "Entries waiting in a ring.");
  for (rte_ring* g : rings_) x.sample("linesight_ring_entries", "ring=\"" + std::string(g->name) + "\"", double(rte_ring_count(g)));
  x.family("linesight_ring_capacity", "gauge", "Ring capacity.");
  for (rte_ring* g : rings_) x.sample("linesight_ring_capacity", "ring=\"" + std::string(g->name) + "\"", double(rte_ring_get_capacity(g)));
  return std::move(x).str() + exporter_metrics;
}

// Counters are read while lcores write them (relaxed atomics, dataplane/counters.h):
// a read sees an old or a new value; totals may lag by one check interval.
nlohmann::json Runtime::feature_state() const {
  std::vector<FeatureCounters> cs;
  size_t bytes = 0;
  for (auto& s : stages_) {
    auto* fs = static_cast<const FeatureStage*>(s.get());
    cs.push_back(fs->counters());
    bytes += fs->memory_bytes();
  }
  auto j = feature_state_json(cs, bytes);
  j.erase("rows");  // rows are written by the control core's writer, not counted here
  return j;
}

void Runtime::sketches(const std::function<void(const EndpointSketch&)>& f) const {
  for (auto& s : stages_) static_cast<const FeatureStage*>(s.get())->sketches(f);
}

bool Runtime::ask_sketches() {
  if (sketch_asking_ || stages_.empty()) return false;
  sketch_gen_++;
  for (auto& w : workers_) w->sketches.asked.store(sketch_gen_, std::memory_order_release);
  sketch_asking_ = true;
  return true;
}

bool Runtime::sketches_gathered(std::string& text, size_t& lines) {
  if (!sketch_asking_) return false;
  for (auto& w : workers_)
    if (w->sketches.done.load(std::memory_order_acquire) != sketch_gen_) return false;
  text.clear();
  lines = 0;
  for (auto& w : workers_) {  // each worker leaves its text alone until asked again
    text += w->sketches.text;
    lines += w->sketches.lines;
  }
  sketch_asking_ = false;
  return true;
}

std::string Runtime::stats_json() const {
  nlohmann::json j;
  Counters total;
  auto& cores = j["rx_lcores"];
  cores = nlohmann::json::array();
  for (auto& l : rx_) {
    const Counters& c = l->core->ctr;
    total += c;
    nlohmann::json e;
    e["lcore"] = l->lcore_id;
    e["queues"] = l->queues.size();
    e["flows"] = l->flows.load(std::memory_order_relaxed);
    e["records_out"] = uint64_t(l->rc.records_out);
    e["record_ring_full"] = uint64_t(l->rc.record_ring_full);
    e["record_pool_empty"] = uint64_t(l->rc.record_pool_empty);
    auto& ce = e["counters"];
    ce = nlohmann::json::object();
    for (size_t i = 0; i < kNumCounters; i++)
      if (uint64_t n = c.at(i)) ce[std::string(kCounterNames[i])] = n;
    cores.push_back(e);
  }
  auto& ws = j["workers"];
  ws = nlohmann::json::array();
  for (auto& w : workers_)
    ws.push_back({{"lcore", w->lcore_id}, {"records_out", uint64_t(w->rc.records_out)},
                  {"record_ring_full", uint64_t(w->rc.record_ring_full)},
                  {"client_ring_full", uint64_t(w->client_ring_full)}});
  if (feed_)
    j["collector_feed"] = {{"records_out", uint64_t(feed_->rc.records_out)},
                           {"record_ring_full", uint64_t(feed_->rc.record_ring_full)},
                           {"record_pool_empty", uint64_t(feed_->rc.record_pool_empty)},
                           {"live_waits", feed_->live_waits},
                           {"shutdown_waits", uint64_t(feed_->rc.shutdown_waits)}};
  auto& rings = j["rings"];
  rings = nlohmann::json::array();
  for (rte_ring* r : rings_)
    rings.push_back({{"name", r->name}, {"count", rte_ring_count(r)}, {"size", rte_ring_get_capacity(r)}});
  auto& t = j["total"];
  t = nlohmann::json::object();
  nlohmann::json drops = nlohmann::json::object();
  for (size_t i = 0; i < kNumCounters; i++) {
    t[std::string(kCounterNames[i])] = total.v[i];
    if (kCounterKinds[i] == CtrKind::DROP && total.v[i]) drops[std::string(kCounterNames[i])] = total.v[i];
  }
  j["drops"] = drops;
  if (!stages_.empty()) j["feature_state"] = feature_state();
  j["uptime_s"] = double(wall_ns() - start_ns_) / 1e9;
  j["fault_drills"] = fault_drills_;
  return j.dump();
}

}  // namespace ls

namespace ls {

void register_runtime_commands(CtlServer& s, Runtime& rt, const Config& cfg) {
  s.add("/stats", "every counter per RX lcore and in total, drops by reason, ring occupancy",
        [&rt](const CtlRequest&) { return nlohmann::json::parse(rt.stats_json()); });
  s.add("/fault/stall",
        "fault drill: {\"stage\":\"workers\"|\"control\",\"ms\":N} stops that stage taking records for N ms "
        "(1 .. 60000): rings fill, drops are counted, traffic resumes after (docs/operations.md)",
        [&rt](const CtlRequest& r) {
          const auto& b = r.body;
          if (!b.contains("stage") || !b["stage"].is_string()) throw CtlError("\"stage\" must be \"workers\" or \"control\"");
          if (!b.contains("ms") || !b["ms"].is_number_unsigned()) throw CtlError("\"ms\" must be an integer 1 .. 60000");
          try {  // fault_stall checks the range
            return nlohmann::json{{"stalled", rt.fault_stall(b["stage"].get<std::string>(), b["ms"].get<uint64_t>())}};
          } catch (const std::invalid_argument& e) {
            throw CtlError(e.what());
          }
        });
  s.add("/sampling",
        "get the sampling setting, or set it live: {\"cmd\":\"/sampling\",\"set\":"
        "{\"mode\":\"flow_hash\",\"rate\":100,\"seed\":1}}",
        [&rt](const CtlRequest& r) {
          if (r.body.contains("set")) {
            const auto& v = r.body["set"];
            if (!v.is_object()) throw CtlError("\"set\" must be an object {mode, rate, seed}");
            SamplingConfig n = rt.sampling();
            if (v.contains("mode")) {
              if (!v["mode"].is_string()) throw CtlError("mode must be a string");
              auto m = parse_sample_mode(v["mode"].get<std::string>());
              if (!m) throw CtlError("unknown mode '" + v["mode"].get<std::string>() +
                                     "' (off, packet, packet_random, flow_hash, sample_hold)");
              n.mode = *m;
              if (n.mode == SampleMode::OFF) n.rate = 1;
            }
            if (v.contains("rate")) {
              if (!v["rate"].is_number_unsigned() || v["rate"].get<uint64_t>() == 0 ||
                  v["rate"].get<uint64_t>() > UINT32_MAX)
                throw CtlError("rate must be an integer N >= 1 (1:N)");
              n.rate = v["rate"].get<uint32_t>();
            }
            if (v.contains("seed")) {
              if (!v["seed"].is_number_unsigned()) throw CtlError("seed must be an unsigned integer");
              n.seed = v["seed"].get<uint64_t>();
            }
            std::string bad = check_sampling(n);
            if (!bad.empty()) throw CtlError(bad);
            rt.set_sampling(n);
          }
          SamplingConfig c = rt.sampling();
          return nlohmann::json{{"mode", sample_mode_name(c.mode)}, {"rate", c.rate}, {"seed", c.seed}};
        });
  s.add("/filter",
        "get the capture filter, or set it live (tcpdump syntax; \"\" passes every packet): "
        "{\"cmd\":\"/filter\",\"set\":\"tcp port 443\"}",
        [&rt](const CtlRequest& r) {
          if (r.body.contains("set")) {
            const auto& v = r.body["set"];
            if (!v.is_string()) throw CtlError("\"set\" must be a filter expression (a string; \"\" for none)");
            std::shared_ptr<const PacketFilter> f;
            try {  // compiled here, on the control core; a bad one leaves the old in place
              if (!v.get<std::string>().empty()) f = rt.compile_filter(v.get<std::string>());
            } catch (const FilterError& e) {
              throw CtlError(e.what());
            }
            rt.set_filter(std::move(f));
          }
          auto f = rt.filter();
          return nlohmann::json{{"filter", f ? f->expression() : ""},
                                {"engine", f ? f->engine() : ""},
                                {"unusable_link_types", f ? f->unusable_links() : ""}};
        });
  s.add("/config", "the running configuration", [&cfg, &rt](const CtlRequest&) {
    const auto& t = cfg.core.table;
    auto f = rt.filter();  // as set live (/filter)
    return nlohmann::json{
        {"parser", {{"filter", f ? f->expression() : ""}}},
        {"table", {{"capacity", t.capacity}, {"payload_bytes", t.payload_bytes},
                   {"idle_timeout_ns", t.idle_timeout_ns}, {"active_timeout_ns", t.active_timeout_ns},
                   {"tcp_end_timeout_ns", t.tcp_end_timeout_ns},
                   {"full_policy", full_policy_name(t.full_policy)}}},
        {"dpdk", {{"eal", cfg.dpdk.eal}, {"rx_queues", cfg.dpdk.rx_queues},
                  {"rx_lcores", cfg.dpdk.rx_lcores}, {"workers", cfg.dpdk.workers},
                  {"burst", cfg.dpdk.burst}, {"ring_size", cfg.dpdk.ring_size}}},
        {"output", {{"flows", cfg.flows_out}, {"payload", cfg.payload_out}, {"detections", cfg.detections_out}}},
        // The pseudonym secret never leaves: only whether pseudonyms are on.
        {"ti_export", {{"dir", cfg.ti_export}, {"every_ns", cfg.ti_export_every_ns}, {"privacy_k", cfg.privacy_k},
                       {"producer", cfg.producer}, {"pseudonyms", !cfg.pseudonym_secret.empty()},
                       {"pseudonym_rotate_ns", cfg.pseudonym_rotate_ns}}},
        {"features", {{"rules", cfg.rules}, {"rules_cache", cfg.rules_cache}, {"ti", cfg.ti}, {"partners", cfg.partners}}},
        {"control", {{"socket", cfg.control.socket}}}};
  });
  s.add("/flows/top", "largest active flows: /flows/top?by=bytes|packets&n=20 (n <= 1000)",
        [&rt](const CtlRequest& r) {
          std::string by = r.query.count("by") ? r.query.at("by") : "bytes";
          if (by != "bytes" && by != "packets") throw CtlError("by must be bytes or packets");
          uint32_t n = 20;
          if (r.query.count("n")) {
            const std::string& s = r.query.at("n");
            char* end;
            unsigned long x = std::strtoul(s.c_str(), &end, 10);
            if (s.empty() || *end || x == 0 || x > TopRequest::kMax) throw CtlError("n must be 1 .. 1000");
            n = uint32_t(x);
          }
          nlohmann::json arr = nlohmann::json::array();
          std::string line;
          for (const FlowRecord& f : rt.top_flows(n, by == "packets")) {
            line.clear();
            format_record(f, false, line);
            auto j = nlohmann::json::parse(line);
            j.erase("end_reason");
            arr.push_back(j);
          }
          return arr;
        });
  s.add("/rules/reload",
        "recompile the rules file (or {\"path\": FILE}) and swap it into every worker; a bad "
        "file is refused with Hyperscan's message and the old rules stay",
        [&rt, &cfg](const CtlRequest& r) {
          std::string path = r.body.value("path", cfg.rules);
          try {
            return nlohmann::json{{"reloaded", rt.reload_rules(path)}};
          } catch (const RuleError& e) {
            throw CtlError(e.what());
          }
        });
  s.add("/shutdown", "stop RX, flush every flow through workers and exporters, exit",
        [&rt](const CtlRequest&) {
          rt.request_stop("shutdown command");
          return nlohmann::json{{"stopping", true}};
        });
}

}  // namespace ls
