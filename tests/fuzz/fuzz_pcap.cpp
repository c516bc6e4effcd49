// pcap / pcapng reader: a file of any bytes is read to the end, once by our classic-pcap
// record reader and once by libpcap's; the two must hand over the same packets and count
// the same damage (dataplane/pcap_source.cpp follows libpcap's record rules). A
// difference aborts, so it is reported like a crash.
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

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
  return 0;
}
