#include "ctrl/config.h"
#include "features/pseudonym.h"

#include <cstdio>
#include <yaml-cpp/yaml.h>

#include <sys/random.h>

#include <charconv>
#include <cstring>
#include <ctime>
#include <functional>
#include <cmath>
#include <map>

namespace ls {
namespace {

std::string where(const std::string& file, const YAML::Node& n, const std::string& key) {
  return file + ":" + std::to_string(n.Mark().line + 1) + ": " + key + ": ";
}

template <class T>
T as(const std::string& file, const YAML::Node& n, const std::string& key) {
  try {
    return n.as<T>();
  } catch (const YAML::Exception&) {
    throw ConfigError(where(file, n, key) + "expected " +
                      (std::is_same_v<T, bool> ? "true/false"
                       : std::is_floating_point_v<T> ? "a number" : "an integer") +
                      ", got '" + (n.IsScalar() ? n.Scalar() : std::string("<non-scalar>")) + "'");
  }
}

uint64_t dur(const std::string& file, const YAML::Node& n, const std::string& key) {
  try {
    return parse_duration_ns(n.Scalar());
  } catch (const ConfigError& e) {
    throw ConfigError(where(file, n, key) + e.what());
  }
}

SketchClients sketch_clients(const std::string& file, const YAML::Node& n, const std::string& key) {
  SketchClients c;
  if (!n.IsScalar() || !parse_sketch_clients(n.Scalar(), c))
    throw ConfigError(where(file, n, key) + "expected address, pseudonym or none, got '" +
                      (n.IsScalar() ? n.Scalar() : std::string("<non-scalar>")) + "'");
  return c;
}

using Handler = std::function<void(const YAML::Node&, const std::string&)>;

void walk(const std::string& file, const YAML::Node& sec, const std::string& name,
          const std::map<std::string, Handler>& h) {
  if (!sec.IsMap()) throw ConfigError(where(file, sec, name) + "expected a mapping");
  for (auto it : sec) {
    std::string k = it.first.as<std::string>();
    auto f = h.find(k);
    std::string full = name + "." + k;
    if (f == h.end()) {
      std::string known;
      for (auto& [kk, _] : h) known += (known.empty() ? "" : ", ") + kk;
      throw ConfigError(where(file, it.first, full) + "unknown key (known: " + known + ")");
    }
    f->second(it.second, full);
  }
}

void apply(const YAML::Node& root, Config& c, const std::string& file) {
  if (!root || root.IsNull()) return;
  auto& p = c.core.parse;
  auto& t = c.core.table;
  auto& s = c.core.sampling;
  std::map<std::string, Handler> top = {
      {"parser", [&](const YAML::Node& n, const std::string& nm) {
         walk(file, n, nm, {
             {"decap_gre", [&](auto& v, auto& k) { p.decap_gre = as<bool>(file, v, k); }},
             {"decap_vxlan", [&](auto& v, auto& k) { p.decap_vxlan = as<bool>(file, v, k); }},
             {"decap_gtpu", [&](auto& v, auto& k) { p.decap_gtpu = as<bool>(file, v, k); }},
             {"decap_ipip", [&](auto& v, auto& k) { p.decap_ipip = as<bool>(file, v, k); }},
             {"vxlan_port", [&](auto& v, auto& k) { p.vxlan_port = as<uint16_t>(file, v, k); }},
             {"gtpu_port", [&](auto& v, auto& k) { p.gtpu_port = as<uint16_t>(file, v, k); }},
             {"max_tunnel_depth", [&](auto& v, auto& k) { p.max_tunnel_depth = uint8_t(as<unsigned>(file, v, k)); }},
             {"filter", [&](auto& v, auto& k) {
                c.filter = as<std::string>(file, v, k);
                try {  // compiled here for the file and line; finish_config keeps it unless --filter differs
                  p.filter.reset();
                  if (!c.filter.empty()) p.filter = std::make_shared<const PacketFilter>(c.filter);
                } catch (const FilterError& e) {
                  throw ConfigError(where(file, v, k) + e.what());
                }
              }},
         });
       }},
      {"flow_key", [&](const YAML::Node& n, const std::string& nm) {
         walk(file, n, nm, {
             {"zone", [&](auto& v, auto& k) { c.core.key.use_zone = as<bool>(file, v, k); }},
         });
       }},
      {"table", [&](const YAML::Node& n, const std::string& nm) {
         walk(file, n, nm, {
             {"capacity", [&](auto& v, auto& k) {
                uint64_t x = as<uint64_t>(file, v, k);
                if (x == 0 || x > (1ull << 31)) throw ConfigError(where(file, v, k) + "must be 1 .. 2^31 flows");
                t.capacity = uint32_t(x);
              }},
             {"payload_bytes", [&](auto& v, auto& k) {
                unsigned x = as<unsigned>(file, v, k);
                if (x > FlowTable::kMaxPayload) throw ConfigError(where(file, v, k) + "must be 0 .. 256");
                t.payload_bytes = uint16_t(x);
              }},
             {"idle_timeout", [&](auto& v, auto& k) { t.idle_timeout_ns = dur(file, v, k); }},
             {"active_timeout", [&](auto& v, auto& k) { t.active_timeout_ns = dur(file, v, k); }},
             {"tcp_end_timeout", [&](auto& v, auto& k) { t.tcp_end_timeout_ns = dur(file, v, k); }},
             {"sweep_period", [&](auto& v, auto& k) { t.sweep_period_ns = dur(file, v, k); }},
             {"backward_tolerance", [&](auto& v, auto& k) { t.backward_tolerance_ns = dur(file, v, k); }},
             {"full_policy", [&](auto& v, auto& k) {
                try { t.full_policy = parse_full_policy(v.Scalar()); }
                catch (const ConfigError& e) { throw ConfigError(where(file, v, k) + e.what()); }
              }},
             {"hash_seed", [&](auto& v, auto& k) { t.hash_seed = as<uint64_t>(file, v, k); c.hash_seed_set = true; }},
         });
       }},
      {"sampling", [&](const YAML::Node& n, const std::string& nm) {
         walk(file, n, nm, {
             {"mode", [&](auto& v, auto& k) {
                auto m = parse_sample_mode(v.Scalar());
                if (!m) throw ConfigError(where(file, v, k) + "unknown mode '" + v.Scalar() +
                                          "' (off, packet, packet_random, flow_hash, sample_hold)");
                s.mode = *m;
              }},
             {"rate", [&](auto& v, auto& k) {
                uint64_t r = as<uint64_t>(file, v, k);
                if (r == 0 || r > UINT32_MAX) throw ConfigError(where(file, v, k) + "must be 1 .. 2^32-1 (1:N)");
                s.rate = uint32_t(r);
              }},
             {"seed", [&](auto& v, auto& k) { s.seed = as<uint64_t>(file, v, k); }},
         });
       }},
      {"replay", [&](const YAML::Node& n, const std::string& nm) {
         walk(file, n, nm, {
             {"cores", [&](auto& v, auto& k) {
                unsigned x = as<unsigned>(file, v, k);
                if (x == 0 || x > 64) throw ConfigError(where(file, v, k) + "must be 1 .. 64");
                c.cores = x;
              }},
             {"speed", [&](auto& v, auto& k) {
                double x = as<double>(file, v, k);
                if (!(x >= 0) || std::isinf(x)) throw ConfigError(where(file, v, k) + "must be >= 0 (0 = as fast as possible)");
                c.speed = x;
              }},
             {"loop", [&](auto& v, auto& k) {
                uint64_t x = as<uint64_t>(file, v, k);
                if (x == 0) throw ConfigError(where(file, v, k) + "must be >= 1");
                c.loop = x;
              }},
         });
       }},
      {"dpdk", [&](const YAML::Node& n, const std::string& nm) {
         auto& d = c.dpdk;
         auto small = [&](auto& v, auto& k, unsigned lo, unsigned hi) {
           unsigned x = as<unsigned>(file, v, k);
           if (x < lo || x > hi)
             throw ConfigError(where(file, v, k) + "must be " + std::to_string(lo) + " .. " + std::to_string(hi));
           return x;
         };
         walk(file, n, nm, {
             {"eal", [&](auto& v, auto& k) {
                if (!v.IsSequence()) throw ConfigError(where(file, v, k) + "expected a list of EAL arguments");
                for (auto x : v) d.eal.push_back(x.Scalar());
              }},
             {"ports", [&](auto& v, auto& k) {
                if (!v.IsSequence()) throw ConfigError(where(file, v, k) + "expected a list of port ids");
                for (auto x : v) d.ports.push_back(uint16_t(small(x, k, 0, 1023)));
              }},
             {"rx_queues", [&](auto& v, auto& k) { d.rx_queues = uint16_t(small(v, k, 1, 128)); }},
             {"rx_lcores", [&](auto& v, auto& k) { d.rx_lcores = uint16_t(small(v, k, 1, 128)); }},
             {"workers", [&](auto& v, auto& k) { d.workers = uint16_t(small(v, k, 1, 128)); }},
             {"burst", [&](auto& v, auto& k) { d.burst = uint16_t(small(v, k, 1, 256)); }},
             {"mbufs", [&](auto& v, auto& k) { d.mbufs = small(v, k, 1024, 1u << 26); }},
             {"ring_size", [&](auto& v, auto& k) { d.ring_size = small(v, k, 64, 1u << 24); }},
             {"records", [&](auto& v, auto& k) { d.records = small(v, k, 1024, 1u << 24); }},
             {"memory_replay", [&](auto& v, auto&) { d.memory_replay = v.Scalar(); }},
             {"memory_loops", [&](auto& v, auto& k) { d.memory_loops = small(v, k, 1, 1u << 30); }},
             {"memory_pps", [&](auto& v, auto& k) { d.memory_pps = as<uint64_t>(file, v, k); }},
             {"mbuf_size", [&](auto& v, auto& k) { d.mbuf_size = small(v, k, 512, 65000); }},
             {"idle_sleep_us", [&](auto& v, auto& k) { d.idle_sleep_us = small(v, k, 0, 100000); }},
         });
       }},
      {"control", [&](const YAML::Node& n, const std::string& nm) {
         walk(file, n, nm, {
             {"socket", [&](auto& v, auto&) { c.control.socket = v.Scalar(); }},
             {"socket_mode", [&](auto& v, auto& k) {
                const std::string& m = v.Scalar();
                unsigned x = 0;
                auto [p, ec] = std::from_chars(m.data(), m.data() + m.size(), x, 8);
                if (ec != std::errc() || p != m.data() + m.size() || x > 0777)
                  throw ConfigError(where(file, v, k) + "expected an octal mode such as 0600");
                c.control.socket_mode = x;
              }},
             {"exit_idle", [&](auto& v, auto& k) { c.control.exit_idle_ns = dur(file, v, k); }},
             {"metrics", [&](auto& v, auto&) { c.control.metrics = v.Scalar(); }},
             {"collect", [&](auto& v, auto&) { c.control.collect = v.Scalar(); }},
             {"collect_tcp", [&](auto& v, auto&) { c.control.collect_tcp = v.Scalar(); }},
         });
       }},
      {"features", [&](const YAML::Node& n, const std::string& nm) {
         walk(file, n, nm, {
             {"rules", [&](auto& v, auto&) { c.rules = v.Scalar(); }},
             {"rules_cache", [&](auto& v, auto&) { c.rules_cache = v.Scalar(); }},
             {"ti", [&](auto& v, auto& k) {
                if (!v.IsSequence()) throw ConfigError(where(file, v, k) + "expected a list of feed files or directories");
                for (auto x : v) c.ti.push_back(x.Scalar());
              }},
             {"ti_weights", [&](auto& v, auto& k) {
                if (!v.IsMap()) throw ConfigError(where(file, v, k) + "expected a mapping feed: weight");
                for (auto it : v) {
                  double w = as<double>(file, it.second, it.first.template as<std::string>());
                  if (!(w >= 0 && w <= 1)) throw ConfigError(where(file, it.second, k) + "weights are 0 .. 1");
                  c.ti_weights[it.first.template as<std::string>()] = w;
                }
              }},
             {"partners", [&](auto& v, auto& k) {
                if (!v.IsSequence()) throw ConfigError(where(file, v, k) + "expected a list of partner files");
                for (auto x : v) c.partners.push_back(x.Scalar());
              }},
             {"pair_capacity", [&](auto& v, auto& k) {
                uint64_t x = as<uint64_t>(file, v, k);
                if (x < 64 || x > (1u << 28)) throw ConfigError(where(file, v, k) + "must be 64 .. 2^28");
                c.pair_capacity = uint32_t(x);
              }},
             {"first_contact_capacity", [&](auto& v, auto& k) {
                uint64_t x = as<uint64_t>(file, v, k);
                if (x < 64 || x > (1u << 28)) throw ConfigError(where(file, v, k) + "must be 64 .. 2^28");
                c.first_contact_capacity = uint32_t(x);
              }},
             {"server_capacity", [&](auto& v, auto& k) {
                uint64_t x = as<uint64_t>(file, v, k);
                if (x < 64 || x > (1u << 26)) throw ConfigError(where(file, v, k) + "must be 64 .. 2^26");
                c.server_capacity = uint32_t(x);
              }},
             {"client_capacity", [&](auto& v, auto& k) {
                uint64_t x = as<uint64_t>(file, v, k);
                if (x < 64 || x > (1u << 26)) throw ConfigError(where(file, v, k) + "must be 64 .. 2^26");
                c.client_capacity = uint32_t(x);
              }},
             {"window", [&](auto& v, auto& k) { c.feature_window_ns = dur(file, v, k); }},
             {"sketch_seed", [&](auto& v, auto& k) { c.sketch_seed = as<uint64_t>(file, v, k); }},
         });
       }},
      {"detect", [&](const YAML::Node& n, const std::string& nm) {
         walk(file, n, nm, {
             {"apps", [&](auto& v, auto& k) {
                if (!v.IsSequence()) throw ConfigError(where(file, v, k) + "expected a list of app specs");
                for (auto x : v) c.apps.push_back(x.Scalar());
              }},
         });
       }},
      {"ti_export", [&](const YAML::Node& n, const std::string& nm) {
         walk(file, n, nm, {
             {"dir", [&](auto& v, auto&) { c.ti_export = v.Scalar(); }},
             {"every", [&](auto& v, auto& k) { c.ti_export_every_ns = dur(file, v, k); }},
             {"privacy_k", [&](auto& v, auto& k) { c.privacy_k = as<uint32_t>(file, v, k); }},
             {"producer", [&](auto& v, auto&) { c.producer = v.Scalar(); }},
             {"pseudonym_secret", [&](auto& v, auto&) { c.pseudonym_secret_file = v.Scalar(); }},
             {"pseudonym_rotate", [&](auto& v, auto& k) { c.pseudonym_rotate_ns = dur(file, v, k); }},
         });
       }},
      {"output", [&](const YAML::Node& n, const std::string& nm) {
         walk(file, n, nm, {
             {"flows", [&](auto& v, auto&) { c.flows_out = v.Scalar(); }},
             {"detections", [&](auto& v, auto&) { c.detections_out = v.Scalar(); }},
             {"ipfix", [&](auto& v, auto&) { c.ipfix = v.Scalar(); }},
             {"features", [&](auto& v, auto&) { c.features_out = v.Scalar(); }},
             {"sketches", [&](auto& v, auto&) { c.sketches_out = v.Scalar(); }},
             {"sketches_every", [&](auto& v, auto& k) { c.sketches_every_ns = dur(file, v, k); }},
             {"sketch_clients", [&](auto& v, auto& k) { c.sketch_clients = sketch_clients(file, v, k); }},
             {"rotate_bytes", [&](auto& v, auto& k) { c.rotate_bytes = as<uint64_t>(file, v, k); }},
             {"rotate_interval", [&](auto& v, auto& k) { c.rotate_interval_ns = dur(file, v, k); }},
             {"ipfix_template_refresh", [&](auto& v, auto& k) { c.ipfix_template_refresh_ns = dur(file, v, k); }},
             {"payload", [&](auto& v, auto& k) { c.payload_out = as<bool>(file, v, k); }},
             {"summary_json", [&](auto& v, auto&) { c.summary_json = v.Scalar(); }},
         });
       }},
  };
  walk(file, root, "", top);
}

}  // namespace

uint64_t parse_duration_ns(const std::string& s) {
  double v;
  const char* b = s.data();
  const char* e = b + s.size();
  auto [p, ec] = std::from_chars(b, e, v);
  if (ec != std::errc() || !(v >= 0))
    throw ConfigError("'" + s + "' is not a duration (e.g. 30s, 500ms, 5m)");
  std::string unit(p, e);
  double mul;
  if (unit.empty() || unit == "s") mul = 1e9;
  else if (unit == "ms") mul = 1e6;
  else if (unit == "us") mul = 1e3;
  else if (unit == "ns") mul = 1;
  else if (unit == "m") mul = 60e9;
  else if (unit == "h") mul = 3600e9;
  else if (unit == "d") mul = 86400e9;
  else throw ConfigError("'" + s + "': unknown unit '" + unit + "' (ns, us, ms, s, m, h, d)");
  double ns = v * mul;
  if (ns > 1e19) throw ConfigError("'" + s + "' is too long");
  return uint64_t(ns);
}

SamplingConfig parse_sampling_spec(const std::string& s) {
  SamplingConfig c;
  size_t a = s.find(':');
  std::string mode = s.substr(0, a);
  auto m = parse_sample_mode(mode);
  if (!m) throw ConfigError("sampling '" + s + "': unknown mode '" + mode +
                            "' (off, packet, packet_random, flow_hash, sample_hold)");
  c.mode = *m;
  if (a != std::string::npos) {
    size_t b = s.find(':', a + 1);
    std::string rate = s.substr(a + 1, b == std::string::npos ? std::string::npos : b - a - 1);
    uint64_t r = 0;
    auto [p, ec] = std::from_chars(rate.data(), rate.data() + rate.size(), r);
    if (ec != std::errc() || p != rate.data() + rate.size() || r == 0 || r > UINT32_MAX)
      throw ConfigError("sampling '" + s + "': rate must be an integer N >= 1 (1:N)");
    c.rate = uint32_t(r);
    if (b != std::string::npos) {
      std::string seed = s.substr(b + 1);
      auto [q, ec2] = std::from_chars(seed.data(), seed.data() + seed.size(), c.seed);
      if (ec2 != std::errc() || q != seed.data() + seed.size())
        throw ConfigError("sampling '" + s + "': seed must be an unsigned integer");
    }
  } else if (c.mode != SampleMode::OFF) {
    throw ConfigError("sampling '" + s + "': give a rate, e.g. " + mode + ":100");
  }
  return c;
}

FullPolicy parse_full_policy(const std::string& s) {
  if (s == "evict_oldest") return FullPolicy::EVICT_OLDEST;
  if (s == "drop_new") return FullPolicy::DROP_NEW;
  throw ConfigError("unknown full policy '" + s + "' (evict_oldest, drop_new)");
}

std::string_view full_policy_name(FullPolicy p) {
  return p == FullPolicy::EVICT_OLDEST ? "evict_oldest" : "drop_new";
}

void load_config_string(const std::string& yaml, Config& c, const std::string& name) {
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::Exception& e) {
    throw ConfigError(name + ":" + std::to_string(e.mark.line + 1) + ": " + e.msg);
  }
  apply(root, c, name);
}

void load_config_file(const std::string& path, Config& c) {
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    throw ConfigError(path + ": cannot open config file");
  } catch (const YAML::Exception& e) {
    throw ConfigError(path + ":" + std::to_string(e.mark.line + 1) + ": " + e.msg);
  }
  apply(root, c, path);
}

void validate(const Config& c) {
  std::string s = check_sampling(c.core.sampling);
  if (!s.empty()) throw ConfigError("sampling: " + s);
  const auto& t = c.core.table;
  if (t.idle_timeout_ns == 0) throw ConfigError("table.idle_timeout must be > 0");
  if (t.sweep_period_ns == 0) throw ConfigError("table.sweep_period must be > 0");
  if (c.sketches_every_ns && c.sketches_out.empty())
    throw ConfigError("--sketches-every (output.sketches_every) needs --sketches-out (output.sketches)");
  if (c.sketch_clients != SketchClients::address && c.sketches_out.empty())
    throw ConfigError("--sketch-clients (output.sketch_clients) needs --sketches-out (output.sketches)");
  if (c.sketch_clients == SketchClients::pseudonym) {
    if (c.pseudonym_secret_file.empty())
      throw ConfigError("--sketch-clients pseudonym needs --pseudonym-secret (ti_export.pseudonym_secret)");
    if (!c.feature_window_ns)
      throw ConfigError("--sketch-clients pseudonym needs features.window: a pseudonym's period is taken from "
                        "its window's start, so that every sensor names a client alike");
  }
}

const char* kCommonFlagsHelp = R"(  --config FILE          YAML config (docs/config.md)
  --flows-out FILE       flow records as JSON lines ("-" = stdout)
  --rotate-bytes N       start a new --flows-out file after N bytes (old one renamed)
  --rotate-interval D    ... or after D (e.g. 5m)
  --ipfix HOST:PORT      export flow records as IPFIX over UDP (two uniflows per flow)
  --features-out FILE    one feature row per flow record, CSV (docs/features.md)
  --rules FILE           payload signatures (Hyperscan), e.g. features/rules/default.rules
  --rules-cache DIR      keep compiled rule databases in DIR; the same rules load without
                         compiling next time (docs/rules.md)
  --detections-out FILE  detections as JSON lines (docs/detect.md)
  --sketches-out FILE    at exit, every server's and client's distinct-peer sketches, JSON lines, to
                         merge across sensors (linesight sketches merge; docs/features.md)
  --sketches-every D     also rewrite it every D while running (run, collect; e.g. 10m)
  --sketch-clients HOW   client lines name the client by address (the default, for one's own
                         sensors), by keyed pseudonym (pseudonym: needs --pseudonym-secret and
                         features.window), or are left out (none)
  --ti-export DIR        indicators of flagged servers at exit: CSV, JSON, STIX 2.1, MISP feed
                         (docs/ti.md; no client address is ever written)
  --privacy-k N          client counts leave only from N distinct clients (5)
  --ti-export-every D    also export every D while running (run, collect; e.g. 1h)
  --producer NAME        our name in STIX / MISP exports ("linesight sensor")
  --pseudonym-secret F   opt-in: add keyed pseudonyms (HMAC-SHA256) of the clients that
                         contacted each exported server; F holds a secret shared with the
                         partners who agreed to correlate clients (>= 16 bytes)
  --pseudonym-rotate D   new pseudonyms every D (1d)
  --app SPEC             a detection app (repeatable): NAME:server|client|flow:MODEL.json:THRESHOLD
                         or NAME:ENTITY:rule:sig=ID+ID,periodicity=X,contacts=N;
                         "defaults" adds the default expert apps (the set used without --app)
  --ti PATH              threat-intel feed file or directory (repeatable): firehol
                         .ipset/.netset, plain IP/CIDR lists, CSV with an ip column
  --ti-weight FEED=W      the operator's prior for a feed name, 0 .. 1 (repeatable;
                         replaces the file's own weight, default 1)
  --partner FILE         a partner's shared indicators (their linesight indicators.json
                         or .csv) as features partner_* (repeatable; docs/features.md)
  --payload-out          include the captured payload prefix (hex) in records
  --summary-json FILE    final counters as JSON
  --sampling SPEC        off | packet:N | packet_random:N[:SEED] | flow_hash:N[:SEED] |
                         sample_hold:N[:SEED]
  --filter EXPR          capture filter, tcpdump syntax (e.g. "tcp or udp port 53"): other
                         packets are counted as filtered_out and not parsed
  --capacity N           flows per core table (1048576; replay: at most what the input can fill)
  --payload-bytes N      payload bytes kept per direction, 0 disables (64)
  --idle-timeout D       e.g. 30s, 500ms (30s)
  --active-timeout D     long flows emit a record every D (300s; 0 disables)
  --tcp-end-timeout D    linger after FIN/RST (2s)
  --full-policy P        evict_oldest | drop_new (evict_oldest)
  --hash-seed N          fixed flow-hash seed (default: random per run)
  --zone                 VLAN id / tunnel id is part of the flow key
  --decap-gtpu           decapsulate GTP-U (off by default)
  --no-decap             do not decapsulate GRE, VXLAN, IP-in-IP
)";

namespace {
template <class T>
T flag_num(const std::string& flag, const std::string& v) {
  T x{};
  auto [p, ec] = std::from_chars(v.data(), v.data() + v.size(), x);
  if (ec != std::errc() || p != v.data() + v.size())
    throw ConfigError(flag + ": '" + v + "' is not a valid number");
  return x;
}
}  // namespace

void add_ti_weight(const std::string& v, std::map<std::string, double>& weights) {
  size_t eq = v.rfind('=');
  if (eq == std::string::npos || eq == 0) throw ConfigError("--ti-weight: expected FEED=WEIGHT, e.g. feodo=0.9");
  double w = flag_num<double>("--ti-weight", v.substr(eq + 1));
  if (!(w >= 0 && w <= 1)) throw ConfigError("--ti-weight: " + v + ": the weight must be 0 .. 1");
  weights[v.substr(0, eq)] = w;
}

void load_config_from_args(int argc, char** argv, Config& c) {
  for (int i = 0; i < argc; i++) {
    if (std::strcmp(argv[i], "--config")) continue;
    if (i + 1 >= argc) throw ConfigError("--config needs a file");
    load_config_file(argv[i + 1], c);
  }
}

void finish_config(Config& c) {
  validate(c);
  auto& f = c.core.parse.filter;
  if (c.filter.empty()) f.reset();
  if (!c.filter.empty() && (!f || f->expression() != c.filter)) {
    try {
      c.core.parse.filter = std::make_shared<const PacketFilter>(c.filter);
    } catch (const FilterError& e) {
      throw ConfigError(e.what());
    }
  }
  if (!c.rules.empty()) {
    try {
      c.loaded_rules = RuleSet::load_file(c.rules, c.rules_cache);
      // A cache that cannot be used costs a compile, not the run: say so and go on.
      if (c.loaded_rules->cache_status().rfind("compiled;", 0) == 0)
        std::fprintf(stderr, "linesight: warning: rules cache: %s\n", c.loaded_rules->cache_status().c_str());
    } catch (const RuleError& e) {
      throw ConfigError(e.what());
    }
  }
  if (!c.ti.empty()) {
    try {
      c.loaded_ti = TiTable::load(c.ti, c.ti_weights);
    } catch (const TiError& e) {
      throw ConfigError(e.what());
    }
  }
  if (!c.pseudonym_secret_file.empty()) {
    if (c.ti_export.empty() && c.sketch_clients != SketchClients::pseudonym)
      throw ConfigError("--pseudonym-secret needs --ti-export or --sketch-clients pseudonym (pseudonyms only go "
                        "into exports)");
    if (!c.pseudonym_rotate_ns) throw ConfigError("--pseudonym-rotate must be > 0");
    try {
      c.pseudonym_secret = Pseudonymizer::read_secret(c.pseudonym_secret_file);
    } catch (const std::exception& e) {
      throw ConfigError(e.what());
    }
  }
  if (!c.partners.empty()) {
    try {
      c.loaded_partners = PartnerTable::load(c.partners);
    } catch (const PartnerError& e) {
      throw ConfigError(e.what());
    }
  }
  if (!c.hash_seed_set) {
    uint64_t s = 0;
    if (getrandom(&s, sizeof s, 0) != sizeof s) s = uint64_t(time(nullptr));
    c.core.table.hash_seed = s;
  }
}

bool parse_command_line(int argc, char** argv, Config& cfg, const char* usage, const FlagHandler& own) {
  load_config_from_args(argc, argv, cfg);
  for (int i = 0; i < argc; i++) {
    std::string a = argv[i];
    if (apply_common_flag(cfg, argc, argv, i)) continue;
    if (a == "-h" || a == "--help") {
      std::printf("%s%s", usage, kCommonFlagsHelp);
      return false;
    }
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw ConfigError(a + " needs a value");
      return argv[++i];
    };
    if (!own(a, value)) throw ConfigError("unknown option " + a + " (see --help)");
  }
  finish_config(cfg);
  return true;
}

bool apply_common_flag(Config& cfg, int argc, char** argv, int& i) {
  std::string a = argv[i];
  auto val = [&]() -> std::string {
    if (i + 1 >= argc) throw ConfigError(a + " needs a value");
    return argv[++i];
  };
  auto& t = cfg.core.table;
  if (a == "--config") val();  // loaded before the flags
  else if (a == "--flows-out") cfg.flows_out = val();
  else if (a == "--ipfix") cfg.ipfix = val();
  else if (a == "--features-out") cfg.features_out = val();
  else if (a == "--detections-out") cfg.detections_out = val();
  else if (a == "--sketches-out") cfg.sketches_out = val();
  else if (a == "--sketches-every") cfg.sketches_every_ns = parse_duration_ns(val());
  else if (a == "--sketch-clients") {
    std::string v = val();
    if (!parse_sketch_clients(v, cfg.sketch_clients))
      throw ConfigError("--sketch-clients is address, pseudonym or none, not '" + v + "'");
  }
  else if (a == "--app") cfg.apps.push_back(val());
  else if (a == "--ti-export") cfg.ti_export = val();
  else if (a == "--privacy-k") cfg.privacy_k = flag_num<uint32_t>(a, val());
  else if (a == "--ti-export-every") cfg.ti_export_every_ns = parse_duration_ns(val());
  else if (a == "--producer") cfg.producer = val();
  else if (a == "--pseudonym-secret") cfg.pseudonym_secret_file = val();
  else if (a == "--pseudonym-rotate") cfg.pseudonym_rotate_ns = parse_duration_ns(val());
  else if (a == "--rules") cfg.rules = val();
  else if (a == "--rules-cache") cfg.rules_cache = val();
  else if (a == "--ti") cfg.ti.push_back(val());
  else if (a == "--partner") cfg.partners.push_back(val());
  else if (a == "--ti-weight") add_ti_weight(val(), cfg.ti_weights);
  else if (a == "--rotate-bytes") cfg.rotate_bytes = flag_num<uint64_t>(a, val());
  else if (a == "--rotate-interval") cfg.rotate_interval_ns = parse_duration_ns(val());
  else if (a == "--payload-out") cfg.payload_out = true;
  else if (a == "--summary-json") cfg.summary_json = val();
  else if (a == "--sampling") cfg.core.sampling = parse_sampling_spec(val());
  else if (a == "--filter") cfg.filter = val();
  else if (a == "--capacity") {
    uint64_t c = flag_num<uint64_t>(a, val());
    if (c == 0 || c > (1ull << 31)) throw ConfigError("--capacity must be 1 .. 2^31");
    t.capacity = uint32_t(c);
  } else if (a == "--payload-bytes") {
    unsigned n = flag_num<unsigned>(a, val());
    if (n > FlowTable::kMaxPayload) throw ConfigError("--payload-bytes must be 0 .. 256");
    t.payload_bytes = uint16_t(n);
  } else if (a == "--idle-timeout") t.idle_timeout_ns = parse_duration_ns(val());
  else if (a == "--active-timeout") t.active_timeout_ns = parse_duration_ns(val());
  else if (a == "--tcp-end-timeout") t.tcp_end_timeout_ns = parse_duration_ns(val());
  else if (a == "--full-policy") t.full_policy = parse_full_policy(val());
  else if (a == "--hash-seed") {
    t.hash_seed = flag_num<uint64_t>(a, val());
    cfg.hash_seed_set = true;
  } else if (a == "--zone") cfg.core.key.use_zone = true;
  else if (a == "--decap-gtpu") cfg.core.parse.decap_gtpu = true;
  else if (a == "--no-decap") {
    cfg.core.parse.decap_gre = cfg.core.parse.decap_vxlan = cfg.core.parse.decap_ipip = false;
  } else {
    return false;
  }
  return true;
}

}  // namespace ls
