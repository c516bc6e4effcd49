// Replay pipeline: a source feeds K per-core flow tables. K = 1 runs inline on the calling
// thread; K > 1 runs the parser on the reader and dispatches packets to K core threads
// by a symmetric address hash (software RSS), batches travelling over SPSC rings.
#pragma once
#include <atomic>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "dataplane/flow_core.h"
#include "dataplane/record.h"
#include "dataplane/source.h"

namespace ls {

struct ReplayProgress {
  uint64_t packets;
  uint64_t records;
  double wall_s;
};

struct ReplayOptions {
  uint32_t cores = 1;
  double speed = 0;  // 0: as fast as possible; x: recorded speed × x
  const std::atomic<bool>* stop = nullptr;  // set by a signal handler
  std::function<void(const ReplayProgress&)> progress;  // about once a second
};

struct ReplayResult {
  Counters total;
  std::vector<Counters> per_core;
  uint64_t wall_ns = 0;
  size_t table_bytes = 0;  // preallocated flow-table memory, all cores
  uint64_t record_ring_waits = 0;  // times a core waited for the writer (replay only)
  bool interrupted = false;
  std::vector<std::string> warnings;  // the source's (a truncated file, a record libpcap refused)
};

// Symmetric in (src, dst) so both directions and all fragments of a host pair go to
// the same core, as a NIC's symmetric RSS on addresses would.
inline uint32_t dispatch_core(const PacketMeta& m, uint32_t k) {
  uint64_t a, b, c, d;
  std::memcpy(&a, m.src, 8);
  std::memcpy(&b, m.src + 8, 8);
  std::memcpy(&c, m.dst, 8);
  std::memcpy(&d, m.dst + 8, 8);
  uint64_t x = (a ^ b) + (c ^ d);
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return uint32_t((unsigned __int128)x * k >> 64);
}

ReplayResult run_replay(PacketSource& src, const CoreConfig& cfg, RecordConsumer& out,
                        const ReplayOptions& opt);

}  // namespace ls
