// Threat-intel feed parsers: the first byte picks the format by file name (firehol
// netset, plain list, CSV, STIX bundle / MISP event / linesight indicators JSON), the
// rest is the file. The same bytes also go through the partner-records parser.
#include <unistd.h>

#include <cstdio>
#include <cstdint>
#include <string>

#include "features/partners.h"
#include "features/ti_table.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* d, size_t n) {
  if (n < 1) return 0;
  const char* ext[] = {".netset", ".txt", ".csv", ".ipset", ".json"};
  std::string path = "/dev/shm/ls-fuzz-ti-" + std::to_string(getpid()) + ext[d[0] % 5];
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) return 0;
  std::fwrite(d + 1, 1, n - 1, f);
  std::fclose(f);
  try {
    auto t = ls::TiTable::load({path});
    ls::TiHit h;
    uint8_t a[16] = {10, 0, 0, 1};
    t->lookup(a, 4, h);
    t->listing(a, 4);
    t->listed_ports(a, 4);
  } catch (const std::exception&) {
  }
  try {
    auto p = ls::PartnerTable::load({path});
    uint8_t a[16] = {203, 0, 113, 7};
    if (const ls::PartnerHit* h = p->lookup(a, 4)) h->has_port(443);
  } catch (const std::exception&) {
  }
  unlink(path.c_str());
  return 0;
}
