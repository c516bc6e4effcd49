// Router flow input: NetFlow v1 / v5 / v7 / v9 / IPFIX / sFlow v5 datagrams (IPFIX also
// over TCP) → the exporter's unidirectional records
// → joined into bidirectional flow records in a flow table (the two directions of a
// conversation meet in one entry, as packets do) → the same consumers as a replay
// (JSON records, IPFIX re-export, the feature stage). Single-threaded: it runs at the
// rate of flow records, not packets.
#pragma once
#include <poll.h>

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "ctrl/netflow.h"
#include "dataplane/flow_core.h"
#include "dataplane/packet_filter.h"
#include "dataplane/record.h"

namespace ls {

class Collector final : public RecordSink {
 public:
  // `payload`: keep sFlow's sampled payload bytes per direction (cfg.table.payload_bytes)
  // for the signatures. Its memory is capacity × 2 × payload_bytes, faulted in (even in
  // `run`) only where flows that sFlow fed land: NetFlow and IPFIX never touch it.
  Collector(const CoreConfig& cfg, RecordConsumer& out, bool payload = false);
  // The records a datagram ends reach the consumer together, when it is decoded.
  void datagram(const uint8_t* p, size_t n, const std::string& from) {
    dec_.decode(p, n, from);
    hold_.flush();
  }
  void finish();  // flushes every flow still in the table
  const NfCounters& netflow() const { return dec_.ctr; }
  // For the exit summary: every decoder counter by name, and a text block of the non-zero ones.
  nlohmann::json netflow_json() const;
  std::string summary_text() const;
  NfCounters& netflow_counters() { return dec_.ctr; }
  void end_session(const std::string& from);  // an IPFIX-over-TCP connection closed
  const Counters& table_counters() const { return ctr_; }
  size_t table_bytes() const { return table_.memory_bytes(); }
  size_t flows_active() const { return table_.size(); }
  // Prometheus exposition of the decoder's counters, exporters, templates and the table;
  // `alone` = false inside `run`, whose dataplane has its own flows_active / flow_records.
  std::string metrics_text(bool alone = true) const;
  // Records (sFlow samples too) the filter rejects are counted (records_filtered, and
  // their packets as filtered_out) and go no further; null passes every record.
  // Control thread only, as datagram().
  void set_filter(std::shared_ptr<const PacketFilter> f) { filter_ = std::move(f); }
  uint64_t uniflows = 0;
  void emit(const FlowEntry& e, const uint8_t* pay, uint16_t cap, EndReason why) override;

 private:
  void add(const Uniflow& u);

  CoreConfig cfg_;
  Counters ctr_;
  FlowTable table_;
  NetflowDecoder dec_;
  std::vector<uint32_t> rate_;  // per entry: the exporter's 1:N packet sampling (0 = random)
  RecordHold hold_;
  std::shared_ptr<const PacketFilter> filter_;
};

// Whether `f` passes an exported record, seen as one packet of it: an IPv4 or IPv6 header
// with its addresses and protocol (TTL 64, no options, lengths of the headers alone), then
// a TCP header with its ports and cumulative flags, a UDP or SCTP header with its ports,
// or an ICMP header with its type and code. A record carries nothing else of a packet.
bool record_passes(const PacketFilter& f, const Uniflow& u);

// The collector's sockets: NetFlow / IPFIX datagrams on a UDP address ("127.0.0.1:2055",
// "[::]:4739") and IPFIX over TCP on another (either may be empty). Throws on socket errors.
class CollectorListener {
 public:
  // `udp_opt`, `tcp_opt`: the options the addresses came from, for error messages.
  CollectorListener(Collector& c, const std::string& udp, const std::string& tcp,
                    const char* udp_opt = "--listen", const char* tcp_opt = "--listen-tcp");
  ~CollectorListener();
  CollectorListener(const CollectorListener&) = delete;
  CollectorListener& operator=(const CollectorListener&) = delete;
  // Waits up to timeout_ms for input and decodes what is queued (bounded per round);
  // true when something arrived.
  bool poll(int timeout_ms);
  uint64_t last_input_ns() const { return last_ns_; }  // mono_ns(); 0 = nothing yet

 private:
  struct TcpSession {  // one IPFIX-over-TCP connection
    int fd;
    std::string from;
    IpfixStream stream;
  };
  void close_all();
  void drop_session(size_t i);
  Collector& c_;
  int ufd_ = -1, lfd_ = -1;
  std::vector<TcpSession> sessions_;
  std::vector<uint8_t> buf_;
  std::vector<pollfd> pf_;
  uint64_t last_ns_ = 0;
};

// Receives NetFlow / IPFIX datagrams on a UDP address ("127.0.0.1:2055", "[::]:4739") and
// IPFIX over TCP on another (either may be empty) until `stop` is set, or `exit_idle_ns`
// after the last datagram or message (0: never); `tick` runs at least every 100 ms
// (scheduled exports). Throws on socket errors.
void serve(Collector& c, const std::string& udp, const std::string& tcp, const std::atomic<bool>& stop,
           uint64_t exit_idle_ns, const std::function<void()>& tick = {});

}  // namespace ls
