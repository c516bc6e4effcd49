// Per-core flow table: single writer, preallocated, bucketised open addressing with
// 16-bit signatures (8 slots per 64-byte bucket), burst lookup with prefetch, an
// incremental expiry sweep in packet time and a named table-full policy.
#pragma once
#include <algorithm>
#include <bit>
#include <cstdint>
#include <string_view>

#include "dataplane/counters.h"
#include "dataplane/flow_key.h"
#include "dataplane/mem.h"
#include "dataplane/prefetch.h"

namespace ls {

enum class EndReason : uint8_t { IDLE, ACTIVE, TCP_END, EVICTED, FLUSH, CLOCK_JUMP };
std::string_view end_reason_name(EndReason r);

enum class FullPolicy : uint8_t { EVICT_OLDEST, DROP_NEW };

// TCP state bits, per canonical direction where it matters.
// FLOW_CONTINUED (any protocol): this record continues an earlier record of the same flow
// (active timeout) — the same contact, not a new connection.
enum : uint8_t {
  TCP_SYN = 1, TCP_SYNACK = 2, TCP_ESTABLISHED = 4, TCP_FIN_LO = 8, TCP_FIN_HI = 16,
  TCP_RST = 32, TCP_CLOSED = 64, FLOW_CONTINUED = 128,
};

// Hot state of one flow: exactly two cache lines. Direction index 0 = packets whose
// source is key.lo; `init_lo` says whether the initiator (first packet's source) is lo.
struct alignas(64) FlowEntry {
  FlowKey key;            // 44; key.ip_ver == 0 marks a free slot
  uint32_t rtt_us;        // TCP: SYN to the ACK completing the handshake (0 = not seen)
  uint64_t first_ns;
  uint64_t last_ns;       // latest timestamp seen (never moves backwards)
  uint64_t bytes[2];      // frame bytes as captured on the wire
  uint32_t pkts[2];
  double iat_sq;          // sum of squared inter-arrival times, µs²
  double size_sq;         // sum of squared frame sizes
  uint32_t iat_min_us;
  uint32_t iat_max_us;
  uint16_t size_min;
  uint16_t size_max;
  uint8_t flags[2];       // TCP flags OR-ed per direction
  uint8_t tcp_state;
  uint8_t init_lo : 1;    // the initiator (first packet's source) is key.lo
  uint8_t held : 1;       // admitted by sample-and-hold: packets before it were skipped
  uint32_t empty_pkts;    // packets with an L4 header and no payload on the wire
  uint16_t paylen[2];     // payload bytes captured per direction (kept here: no extra miss)
};
static_assert(sizeof(FlowEntry) == 128, "hot flow state must stay at two cache lines");

struct TableConfig {
  uint32_t capacity = 1 << 20;           // flows
  uint16_t payload_bytes = 64;           // first N payload bytes kept per direction
  uint64_t idle_timeout_ns = 30'000'000'000ull;
  uint64_t active_timeout_ns = 300'000'000'000ull;
  uint64_t tcp_end_timeout_ns = 2'000'000'000ull;  // linger after FIN/RST for the last ACKs
  uint64_t sweep_period_ns = 1'000'000'000ull;     // full expiry pass every period
  uint64_t backward_tolerance_ns = 1'000'000'000ull;  // ClockGuard: larger steps back are jumps
  FullPolicy full_policy = FullPolicy::EVICT_OLDEST;
  uint64_t hash_seed = 0;
};

// Receives every record that leaves the table. Called on the owning core.
struct RecordSink {
  virtual ~RecordSink() = default;
  // `payload` holds payload_cap bytes per direction (e.paylen[d] of them valid), or is
  // null when payload capture is off.
  virtual void emit(const FlowEntry& e, const uint8_t* payload, uint16_t payload_cap,
                    EndReason why) = 0;
};

class FlowTable {
 public:
  static constexpr uint32_t kSlots = 8;
  static constexpr uint32_t kMaxProbe = 4;  // buckets probed from home
  static constexpr uint32_t kNone = UINT32_MAX;
  static constexpr uint16_t kMaxPayload = 256;

  // `payload_prefault`: bytes of the payload pool faulted in at start under
  // Paging::Prefault (all by default; the collector's pool, used only by sFlow's samples on
  // the control thread, takes 0 and faults in as used).
  FlowTable(const TableConfig& cfg, Counters& ctr, RecordSink& sink, size_t payload_prefault = SIZE_MAX);

  uint32_t find(const FlowKey& k, uint64_t h) const;
  // Inserts a key known to be absent (applies the full policy).
  uint32_t insert(const FlowKey& k, uint64_t h, uint64_t ts_ns);
  void prefetch_bucket(uint64_t h) const { prefetch_line(&buckets_[bucket_of(h)]); }
  void prefetch_entry(const FlowKey& k, uint64_t h) const;

  // Adds one packet to entry `i`; `dir` = 0 when the packet's source is key.lo.
  void update(uint32_t i, int dir, uint64_t ts_ns, uint32_t wire_len, uint8_t tcp_flags,
              const uint8_t* payload, uint16_t payload_len, bool no_payload = false);
  // Adds one direction of a flow as an exporter reported it (collector input): counts,
  // times and OR-ed TCP flags; per-packet statistics stay unknown (zero).
  // `initiator`: the exporter says this direction's source initiated (1), did not (-1),
  // or does not say (0: the earlier start wins). `payload`: bytes the export carried
  // (sFlow's sampled headers), appended to the direction's prefix as a packet's are.
  void merge_uniflow(uint32_t i, int dir, uint64_t first_ns, uint64_t last_ns, uint64_t pkts,
                     uint64_t bytes, uint8_t tcp_flags, int initiator = 0,
                     const uint8_t* payload = nullptr, uint16_t payload_len = 0);

  // Advances the table clock (the latest packet time). A new clock epoch (ClockGuard)
  // flushes every flow as CLOCK_JUMP, so concatenated captures do not expire each
  // other's flows; smaller steps back are counted as reordering.
  void advance_clock(uint64_t ts_ns, uint16_t epoch);
  // Incremental expiry proportional to the packet time elapsed since the last call.
  void expire();
  void flush(EndReason why);
  void set_held(uint32_t i) { entries_[i].held = 1; }
  // Expiry on access, judged by the packet's own time: a record's boundaries then
  // depend only on its own packets, not on when the sweep last ran (so K cores give the same records as one). Returns kNone
  // when the entry ended (idle / TCP end), else `i` (possibly after an active-timeout
  // record was emitted).
  uint32_t check_expired(uint32_t i, uint64_t ts);
  // Ends one flow now (a new SYN on a closed TCP flow starts a new record).
  void end(uint32_t i, EndReason why);

  uint32_t size() const { return used_; }
  uint32_t capacity() const { return cfg_.capacity; }
  uint64_t now() const { return now_; }
  const FlowEntry& entry(uint32_t i) const { return entries_[i]; }
  const TableConfig& config() const { return cfg_; }
  size_t memory_bytes() const;
  uint32_t high_water() const { return high_water_; }
  // Visits used entries with index in [from, to) (clamped to the high-water mark).
  template <class F>
  void for_range(uint32_t from, uint32_t to, F&& f) const {
    for_used(from, std::min(to, high_water_), [&](uint32_t i) { f(entries_[i]); });
  }

  // Calls f(i) for each used entry i in [from, to), in index order, reading the bitmap of
  // used entries rather than every entry: after a burst of flows ends (a clock jump, the
  // end of a capture's segment) most of [0, high_water_) are holes. f may remove entry i.
  template <class F>
  void for_used(uint32_t from, uint32_t to, F&& f) const {
    for (uint32_t w = from >> 6; w <= (to - 1) >> 6 && from < to; w++) {
      uint64_t m = used_bits_[w];
      if (w == from >> 6) m &= ~0ull << (from & 63);
      if (w == (to - 1) >> 6 && (to & 63)) m &= ~(~0ull << (to & 63));
      for (; m; m &= m - 1) f(w * 64 + uint32_t(std::countr_zero(m)));
    }
  }

 private:
  struct alignas(64) Bucket {
    uint16_t sig[kSlots];
    uint32_t idx[kSlots];
    uint8_t displaced;  // entries homed here but stored in a later bucket
    uint8_t pad[15];
  };
  static_assert(sizeof(Bucket) == 64);

  uint32_t bucket_of(uint64_t h) const { return uint32_t(h) & bucket_mask_; }
  static uint16_t sig_of(uint64_t h) { return uint16_t(h >> 48) | 1; }
  void remove(uint32_t i, EndReason why);
  bool expired(const FlowEntry& e, uint64_t now, EndReason& why) const;
  bool expire_entry(uint32_t i, EndReason why);  // true when the entry was removed
  void reset_counters(FlowEntry& e);
  uint32_t evict_victim(uint64_t h);
  TableConfig cfg_;
  Counters& ctr_;
  RecordSink& sink_;
  // Inlined into update(): a call there costs ≈ 1–2 % of BM_CorePipeline.
  [[gnu::always_inline]] inline void append_payload(FlowEntry& e, uint32_t i, int dir, const uint8_t* p, uint16_t len);
  Region bucket_mem_, entry_mem_, free_mem_, payload_mem_, used_mem_;
  Bucket* buckets_;
  FlowEntry* entries_;
  uint32_t* free_;
  uint64_t* used_bits_;  // bit i set while entry i holds a flow
  uint8_t* payload_;
  uint32_t bucket_mask_;
  uint32_t nfree_;   // indices on the free_ stack
  uint32_t fresh_;   // entries [fresh_, capacity) were never used
  uint32_t used_ = 0;
  uint64_t now_ = 0;
  bool clock_started_ = false;
  uint16_t epoch_ = 0;
  uint64_t swept_to_ns_ = 0;
  uint32_t sweep_cursor_ = 0;
  uint32_t high_water_ = 0;  // no entry at or above this index was ever used
  double sweep_carry_ = 0;
};

}  // namespace ls
