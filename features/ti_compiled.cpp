// linesight's compiled threat-intel table: the parsed and swept table written as it sits
// in memory, so a replay or reload reads arrays instead of parsing a million feed lines.
//
//   "LSTIBIN1"  u32 0x01020304 (byte order)  u32 format version
//   u64 counts: feeds, warnings, sources, sets, v4 intervals, v6 intervals, ports
//   feeds:    str name, str category, str path, i64 date_days, f64 weight, u64 entries, u64 skipped
//   warnings: str      sources: str path, u64 size, i64 mtime_ns
//   sets:     u32 n, n × u32 feed      v4: u32 lo, u32 set      v6: 16-byte lo, u32 set
//   ports:    16-byte addr, u8 ver, u16 port, u32 feed
// (str = u32 length + bytes). Everything read is checked against the counts and the other
// sections before use: a damaged file is refused with what is wrong, never half-loaded.
#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <memory>
#include <fstream>

#include "dataplane/output_file.h"
#include "features/ti_table.h"

namespace ls {

namespace {

constexpr char kMagic[8] = {'L', 'S', 'T', 'I', 'B', 'I', 'N', '1'};
constexpr uint32_t kByteOrder = 0x01020304, kVersion = 1;

struct Writer {
  std::string b;
  template <class T>
  void put(T v) {
    b.append(reinterpret_cast<const char*>(&v), sizeof v);
  }
  void str(const std::string& s) {
    put(uint32_t(s.size()));
    b += s;
  }
};

// The file through a 64 KB window, so a load never holds the file and the table at once
// (17 MB more at the peak); the IPv4 section goes straight into its array. `at` is the
// file offset of the next unread byte: errors name it.
struct Reader {
  FILE* f;
  uint64_t size;  // the file's, at open
  const std::string& path;
  uint64_t at = 0;
  std::string win;  // win[pos..] are the file's bytes from at on
  size_t pos = 0;
  [[noreturn]] void bad(const std::string& what) const {
    throw TiError(path + ": damaged compiled table at byte " + std::to_string(at) + ": " + what +
                  " (compile it again: linesight ti compile)");
  }
  uint64_t left() const { return size - at; }
  void need(uint64_t n, const char* what) const {
    if (n > left()) bad(std::string("truncated ") + what);
  }
  // At least n (<= left(), checked) bytes in the window.
  void fill(size_t n) {
    size_t have = win.size() - pos;
    if (have >= n) return;
    win.erase(0, pos);
    pos = 0;
    size_t want = std::min<uint64_t>(std::max<size_t>(n, 64 << 10), left()) - have;
    win.resize(have + want);
    if (std::fread(win.data() + have, 1, want, f) != want) bad("read failed (file changed while read?)");
  }
  void take(size_t n) {
    pos += n;
    at += n;
  }
  template <class T>
  T get(const char* what) {
    need(sizeof(T), what);
    fill(sizeof(T));
    T v;
    std::memcpy(&v, win.data() + pos, sizeof v);
    take(sizeof v);
    return v;
  }
  std::string str(const char* what) {
    uint32_t n = get<uint32_t>(what);
    need(n, what);
    fill(n);
    std::string s(win.data() + pos, n);
    take(n);
    return s;
  }
  // A count is believed only if that many of the smallest element still fit the file.
  uint64_t count(const char* what, size_t min_bytes) {
    uint64_t n = get<uint64_t>(what);
    if (n > left() / min_bytes) bad(std::string("impossible count of ") + what);
    return n;
  }
  // n bytes (checked by the caller) into dst: the window's, then the file's directly.
  void read_into(void* dst, size_t n) {
    size_t have = std::min(n, win.size() - pos);
    if (have) std::memcpy(dst, win.data() + pos, have);
    take(have);
    if (n > have && std::fread(static_cast<char*>(dst) + have, 1, n - have, f) != n - have)
      bad("read failed (file changed while read?)");
    at += n - have;
  }
};

}  // namespace

bool TiTable::is_compiled(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  char m[sizeof kMagic];
  return f.read(m, sizeof m) && std::memcmp(m, kMagic, sizeof m) == 0;
}

void TiTable::save(const std::string& path) const {
  Writer w;
  w.b.append(kMagic, sizeof kMagic);
  w.put(kByteOrder);
  w.put(kVersion);
  for (uint64_t n : {feeds_.size(), warnings_.size(), sources_.size(), sets_.size(), v4_.size(), v6_.size(),
                     ports_.size()})
    w.put(n);
  for (auto& f : feeds_) {
    w.str(f.name);
    w.str(f.category);
    w.str(f.path);
    w.put(f.date_days);
    w.put(f.weight);
    w.put(f.entries);
    w.put(f.skipped);
  }
  for (auto& s : warnings_) w.str(s);
  for (auto& s : sources_) {
    w.str(s.path);
    w.put(s.size);
    w.put(s.mtime_ns);
  }
  for (auto& s : sets_) {
    w.put(uint32_t(s.size()));
    for (uint32_t f : s) w.put(f);
  }
  for (auto& iv : v4_) {
    w.put(iv.lo);
    w.put(iv.set);
  }
  for (auto& iv : v6_) {
    w.put(iv.lo);
    w.put(iv.set);
  }
  for (auto& p : ports_) {
    w.put(p.addr);
    w.put(p.ver);
    w.put(p.port);
    w.put(p.feed);
  }
  write_replacing<TiError>(path, [&](FILE* f) { return std::fwrite(w.b.data(), 1, w.b.size(), f) == w.b.size(); });
}

std::shared_ptr<const TiTable> TiTable::load_compiled(const std::string& path,
                                                      const std::map<std::string, double>& weights) {
  // Read, not mmap: a file rewritten in place under a running daemon would kill it with
  // SIGBUS.
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), std::fclose);
  if (!f) throw TiError(path + ": " + std::strerror(errno));
  // stdio's own buffer would only add a copy: the Reader reads in large blocks. (Set
  // before any other operation on the stream, as C requires.)
  std::setvbuf(f.get(), nullptr, _IONBF, 0);
  uint64_t size = 0;
  if (std::fseek(f.get(), 0, SEEK_END) == 0) {
    long end = std::ftell(f.get());
    if (end > 0) size = uint64_t(end);
    std::rewind(f.get());
  }
  return read_compiled(f.get(), size, path, weights);
}

std::shared_ptr<const TiTable> TiTable::read_compiled(std::FILE* f, uint64_t size, const std::string& path,
                                                      const std::map<std::string, double>& weights) {
  Reader r{f, size, path};
  r.need(sizeof kMagic, "header");
  r.fill(sizeof kMagic);
  r.take(sizeof kMagic);
  if (r.get<uint32_t>("header") != kByteOrder) r.bad("written on a machine of the other byte order");
  uint32_t version = r.get<uint32_t>("header");
  if (version != kVersion) r.bad("format version " + std::to_string(version) + ", this linesight reads " +
                                 std::to_string(kVersion));
  auto t = std::shared_ptr<TiTable>(new TiTable());
  uint64_t nf = r.count("feeds", 4 * 3 + 8 * 4), nw = r.count("warnings", 4), ns = r.count("sources", 4 + 16),
           nsets = r.count("sets", 4), n4 = r.count("v4 intervals", 8), n6 = r.count("v6 intervals", 20),
           np = r.count("ports", 23);
  t->feeds_.resize(nf);
  for (auto& f : t->feeds_) {
    f.name = r.str("feed name");
    f.category = r.str("feed category");
    f.path = r.str("feed path");
    f.date_days = r.get<int64_t>("feed");
    f.weight = r.get<double>("feed");
    f.entries = r.get<uint64_t>("feed");
    f.skipped = r.get<uint64_t>("feed");
  }
  for (uint64_t i = 0; i < nw; i++) t->warnings_.push_back(r.str("warning"));
  for (uint64_t i = 0; i < ns; i++) {
    Source s;
    s.path = r.str("source path");
    s.size = r.get<uint64_t>("source");
    s.mtime_ns = r.get<int64_t>("source");
    t->sources_.push_back(s);
  }
  t->sets_.resize(nsets);
  for (auto& s : t->sets_) {
    uint32_t n = r.get<uint32_t>("set");
    r.need(uint64_t(n) * 4, "set");
    s.resize(n);
    for (uint32_t& f : s) {
      f = r.get<uint32_t>("set");
      if (f >= nf || (&f != s.data() && f <= (&f)[-1])) r.bad("set member out of range or out of order");
    }
  }
  auto check_set = [&](uint32_t set) {
    if (set != UINT32_MAX && set >= nsets) r.bad("interval names a set that does not exist");
  };
  // The file's v4 section is the array itself (u32 lo, u32 set): read into it, then checked.
  static_assert(sizeof(Iv4) == 8 && offsetof(Iv4, set) == 4);
  r.need(n4 * sizeof(Iv4), "v4 intervals");
  t->v4_.resize(n4);
  const uint64_t v4_at = r.at;
  r.read_into(t->v4_.data(), n4 * sizeof(Iv4));
  for (size_t i = 0; i < n4; i++) {
    const Iv4& iv = t->v4_[i];
    if ((iv.set != UINT32_MAX && iv.set >= nsets) || (i && iv.lo <= t->v4_[i - 1].lo)) {
      r.at = v4_at + i * sizeof(Iv4);  // name the interval's byte
      check_set(iv.set);
      r.bad("v4 intervals out of order");
    }
  }
  t->v6_.resize(n6);
  for (size_t i = 0; i < n6; i++) {
    t->v6_[i].lo = r.get<unsigned __int128>("v6 interval");
    t->v6_[i].set = r.get<uint32_t>("v6 interval");
    check_set(t->v6_[i].set);
    if (i && t->v6_[i].lo <= t->v6_[i - 1].lo) r.bad("v6 intervals out of order");
  }
  t->ports_.resize(np);
  for (size_t i = 0; i < np; i++) {
    auto& p = t->ports_[i];
    p.addr = r.get<unsigned __int128>("port entry");
    p.ver = r.get<uint8_t>("port entry");
    p.port = r.get<uint16_t>("port entry");
    p.feed = r.get<uint32_t>("port entry");
    if (p.feed >= nf || (p.ver != 4 && p.ver != 6) || (i && p < t->ports_[i - 1])) r.bad("port entry invalid or out of order");
  }
  if (r.at != size) r.bad("trailing bytes");
  for (auto& f : t->feeds_) {
    auto w = weights.find(f.name);
    if (w != weights.end()) f.weight = w->second;
  }
  t->compute_hits();
  t->index_v4();
  // Say which feeds moved on since the table was compiled: the operator's cue to recompile.
  size_t changed = 0;
  for (auto& s : t->sources_) {
    Source now = stat_source(s.path);
    if (now.size == s.size && now.mtime_ns == s.mtime_ns) continue;
    if (++changed <= 5)
      t->warnings_.push_back(path + ": source " + s.path + (now.mtime_ns ? " changed" : " is gone") +
                             " since the table was compiled (linesight ti compile again)");
  }
  if (changed > 5)
    t->warnings_.push_back(path + ": " + std::to_string(changed - 5) + " more sources changed since it was compiled");
  return t;
}

}  // namespace ls
