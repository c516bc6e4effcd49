#include "features/sketch_export.h"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string_view>

#include <nlohmann/json.hpp>

#include "dataplane/output_file.h"
#include "dataplane/text.h"

namespace ls {

namespace {

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

bool is_hex(const std::string& s, size_t len) {  // lower case, as Pseudonymizer writes
  auto hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); };
  return s.size() == len && std::all_of(s.begin(), s.end(), hex);
}

uint64_t u64(const nlohmann::json& j, const char* name) {
  const auto it = j.find(name);
  if (it == j.end() || !it->is_number_unsigned())
    throw SketchError(std::string("\"") + name + "\" missing or not a non-negative integer");
  return it->get<uint64_t>();
}

// Per kind: the address's key and the three counters' names.
struct KindNames {
  std::string_view addr, a, b, c;
};
constexpr KindNames kNames[] = {{"server", "clients", "client_nets", "ports"},
                                {"client", "servers", "ports", "periodic_servers"}};

const KindNames& names(SketchKind k) { return kNames[static_cast<int>(k)]; }

}  // namespace

const char* kind_name(SketchKind k) { return names(k).addr.data(); }  // each is a literal

namespace {
constexpr const char* kClientsNames[] = {"address", "pseudonym", "none"};
}

bool parse_sketch_clients(const std::string& s, SketchClients& out) {
  for (int i = 0; i < 3; i++)
    if (s == kClientsNames[i]) {
      out = SketchClients(i);
      return true;
    }
  return false;
}

const char* sketch_clients_name(SketchClients c) { return kClientsNames[static_cast<int>(c)]; }

namespace {

// As nlohmann's dump writes a string: the addresses are IP text, but a merge writes back
// whatever a file held, so quotes, backslashes and control bytes are escaped.
void put_json_string(TextBuf& w, const std::string& s) {
  w.run<1>().c('"');
  size_t plain = 0;  // a run of bytes that need no escape goes out in one piece
  for (size_t i = 0; i <= s.size(); i++) {
    unsigned char ch = i < s.size() ? uint8_t(s[i]) : 0;
    if (i < s.size() && ch >= 0x20 && ch != '"' && ch != '\\') continue;
    w.text(std::string_view(s).substr(plain, i - plain));
    plain = i + 1;
    if (i == s.size()) break;
    static constexpr char kShort[] = "btnvfr";  // \b \t \n, then \f \r (\v has no short form)
    auto r = w.run<1>();
    r.c('\\');
    if (ch == '"' || ch == '\\')
      r.c(char(ch));
    else if (ch >= '\b' && ch <= '\r' && ch != '\v')
      r.c(kShort[ch - '\b']);
    else
      r.lit("u00").c("0123456789abcdef"[ch >> 4]).c("0123456789abcdef"[ch & 15]);
  }
  w.run<1>().c('"');
}

// ,"name":[[index,rank],...] for the non-zero registers: most endpoints meet few peers, so
// the registers are scanned 8 at a time and the empty words skipped.
template <unsigned P>
void put_registers(TextBuf& w, std::string_view name, const Hll<P>& h) {
  w.run<1>().lit(",\"");
  w.text(name);
  w.run<1>().lit("\":[");
  bool first = true;
  h.each_set([&](uint32_t idx, uint8_t rank) {
    auto r = w.run<3>();
    if (!first) r.c(',');
    r.c('[').num(idx).c(',').num(rank).c(']');
    first = false;
  });
  w.run<1>().c(']');
}

}  // namespace

// By hand (TextBuf), not through nlohmann::json: run's workers format these between bursts
// of records, and a JSON object per line cost ≈ 4.6 µs (perf BM_SketchLines). The text is
// byte for byte what nlohmann's dump gave (unit test EndpointSketch.LineIsNlohmannsDump).
void append_sketch_line(std::string& o, const EndpointSketch& s) {
  const KindNames& n = names(s.kind);
  TextBuf w(o);
  w.run<2>().lit("{\"linesight_sketch\":").num(EndpointSketch::kVersion).lit(",\"kind\":\"");
  w.text(n.addr);
  w.run<1>().lit("\",\"");
  w.text(n.addr);
  if (s.pseudonym_key.empty()) {
    w.run<1>().lit("\":");
    put_json_string(w, s.addr);
  } else {
    w.run<1>().lit("_pseudonym\":");
    put_json_string(w, s.addr);
    w.run<1>().lit(",\"pseudonym_key\":");
    put_json_string(w, s.pseudonym_key);
  }
  w.run<12>()
      .lit(",\"seed\":").num(s.seed)
      .lit(",\"window_ns\":").num(s.window_ns)
      .lit(",\"window\":").num(s.window)
      .lit(",\"first_ns\":").num(s.first_ns)
      .lit(",\"last_ns\":").num(s.last_ns)
      .lit(",\"flows\":").num(s.flows);
  if (s.kind == SketchKind::server) w.run<2>().lit(",\"bytes\":").num(s.bytes);
  w.run<4>().lit(",\"failed\":").num(s.failed).lit(",\"sensors\":").num(s.sensors);
  put_registers(w, n.a, s.a);
  put_registers(w, n.b, s.b);
  put_registers(w, n.c, s.c);
  w.run<1>().lit("}\n");
}

std::string sketch_line(const EndpointSketch& s) {
  std::string o;
  append_sketch_line(o, s);
  return o;
}

namespace {

// A cursor over a line as append_sketch_line writes it; every step says whether the text
// is what that writer puts there.
struct Written {
  const char *p, *end;
  bool lit(std::string_view s) {
    if (size_t(end - p) < s.size() || std::memcmp(p, s.data(), s.size())) return false;
    p += s.size();
    return true;
  }
  // JSON's unsigned integers: no sign, no leading zero, within 64 bits (the JSON reader
  // takes a larger one as a float, which no field accepts).
  bool num(uint64_t& v) {
    const char* s = p;
    v = 0;
    for (; p < end && *p >= '0' && *p <= '9'; p++)
      if (__builtin_mul_overflow(v, 10, &v) || __builtin_add_overflow(v, uint64_t(*p - '0'), &v)) return false;
    return p > s && !(*s == '0' && p - s > 1);
  }
  bool field(std::string_view name, uint64_t& v) { return lit(",\"") && lit(name) && lit("\":") && num(v); }
  // A string with nothing to unescape or validate: printable ASCII without '"' or '\'.
  bool str(std::string& out) {
    if (!lit("\"")) return false;
    const char* s = p;
    while (p < end && *p != '"') {
      if (*p < 0x20 || *p == '\\' || static_cast<unsigned char>(*p) >= 0x80) return false;
      p++;
    }
    if (p == end) return false;
    out.assign(s, p);
    p++;
    return true;
  }
  template <unsigned P>
  bool registers(std::string_view name, Hll<P>& h) {
    if (!(lit(",\"") && lit(name) && lit("\":["))) return false;
    for (bool first = true; !lit("]"); first = false) {
      uint64_t idx, rank;
      if ((!first && !lit(",")) || !lit("[") || !num(idx) || !lit(",") || !num(rank) || !lit("]")) return false;
      if (idx >= Hll<P>::kM || rank == 0 || rank > 64 - P + 1) return false;
      h.raise(uint32_t(idx), uint8_t(rank));
    }
    return true;
  }
};

}  // namespace

bool parse_sketch_line_written(std::string_view line, EndpointSketch& s) {
  Written w{line.data(), line.data() + line.size()};
  s = EndpointSketch{};
  if (!w.lit("{\"linesight_sketch\":2,\"kind\":\"")) return false;
  if (w.lit("server\",\"server\":")) {
    s.kind = SketchKind::server;
    if (!w.str(s.addr) || s.addr.empty()) return false;
  } else if (w.lit("client\",\"client\":")) {
    s.kind = SketchKind::client;
    if (!w.str(s.addr) || s.addr.empty()) return false;
  } else if (w.lit("client\",\"client_pseudonym\":")) {
    s.kind = SketchKind::client;
    if (!w.str(s.addr) || !is_hex(s.addr, 24) || !w.lit(",\"pseudonym_key\":") || !w.str(s.pseudonym_key) ||
        !is_hex(s.pseudonym_key, 8))
      return false;
  } else {
    return false;
  }
  uint64_t sensors;
  if (!(w.field("seed", s.seed) && w.field("window_ns", s.window_ns) && w.field("window", s.window) &&
        w.field("first_ns", s.first_ns) && w.field("last_ns", s.last_ns) && w.field("flows", s.flows)))
    return false;
  if (s.kind == SketchKind::server && !w.field("bytes", s.bytes)) return false;
  if (!(w.field("failed", s.failed) && w.field("sensors", sensors)) || s.failed > s.flows) return false;
  s.sensors = uint32_t(sensors);
  const KindNames& n = names(s.kind);
  return w.registers(n.a, s.a) && w.registers(n.b, s.b) && w.registers(n.c, s.c) && w.lit("}") && w.p == w.end;
}

EndpointSketch parse_sketch_line(const std::string& line) {
  EndpointSketch s;
  if (parse_sketch_line_written(line, s)) return s;
  return parse_sketch_line_json(line);
}

EndpointSketch parse_sketch_line_json(const std::string& line) {
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
  if (const auto p = j.find("client_pseudonym"); s.kind == SketchKind::client && p != j.end()) {
    const auto key = j.find("pseudonym_key");
    if (j.contains("client")) throw SketchError("both \"client\" and \"client_pseudonym\"");
    if (!p->is_string() || !is_hex(p->get<std::string>(), 24))
      throw SketchError("\"client_pseudonym\" is not 24 hex digits");
    if (key == j.end() || !key->is_string() || !is_hex(key->get<std::string>(), 8))
      throw SketchError("\"pseudonym_key\" missing or not 8 hex digits");
    s.addr = *p;
    s.pseudonym_key = *key;
  } else {
    const auto addr = j.find(n.addr.data());
    if (addr == j.end() || !addr->is_string() || addr->get<std::string>().empty())
      throw SketchError(std::string("\"") + n.addr.data() + "\" missing or not an address");
    s.addr = *addr;
  }
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
  s.a = registers_of<8>(j, n.a.data());
  s.b = registers_of<8>(j, n.b.data());
  s.c = registers_of<6>(j, n.c.data());
  return s;
}

void merge_sketch(EndpointSketch& a, const EndpointSketch& b) {
  if (a.kind != b.kind || a.addr != b.addr || a.window != b.window)
    throw SketchError(std::string("sketches of different endpoints or windows: ") + kind_name(a.kind) + " " + a.addr +
                      " and " + kind_name(b.kind) + " " + b.addr);
  if (a.seed != b.seed)
    throw SketchError("sketch seeds differ (" + std::to_string(a.seed) + " and " + std::to_string(b.seed) +
                      "): registers compare only under the same features.sketch_seed");
  if (a.pseudonym_key != b.pseudonym_key) {
    if (a.pseudonym_key.empty() || b.pseudonym_key.empty())
      throw SketchError("client lines by address and by pseudonym do not merge: set the same --sketch-clients on "
                        "every sensor");
    throw SketchError("client pseudonym keys differ (" + a.pseudonym_key + " and " + b.pseudonym_key +
                      "): set the same --pseudonym-secret and --pseudonym-rotate on every sensor");
  }
  if (a.window_ns != b.window_ns)
    throw SketchError("windows differ (" + std::to_string(a.window_ns) + " and " + std::to_string(b.window_ns) +
                      " ns): set the same features.window on every sensor");
  merge_counts(a, b);
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
