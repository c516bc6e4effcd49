// IPFIX (RFC 7011) exporter over UDP. Each linesight flow record (a biflow) is exported
// as up to two uniflow Data Records, initiator direction then reverse, linked by
// biflowDirection (IE 239); a direction without packets is not exported. Templates 256
// (IPv4) and 257 (IPv6) are sent at start and every template_refresh (RFC 7011 §8.4 for
// UDP); sampling is described by an Options Template (258, RFC 7011 §3.4.2.2 with
// RFC 5476 IEs) whenever it changes. Sending never blocks: a failed send is counted.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "dataplane/record.h"

namespace ls {

struct IpfixConfig {
  std::string collector;            // "host:port" (UDP)
  uint32_t domain = 1;              // observation domain id
  uint64_t template_refresh_ns = 60'000'000'000ull;
  uint16_t max_message = 1400;      // bytes; stays under a 1500-byte path MTU
};

class IpfixExporter final : public RecordConsumer {
 public:
  explicit IpfixExporter(const IpfixConfig& c);  // throws std::runtime_error
  ~IpfixExporter() override;
  void consume(const FlowRecord& r) override;
  void flush();  // sends what is buffered

  struct Stats {
    uint64_t messages = 0, data_records = 0, bytes = 0, send_errors = 0, template_sends = 0;
  } stats;

  // Message encoding, exposed for tests: appends data records for `r` to `v4`/`v6` sets.
  static void encode(const FlowRecord& r, std::vector<uint8_t>& v4, std::vector<uint8_t>& v6,
                     uint32_t& n);

 private:
  void send_templates(uint64_t now_ns);
  void send_message(const std::vector<std::pair<uint16_t, const std::vector<uint8_t>*>>& sets,
                    uint32_t records);
  IpfixConfig cfg_;
  int fd_ = -1;
  uint32_t seq_ = 0;
  uint64_t last_templates_ns_ = 0;
  bool have_sampling_ = false;
  SamplingConfig sampling_{};
  std::vector<uint8_t> v4_, v6_;
  uint32_t pending_ = 0;
};

}  // namespace ls
