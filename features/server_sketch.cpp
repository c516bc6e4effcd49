#include "features/server_sketch.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include <nlohmann/json.hpp>

#include "dataplane/output_file.h"

namespace ls {

namespace {

// Non-zero registers as [index, rank] pairs: most servers meet few clients.
template <unsigned P>
nlohmann::json registers(const Hll<P>& h) {
  nlohmann::json a = nlohmann::json::array();
  for (uint32_t i = 0; i < Hll<P>::kM; i++)
    if (h.reg[i]) a.push_back({i, h.reg[i]});
  return a;
}

template <unsigned P>
Hll<P> registers_of(const nlohmann::json& j, const char* name) {
  const auto it = j.find(name);
  if (it == j.end() || !it->is_array()) throw SketchError(std::string("\"") + name + "\" missing or not an array");
  Hll<P> h;
  for (const auto& r : *it) {
    if (!r.is_array() || r.size() != 2 || !r[0].is_number_unsigned() || !r[1].is_number_unsigned())
      throw SketchError(std::string("\"") + name + "\": a register is not [index, rank]");
    uint64_t idx = r[0], rank = r[1];
    if (idx >= Hll<P>::kM) throw SketchError(std::string("\"") + name + "\": register index " +
                                            std::to_string(idx) + " >= " + std::to_string(Hll<P>::kM));
    if (rank == 0 || rank > 64 - P + 1)
      throw SketchError(std::string("\"") + name + "\": rank " + std::to_string(rank) + " outside 1.." +
                        std::to_string(64 - P + 1));
    h.raise(uint32_t(idx), uint8_t(rank));
  }
  return h;
}

uint64_t u64(const nlohmann::json& j, const char* name) {
  const auto it = j.find(name);
  if (it == j.end() || !it->is_number_unsigned())
    throw SketchError(std::string("\"") + name + "\" missing or not a non-negative integer");
  return it->get<uint64_t>();
}

}  // namespace

std::string sketch_line(const ServerSketch& s) {
  nlohmann::ordered_json j = {{"linesight_sketch", ServerSketch::kVersion},
                      {"server", s.server},
                      {"seed", s.seed},
                      {"window_ns", s.window_ns},
                      {"window", s.window},
                      {"first_ns", s.first_ns},
                      {"last_ns", s.last_ns},
                      {"flows", s.flows},
                      {"bytes", s.bytes},
                      {"failed", s.failed},
                      {"sensors", s.sensors},
                      {"clients", registers(s.clients)},
                      {"client_nets", registers(s.nets)},
                      {"ports", registers(s.ports)}};
  return j.dump() + "\n";
}

ServerSketch parse_sketch_line(const std::string& line) {
  nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw SketchError("not a JSON object");
  const auto v = j.find("linesight_sketch");
  if (v == j.end() || !v->is_number_unsigned()) throw SketchError("not a linesight sketch (no \"linesight_sketch\")");
  if (*v != ServerSketch::kVersion)
    throw SketchError("sketch version " + v->dump() + ", this linesight reads " +
                      std::to_string(ServerSketch::kVersion));
  ServerSketch s;
  const auto srv = j.find("server");
  if (srv == j.end() || !srv->is_string() || srv->get<std::string>().empty())
    throw SketchError("\"server\" missing or not an address");
  s.server = *srv;
  s.seed = u64(j, "seed");
  s.window_ns = u64(j, "window_ns");
  s.window = u64(j, "window");
  s.first_ns = u64(j, "first_ns");
  s.last_ns = u64(j, "last_ns");
  s.flows = u64(j, "flows");
  s.bytes = u64(j, "bytes");
  s.failed = u64(j, "failed");
  s.sensors = uint32_t(u64(j, "sensors"));
  if (s.failed > s.flows) throw SketchError("\"failed\" is more than \"flows\"");
  s.clients = registers_of<8>(j, "clients");
  s.nets = registers_of<8>(j, "client_nets");
  s.ports = registers_of<6>(j, "ports");
  return s;
}

void merge_sketch(ServerSketch& a, const ServerSketch& b) {
  if (a.server != b.server || a.window != b.window)
    throw SketchError("sketches of different servers or windows: " + a.server + " and " + b.server);
  if (a.seed != b.seed)
    throw SketchError("sketch seeds differ (" + std::to_string(a.seed) + " and " + std::to_string(b.seed) +
                      "): registers compare only under the same features.sketch_seed");
  if (a.window_ns != b.window_ns)
    throw SketchError("windows differ (" + std::to_string(a.window_ns) + " and " + std::to_string(b.window_ns) +
                      " ns): set the same features.window on every sensor");
  a.first_ns = std::min(a.first_ns, b.first_ns);
  a.last_ns = std::max(a.last_ns, b.last_ns);
  a.flows += b.flows;
  a.bytes += b.bytes;
  a.failed += b.failed;
  a.sensors += b.sensors;
  a.clients.merge(b.clients);
  a.nets.merge(b.nets);
  a.ports.merge(b.ports);
}

size_t write_sketches(const std::string& path, const SketchSource& source) {
  size_t n = 0;
  write_replacing<SketchError>(path, [&](FILE* f) {
    bool ok = true;
    source([&](const ServerSketch& s) {
      std::string l = sketch_line(s);
      ok = ok && std::fwrite(l.data(), 1, l.size(), f) == l.size();
      n++;
    });
    return ok;
  });
  return n;
}

void write_sketch_text(const std::string& path, const std::string& text) {
  write_replacing<SketchError>(path, [&](FILE* f) { return std::fwrite(text.data(), 1, text.size(), f) == text.size(); });
}

}  // namespace ls
