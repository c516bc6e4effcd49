// A bound, non-blocking socket for "HOST:PORT" ("0.0.0.0:2055", "[::]:4739", ":9100"),
// listening when it is a stream socket. Shared by the collector and the metrics server.
#pragma once
#include <string>

namespace ls {

// type: SOCK_DGRAM or SOCK_STREAM. Throws std::runtime_error "WHAT ADDR: reason".
int listen_socket(const std::string& addr, int type, const std::string& what);

}  // namespace ls
