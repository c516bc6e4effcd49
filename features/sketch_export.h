// Endpoint sketches out of a sensor and merged across sensors (docs/features.md, "Merging
// sensors"). One JSON line per endpoint held by the feature stage, of two kinds:
//  - server: its distinct clients, client /24s (/48s) and ports offered, flows, bytes and
//    failed contacts;
//  - client: its distinct servers, server ports and periodically contacted servers (the
//    fan-out and scan signals), flows and failed contacts;
// each with first and last seen. Sensors on different links each see part of an
// endpoint's peers; the union of their sketches is the register-wise maximum, so merged
// counts are those one sensor seeing every link would have computed, without any peer
// address leaving a sensor. A client line names its client by address, by keyed pseudonym
// (features/pseudonym.h, --sketch-clients pseudonym) or is left out (none): by address,
// these files stay among an operator's own sensors (partners get the TI export).
#pragma once
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>

#include "features/hll.h"

namespace ls {

struct SketchError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

enum class SketchKind : uint8_t { server, client };
const char* kind_name(SketchKind k);

// How client lines leave a sensor (--sketch-clients).
enum class SketchClients : uint8_t { address, pseudonym, none };
// "address", "pseudonym", "none"; false for anything else.
bool parse_sketch_clients(const std::string& s, SketchClients& out);
const char* sketch_clients_name(SketchClients c);

struct EndpointSketch {
  // 2 added the kind and client lines; version 1 files (servers only) are still read.
  static constexpr int kVersion = 2;
  SketchKind kind = SketchKind::server;
  std::string addr;     // the endpoint's address text, or its pseudonym (below)
  // Clients only: empty when `addr` is the address; else `addr` is the client's keyed
  // pseudonym (24 hex digits) and this the key's id (Pseudonymizer::key_id).
  std::string pseudonym_key;
  uint64_t seed = 1;    // features.sketch_seed: registers compare only under the same seed
  uint64_t window_ns = 0, window = 0;  // features.window and the tumbling window's index
  uint64_t first_ns = 0, last_ns = 0, flows = 0, bytes = 0, failed = 0;  // bytes: servers only
  uint32_t sensors = 1;  // sketches merged into this one
  // server: distinct clients, client /24s (/48s), (port, protocol) offered;
  // client: distinct servers, (server port, protocol), servers contacted periodically.
  Hll<8> a, b;
  Hll<6> c;
};

// One line of JSON, '\n'-terminated.
std::string sketch_line(const EndpointSketch& s);
void append_sketch_line(std::string& out, const EndpointSketch& s);
// Throws SketchError naming what is wrong with the line.
EndpointSketch parse_sketch_line(const std::string& line);
// The two readers behind it. The first takes only a valid line exactly as
// append_sketch_line writes it (version 2, its key order, no whitespace, no escapes, plain
// ASCII) and says whether it did, with no JSON object built: ≈ 15× faster
// (BM_SketchRead). Everything else goes to the second, a JSON parser, which reads any
// valid line and names what is wrong with the others. On a line both take they give the
// same sketch (fuzz target sketch).
bool parse_sketch_line_written(std::string_view line, EndpointSketch& s);
EndpointSketch parse_sketch_line_json(const std::string& line);
// b's counts into a's (sketches or merged entries): first and last seen by min and max,
// flows, bytes, failed contacts and sensors summed.
template <class A, class B>
void merge_counts(A& a, const B& b) {
  a.first_ns = a.first_ns < b.first_ns ? a.first_ns : b.first_ns;
  a.last_ns = a.last_ns > b.last_ns ? a.last_ns : b.last_ns;
  a.flows += b.flows;
  a.bytes += b.bytes;
  a.failed += b.failed;
  a.sensors += b.sensors;
}
// b into a: both must be of the same kind, endpoint, seed, window and pseudonym key
// (SketchError otherwise, naming the difference).
void merge_sketch(EndpointSketch& a, const EndpointSketch& b);

// Calls its argument once per endpoint sketch.
using SketchSource = std::function<void(const std::function<void(const EndpointSketch&)>&)>;
// Writes every sketch of `source` to `path` (through a temporary file renamed into place,
// so a merge never reads half a file). Returns the number of lines; throws SketchError.
size_t write_sketches(const std::string& path, const SketchSource& source);
// The same for lines already formatted (run's workers format their own).
void write_sketch_text(const std::string& path, const std::string& text);

}  // namespace ls
