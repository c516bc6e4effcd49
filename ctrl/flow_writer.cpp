#include "ctrl/flow_writer.h"

#include "dataplane/clock.h"
#include "dataplane/text.h"

#include <arpa/inet.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstring>
#include <ctime>
#include <fstream>
#include <nlohmann/json.hpp>
#include <stdexcept>

namespace ls {

void format_record(const FlowRecord& r, bool with_payload, std::string& o) {
  const FlowEntry& e = r.e;
  // Canonical direction 0 is key.lo → key.hi; report from the initiator's side.
  int f = e.init_lo ? 0 : 1, b = 1 - f;
  const uint8_t* src = f == 0 ? e.key.lo : e.key.hi;
  const uint8_t* dst = f == 0 ? e.key.hi : e.key.lo;
  uint16_t sport = f == 0 ? e.key.lo_port : e.key.hi_port;
  uint16_t dport = f == 0 ? e.key.hi_port : e.key.lo_port;
  uint64_t n = uint64_t(e.pkts[0]) + e.pkts[1];
  TextBuf w(o);
  w.run<24>()
      .lit("{\"src\":\"").ip(src, e.key.ip_ver)
      .lit("\",\"dst\":\"").ip(dst, e.key.ip_ver)
      .lit("\",\"sport\":").num(sport)
      .lit(",\"dport\":").num(dport)
      .lit(",\"proto\":").num(e.key.proto)
      .lit(",\"ip_version\":").num(e.key.ip_ver)
      .lit(",\"zone\":").num(e.key.zone)
      .lit(",\"first_ns\":").num(e.first_ns)
      .lit(",\"last_ns\":").num(e.last_ns)
      .lit(",\"duration_s\":").f3(double(e.last_ns - e.first_ns) / 1e9)
      .lit(",\"packets_fwd\":").num(e.pkts[f])
      .lit(",\"bytes_fwd\":").num(e.bytes[f]);
  {
    TextBuf::Run x = w.run<11>();
    x.lit(",\"packets_rev\":").num(e.pkts[b])
        .lit(",\"bytes_rev\":").num(e.bytes[b]);
    if (e.key.proto == 6) {
      x.lit(",\"tcp_flags_fwd\":").num(e.flags[f])
          .lit(",\"tcp_flags_rev\":").num(e.flags[b])
          .lit(",\"tcp_state\":").num(e.tcp_state & ~FLOW_CONTINUED);
    }
    x.lit(",\"end_reason\":\"");
  }
  w.text(end_reason_name(r.why));
  {
    TextBuf::Run x = w.run<20>();
    // Inter-arrival over all packets of the record, both directions, µs.
    x.lit("\",\"iat_us\":");
    if (n >= 2) {
      double gaps = double(n - 1);
      double mean = double(e.last_ns - e.first_ns) / 1e3 / gaps;
      double var = std::max(0.0, e.iat_sq / gaps - mean * mean);
      x.lit("{\"mean\":").f3(mean)
          .lit(",\"std\":").f3(std::sqrt(var))
          .lit(",\"min\":").num(e.iat_min_us)
          .lit(",\"max\":").num(e.iat_max_us)
          .c('}');
    } else {
      x.lit("null");
    }
    double mean = double(e.bytes[0] + e.bytes[1]) / double(n ? n : 1);
    double var = std::max(0.0, e.size_sq / double(n ? n : 1) - mean * mean);
    x.lit(",\"size\":{\"mean\":").f3(mean)
        .lit(",\"std\":").f3(std::sqrt(var))
        .lit(",\"min\":").num(n ? e.size_min : 0)
        .lit(",\"max\":").num(e.size_max)
        .lit("},\"sampling\":{\"method\":\"");
  }
  w.text(sample_mode_name(r.sampling.mode));
  {
    TextBuf::Run x = w.run<7>();
    x.lit("\",\"rate\":").num(r.sampling.rate).c('}');
    if (r.sampling.mode == SampleMode::PACKET_DET || r.sampling.mode == SampleMode::PACKET_RANDOM) {
      // Renormalised estimates: every counted packet stands for `rate` packets.
      x.lit(",\"est_packets\":").num(n * r.sampling.rate)
          .lit(",\"est_bytes\":").num((e.bytes[0] + e.bytes[1]) * r.sampling.rate);
    } else if (r.sampling.mode == SampleMode::SAMPLE_HOLD) {
      // Packets before admission are unseen; their expected number is rate - 1 (the rate in
      // force when the record left the table).
      x.lit(",\"est_packets\":").num(n + (e.held ? r.sampling.rate - 1 : 0));
    }
  }
  if (with_payload) {
    w.run<1>().lit(",\"payload_fwd\":\"");
    w.hex(r.payload[f], r.paylen[f]);
    w.run<1>().lit("\",\"payload_rev\":\"");
    w.hex(r.payload[b], r.paylen[b]);
    w.run<1>().c('"');
  }
  w.run<3>().lit(",\"core\":").num(r.core).c('}');
}

FlowWriter::FlowWriter(const std::string& path, bool with_payload, RotateConfig rot)
    : payload_(with_payload), path_(path), buf_(1 << 20), rot_(rot) {
  if (path == "-") {
    f_ = stdout;
    std::setvbuf(f_, buf_.data(), _IOFBF, buf_.size());
    return;
  }
  open_file();
}

void FlowWriter::open_file() {
  f_ = std::fopen(path_.c_str(), "w");
  if (!f_) throw std::runtime_error(path_ + ": " + std::strerror(errno));
  own_ = true;
  std::setvbuf(f_, buf_.data(), _IOFBF, buf_.size());
  bytes_ = 0;
  opened_ns_ = wall_ns();
}

void FlowWriter::rotate() {
  if (!own_ || !f_) return;
  if (std::fclose(f_) != 0) write_errors_++;
  f_ = nullptr;
  time_t t = time_t(opened_ns_ / 1'000'000'000ull);
  tm g;
  gmtime_r(&t, &g);
  char stamp[32];
  std::strftime(stamp, sizeof stamp, "%Y%m%dT%H%M%S", &g);
  std::string stem = path_, ext;
  size_t dot = path_.rfind('.');
  if (dot != std::string::npos && path_.find('/', dot) == std::string::npos) {
    stem = path_.substr(0, dot);
    ext = path_.substr(dot);
  }
  std::string target = stem + "." + stamp + ext;
  for (int n = 1; std::ifstream(target).good(); n++) target = stem + "." + stamp + "." + std::to_string(n) + ext;
  if (std::rename(path_.c_str(), target.c_str()) != 0) write_errors_++;
  rotations_++;
  open_file();
}

FlowWriter::~FlowWriter() {
  if (f_) {
    std::fflush(f_);
    if (own_) std::fclose(f_);
  }
}

void FlowWriter::consume(const FlowRecord& r) {
  const FlowRecord* one = &r;
  consume_batch(&one, 1);
}

// A batch's lines in one write (stdio locks and copies per call); a file that reaches
// its size limit is rotated right after the line that crossed it.
void FlowWriter::consume_batch(const FlowRecord* const* recs, size_t n) {
  line_.clear();
  for (size_t i = 0; i < n; i++) {
    format_record(*recs[i], payload_, line_);
    line_ += '\n';
    if (rot_.max_bytes && bytes_ + line_.size() >= rot_.max_bytes) {
      write_pending();
      rotate();
    }
  }
  write_pending();
}

void FlowWriter::write_pending() {
  if (line_.empty()) return;
  if (std::fwrite(line_.data(), 1, line_.size(), f_) != line_.size()) write_errors_++;
  bytes_ += line_.size();
  line_.clear();
}

void FlowWriter::tick() {
  if (rot_.max_age_ns && own_ && bytes_ && wall_ns() - opened_ns_ >= rot_.max_age_ns) rotate();
}

void FlowWriter::close() {
  if (!f_) return;
  bool bad = std::fflush(f_) != 0 || std::ferror(f_) || write_errors_;
  if (own_ && std::fclose(f_) != 0) bad = true;
  f_ = nullptr;
  if (bad) throw std::runtime_error(path_ + ": write failed: " + std::strerror(errno));
}

void SummaryCollector::consume(const FlowRecord& r) {
  count(r);
  if (next_) next_->consume(r);
}

void SummaryCollector::count(const FlowRecord& r) {
  records++;
  by_reason[size_t(r.why)]++;
  if (track_hosts) {
    const FlowEntry& e = r.e;
    uint64_t bytes = e.bytes[0] + e.bytes[1], pk = uint64_t(e.pkts[0]) + e.pkts[1];
    for (const uint8_t* a : {e.key.lo, e.key.hi}) {
      Addr k;
      std::memcpy(k.a, a, 16);
      k.ver = e.key.ip_ver;
      Host& h = hosts_[k];
      h.bytes += bytes;
      h.packets += pk;
      h.flows++;
    }
  }
}

std::vector<SummaryCollector::Talker> SummaryCollector::top(size_t n) const {
  std::vector<Talker> v;
  v.reserve(hosts_.size());
  std::vector<std::pair<const Addr*, const Host*>> all;
  all.reserve(hosts_.size());
  for (auto& [a, h] : hosts_) all.push_back({&a, &h});
  size_t k = std::min(n, all.size());
  std::partial_sort(all.begin(), all.begin() + long(k), all.end(), [](auto& x, auto& y) {
    if (x.second->bytes != y.second->bytes) return x.second->bytes > y.second->bytes;
    return std::memcmp(x.first, y.first, sizeof(Addr)) < 0;
  });
  for (size_t i = 0; i < k; i++) {
    auto [a, h] = all[i];
    v.push_back({format_ip(a->a, a->ver), h->bytes, h->packets, h->flows});
  }
  return v;
}

namespace {
std::string human_bytes(double b) {
  const char* u[] = {"B", "KB", "MB", "GB", "TB"};
  int i = 0;
  while (b >= 1000 && i < 4) {
    b /= 1000;
    i++;
  }
  char s[32];
  std::snprintf(s, sizeof s, i ? "%.1f %s" : "%.0f %s", b, u[i]);
  return s;
}
}  // namespace

std::string format_summary(const ReplayResult& r, const SummaryCollector& s, uint32_t cores,
                           const std::string& flows_out) {
  std::string o;
  char line[256];
  double secs = double(r.wall_ns) / 1e9;
  uint64_t pk = r.total.get(Ctr::packets);
  std::snprintf(line, sizeof line, "linesight: %lu packets, %s in %.3f s (%.2f Mpps) on %u core%s%s\n",
                (unsigned long)pk, human_bytes(double(r.total.get(Ctr::bytes))).c_str(), secs,
                secs > 0 ? double(pk) / secs / 1e6 : 0.0, cores, cores == 1 ? "" : "s",
                r.interrupted ? " (interrupted; active flows flushed)" : "");
  o += line;
  std::snprintf(line, sizeof line, "flows:     %lu records", (unsigned long)s.records);
  o += line;
  const EndReason reasons[] = {EndReason::IDLE, EndReason::ACTIVE, EndReason::TCP_END,
                               EndReason::EVICTED, EndReason::FLUSH, EndReason::CLOCK_JUMP};
  std::string parts;
  for (auto why : reasons) {
    if (!s.by_reason[size_t(why)]) continue;
    parts += parts.empty() ? " (" : ", ";
    parts.append(end_reason_name(why)).append(" ").append(std::to_string(s.by_reason[size_t(why)]));
  }
  o += parts;
  if (!parts.empty()) o += ")";
  if (!flows_out.empty()) o.append(" -> ").append(flows_out);
  o += "\n";
  auto top = s.top(5);
  if (!top.empty()) {
    o += "top talkers (bytes in flows touching the host):\n";
    for (auto& t : top) {
      std::snprintf(line, sizeof line, "  %-40s %10s %10lu pkts %8lu flows\n", t.ip.c_str(),
                    human_bytes(double(t.bytes)).c_str(), (unsigned long)t.packets,
                    (unsigned long)t.flows);
      o += line;
    }
  }
  uint64_t drops = 0;
  std::string dl;
  for (size_t i = 0; i < kNumCounters; i++) {
    if (kCounterKinds[i] != CtrKind::DROP || !r.total.v[i]) continue;
    drops += r.total.v[i];
    dl.append("  ").append(kCounterNames[i]).append(" ").append(std::to_string(r.total.v[i])).append("\n");
  }
  std::snprintf(line, sizeof line, "drops:     %lu packets not in any flow%s\n",
                (unsigned long)drops, drops ? ":" : "");
  o += line;
  o += dl;
  o += "counters:\n";
  for (size_t i = 0; i < kNumCounters; i++) {
    if (kCounterKinds[i] != CtrKind::INFO || !r.total.v[i]) continue;
    o.append("  ").append(kCounterNames[i]).append(" ").append(std::to_string(r.total.v[i])).append("\n");
  }
  if (cores > 1) {
    o += "per core packets:";
    for (auto& c : r.per_core) o.append(" ").append(std::to_string(c.get(Ctr::packets)));
    o += "\n";
  }
  return o;
}

std::string format_summary_json(const ReplayResult& r, const SummaryCollector& s,
                                uint32_t cores) {
  nlohmann::json j;
  j["cores"] = cores;
  j["wall_ns"] = r.wall_ns;
  j["records"] = s.records;
  j["interrupted"] = r.interrupted;
  j["table_bytes"] = r.table_bytes;
  j["warnings"] = r.warnings;
  auto& c = j["counters"];
  c = nlohmann::json::object();
  for (size_t i = 0; i < kNumCounters; i++) c[std::string(kCounterNames[i])] = r.total.v[i];
  auto& pc = j["per_core"];
  pc = nlohmann::json::array();
  for (auto& x : r.per_core) {
    nlohmann::json e;
    for (size_t i = 0; i < kNumCounters; i++)
      if (x.v[i]) e[std::string(kCounterNames[i])] = x.v[i];
    pc.push_back(e);
  }
  return j.dump(1) + "\n";
}

}  // namespace ls
