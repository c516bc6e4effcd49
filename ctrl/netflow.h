// NetFlow v1, v5, v7, v9 (RFC 3954), IPFIX (RFC 7011) and sFlow v5 decoder: datagrams
// from router, switch or probe exporters in, unidirectional flow records out. Templates
// and options (sampling, system init time) are kept per exporter and observation domain
// / source id (v5: engine type and id; v1, v7: none; sFlow: sub-agent id). sFlow's
// sampled packet headers go through the packet parser and become one-packet records.
// Every malformed or unusable piece is counted under a named counter; decoding never
// reads past a datagram.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "dataplane/counters.h"
#include "dataplane/parser.h"

namespace ls {

#define LS_NETFLOW_COUNTERS(X)                                                               \
  X(datagrams)              /* datagrams offered */                                         \
  X(datagrams_v9)                                                                            \
  X(datagrams_ipfix)                                                                         \
  X(datagrams_v5)                                                                            \
  X(datagrams_v1)                                                                            \
  X(datagrams_v7)                                                                            \
  X(datagrams_sflow)                                                                         \
  X(records)                /* flow records decoded */                                      \
  X(options_records)        /* options data records (sampling, system init time) */         \
  X(templates)              /* template records learnt (incl. refreshes) */                 \
  X(templates_withdrawn)                                                                     \
  X(bad_version)            /* not NetFlow 1, 5, 7, 9, IPFIX or sFlow 5 (sFlow v2 and v4 are not supported) */ \
  X(truncated_header)                                                                        \
  X(bad_length)             /* IPFIX length, or v1/v5/v7 record count, disagrees with the datagram */ \
  X(bad_set_length)         /* a set shorter than its header or past the datagram */        \
  X(bad_template)           /* template record cut short or with zero-length fields */      \
  X(data_without_template)  /* data set whose template is not (yet) known: skipped */       \
  X(records_without_flow_key) /* decoded, but no addresses/protocol: not a flow */          \
  X(records_without_time_base) /* sysUpTime-relative times and no system init time */       \
  X(records_filtered)       /* rejected by the filter (--filter), not an error */          \
  X(sequence_gaps)          /* exporter sequence numbers skipped: datagrams or records lost */ \
  X(tcp_sessions)           /* IPFIX-over-TCP connections accepted */                       \
  X(tcp_refused)            /* connections past the session limit: closed at once */         \
  X(tcp_bad_stream)         /* sessions closed: a message header not IPFIX or too short */  \
  X(sflow_flow_samples)     /* sFlow flow samples: one sampled packet each */               \
  X(sflow_counter_samples)  /* sFlow interface counter samples: not used */                 \
  X(sflow_other_samples)    /* sFlow samples of enterprise or unknown formats: skipped */   \
  X(sflow_bad_length)       /* an sFlow sample or record runs past what holds it */         \
  X(sflow_bad_agent_address) /* agent address type not 0, 1 (IPv4) or 2 (IPv6) */           \
  X(sflow_samples_without_packet) /* no Ethernet / IP header nor sampled IPv4 / IPv6 record */ \
  X(sflow_samples_not_ip)   /* sampled frames that are not IP (ARP, LLDP, STP): normal on a switch */ \
  X(sflow_samples_unparsed) /* sampled header not a flow: reason in `sflow_unparsed` */ \
  X(sflow_agent_drops)      /* packets an sFlow agent chose but could not sample (its drops counter rose) */

enum class NfCtr : uint8_t {
#define LS_X(n) n,
  LS_NETFLOW_COUNTERS(LS_X)
#undef LS_X
      count
};
inline constexpr const char* kNfCounterNames[] = {
#define LS_X(n) #n,
    LS_NETFLOW_COUNTERS(LS_X)
#undef LS_X
};

struct NfCounters {
  uint64_t v[size_t(NfCtr::count)] = {};
  void inc(NfCtr c, uint64_t n = 1) { v[size_t(c)] += n; }
  uint64_t get(NfCtr c) const { return v[size_t(c)]; }
};

// One direction of a flow as the exporter saw it.
struct Uniflow {
  uint8_t src[16], dst[16];  // IPv4 in the first 4 bytes
  uint16_t sport, dport;     // ICMP: dport = type << 8 | code
  uint8_t proto, ip_ver, tcp_flags;
  uint64_t first_ns, last_ns;
  uint64_t packets, bytes;
  int8_t initiator;            // biflowDirection: 1 source initiated, -1 destination, 0 unknown
  uint32_t sampling_interval;  // 1:N packet sampling announced by the exporter (1 = none)
  bool sampling_random;
  uint32_t exporter;           // index of the exporter (address:port, domain)
  const uint8_t* payload;      // sFlow: the sampled packet's L4 payload bytes, valid during the sink call
  uint16_t payload_len;
};

struct FixedFormat;  // NetFlow v1, v5, v7: netflow.cpp

class NetflowDecoder {
 public:
  using Sink = std::function<void(const Uniflow&)>;
  // `parse` reads sFlow's sampled packet headers (its filter is not applied).
  explicit NetflowDecoder(Sink s, const ParseConfig& parse = {}) : sink_(std::move(s)), parse_(parse) {
    parse_.filter = nullptr;
  }
  // `from` names the exporter (e.g. "192.0.2.1:50000"); `recv_ns` is when the datagram
  // arrived (Unix ns; 0 = now): sFlow carries only the agent's uptime.
  void decode(const uint8_t* p, size_t n, const std::string& from, uint64_t recv_ns = 0);
  NfCounters ctr;
  // Why sampled sFlow headers were not flows, by the parser's counter names
  // (truncated_ipv4, bad_ip_header_len, ...; not IP at all is sflow_samples_not_ip); its
  // INFO counters too.
  Counters sflow_parse;
  // Exporters (address:port, domain) currently known.
  size_t exporters() const { return exporter_index_.size(); }
  // A transport session from `from` ended (IPFIX over TCP): its templates and sequence
  // state go with it (RFC 7011 8: templates live as long as the session).
  void end_session(const std::string& from);
  size_t templates() const { return templates_.size(); }

 private:
  struct Field {
    uint16_t ie;
    uint16_t len;  // 65535: variable length (IPFIX)
    uint32_t pen;  // enterprise number, 0 for IANA
  };
  struct Template {
    std::vector<Field> fields;
    uint16_t scope_fields = 0;  // options templates: leading scope fields
    bool options = false;
    size_t min_len = 0;         // bytes of one record (variable-length fields count 1)
  };
  struct Exporter {
    std::string from;
    uint32_t domain;
    uint64_t init_ms = 0;        // system init time (absolute ms); 0 = unknown
    uint32_t sampling = 1;
    bool sampling_random = false;
    uint32_t next_seq = 0;
    bool seq_known = false;
    bool seq_after = false;  // IPFIX exporter numbering records up to and including this message
    int64_t sflow_boot_ns = 0;   // sFlow: the agent's boot on our clock (recv − uptime)
    bool sflow_boot_known = false;
    // sFlow: (data source type << 32 | index, last drops counter), sorted by source.
    std::vector<std::pair<uint64_t, uint32_t>> sflow_drops;
  };
  using TemplateKey = std::tuple<uint32_t, uint16_t>;  // exporter index, template id

  uint32_t exporter_of(const std::string& from, uint32_t domain);
  void decode_fixed(const uint8_t* p, size_t n, const std::string& from, const FixedFormat& f);
  void decode_sflow(const uint8_t* p, size_t n, const std::string& from, uint64_t recv_ns);
  void sflow_flow_sample(const uint8_t* p, size_t n, bool expanded, uint32_t ex, uint64_t ts_ns);
  void count_sflow_drops(Exporter& e, uint64_t source, uint32_t drops);
  void templates_set(const uint8_t* p, size_t n, uint32_t ex, bool ipfix, bool options);
  // Returns the number of records decoded; stops at padding.
  uint32_t data_set(const uint8_t* p, size_t n, uint32_t ex, const Template& t, bool ipfix,
                    uint64_t export_ms, uint32_t uptime_ms);
  void check_sequence(Exporter& e, bool ipfix, uint32_t seq, uint32_t flows, uint32_t data);
  void record(const uint8_t* p, const Template& t, const std::vector<uint16_t>& lens, uint32_t ex,
              bool ipfix, uint64_t export_ms, uint32_t uptime_ms);

  Sink sink_;
  ParseConfig parse_;
  std::vector<Exporter> exporters_;
  std::vector<uint32_t> free_exporters_;  // indices released by end_session, reused
  std::map<std::pair<std::string, uint32_t>, uint32_t> exporter_index_;
  std::map<TemplateKey, Template> templates_;
};

// IPFIX over TCP (RFC 7011 10.4): one connection's bytes, cut anywhere by reads, into
// whole messages by their length fields. Holds at most one unfinished message.
class IpfixStream {
 public:
  // Appends n bytes and hands each completed message to `msg`. Returns false once the
  // stream holds something other than an IPFIX message header (version 10, length ≥ 16):
  // there is no way to find the next message, so the session must end.
  template <class Msg>
  bool feed(const uint8_t* p, size_t n, Msg&& msg) {
    buf_.insert(buf_.end(), p, p + n);
    size_t at = 0;
    bool ok = true;
    while (buf_.size() - at >= 4) {
      const uint8_t* m = buf_.data() + at;
      size_t len = size_t(m[2]) << 8 | m[3];
      if ((m[0] << 8 | m[1]) != 10 || len < 16) {
        ok = false;
        break;
      }
      if (buf_.size() - at < len) break;
      msg(m, len);
      at += len;
    }
    buf_.erase(buf_.begin(), buf_.begin() + long(at));
    return ok;
  }
  size_t pending() const { return buf_.size(); }  // bytes of an unfinished message

 private:
  std::vector<uint8_t> buf_;
};

}  // namespace ls
