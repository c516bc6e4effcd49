#include "dataplane/flow_core.h"

namespace ls {

FlowCore::FlowCore(const CoreConfig& cfg, RecordSink& sink, uint16_t core_id)
    : table(cfg.table, ctr, sink), sampler(cfg.sampling), cfg_(cfg), id_(core_id) {}

void FlowCore::process_raw(const PacketView* v, uint32_t n) {
  PacketMeta* ptrs[kMaxBurst];
  while (n) {
    uint32_t b = n < kMaxBurst ? n : kMaxBurst;
    // Packet bytes are cold (just received or read): fetch a few packets ahead.
    constexpr uint32_t kAhead = 4;
    for (uint32_t i = 0; i < kAhead && i < b; i++) __builtin_prefetch(v[i].data);
    for (uint32_t i = 0; i < b; i++) {
      if (i + kAhead < b) __builtin_prefetch(v[i + kAhead].data);
      parse(v[i], scratch_[i]);
      ptrs[i] = &scratch_[i];
    }
    process(ptrs, b);
    v += b;
    n -= b;
  }
}

void FlowCore::process(PacketMeta* const* metas, uint32_t n) {
  FlowKey keys[kMaxBurst];
  uint64_t hashes[kMaxBurst];
  PacketMeta* live[kMaxBurst];
  uint8_t src_lo[kMaxBurst];
  uint32_t m = 0;
  const uint64_t seed = cfg_.table.hash_seed;
  const bool pkt_sampling = sampler.packet_level();
  const bool flow_sampling = sampler.config().mode == SampleMode::FLOW_HASH;

  // Pass 1: drops, sampling, fragments, key, hash; prefetch the home bucket.
  for (uint32_t i = 0; i < n; i++) {
    PacketMeta& p = *metas[i];
    ctr.inc(Ctr::packets);
    ctr.inc(Ctr::bytes, p.wire_len);
    if (p.error != Ctr::packets) {
      ctr.inc(p.error);
      continue;
    }
    if (pkt_sampling && !sampler.keep_packet()) {
      ctr.inc(Ctr::sampled_out);
      continue;
    }
    if (p.frag == Frag::FIRST) {
      frags_.put(p);
    } else if (p.frag == Frag::LATER) {
      ctr.inc(frags_.get(p) ? Ctr::fragments_attributed : Ctr::fragments_unattributed);
    }
    src_lo[m] = make_key(p, cfg_.key, keys[m]);
    if (flow_sampling && !sampler.keep_flow(keys[m])) {
      ctr.inc(Ctr::sampled_out);
      continue;
    }
    hashes[m] = hash_key(keys[m], seed);
    table.prefetch_bucket(hashes[m]);
    live[m++] = &p;
  }
  // Pass 2: buckets are (nearly) in cache; prefetch the candidate entries.
  for (uint32_t i = 0; i < m; i++) table.prefetch_entry(keys[i], hashes[i]);
  // Pass 3: in packet order, so a flow created earlier in the burst is found later.
  for (uint32_t i = 0; i < m; i++) {
    PacketMeta& p = *live[i];
    table.advance_clock(p.ts_ns, p.epoch);
    uint32_t e = table.find(keys[i], hashes[i]);
    if (e != FlowTable::kNone) e = table.check_expired(e, p.ts_ns);
    if (e != FlowTable::kNone && p.l4_proto == 6 && (p.tcp_flags & 0x12) == 0x02 &&
        (table.entry(e).tcp_state & TCP_CLOSED)) {
      // A new SYN on a closed connection is a new flow (port reuse).
      table.end(e, EndReason::TCP_END);
      e = FlowTable::kNone;
    }
    if (e == FlowTable::kNone) {
      if (!sampler.admit_new_flow()) {
        ctr.inc(Ctr::sampled_out);
        continue;
      }
      e = table.insert(keys[i], hashes[i], p.ts_ns);
      if (e == FlowTable::kNone) continue;  // table_full_drop counted by the table
      if (sampler.config().mode == SampleMode::SAMPLE_HOLD) table.set_held(e);
    }
    table.update(e, src_lo[i] ? 0 : 1, p.ts_ns, p.wire_len, p.tcp_flags, p.payload,
                 p.payload_len, p.no_payload);
  }
  table.expire();
}

}  // namespace ls
