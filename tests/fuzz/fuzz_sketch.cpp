// Endpoint sketch lines (--sketches-out files from other sensors, read by `linesight
// sketches merge`): each line parsed; what parses must write back to a line that parses
// to the same sketch, and merge with the previous one of its endpoint without fault; and
// merge's sparse set must hold, endpoint for endpoint, the dense merge of what it took.
// A line the fast reader (lines as written) takes must read the same by the JSON reader.
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <string>
#include <tuple>

#include "features/sketch_export.h"
#include "features/sketch_set.h"

namespace {
bool same(const ls::EndpointSketch& a, const ls::EndpointSketch& b) {
  return a.kind == b.kind && a.addr == b.addr && a.pseudonym_key == b.pseudonym_key && a.seed == b.seed && a.window_ns == b.window_ns && a.window == b.window &&
         a.first_ns == b.first_ns && a.last_ns == b.last_ns && a.flows == b.flows && a.bytes == b.bytes &&
         a.failed == b.failed && a.sensors == b.sensors && !std::memcmp(a.a.reg, b.a.reg, 256) &&
         !std::memcmp(a.b.reg, b.b.reg, 256) && !std::memcmp(a.c.reg, b.c.reg, 64) && a.a.sum == b.a.sum &&
         a.c.zeros == b.c.zeros;
}
}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* d, size_t n) {
  std::string text(reinterpret_cast<const char*>(d), n);
  ls::EndpointSketch acc;
  bool have = false;
  ls::SketchSet set;
  std::map<std::tuple<ls::SketchKind, std::string, uint64_t>, ls::EndpointSketch> dense;
  size_t at = 0;
  while (at <= text.size()) {
    size_t end = text.find('\n', at);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(at, end - at);
    at = end + 1;
    // What the fast reader takes, the JSON reader takes too, as the same sketch.
    ls::EndpointSketch fast;
    if (ls::parse_sketch_line_written(line, fast)) {
      try {
        if (!same(ls::parse_sketch_line_json(line), fast)) std::abort();
      } catch (const ls::SketchError&) {
        std::abort();
      }
    }
    try {
      ls::EndpointSketch s = ls::parse_sketch_line(line);
      if (!same(ls::parse_sketch_line(ls::sketch_line(s)), s)) std::abort();  // round trip
      s.a.estimate();
      try {
        set.add(s);  // throws before it changes anything
        auto [it, fresh] = dense.try_emplace({s.kind, s.addr, s.window}, s);
        if (!fresh) ls::merge_sketch(it->second, s);
      } catch (const ls::SketchError&) {
      }
      if (!have) {
        acc = s;
        have = true;
      } else {
        try {
          ls::merge_sketch(acc, s);
        } catch (const ls::SketchError&) {
        }
      }
    } catch (const ls::SketchError&) {
    }
  }
  if (set.size() != dense.size()) std::abort();
  auto order = set.in_order();
  size_t i = 0;
  for (auto& [k, d] : dense)
    if (ls::sketch_line(set.at(order[i++])) != ls::sketch_line(d)) std::abort();
  return 0;
}
