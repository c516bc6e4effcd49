// Preallocated, cache-line aligned anonymous memory for per-core tables. Hot paths
// never allocate; everything is sized from the config at start.
#pragma once
#include <sys/mman.h>

#include <cstddef>
#include <cstring>
#include <new>
#include <utility>

namespace ls {

class Region {
 public:
  Region() = default;
  explicit Region(size_t bytes) : size_(bytes ? bytes : 1) {
    void* p = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
    madvise(p, size_, MADV_HUGEPAGE);  // transparent huge pages where enabled; advisory
    ptr_ = p;
  }
  Region(Region&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), size_(o.size_) {}
  Region& operator=(Region&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(size_, o.size_);
    return *this;
  }
  Region(const Region&) = delete;
  ~Region() {
    if (ptr_) munmap(ptr_, size_);
  }
  template <class T>
  T* as() const { return static_cast<T*>(ptr_); }
  size_t size() const { return size_; }

 private:
  void* ptr_ = nullptr;
  size_t size_ = 0;
};

}  // namespace ls
