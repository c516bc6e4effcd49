// pcap / pcapng reader (libpcap under our source): a file of any bytes is read to the end.
#include <unistd.h>

#include <cstdio>
#include <cstdint>
#include <string>

#include "dataplane/source.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* d, size_t n) {
  static std::string path = "/dev/shm/ls-fuzz-pcap-" + std::to_string(getpid());
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return 0;
  std::fwrite(d, 1, n, f);
  std::fclose(f);
  try {
    auto src = ls::open_pcap_files({path});
    static ls::Arena arena;  // 4 MB: not per input
    ls::PacketView v[64];
    while (src->next_burst(v, 64, arena)) {
    }
  } catch (const std::exception&) {
  }
  return 0;
}
