// Preallocated, cache-line aligned anonymous memory for per-core tables. Hot paths
// never allocate; everything is sized from the config at start (replay's feature tables
// excepted: they may grow, see Paging).
#pragma once
#include <sys/mman.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14; older kernels ignore it (EINVAL)
#endif

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <new>
#include <utility>

namespace ls {

// Where table memory comes from. Default: anonymous 2 MB-aligned mmap with transparent
// huge pages. Under EAL with hugepages the runtime installs an allocator that takes
// memory from DPDK on the owning lcore's NUMA node (set before constructing the table).
struct RegionAllocator {
  void* (*alloc)(size_t bytes, void* ctx) = nullptr;  // zeroed, 2 MB aligned, or nullptr
  void (*release)(void* p, void* ctx) = nullptr;
  void* ctx = nullptr;
};
inline RegionAllocator& region_allocator() {
  static RegionAllocator a;
  return a;
}

// When table pages are backed. Prefault (the default, and `run`): every page is faulted
// in at start, so the DPDK hot path never takes a page fault. OnDemand (`replay`): pages
// fault in as entries are first used and feature tables start small and grow, so a
// capture costs the memory its flows use, not the configured capacity.
enum class Paging : uint8_t { Prefault, OnDemand };
inline Paging& region_paging() {
  static Paging p = Paging::Prefault;
  return p;
}

constexpr size_t kHugePage = 2u << 20;
inline size_t huge_span(size_t bytes) { return (bytes + kHugePage - 1) / kHugePage * kHugePage; }

// `size` bytes (a multiple of 2 MB) of anonymous memory, zeroed, the start 2 MB-aligned and
// advised for transparent huge pages, so THP can back all of it. Release with munmap.
inline void* map_huge(size_t size) {
  size_t span = size + kHugePage;
  void* raw = mmap(nullptr, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (raw == MAP_FAILED) throw std::bad_alloc();
  uintptr_t a = (reinterpret_cast<uintptr_t>(raw) + kHugePage - 1) & ~(kHugePage - 1);
  size_t head = a - reinterpret_cast<uintptr_t>(raw);
  if (head) munmap(raw, head);
  if (span - head > size) munmap(reinterpret_cast<char*>(a) + size, span - head - size);
  void* p = reinterpret_cast<void*>(a);
  madvise(p, size, MADV_HUGEPAGE);  // advisory: THP in "madvise" mode
  return p;
}

// A std allocator for large arrays filled once and kept (the threat-intel table): blocks
// of 2 MB and more are huge-page backed, one page fault per 2 MB instead of 512 (loading
// a 20 MB table was mostly page faults on a VM); smaller ones come from operator new.
// Not the DPDK region allocator: the table belongs to no lcore, and EAL memory is sized
// for packets and flow tables.
template <class T>
struct HugeAlloc {
  using value_type = T;
  HugeAlloc() = default;
  template <class U>
  HugeAlloc(const HugeAlloc<U>&) noexcept {}
  T* allocate(size_t n) {
    if (n > SIZE_MAX / sizeof(T)) throw std::bad_alloc();
    size_t bytes = n * sizeof(T);
    if (bytes < kHugePage) return static_cast<T*>(::operator new(bytes, std::align_val_t(alignof(T))));
    return static_cast<T*>(map_huge(huge_span(bytes)));
  }
  void deallocate(T* p, size_t n) noexcept {  // n as allocated: the same side of 2 MB
    size_t bytes = n * sizeof(T);
    if (bytes < kHugePage) ::operator delete(p, std::align_val_t(alignof(T)));
    else munmap(p, huge_span(bytes));
  }
  template <class U>
  bool operator==(const HugeAlloc<U>&) const noexcept { return true; }
};

class Region {
 public:
  Region() = default;
  static constexpr size_t kHuge = kHugePage;
  static constexpr size_t kPage = 4096;

  // Under Prefault only the first `prefault` bytes are faulted in at start (the rest as
  // used): for pools whose tail is rarely reached.
  explicit Region(size_t bytes, size_t prefault = SIZE_MAX) {
    if (const RegionAllocator& ra = region_allocator(); ra.alloc) {
      size_ = bytes ? bytes : 1;
      ptr_ = ra.alloc(size_, ra.ctx);
      if (!ptr_) throw std::bad_alloc();
      alloc_ = ra;
      return;
    }
    if (bytes < kHuge) {
      // Small tables (an app's cool-down list, a grown table's first steps) take 4 KB
      // pages: a huge page would cost 2 MB of RSS for each and save few TLB misses.
      size_ = (bytes + kPage - 1) / kPage * kPage;
      if (!size_) size_ = kPage;
      void* p = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
      if (p == MAP_FAILED) throw std::bad_alloc();
      if (region_paging() == Paging::Prefault) madvise(p, populated(prefault, kPage), MADV_POPULATE_WRITE);
      ptr_ = p;
      return;
    }
    // Whole 2 MB pages: at millions of flows, 4 KB pages make every lookup a TLB miss.
    size_ = huge_span(bytes);
    void* p = map_huge(size_);
    // Fault every page in now: the hot path must not take page faults mid-run.
    if (region_paging() == Paging::Prefault) madvise(p, populated(prefault, kHuge), MADV_POPULATE_WRITE);
    ptr_ = p;
  }
  Region(Region&& o) noexcept
      : ptr_(std::exchange(o.ptr_, nullptr)), size_(o.size_), alloc_(o.alloc_) {}
  Region& operator=(Region&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(size_, o.size_);
    std::swap(alloc_, o.alloc_);
    return *this;
  }
  Region(const Region&) = delete;
  ~Region() {
    if (!ptr_) return;
    if (alloc_.release) alloc_.release(ptr_, alloc_.ctx);
    else munmap(ptr_, size_);
  }
  template <class T>
  T* as() const { return static_cast<T*>(ptr_); }
  size_t size() const { return size_; }

 private:
  size_t populated(size_t prefault, size_t page) const {
    return prefault >= size_ ? size_ : (prefault + page - 1) / page * page;
  }
  void* ptr_ = nullptr;
  size_t size_ = 0;
  RegionAllocator alloc_{};
};

}  // namespace ls
