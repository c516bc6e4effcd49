#include "dataplane/flow_table.h"

#include <emmintrin.h>

#include <algorithm>
#include <bit>
#include <stdexcept>

namespace ls {

std::string_view end_reason_name(EndReason r) {
  switch (r) {
    case EndReason::IDLE: return "idle";
    case EndReason::ACTIVE: return "active";
    case EndReason::TCP_END: return "tcp_end";
    case EndReason::EVICTED: return "evicted";
    case EndReason::FLUSH: return "flush";
    case EndReason::CLOCK_JUMP: return "clock_jump";
  }
  return "?";
}

FlowTable::FlowTable(const TableConfig& cfg, Counters& ctr, RecordSink& sink, size_t payload_prefault)
    : cfg_(cfg), ctr_(ctr), sink_(sink) {
  if (cfg_.capacity == 0) throw std::invalid_argument("flow table capacity must be > 0");
  if (cfg_.payload_bytes > kMaxPayload)
    throw std::invalid_argument("payload_bytes must be <= 256");
  // Buckets hold 8 slots; size them so the full pool loads them to at most 50 %.
  uint32_t nb = std::bit_ceil(std::max<uint32_t>(cfg_.capacity / 4, 1));
  bucket_mask_ = nb - 1;
  bucket_mem_ = Region(size_t(nb + kMaxProbe) * sizeof(Bucket));
  entry_mem_ = Region(size_t(cfg_.capacity) * sizeof(FlowEntry));
  free_mem_ = Region(size_t(cfg_.capacity) * sizeof(uint32_t));
  payload_mem_ = Region(size_t(cfg_.capacity) * 2 * cfg_.payload_bytes, payload_prefault);
  used_mem_ = Region((size_t(cfg_.capacity) + 63) / 64 * 8);
  buckets_ = bucket_mem_.as<Bucket>();
  entries_ = entry_mem_.as<FlowEntry>();
  free_ = free_mem_.as<uint32_t>();
  payload_ = payload_mem_.as<uint8_t>();
  used_bits_ = used_mem_.as<uint64_t>();
  // Probing wraps by allocating kMaxProbe spare buckets mirrored onto the start: simpler
  // is to stop probing at the end, which the spare buckets allow without a modulo.
  // Zeroed memory is an empty table (signature 0 = free slot): nothing is written here,
  // so on-demand pages (Paging::OnDemand) are touched only where flows land.
  // Entries never used are taken in ascending order (fresh_), so the pool fills memory
  // sequentially; freed ones are reused first (free_, a stack).
  nfree_ = 0;
  fresh_ = 0;
}

size_t FlowTable::memory_bytes() const {
  return bucket_mem_.size() + entry_mem_.size() + free_mem_.size() + payload_mem_.size() + used_mem_.size();
}

// Bit 2*j set when slot j's signature equals s (SSE2: one compare for 8 slots).
static inline uint32_t match_mask(const uint16_t* sig, uint16_t s) {
  __m128i v = _mm_loadu_si128(reinterpret_cast<const __m128i*>(sig));
  __m128i m = _mm_cmpeq_epi16(v, _mm_set1_epi16(short(s)));
  return uint32_t(_mm_movemask_epi8(m)) & 0x5555u;
}

uint32_t FlowTable::find(const FlowKey& k, uint64_t h) const {
  uint32_t home = bucket_of(h);
  uint16_t s = sig_of(h);
  for (uint32_t p = 0; p < kMaxProbe; p++) {
    const Bucket& b = buckets_[home + p];
    for (uint32_t m = match_mask(b.sig, s); m; m &= m - 1) {
      uint32_t i = b.idx[std::countr_zero(m) >> 1];
      if (entries_[i].key == k) return i;
    }
    // Nothing homed here was pushed further: the key cannot be in a later bucket.
    if (p == 0 && buckets_[home].displaced == 0) return kNone;
  }
  return kNone;
}

void FlowTable::prefetch_entry(const FlowKey&, uint64_t h) const {
  const Bucket& b = buckets_[bucket_of(h)];
  uint32_t m = match_mask(b.sig, sig_of(h));
  if (m) {
    // Both lines: the key is in the first, the counters in the second.
    const char* e = reinterpret_cast<const char*>(&entries_[b.idx[std::countr_zero(m) >> 1]]);
    prefetch_line(e);
    prefetch_line(e + 64);
  }
}

uint32_t FlowTable::insert(const FlowKey& k, uint64_t h, uint64_t ts_ns) {
  uint32_t home = bucket_of(h);
  for (int attempt = 0; attempt < 2; attempt++) {
    if (nfree_ || fresh_ < cfg_.capacity) {
      for (uint32_t p = 0; p < kMaxProbe; p++) {
        Bucket& b = buckets_[home + p];
        uint32_t empty = match_mask(b.sig, 0);
        if (!empty) continue;
        uint32_t slot = std::countr_zero(empty) >> 1;
        uint32_t i = nfree_ ? free_[--nfree_] : fresh_++;
        if (i >= high_water_) high_water_ = i + 1;
        used_bits_[i >> 6] |= 1ull << (i & 63);
        b.sig[slot] = sig_of(h);
        b.idx[slot] = i;
        if (p) buckets_[home].displaced++;
        FlowEntry& e = entries_[i];
        e.key = k;
        reset_counters(e);
        e.first_ns = e.last_ns = ts_ns;
        e.tcp_state = 0;
        e.init_lo = 0;
        e.held = 0;
        e.rtt_us = 0;
        used_++;
        ctr_.inc(Ctr::flows_created);
        return i;
      }
    }
    if (cfg_.full_policy == FullPolicy::DROP_NEW || attempt) break;
    uint32_t v = evict_victim(h);
    if (v == kNone) break;
    remove(v, EndReason::EVICTED);
    ctr_.inc(Ctr::flows_evicted);
  }
  ctr_.inc(Ctr::table_full_drop);
  return kNone;
}

// Prefer the oldest entry in the new key's probe buckets: removing it frees both a pool
// slot and a bucket slot where the key needs one. If those buckets are empty, the pool
// itself is exhausted: take the next flow at the sweep cursor (clock-style).
uint32_t FlowTable::evict_victim(uint64_t h) {
  uint32_t home = bucket_of(h), best = kNone;
  uint64_t oldest = UINT64_MAX;
  for (uint32_t p = 0; p < kMaxProbe; p++) {
    const Bucket& b = buckets_[home + p];
    for (uint32_t s = 0; s < kSlots; s++) {
      if (b.sig[s] && entries_[b.idx[s]].last_ns < oldest) {
        oldest = entries_[b.idx[s]].last_ns;
        best = b.idx[s];
      }
    }
  }
  if (best != kNone) return best;
  for (uint32_t n = 0; n < high_water_; n++) {
    if (sweep_cursor_ >= high_water_) sweep_cursor_ = 0;
    uint32_t i = sweep_cursor_++;
    if (entries_[i].key.ip_ver) return i;
  }
  return kNone;
}

void FlowTable::end(uint32_t i, EndReason why) {
  ctr_.inc(why == EndReason::TCP_END ? Ctr::flows_tcp_end : Ctr::flows_flushed);
  remove(i, why);
}

void FlowTable::reset_counters(FlowEntry& e) {
  e.bytes[0] = e.bytes[1] = 0;
  e.pkts[0] = e.pkts[1] = 0;
  e.iat_sq = e.size_sq = 0;
  e.iat_min_us = UINT32_MAX;
  e.iat_max_us = 0;
  e.size_min = UINT16_MAX;
  e.size_max = 0;
  e.flags[0] = e.flags[1] = 0;
  e.paylen[0] = e.paylen[1] = 0;
  e.empty_pkts = 0;
}

void FlowTable::update(uint32_t i, int dir, uint64_t ts, uint32_t wire_len, uint8_t tcp_flags,
                       const uint8_t* payload, uint16_t payload_len, bool no_payload) {
  FlowEntry& e = entries_[i];
  uint32_t n = e.pkts[0] + e.pkts[1];
  if (n == 0) {
    e.first_ns = ts;
    if (e.tcp_state == 0) e.init_lo = dir == 0;
  } else {
    // Reordered timestamps count as zero gap; last_ns only moves forward.
    uint64_t gap = ts > e.last_ns ? ts - e.last_ns : 0;
    uint64_t us = gap / 1000;
    uint32_t us32 = us > UINT32_MAX ? UINT32_MAX : uint32_t(us);
    e.iat_sq += double(us) * double(us);
    e.iat_min_us = std::min(e.iat_min_us, us32);
    e.iat_max_us = std::max(e.iat_max_us, us32);
  }
  if (ts > e.last_ns || n == 0) e.last_ns = ts;
  e.pkts[dir]++;
  e.bytes[dir] += wire_len;
  uint16_t sz = wire_len > UINT16_MAX ? UINT16_MAX : uint16_t(wire_len);
  e.size_sq += double(wire_len) * double(wire_len);
  e.size_min = std::min(e.size_min, sz);
  e.size_max = std::max(e.size_max, sz);
  e.empty_pkts += no_payload;
  if (e.key.proto == 6) {
    e.flags[dir] |= tcp_flags;
    uint8_t st = e.tcp_state;
    if ((tcp_flags & 0x12) == 0x02) st |= TCP_SYN;
    else if ((tcp_flags & 0x12) == 0x12) st |= TCP_SYNACK;
    else if ((tcp_flags & 0x10) && (st & TCP_SYNACK) && !(st & TCP_ESTABLISHED)) {
      st |= TCP_ESTABLISHED;
      // Handshake time as the sensor sees it: both path halves, wherever it sits. Only
      // when the record began with the SYN (first_ns is its time).
      if ((st & TCP_SYN) && !(st & FLOW_CONTINUED) && (e.flags[e.init_lo ? 0 : 1] & 0x02)) {
        uint64_t us = (ts - e.first_ns) / 1000;
        e.rtt_us = us == 0 ? 1 : us > UINT32_MAX ? UINT32_MAX : uint32_t(us);
      }
    }
    if (tcp_flags & 0x01) st |= dir == 0 ? TCP_FIN_LO : TCP_FIN_HI;
    if (tcp_flags & 0x04) st |= TCP_RST;
    if ((st & TCP_RST) || (st & (TCP_FIN_LO | TCP_FIN_HI)) == (TCP_FIN_LO | TCP_FIN_HI))
      st |= TCP_CLOSED;
    e.tcp_state = st;
  }
  append_payload(e, i, dir, payload, payload_len);
}

inline void FlowTable::append_payload(FlowEntry& e, uint32_t i, int dir, const uint8_t* p, uint16_t len) {
  uint16_t cap = cfg_.payload_bytes;
  if (!cap || !len) return;
  uint16_t& have = e.paylen[dir];
  if (have < cap) {
    uint16_t take = std::min<uint16_t>(uint16_t(cap - have), len);
    std::memcpy(payload_ + (size_t(i) * 2 + dir) * cap + have, p, take);
    have += take;
  }
}

void FlowTable::merge_uniflow(uint32_t i, int dir, uint64_t first_ns, uint64_t last_ns,
                              uint64_t pkts, uint64_t bytes, uint8_t tcp_flags, int initiator,
                              const uint8_t* payload, uint16_t payload_len) {
  FlowEntry& e = entries_[i];
  bool empty = e.pkts[0] + e.pkts[1] == 0;
  // The initiator is the direction that started first; on a tie (millisecond exports)
  // the higher port is taken as the client's ephemeral one.
  bool lo_src = dir == 0;
  if (initiator) e.init_lo = initiator > 0 ? lo_src : !lo_src;
  else if (empty || first_ns < e.first_ns ||
           (first_ns == e.first_ns && e.pkts[1 - dir] && (e.key.lo_port > e.key.hi_port) == lo_src))
    e.init_lo = lo_src;
  if (empty) {
    e.first_ns = first_ns;
    e.last_ns = last_ns;
    e.iat_min_us = 0;
    e.size_min = 0;
  }
  e.first_ns = std::min(e.first_ns, first_ns);
  e.last_ns = std::max(e.last_ns, last_ns);
  e.pkts[dir] = uint32_t(std::min<uint64_t>(uint64_t(e.pkts[dir]) + pkts, UINT32_MAX));
  e.bytes[dir] += bytes;
  e.flags[dir] |= tcp_flags;
  if (e.key.proto == 6) {
    // Flags are OR-ed per direction: the handshake is inferred, not observed in order.
    int f = e.init_lo ? 0 : 1, r = 1 - f;
    uint8_t st = e.tcp_state & FLOW_CONTINUED;
    if (e.flags[f] & 0x02) st |= TCP_SYN;
    if ((e.flags[r] & 0x12) == 0x12) st |= TCP_SYNACK;
    if ((st & TCP_SYNACK) && (e.flags[f] & 0x10)) st |= TCP_ESTABLISHED;
    if (e.flags[0] & 0x01) st |= TCP_FIN_LO;
    if (e.flags[1] & 0x01) st |= TCP_FIN_HI;
    if ((e.flags[0] | e.flags[1]) & 0x04) st |= TCP_RST;
    if ((st & TCP_RST) || (st & (TCP_FIN_LO | TCP_FIN_HI)) == (TCP_FIN_LO | TCP_FIN_HI))
      st |= TCP_CLOSED;
    e.tcp_state = st;
  }
  append_payload(e, i, dir, payload, payload_len);
}

bool FlowTable::expired(const FlowEntry& e, uint64_t now, EndReason& why) const {
  if ((e.tcp_state & TCP_CLOSED) && now >= e.last_ns + cfg_.tcp_end_timeout_ns) {
    why = EndReason::TCP_END;
    return true;
  }
  if (now >= e.last_ns + cfg_.idle_timeout_ns) {
    why = EndReason::IDLE;
    return true;
  }
  if (cfg_.active_timeout_ns && now >= e.first_ns + cfg_.active_timeout_ns &&
      e.pkts[0] + e.pkts[1]) {
    why = EndReason::ACTIVE;
    return true;
  }
  return false;
}

void FlowTable::remove(uint32_t i, EndReason why) {
  FlowEntry& e = entries_[i];
  if (e.pkts[0] + e.pkts[1]) {
    sink_.emit(e, cfg_.payload_bytes ? payload_ + size_t(i) * 2 * cfg_.payload_bytes : nullptr,
               cfg_.payload_bytes, why);
    ctr_.inc(Ctr::records_emitted);
  }
  // Recomputed, not stored: deletion is once per flow, the 4 bytes serve every packet.
  uint32_t home = bucket_of(hash_key(e.key, cfg_.hash_seed));
  for (uint32_t p = 0; p < kMaxProbe; p++) {
    Bucket& b = buckets_[home + p];
    for (uint32_t s = 0; s < kSlots; s++) {
      if (b.sig[s] && b.idx[s] == i) {
        b.idx[s] = kNone;
        b.sig[s] = 0;
        if (p) buckets_[home].displaced--;
        e.key.ip_ver = 0;
        free_[nfree_++] = i;
        used_bits_[i >> 6] &= ~(1ull << (i & 63));
        used_--;
        return;
      }
    }
  }
}

void FlowTable::advance_clock(uint64_t ts, uint16_t epoch) {
  if (!clock_started_) {
    clock_started_ = true;
    now_ = swept_to_ns_ = ts;
    epoch_ = epoch;
    return;
  }
  if (epoch != epoch_) {
    ctr_.inc(Ctr::clock_backward_jumps);
    flush(EndReason::CLOCK_JUMP);
    epoch_ = epoch;
    now_ = swept_to_ns_ = ts;
    return;
  }
  if (ts >= now_) now_ = ts;
  else ctr_.inc(Ctr::clock_reordered);
}

void FlowTable::expire() {
  if (now_ <= swept_to_ns_) return;
  uint64_t dt = now_ - swept_to_ns_;
  swept_to_ns_ = now_;
  // Slots never allocated need no visit: sweep [0, high_water_) once per period.
  uint32_t span = high_water_;
  if (!span) return;
  double want = sweep_carry_ + double(span) * double(dt) / double(cfg_.sweep_period_ns);
  uint64_t n = want >= double(span) ? span : uint64_t(want);
  sweep_carry_ = n == span ? 0 : want - double(n);
  // The n slots from the cursor on, wrapping at span; holes cost a bit each.
  while (n) {
    if (sweep_cursor_ >= span) sweep_cursor_ = 0;
    uint32_t end = uint32_t(std::min<uint64_t>(span, sweep_cursor_ + n));
    for_used(sweep_cursor_, end, [&](uint32_t i) {
      EndReason why;
      if (expired(entries_[i], now_, why)) expire_entry(i, why);
    });
    n -= end - sweep_cursor_;
    sweep_cursor_ = end;
  }
}

bool FlowTable::expire_entry(uint32_t i, EndReason why) {
  FlowEntry& e = entries_[i];
  if (why == EndReason::ACTIVE) {
    // Long flow: emit what it has so far and keep the entry (and its TCP state).
    sink_.emit(e, cfg_.payload_bytes ? payload_ + size_t(i) * 2 * cfg_.payload_bytes : nullptr,
               cfg_.payload_bytes, why);
    ctr_.inc(Ctr::records_emitted);
    ctr_.inc(Ctr::flows_active_timeout);
    reset_counters(e);
    e.first_ns = e.last_ns;
    e.held = 0;  // the skipped packets were counted in the first record
    e.tcp_state |= FLOW_CONTINUED;
    return false;
  }
  ctr_.inc(why == EndReason::TCP_END ? Ctr::flows_tcp_end : Ctr::flows_idle_timeout);
  remove(i, why);
  return true;
}

uint32_t FlowTable::check_expired(uint32_t i, uint64_t ts) {
  EndReason why;
  if (!expired(entries_[i], ts, why)) return i;
  return expire_entry(i, why) ? kNone : i;
}

void FlowTable::flush(EndReason why) {
  if (!used_) return;
  for_used(0, high_water_, [&](uint32_t i) {
    ctr_.inc(why == EndReason::CLOCK_JUMP ? Ctr::flows_clock_jump : Ctr::flows_flushed);
    remove(i, why);
  });
}

}  // namespace ls
