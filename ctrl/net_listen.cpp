#include "ctrl/net_listen.h"

#include <netdb.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace ls {

int listen_socket(const std::string& addr, int type, const std::string& what) {
  auto fail = [&](const std::string& why) { return std::runtime_error(what + " " + addr + ": " + why); };
  auto colon = addr.rfind(':');
  if (colon == std::string::npos) throw fail("expected HOST:PORT");
  std::string host = addr.substr(0, colon), port = addr.substr(colon + 1);
  if (host.size() > 1 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  // getaddrinfo takes "99999" and binds 34463 (the number modulo 65536): check it here.
  if (port.empty() || port.size() > 5 || port.find_first_not_of("0123456789") != std::string::npos ||
      std::stoul(port) > 65535)
    throw fail("the port must be a number 0 .. 65535");
  addrinfo hints{}, *res = nullptr;
  hints.ai_socktype = type;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &res);
  if (rc) throw fail(gai_strerror(rc));
  int fd = socket(res->ai_family, type | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  int one = 1;
  if (fd >= 0 && type == SOCK_STREAM) setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) != 0 || (type == SOCK_STREAM && listen(fd, 16) != 0)) {
    std::string e = std::strerror(errno);
    freeaddrinfo(res);
    if (fd >= 0) close(fd);
    throw fail(e);
  }
  freeaddrinfo(res);
  return fd;
}

}  // namespace ls
