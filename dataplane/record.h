// A finished flow as it leaves a core: the entry's state, why it ended, and the captured
// payload prefix. Consumers (writers, later the worker stages) get these, never entries.
#pragma once
#include <cstring>

#include "dataplane/flow_table.h"
#include "dataplane/sampler.h"

namespace ls {

struct FlowRecord {
  FlowEntry e;
  EndReason why;
  uint16_t core;
  uint16_t paylen[2];
  SamplingConfig sampling;
  uint8_t payload[2][FlowTable::kMaxPayload];

  void fill(const FlowEntry& fe, const uint8_t* pay, uint16_t cap, EndReason r,
            uint16_t core_id, const SamplingConfig& s) {
    e = fe;
    why = r;
    core = core_id;
    sampling = s;
    for (int d = 0; d < 2; d++) {
      paylen[d] = pay ? fe.paylen[d] : 0;
      if (paylen[d]) std::memcpy(payload[d], pay + size_t(d) * cap, paylen[d]);
    }
  }
};

struct RecordConsumer {
  virtual ~RecordConsumer() = default;
  virtual void consume(const FlowRecord& r) = 0;
};

}  // namespace ls
