// Named per-core counters. Every packet that does not become (part of) a flow is
// counted under exactly one DROP counter; INFO counters describe what was seen.
#pragma once
#include <array>
#include <cstdint>
#include <string_view>

namespace ls {

// X(name, kind)
#define LS_COUNTERS(X)                 \
  X(packets, INFO)                     \
  X(bytes, INFO)                       \
  X(truncated_l2, DROP)                \
  X(unsupported_link_type, DROP)       \
  X(non_ip_ethertype, DROP)            \
  X(truncated_vlan, DROP)              \
  X(too_many_vlan_tags, DROP)          \
  X(truncated_mpls, DROP)              \
  X(too_many_mpls_labels, DROP)        \
  X(mpls_unknown_payload, DROP)        \
  X(truncated_pppoe, DROP)             \
  X(pppoe_non_ip, DROP)                \
  X(truncated_ipv4, DROP)              \
  X(bad_ip_version, DROP)              \
  X(bad_ip_header_len, DROP)           \
  X(bad_ip_total_len, DROP)            \
  X(truncated_ipv6, DROP)              \
  X(truncated_ipv6_ext, DROP)          \
  X(too_many_ipv6_ext_headers, DROP)   \
  X(truncated_tcp, DROP)               \
  X(bad_tcp_header_len, DROP)          \
  X(truncated_udp, DROP)               \
  X(truncated_icmp, DROP)              \
  X(truncated_sctp, DROP)              \
  X(truncated_gre, DROP)               \
  X(unsupported_gre, DROP)             \
  X(truncated_vxlan, DROP)             \
  X(truncated_gtpu, DROP)              \
  X(bad_gtpu, DROP)                    \
  X(tunnel_depth_exceeded, DROP)       \
  X(table_full_drop, DROP)             \
  X(sampled_out, DROP)                 \
  X(filtered_out, DROP)                \
  X(vlan_tagged, INFO)                 \
  X(mpls_labelled, INFO)               \
  X(pppoe, INFO)                       \
  X(ipv4, INFO)                        \
  X(ipv6, INFO)                        \
  X(ipv4_options, INFO)                \
  X(ipv6_ext_headers, INFO)            \
  X(tunnel_decapsulated, INFO)         \
  X(fragments_first, INFO)             \
  X(fragments_attributed, INFO)        \
  X(fragments_unattributed, INFO)      \
  X(snaplen_truncated, INFO)           \
  X(flows_created, INFO)               \
  X(flows_idle_timeout, INFO)          \
  X(flows_active_timeout, INFO)        \
  X(flows_tcp_end, INFO)               \
  X(flows_evicted, INFO)               \
  X(flows_flushed, INFO)               \
  X(flows_clock_jump, INFO)            \
  X(clock_backward_jumps, INFO)        \
  X(clock_reordered, INFO)             \
  X(records_emitted, INFO)

enum class Ctr : uint16_t {
#define LS_X(n, k) n,
  LS_COUNTERS(LS_X)
#undef LS_X
  count_
};

enum class CtrKind : uint8_t { INFO, DROP };

inline constexpr size_t kNumCounters = static_cast<size_t>(Ctr::count_);

inline constexpr std::array<std::string_view, kNumCounters> kCounterNames = {
#define LS_X(n, k) #n,
    LS_COUNTERS(LS_X)
#undef LS_X
};

inline constexpr std::array<CtrKind, kNumCounters> kCounterKinds = {
#define LS_X(n, k) CtrKind::k,
    LS_COUNTERS(LS_X)
#undef LS_X
};

// Counters are written by one thread (their core) and read by the control thread while
// it runs (/stats, /metrics). Both sides use relaxed atomic accesses, so that is not a
// data race (ThreadSanitizer checks it); on x86-64 they are the plain loads and stores
// they replace — the owner's increment is a load and a store, never a locked add.
inline void owner_add(uint64_t& c, uint64_t n) { __atomic_store_n(&c, c + n, __ATOMIC_RELAXED); }
inline uint64_t peek(const uint64_t& c) { return __atomic_load_n(&c, __ATOMIC_RELAXED); }

// A single such counter (ring drops, records out) with the usual operators.
class OwnedCounter {
 public:
  OwnedCounter() = default;
  OwnedCounter(const OwnedCounter& o) : v_(o) {}  // a snapshot, taken by any thread
  OwnedCounter& operator=(const OwnedCounter& o) {
    __atomic_store_n(&v_, uint64_t(o), __ATOMIC_RELAXED);
    return *this;
  }
  OwnedCounter& operator++(int) { owner_add(v_, 1); return *this; }
  OwnedCounter& operator+=(uint64_t n) { owner_add(v_, n); return *this; }
  operator uint64_t() const { return peek(v_); }

 private:
  uint64_t v_ = 0;
};

// One per core, written only by its owner; readers sum snapshots.
struct alignas(64) Counters {
  std::array<uint64_t, kNumCounters> v{};
  void inc(Ctr c, uint64_t n = 1) { owner_add(v[static_cast<size_t>(c)], n); }
  uint64_t get(Ctr c) const { return at(static_cast<size_t>(c)); }
  uint64_t at(size_t i) const { return peek(v[i]); }  // safe while the owner runs
  Counters& operator+=(const Counters& o) {
    for (size_t i = 0; i < kNumCounters; i++) v[i] += o.at(i);
    return *this;
  }
};

}  // namespace ls
