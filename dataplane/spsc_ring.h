// Single-producer/single-consumer ring between two threads of the replay pipeline
// (the DPDK runtime uses rte_ring in SP/SC mode for the same role). Capacity is a power
// of two; indices are free-running; each side caches the other's index to avoid
// touching the shared cache line on every operation.
#pragma once
#include <atomic>
#include <bit>
#include <cstdint>
#include <memory>
#include <stdexcept>

namespace ls {

template <class T>
class SpscRing {
 public:
  explicit SpscRing(uint32_t capacity)
      : cap_(std::bit_ceil(capacity)), mask_(cap_ - 1), buf_(new T[cap_]) {
    if (capacity == 0) throw std::invalid_argument("ring capacity must be > 0");
  }
  bool push(const T& v) {
    uint64_t t = tail_.load(std::memory_order_relaxed);
    if (t - head_cache_ == cap_) {
      head_cache_ = head_.load(std::memory_order_acquire);
      if (t - head_cache_ == cap_) return false;
    }
    buf_[t & mask_] = v;
    tail_.store(t + 1, std::memory_order_release);
    return true;
  }
  bool pop(T& v) {
    uint64_t h = head_.load(std::memory_order_relaxed);
    if (h == tail_cache_) {
      tail_cache_ = tail_.load(std::memory_order_acquire);
      if (h == tail_cache_) return false;
    }
    v = buf_[h & mask_];
    head_.store(h + 1, std::memory_order_release);
    return true;
  }
  uint32_t capacity() const { return cap_; }

 private:
  const uint32_t cap_, mask_;
  std::unique_ptr<T[]> buf_;
  alignas(64) std::atomic<uint64_t> tail_{0};
  uint64_t head_cache_ = 0;  // producer's copy
  alignas(64) std::atomic<uint64_t> head_{0};
  uint64_t tail_cache_ = 0;  // consumer's copy
};

}  // namespace ls
