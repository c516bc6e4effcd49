// Prometheus text exposition (format 0.0.4) over a minimal HTTP/1.0 server on the
// control core: GET /metrics answers, anything else is 404. Non-blocking, polled from the
// control loop; a slow client cannot hold more than one reply.
#pragma once
#include <functional>
#include <string>
#include <vector>

namespace ls {

class MetricsServer {
 public:
  // listen on "HOST:PORT"; `render` builds the exposition text on demand.
  MetricsServer(const std::string& addr, std::function<std::string()> render);
  ~MetricsServer();
  void poll();  // non-blocking
  uint16_t port() const { return port_; }

 private:
  struct Client {
    int fd;
    std::string in, out;
    bool answered = false;
  };
  int fd_ = -1;
  uint16_t port_ = 0;
  std::function<std::string()> render_;
  std::vector<Client> clients_;
};

// Helpers to write exposition lines.
class Exposition {
 public:
  void family(const std::string& name, const char* type, const std::string& help);
  void sample(const std::string& name, const std::string& labels, double v);
  std::string str() && { return std::move(out_); }

 private:
  std::string out_;
};

}  // namespace ls
