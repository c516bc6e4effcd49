#include "ctrl/ctl_server.h"

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

namespace ls {

CtlServer::CtlServer(const std::string& path, unsigned mode) : path_(path) {
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  if (path.size() >= sizeof a.sun_path) throw std::runtime_error(path + ": socket path too long");
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  std::error_code ec;
  auto dir = std::filesystem::path(path).parent_path();
  if (!dir.empty()) std::filesystem::create_directories(dir, ec);
  fd_ = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd_ < 0) throw std::runtime_error(std::string("control socket: ") + std::strerror(errno));
  ::unlink(path.c_str());  // a stale socket from a previous run
  // The mode is set through umask so the socket never exists with wider permissions.
  mode_t old = umask(mode_t(~mode & 0777));
  int rc = bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
  umask(old);
  if (rc != 0 || listen(fd_, 16) != 0) {
    std::string e = std::strerror(errno);
    ::close(fd_);
    throw std::runtime_error(path + ": " + e);
  }
  add("/help", "list commands with their help", [this](const CtlRequest&) {
    nlohmann::json j = nlohmann::json::object();
    for (auto& [p, c] : cmds_) j[p] = c.first;
    return j;
  });
}

CtlServer::~CtlServer() {
  for (auto& c : clients_) ::close(c.fd);
  if (fd_ >= 0) {
    ::close(fd_);
    ::unlink(path_.c_str());
  }
}

void CtlServer::add(const std::string& path, const std::string& help, Handler h) {
  cmds_[path] = {help, std::move(h)};
}

std::string CtlServer::handle_line(const std::string& line) {
  stats.requests++;
  nlohmann::json reply;
  try {
    CtlRequest r;
    try {
      r.body = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      throw CtlError(std::string("malformed JSON: ") + e.what());
    }
    if (!r.body.is_object() || !r.body.contains("cmd") || !r.body["cmd"].is_string())
      throw CtlError("request must be an object with a string \"cmd\", e.g. {\"cmd\":\"/help\"}");
    std::string cmd = r.body["cmd"];
    size_t q = cmd.find('?');
    r.path = cmd.substr(0, q);
    if (q != std::string::npos) {
      std::string qs = cmd.substr(q + 1);
      size_t p = 0;
      while (p <= qs.size()) {
        size_t amp = qs.find('&', p);
        std::string kv = qs.substr(p, amp == std::string::npos ? std::string::npos : amp - p);
        size_t eq = kv.find('=');
        if (!kv.empty()) r.query[kv.substr(0, eq)] = eq == std::string::npos ? "" : kv.substr(eq + 1);
        if (amp == std::string::npos) break;
        p = amp + 1;
      }
    }
    auto it = cmds_.find(r.path);
    if (it == cmds_.end()) throw CtlError("unknown command " + r.path + " (try /help)");
    reply = {{"ok", true}, {"result", it->second.second(r)}};
  } catch (const std::exception& e) {
    stats.errors++;
    reply = {{"ok", false}, {"error", e.what()}};
  }
  // Error texts quote the request, which may not be UTF-8: replace such bytes (a strict
  // dump would throw and take the daemon down). Found by tests/fuzz/fuzz_ctl.
  return reply.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) + "\n";
}

void CtlServer::close_client(size_t i) {
  ::close(clients_[i].fd);
  clients_.erase(clients_.begin() + long(i));
}

void CtlServer::poll(int timeout_ms) {
  std::vector<pollfd> fds;
  fds.push_back({fd_, POLLIN, 0});
  for (auto& c : clients_) fds.push_back({c.fd, short(POLLIN | (c.out.empty() ? 0 : POLLOUT)), 0});
  if (more_) timeout_ms = 0;  // requests already buffered: do not wait
  more_ = false;
  if (::poll(fds.data(), fds.size(), timeout_ms) < 0) return;
  if (fds[0].revents & POLLIN) {
    for (;;) {
      int c = accept4(fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (c < 0) break;
      if (clients_.size() >= kMaxClients) {
        ::close(c);
        stats.clients_dropped++;
        continue;
      }
      clients_.push_back({c, {}, {}});
    }
  }
  // Walk backwards so closing a client does not shift the ones not yet visited.
  for (size_t k = fds.size() - 1; k >= 1; k--) {
    size_t i = k - 1;
    if (i >= clients_.size()) continue;
    Client& c = clients_[i];
    short ev = fds[k].revents;
    bool drop = ev & (POLLERR | POLLNVAL);
    if (!drop && (ev & (POLLIN | POLLHUP))) {
      char buf[8192];
      // Buffered input is bounded too: beyond it, the kernel's socket buffer holds the
      // client back.
      while (c.in.size() < kMaxBuffered) {
        ssize_t n = ::read(c.fd, buf, sizeof buf);
        if (n > 0) {
          c.in.append(buf, size_t(n));
          if (c.in.size() > kMaxRequest && c.in.find('\n') == std::string::npos) {
            stats.oversized++;
            c.out += "{\"ok\":false,\"error\":\"request longer than 65536 bytes\"}\n";
            c.in.clear();
            // MSG_NOSIGNAL: a client gone meanwhile must not SIGPIPE the daemon.
            ::send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL);
            drop = true;
            break;
          }
          continue;
        }
        if (n == 0) drop = c.out.empty() && c.in.find('\n') == std::string::npos;
        break;
      }
    }
    // Bounded work per client per call, so a client pipelining thousands of requests
    // cannot starve the control loop (records, other clients); the rest waits.
    size_t nl;
    for (int budget = kRequestsPerPoll;
         !drop && budget > 0 && (nl = c.in.find('\n')) != std::string::npos; budget--) {
      std::string line = c.in.substr(0, nl);
      c.in.erase(0, nl + 1);
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (!line.empty()) c.out += handle_line(line);
      if (c.out.size() > kMaxPending) {
        stats.clients_dropped++;
        drop = true;
      }
    }
    if (!drop && c.in.find('\n') != std::string::npos) more_ = true;
    if (!drop && !c.out.empty()) {
      ssize_t n = ::send(c.fd, c.out.data(), c.out.size(), MSG_NOSIGNAL);  // EPIPE, never SIGPIPE
      if (n > 0) c.out.erase(0, size_t(n));
      else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) drop = true;
      // A client that never reads cannot make us hold unbounded replies.
      if (c.out.size() > kMaxPending) {
        stats.clients_dropped++;
        drop = true;
      }
    }
    if (drop) close_client(i);
  }
}

}  // namespace ls
