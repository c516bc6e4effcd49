// linesightctl: talks to a running `linesight run` over its control socket.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

using nlohmann::json;

namespace {

const char* kUsage = R"(usage: linesightctl [--socket PATH] [--json] COMMAND

commands:
  stats                         counters per RX lcore and in total, drops, rings
  sampling                      current sampling setting
  sampling set [--mode M] [--rate N] [--seed S]
                                change sampling live (off, packet, packet_random,
                                flow_hash, sample_hold)
  filter                        the capture filter
  filter set EXPR               change it live, tcpdump syntax ('' passes every packet)
  config                        the running configuration
  collector                     router flow input (run --collect): decoder counters, drops
  shutdown                      flush every flow and stop
  help                          commands the daemon offers
  raw '/path?query' [JSON]      send any command, print the reply

--socket defaults to $LINESIGHT_SOCKET or /run/linesight/linesight.sock.
--json prints the daemon's reply as is (for scripts).
)";

[[noreturn]] void die(const std::string& m, int rc = 2) {
  std::fprintf(stderr, "linesightctl: %s\n", m.c_str());
  std::exit(rc);
}

json call(const std::string& path, const json& req) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof a.sun_path) die(path + ": socket path too long");
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  if (fd < 0 || connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0)
    die(path + ": " + std::strerror(errno) + " (is linesight run up? --socket PATH)");
  std::string line = req.dump() + "\n";
  if (write(fd, line.data(), line.size()) != ssize_t(line.size())) die("write failed");
  std::string in;
  char buf[65536];
  while (in.find('\n') == std::string::npos) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 10000) <= 0) die("no reply within 10 s");
    ssize_t n = read(fd, buf, sizeof buf);
    if (n <= 0) die("connection closed before a reply");
    in.append(buf, size_t(n));
  }
  close(fd);
  try {
    return json::parse(in.substr(0, in.find('\n')));
  } catch (const std::exception& e) {
    die(std::string("bad reply: ") + e.what());
  }
}

std::string num(uint64_t v) {
  char b[32];
  if (v >= 10'000'000'000ull) std::snprintf(b, sizeof b, "%.1fG", double(v) / 1e9);
  else if (v >= 10'000'000ull) std::snprintf(b, sizeof b, "%.1fM", double(v) / 1e6);
  else std::snprintf(b, sizeof b, "%lu", (unsigned long)v);
  return b;
}

uint64_t get(const json& j, const char* k) { return j.contains(k) ? j[k].get<uint64_t>() : 0; }

void print_stats(const json& r) {
  std::printf("uptime %.1f s\n\n", r["uptime_s"].get<double>());
  std::printf("%-6s %6s %10s %12s %12s %10s %10s %10s\n", "lcore", "queues", "flows", "packets",
              "bytes", "dropped", "ring_full", "pool_empty");
  for (auto& c : r["rx_lcores"]) {
    uint64_t drops = 0;
    for (auto& [k, v] : c["counters"].items())
      if (k == "table_full_drop" || k.find("truncated") == 0 || k.find("bad_") == 0 ||
          k == "non_ip_ethertype" || k == "sampled_out")
        drops += v.get<uint64_t>();
    std::printf("%-6u %6lu %10s %12s %12s %10s %10s %10s\n", c["lcore"].get<unsigned>(),
                (unsigned long)c["queues"].get<uint64_t>(), num(get(c, "flows")).c_str(),
                num(get(c["counters"], "packets")).c_str(), num(get(c["counters"], "bytes")).c_str(),
                num(drops).c_str(), num(get(c, "record_ring_full")).c_str(),
                num(get(c, "record_pool_empty")).c_str());
  }
  const json& t = r["total"];
  std::printf("\ntotal: %s packets, %s bytes, %s flows created, %s records\n",
              num(get(t, "packets")).c_str(), num(get(t, "bytes")).c_str(),
              num(get(t, "flows_created")).c_str(), num(get(t, "records_emitted")).c_str());
  if (!r["drops"].empty()) {
    std::printf("drops by reason:\n");
    for (auto& [k, v] : r["drops"].items()) std::printf("  %-28s %s\n", k.c_str(), num(v.get<uint64_t>()).c_str());
  }
  std::printf("rings:\n");
  for (auto& g : r["rings"])
    std::printf("  %-16s %8lu / %lu\n", g["name"].get<std::string>().c_str(),
                (unsigned long)g["count"].get<uint64_t>(), (unsigned long)g["size"].get<uint64_t>());
}

}  // namespace

int main(int argc, char** argv) {
  const char* env = std::getenv("LINESIGHT_SOCKET");
  std::string sock = env ? env : "/run/linesight/linesight.sock";
  bool as_json = false;
  std::vector<std::string> args;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    if (a == "--socket") {
      if (++i >= argc) die("--socket needs a path");
      sock = argv[i];
    } else if (a == "--json") {
      as_json = true;
    } else if (a == "-h" || a == "--help") {
      std::fputs(kUsage, stdout);
      return 0;
    } else {
      args.push_back(a);
    }
  }
  if (args.empty()) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  json req;
  const std::string& c = args[0];
  if (c == "stats") req = {{"cmd", "/stats"}};
  else if (c == "config") req = {{"cmd", "/config"}};
  else if (c == "collector") req = {{"cmd", "/collector"}};
  else if (c == "shutdown") req = {{"cmd", "/shutdown"}};
  else if (c == "help") req = {{"cmd", "/help"}};
  else if (c == "sampling") {
    req = {{"cmd", "/sampling"}};
    if (args.size() > 1) {
      if (args[1] != "set") die("sampling: expected 'set', got '" + args[1] + "'");
      json set = json::object();
      for (size_t i = 2; i < args.size(); i++) {
        if (i + 1 >= args.size()) die(args[i] + " needs a value");
        const std::string& v = args[i + 1];
        char* end;
        if (args[i] == "--mode") set["mode"] = v;
        else if (args[i] == "--rate" || args[i] == "--seed") {
          unsigned long long x = std::strtoull(v.c_str(), &end, 10);
          if (*end || v.empty()) die(args[i] + ": '" + v + "' is not a number");
          set[args[i].substr(2)] = x;
        } else die("sampling set: unknown option " + args[i]);
        i++;
      }
      if (set.empty()) die("sampling set: give --mode, --rate and/or --seed");
      req["set"] = set;
    }
  } else if (c == "filter") {
    req = {{"cmd", "/filter"}};
    if (args.size() > 1) {
      if (args[1] != "set") die("filter: expected 'set', got '" + args[1] + "'");
      if (args.size() != 3) die("filter set: give one expression, quoted (e.g. 'tcp port 443'; '' for none)");
      req["set"] = args[2];
    }
  } else if (c == "raw") {
    if (args.size() < 2) die("raw needs a command path");
    req = args.size() > 2 ? json::parse(args[2], nullptr, false) : json::object();
    if (req.is_discarded() || !req.is_object()) die("raw: the request body must be a JSON object");
    req["cmd"] = args[1];
  } else {
    die("unknown command '" + c + "' (see --help)");
  }
  json r = call(sock, req);
  if (as_json || c == "raw") {
    std::puts(r.dump().c_str());
    return r.value("ok", false) ? 0 : 1;
  }
  if (!r.value("ok", false)) die(r.value("error", std::string("error")), 1);
  const json& res = r["result"];
  if (c == "stats") print_stats(res);
  else if (c == "sampling")
    std::printf("sampling: %s 1:%lu seed %lu\n", res["mode"].get<std::string>().c_str(),
                (unsigned long)res["rate"].get<uint64_t>(), (unsigned long)res["seed"].get<uint64_t>());
  else if (c == "filter") {
    std::string f = res["filter"].get<std::string>(), no = res["unusable_link_types"].get<std::string>();
    std::printf("filter: %s\n", f.empty() ? "none (every packet)" : f.c_str());
    if (!f.empty()) std::printf("engine: %s\n", res.value("engine", "").c_str());
    if (!no.empty()) std::printf("matches no packet of link types: %s\n", no.c_str());
  } else if (c == "help")
    for (auto& [k, v] : res.items()) std::printf("%-12s %s\n", k.c_str(), v.get<std::string>().c_str());
  else std::puts(res.dump(2).c_str());
  return 0;
}
