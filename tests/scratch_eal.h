// An EAL for tests, benchmarks and fuzz targets that need DPDK's libraries but no device:
// no hugepages, no PCI, one lcore on the CPU the caller runs on, a file prefix of its own.
// Only for tests.
#pragma once
#include <rte_eal.h>
#include <sched.h>
#include <unistd.h>

#include <string>
#include <vector>

namespace lstest {

inline bool start_scratch_eal(const char* name) {
  std::vector<std::string> a{name, "--no-huge", "-m", "64", "--no-pci", "--no-shconf", "--no-telemetry",
                             "--log-level", "lib.eal:error", "--lcores", "0@" + std::to_string(sched_getcpu()),
                             "--file-prefix", std::string(name) + std::to_string(getpid())};
  std::vector<char*> argv;
  for (auto& s : a) argv.push_back(s.data());
  return rte_eal_init(int(argv.size()), argv.data()) >= 0;
}

}  // namespace lstest
