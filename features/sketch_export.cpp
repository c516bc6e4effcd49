#include "features/sketch_export.h"

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

// Per kind: the address's key and the three counters' names.
struct KindNames {
  const char *addr, *a, *b, *c;
};
constexpr KindNames kNames[] = {{"server", "clients", "client_nets", "ports"},
                                {"client", "servers", "ports", "periodic_servers"}};

const KindNames& names(SketchKind k) { return kNames[static_cast<int>(k)]; }

}  // namespace

const char* kind_name(SketchKind k) { return names(k).addr; }

std::string sketch_line(const EndpointSketch& s) {
  const KindNames& n = names(s.kind);
  nlohmann::ordered_json j = {{"linesight_sketch", EndpointSketch::kVersion},
                              {"kind", n.addr},
                              {n.addr, s.addr},
                              {"seed", s.seed},
                              {"window_ns", s.window_ns},
                              {"window", s.window},
                              {"first_ns", s.first_ns},
                              {"last_ns", s.last_ns},
                              {"flows", s.flows}};
  if (s.kind == SketchKind::server) j["bytes"] = s.bytes;
  j["failed"] = s.failed;
  j["sensors"] = s.sensors;
  j[n.a] = registers(s.a);
  j[n.b] = registers(s.b);
  j[n.c] = registers(s.c);
  return j.dump() + "\n";
}

EndpointSketch parse_sketch_line(const std::string& line) {
  nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
  if (j.is_discarded() || !j.is_object()) throw SketchError("not a JSON object");
  const auto v = j.find("linesight_sketch");
  if (v == j.end() || !v->is_number_unsigned()) throw SketchError("not a linesight sketch (no \"linesight_sketch\")");
  if (*v != 1 && *v != EndpointSketch::kVersion)
    throw SketchError("sketch version " + v->dump() + ", this linesight reads 1 and " +
                      std::to_string(EndpointSketch::kVersion));
  EndpointSketch s;
  if (*v != 1) {  // version 1: servers only, no kind
    const auto k = j.find("kind");
    if (k == j.end() || !k->is_string() || (*k != "server" && *k != "client"))
      throw SketchError("\"kind\" missing or not \"server\" or \"client\"");
    s.kind = *k == "server" ? SketchKind::server : SketchKind::client;
  }
  const KindNames& n = names(s.kind);
  const auto addr = j.find(n.addr);
  if (addr == j.end() || !addr->is_string() || addr->get<std::string>().empty())
    throw SketchError(std::string("\"") + n.addr + "\" missing or not an address");
  s.addr = *addr;
  s.seed = u64(j, "seed");
  s.window_ns = u64(j, "window_ns");
  s.window = u64(j, "window");
  s.first_ns = u64(j, "first_ns");
  s.last_ns = u64(j, "last_ns");
  s.flows = u64(j, "flows");
  if (s.kind == SketchKind::server) s.bytes = u64(j, "bytes");
  s.failed = u64(j, "failed");
  s.sensors = uint32_t(u64(j, "sensors"));
  if (s.failed > s.flows) throw SketchError("\"failed\" is more than \"flows\"");
  s.a = registers_of<8>(j, n.a);
  s.b = registers_of<8>(j, n.b);
  s.c = registers_of<6>(j, n.c);
  return s;
}

void merge_sketch(EndpointSketch& a, const EndpointSketch& b) {
  if (a.kind != b.kind || a.addr != b.addr || a.window != b.window)
    throw SketchError(std::string("sketches of different endpoints or windows: ") + kind_name(a.kind) + " " + a.addr +
                      " and " + kind_name(b.kind) + " " + b.addr);
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
  a.a.merge(b.a);
  a.b.merge(b.b);
  a.c.merge(b.c);
}

size_t write_sketches(const std::string& path, const SketchSource& source) {
  size_t n = 0;
  write_replacing<SketchError>(path, [&](FILE* f) {
    bool ok = true;
    source([&](const EndpointSketch& s) {
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
