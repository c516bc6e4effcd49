#include "ctrl/metrics_server.h"

#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <stdexcept>

#include "ctrl/net_listen.h"

namespace ls {

MetricsServer::MetricsServer(const std::string& addr, std::function<std::string()> render)
    : render_(std::move(render)) {
  fd_ = listen_socket(addr, SOCK_STREAM, "metrics address");
  sockaddr_storage ss{};
  socklen_t len = sizeof ss;
  getsockname(fd_, reinterpret_cast<sockaddr*>(&ss), &len);
  port_ = ntohs(ss.ss_family == AF_INET6 ? reinterpret_cast<sockaddr_in6*>(&ss)->sin6_port
                                         : reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
}

MetricsServer::~MetricsServer() {
  for (auto& c : clients_) close(c.fd);
  if (fd_ >= 0) close(fd_);
}

void MetricsServer::poll() {
  for (;;) {
    int c = accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (c < 0) break;
    if (clients_.size() >= 32) {
      close(c);
      continue;
    }
    clients_.push_back({c, {}, {}});
  }
  for (size_t i = clients_.size(); i-- > 0;) {
    Client& c = clients_[i];
    bool done = false;
    char buf[4096];
    ssize_t n;
    while (!c.answered && (n = read(c.fd, buf, sizeof buf)) > 0) c.in.append(buf, size_t(n));
    if (!c.answered && c.in.find("\r\n\r\n") == std::string::npos && c.in.find("\n\n") == std::string::npos) {
      if (c.in.size() > 8192) done = true;  // not HTTP
    } else if (!c.answered) {
      c.answered = true;
      bool metrics = c.in.rfind("GET /metrics", 0) == 0;
      std::string body = metrics ? render_() : "try /metrics\n";
      c.out = std::string(metrics ? "HTTP/1.0 200 OK\r\n" : "HTTP/1.0 404 Not Found\r\n") +
              "Content-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: " +
              std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
    }
    if (c.answered && !c.out.empty()) {
      n = send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL);  // a closed scraper: EPIPE, not SIGPIPE
      if (n > 0) c.out.erase(0, size_t(n));
      else if (n < 0 && errno != EAGAIN) done = true;
    }
    if (c.answered && c.out.empty()) done = true;
    if (done) {
      close(c.fd);
      clients_.erase(clients_.begin() + long(i));
    }
  }
}

void Exposition::family(const std::string& name, const char* type, const std::string& help) {
  out_ += "# HELP " + name + " " + help + "\n# TYPE " + name + " " + type + "\n";
}

void Exposition::sample(const std::string& name, const std::string& labels, double v) {
  out_ += name;
  if (!labels.empty()) out_ += "{" + labels + "}";
  char b[64];
  if (v == std::floor(v) && std::fabs(v) < 1e15) std::snprintf(b, sizeof b, " %.0f\n", v);
  else std::snprintf(b, sizeof b, " %.6g\n", v);
  out_ += b;
}

}  // namespace ls
