#include "features/sketch_set.h"

#include <algorithm>
#include <bit>
#include <cstring>
#include <numeric>
#include <string_view>
#include <utility>

namespace ls {

namespace {

// Counter S's non-zero registers of a dense sketch into an endpoint's registers.
template <int S, unsigned P>
void put_all(EndpointSketches& r, const Hll<P>& h, GrowingSketchPool& pool) {
  h.each_set([&](uint32_t idx, uint8_t rank) { r.put<S>(idx, rank, pool); });
}

// (kind, address, window): the order merged files are written in.
bool before(const auto& x, const auto& y) {
  if (x.kind != y.kind) return x.kind < y.kind;
  if (int c = x.addr.compare(y.addr)) return c < 0;
  return x.window < y.window;
}

}  // namespace

size_t SketchSet::Hash::operator()(uint32_t i) const {
  const Entry& x = (*e)[i];
  size_t h = std::hash<std::string_view>{}(x.addr);
  return h ^ ((x.window * 2 + static_cast<uint64_t>(x.kind)) * 0x9e3779b97f4a7c15ull);
}

bool SketchSet::Same::operator()(uint32_t a, uint32_t b) const {
  const Entry &x = (*e)[a], &y = (*e)[b];
  return x.kind == y.kind && x.window == y.window && x.addr == y.addr;
}

SketchSet::SketchSet() : index_(0, Hash{&entries_}, Same{&entries_}) {}

void SketchSet::Entries::push_back(Entry e) {
  if (n_ == chunks_.size() * kChunk) chunks_.emplace_back().reserve(kChunk);
  chunks_.back().push_back(std::move(e));
  n_++;
}

void SketchSet::Entries::pop_back() {
  chunks_.back().pop_back();  // a chunk left empty stays for the next entry
  n_--;
}

void SketchSet::check(const EndpointSketch& s) {
  const EndpointSketch& first = first_ ? *first_ : s;
  std::string key;  // clients: the first client line's pseudonym key (this one's if first)
  if (s.kind == SketchKind::client) key = client_key_ ? *client_key_ : s.pseudonym_key;
  if (first.seed != s.seed || first.window_ns != s.window_ns || key != s.pseudonym_key) {
    EndpointSketch probe = first;  // even for an endpoint seen once
    probe.kind = s.kind;
    probe.addr = s.addr;
    probe.window = s.window;
    probe.pseudonym_key = key;
    merge_sketch(probe, s);  // throws, naming the difference
  }
  // Only a line taken sets what later ones must match.
  if (!first_) first_ = s;
  if (s.kind == SketchKind::client && !client_key_) client_key_ = s.pseudonym_key;
}

void SketchSet::add(const EndpointSketch& s) {
  check(s);
  // Appended first so the index can compare it; taken back if the endpoint was there.
  entries_.push_back(Entry{s.addr, s.window, s.first_ns, s.last_ns, 0, 0, 0, 0, s.kind, {}});
  auto [it, fresh] = index_.insert(uint32_t(entries_.size() - 1));
  if (!fresh) entries_.pop_back();
  Entry& e = entries_[*it];
  if (fresh) kinds_[static_cast<int>(s.kind)]++;
  merge_counts(e, s);
  put_all<0>(e.regs, s.a, pool_);
  put_all<1>(e.regs, s.b, pool_);
  put_all<2>(e.regs, s.c, pool_);
}

std::vector<uint32_t> SketchSet::in_order() const {
  std::vector<uint32_t> o(entries_.size());
  std::iota(o.begin(), o.end(), 0u);
  std::sort(o.begin(), o.end(), [&](uint32_t a, uint32_t b) { return before(entries_[a], entries_[b]); });
  return o;
}

std::vector<uint32_t> SketchSet::top(SketchKind k, size_t n) const {
  std::vector<std::pair<double, uint32_t>> by;  // estimate, entry
  by.reserve(count(k));
  for (uint32_t i = 0; i < entries_.size(); i++)
    if (entries_[i].kind == k) by.emplace_back(entries_[i].regs.estimate<0>(pool_), i);
  if (!n || n > by.size()) n = by.size();
  // A total order, so only the n first need sorting.
  std::partial_sort(by.begin(), by.begin() + ptrdiff_t(n), by.end(), [&](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : before(entries_[a.second], entries_[b.second]);
  });
  std::vector<uint32_t> o;
  o.reserve(n);
  for (size_t i = 0; i < n; i++) o.push_back(by[i].second);
  return o;
}

EndpointSketch SketchSet::at(uint32_t i) const {
  const Entry& e = entries_[i];
  EndpointSketch s;
  s.kind = e.kind;
  s.addr = e.addr;
  if (e.kind == SketchKind::client) s.pseudonym_key = *client_key_;
  s.seed = first_->seed;
  s.window_ns = first_->window_ns;
  s.window = e.window;
  s.first_ns = e.first_ns;
  s.last_ns = e.last_ns;
  s.flows = e.flows;
  s.bytes = e.bytes;
  s.failed = e.failed;
  s.sensors = e.sensors;
  e.regs.to_dense<0>(pool_, s.a);
  e.regs.to_dense<1>(pool_, s.b);
  e.regs.to_dense<2>(pool_, s.c);
  return s;
}

size_t SketchSet::memory_bytes() const {
  size_t text = 0;
  for (uint32_t i = 0; i < entries_.size(); i++)
    if (const Entry& e = entries_[i]; e.addr.capacity() > std::string().capacity()) text += e.addr.capacity() + 1;
  // An index node: next pointer, entry number, cached hash, malloc's header (32 bytes).
  return entries_.memory_bytes() + index_.size() * 32 +
         index_.bucket_count() * sizeof(void*) + text + pool_.memory_bytes();
}

}  // namespace ls
