// Control socket: a Unix stream socket speaking JSON lines. A request is one line,
// {"cmd": "/path?query", ...}; the reply is one line, {"ok": true, "result": ...} or
// {"ok": false, "error": "..."}. Commands are registered as path + help + callback, as in
// DPDK telemetry. Served from the control core's loop with poll(); never blocks it.
#pragma once
#include <functional>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace ls {

struct CtlRequest {
  std::string path;                          // "/flows/top"
  std::map<std::string, std::string> query;  // from "?by=bytes&n=20"
  nlohmann::json body;                       // the whole request object
};

struct CtlError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class CtlServer {
 public:
  using Handler = std::function<nlohmann::json(const CtlRequest&)>;
  static constexpr size_t kMaxRequest = 64 * 1024;   // longer lines are refused
  static constexpr size_t kMaxPending = 4u << 20;    // unread replies before we drop a client
  static constexpr size_t kMaxClients = 64;
  static constexpr int kRequestsPerPoll = 8;         // per client per poll() call
  static constexpr size_t kMaxBuffered = 256 * 1024;  // unprocessed request bytes per client

  // Creates the socket (removing a stale one), mode applied before listen().
  CtlServer(const std::string& path, unsigned mode);
  ~CtlServer();
  void add(const std::string& path, const std::string& help, Handler h);
  // Accepts, reads, answers; waits at most timeout_ms for activity.
  void poll(int timeout_ms);
  // Answers one request line (also used by tests without a socket).
  std::string handle_line(const std::string& line);

  struct Stats {
    uint64_t requests = 0, errors = 0, clients_dropped = 0, oversized = 0;
  } stats;

 private:
  struct Client {
    int fd;
    std::string in, out;
  };
  void close_client(size_t i);
  bool more_ = false;  // a client has buffered requests left over
  int fd_ = -1;
  std::string path_;
  std::vector<Client> clients_;
  std::map<std::string, std::pair<std::string, Handler>> cmds_;
};

}  // namespace ls
