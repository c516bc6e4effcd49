// One core's share of the dataplane: parsed packets → fragment attribution → key →
// sampler → flow table. Owned and written by exactly one thread (an RX lcore, a replay
// core thread, or the replay reader itself when K = 1).
#pragma once
#include <cstdint>

#include "dataplane/flow_table.h"
#include "dataplane/parser.h"
#include "dataplane/sampler.h"

namespace ls {

struct CoreConfig {
  ParseConfig parse;
  KeyConfig key;
  TableConfig table;
  SamplingConfig sampling;
};

// Later IP fragments carry no ports: remember the first fragment's ports by
// (addresses, protocol, IP ID) in a small direct-mapped cache.
class FragCache {
 public:
  static constexpr uint32_t kSize = 4096;
  void put(const PacketMeta& m) {
    uint64_t t = tag(m);
    Slot& s = slots_[t & (kSize - 1)];
    s = {t, m.sport, m.dport};
  }
  bool get(PacketMeta& m) const {
    uint64_t t = tag(m);
    const Slot& s = slots_[t & (kSize - 1)];
    if (s.tag != t) return false;
    m.sport = s.sport;
    m.dport = s.dport;
    return true;
  }

 private:
  struct Slot {
    uint64_t tag = 0;
    uint16_t sport = 0, dport = 0;
  };
  static uint64_t tag(const PacketMeta& m) {
    struct {
      uint8_t a[32];
      uint32_t id;
      uint32_t proto;
    } k;
    std::memcpy(k.a, m.src, 16);
    std::memcpy(k.a + 16, m.dst, 16);
    k.id = m.frag_id;
    k.proto = m.l4_proto;
    return XXH3_64bits(&k, sizeof k) | 1;
  }
  Slot slots_[kSize];
};

// Deterministic rewrite for looped replays: loop n maps every address through the same
// XOR, so conversations stay conversations but each loop's flows are distinct.
inline void rewrite_addresses(PacketMeta& m, uint32_t loop) {
  if (!loop) return;
  uint32_t x = loop * 0x9E3779B1u;
  int at = m.ip_ver == 4 ? 0 : 8;
  for (int b = 0; b < 4; b++) {
    m.src[at + b] ^= uint8_t(x >> (8 * b));
    m.dst[at + b] ^= uint8_t(x >> (8 * b));
  }
}

class alignas(64) FlowCore {
 public:
  static constexpr uint32_t kMaxBurst = 256;

  FlowCore(const CoreConfig& cfg, RecordSink& sink, uint16_t core_id = 0);

  // Stage A (parse) for a burst of raw packets, then stage B.
  void process_raw(const PacketView* v, uint32_t n);
  // Stage A only: parse + rewrite one packet (used by the replay dispatcher).
  bool parse(const PacketView& v, PacketMeta& m) {
    bool ok = parse_packet(v, v.link, cfg_.parse, m, ctr);
    if (ok) rewrite_addresses(m, v.rewrite);
    return ok;
  }
  // Stage B: parsed packets (meta.error != packets are counted and skipped).
  void process(PacketMeta* const* metas, uint32_t n);
  // Shutdown / end of input: every active flow becomes a record.
  void finish() { table.flush(EndReason::FLUSH); }
  // Live sampling change; called by the owning core at a quiescent point.
  void set_sampling(const SamplingConfig& s) { sampler.configure(s); }
  void set_filter(const std::shared_ptr<const PacketFilter>& f) {
    if (cfg_.parse.filter != f) cfg_.parse.filter = f;
  }

  uint16_t id() const { return id_; }

  Counters ctr;
  FlowTable table;
  Sampler sampler;

 private:
  CoreConfig cfg_;
  FragCache frags_;
  uint16_t id_;
  PacketMeta scratch_[kMaxBurst];
};

}  // namespace ls
