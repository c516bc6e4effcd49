// pcap / pcapng reader: a file of any bytes is read to the end, once by our classic-pcap
// record reader and once by libpcap's; the two must hand over the same packets and count
// the same damage (dataplane/pcap_source.cpp follows libpcap's record rules). The same
// bytes zstd-compressed go through the stream path (dataplane/capture_input.cpp: libpcap
// reads the header through the stream, then ours or libpcap reads the records): each
// reader must give what it gave on the plain file. A difference aborts, so it is
// reported like a crash.
#include <unistd.h>
#include <zstd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "dataplane/capture_input.h"
#include "dataplane/source.h"

namespace {

struct Seen {
  std::vector<uint64_t> meta;  // caplen, wire length, timestamp, link per packet
  std::string bytes;
  ls::SourceStats stats;
  bool opened = false;
};

Seen read_all(const std::string& path, ls::PcapReader r, uint32_t burst) {
  Seen s;
  try {
    auto src = ls::open_pcap_files({path}, r);
    s.opened = true;
    static ls::Arena arena;  // 4 MB: not per input
    ls::PacketView v[64];
    for (uint32_t n; (n = src->next_burst(v, burst, arena));)
      for (uint32_t i = 0; i < n; i++) {
        s.meta.insert(s.meta.end(), {v[i].cap_len, v[i].wire_len, v[i].ts_ns, uint64_t(v[i].link)});
        s.bytes.append(reinterpret_cast<const char*>(v[i].data), v[i].cap_len);
      }
    s.stats = src->stats();
  } catch (const std::exception&) {
  }
  return s;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* d, size_t n) {
  static std::string path = "/dev/shm/ls-fuzz-pcap-" + std::to_string(getpid());
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return 0;
  std::fwrite(d, 1, n, f);
  std::fclose(f);
  // Bursts of 1 to 64 (from the input's last byte) move where a burst ends.
  uint32_t burst = n ? 1 + d[n - 1] % 64 : 64;
  Seen own = read_all(path, ls::PcapReader::OWN, burst);
  Seen lib = read_all(path, ls::PcapReader::LIBPCAP, 64);
  if (own.opened != lib.opened || own.meta != lib.meta || own.bytes != lib.bytes ||
      own.stats.files != lib.stats.files || own.stats.truncated_files != lib.stats.truncated_files ||
      own.stats.warnings.size() != lib.stats.warnings.size()) {
    std::fprintf(stderr, "readers differ: opened %d/%d packets %zu/%zu truncated %llu/%llu\n", own.opened,
                 lib.opened, own.meta.size() / 4, lib.meta.size() / 4,
                 (unsigned long long)own.stats.truncated_files, (unsigned long long)lib.stats.truncated_files);
    std::abort();
  }
  // An input that is itself compressed is decoded on the plain path: not comparable.
  if (ls::compression_of(d, n)) return 0;
  static std::string zpath = path + ".zst";
  std::string z(ZSTD_compressBound(n), '\0');
  static ZSTD_CCtx* cctx = ZSTD_createCCtx();  // one per process: a context per input is most of the time
  size_t zn = ZSTD_compressCCtx(cctx, z.data(), z.size(), d, n, 1);
  if (ZSTD_isError(zn) || !(f = std::fopen(zpath.c_str(), "wb"))) return 0;
  std::fwrite(z.data(), 1, zn, f);
  std::fclose(f);
  auto same = [](const Seen& a, const Seen& b) {
    return a.opened == b.opened && a.meta == b.meta && a.bytes == b.bytes && a.stats.files == b.stats.files &&
           a.stats.truncated_files == b.stats.truncated_files && a.stats.warnings.size() == b.stats.warnings.size();
  };
  Seen zown = read_all(zpath, ls::PcapReader::OWN, burst);
  Seen zlib = read_all(zpath, ls::PcapReader::LIBPCAP, 64);
  if (!same(zown, own) || !same(zlib, lib)) {
    std::fprintf(stderr, "compressed input reads differently: packets own %zu/%zu libpcap %zu/%zu\n",
                 zown.meta.size() / 4, own.meta.size() / 4, zlib.meta.size() / 4, lib.meta.size() / 4);
    std::abort();
  }
  return 0;
}
