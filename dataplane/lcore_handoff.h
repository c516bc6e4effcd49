// Every pointer handed between lcores (records through rte_ring and rte_mempool, mbufs
// from the memory-replay feeder) goes through these wrappers, for one reason:
// ThreadSanitizer sees only instrumented code. DPDK's rings order their slots with x86
// compiler barriers and its mempools live in an uninstrumented library, so the
// happens-before edge of a hand-off is invisible and the object handed over looks raced.
// The sender declares the edge before it publishes the object (tsan_handoff), the
// receiver after it got it (tsan_adopt). Outside TSan builds they compile to the bare
// DPDK call.
#pragma once
#include <rte_mempool.h>
#include <rte_ring.h>

#if defined(__SANITIZE_THREAD__)
#define LS_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define LS_TSAN 1
#endif
#endif

#ifdef LS_TSAN
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
#endif

namespace ls {

inline void tsan_handoff([[maybe_unused]] const void* obj) {
#ifdef LS_TSAN
  __tsan_release(const_cast<void*>(obj));
#endif
}
inline void tsan_adopt([[maybe_unused]] void* const* objs, [[maybe_unused]] unsigned n) {
#ifdef LS_TSAN
  for (unsigned i = 0; i < n; i++) __tsan_acquire(objs[i]);
#endif
}

// Single-producer enqueue of one object; false when the ring is full.
inline bool ring_put(rte_ring* r, void* obj) {
  tsan_handoff(obj);
  return rte_ring_sp_enqueue(r, obj) == 0;
}
// Single-consumer dequeue of up to n objects.
inline unsigned ring_take(rte_ring* r, void** objs, unsigned n) {
  n = rte_ring_sc_dequeue_burst(r, objs, n, nullptr);
  tsan_adopt(objs, n);
  return n;
}
inline bool pool_get(rte_mempool* p, void** obj) {
  if (rte_mempool_get(p, obj) != 0) return false;
  tsan_adopt(obj, 1);
  return true;
}
inline void pool_put(rte_mempool* p, void* obj) {
  tsan_handoff(obj);
  rte_mempool_put(p, obj);
}
inline void pool_put_bulk(rte_mempool* p, void* const* objs, unsigned n) {
  for (unsigned i = 0; i < n; i++) tsan_handoff(objs[i]);
  rte_mempool_put_bulk(p, objs, n);
}

}  // namespace ls
