// Server sketches out of a sensor and merged across sensors (docs/features.md, "Merging
// sensors"). One JSON line per server endpoint held by the feature stage: its distinct
// clients, client /24s (/48s) and ports as HyperLogLog registers, its flows, bytes and
// failed contacts, first and last seen. Sensors on different links each see part of a
// server's clients; the union of their sketches is the register-wise maximum, so merged
// counts are those one sensor seeing every link would have computed, without any client
// address leaving a sensor.
#pragma once
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>

#include "features/hll.h"

namespace ls {

struct SketchError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct ServerSketch {
  static constexpr int kVersion = 1;
  std::string server;   // address text
  uint64_t seed = 1;    // features.sketch_seed: registers compare only under the same seed
  uint64_t window_ns = 0, window = 0;  // features.window and the tumbling window's index
  uint64_t first_ns = 0, last_ns = 0, flows = 0, bytes = 0, failed = 0;
  uint32_t sensors = 1;  // sketches merged into this one
  Hll<8> clients, nets;
  Hll<6> ports;
};

// One line of JSON, '\n'-terminated.
std::string sketch_line(const ServerSketch& s);
// Throws SketchError naming what is wrong with the line.
ServerSketch parse_sketch_line(const std::string& line);
// b into a: both must be of the same server, seed and window (SketchError otherwise).
void merge_sketch(ServerSketch& a, const ServerSketch& b);

// Calls its argument once per server sketch.
using SketchSource = std::function<void(const std::function<void(const ServerSketch&)>&)>;
// Writes every sketch of `source` to `path` (through a temporary file renamed into place,
// so a merge never reads half a file). Returns the number of lines; throws SketchError.
size_t write_sketches(const std::string& path, const SketchSource& source);
// The same for lines already formatted (run's workers format their own).
void write_sketch_text(const std::string& path, const std::string& text);

}  // namespace ls
