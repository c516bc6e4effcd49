// Control-socket request parser: one request line of any bytes gets a reply line.
#include <unistd.h>

#include <cstdint>
#include <string>

#include "ctrl/ctl_server.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* d, size_t n) {
  static ls::CtlServer* s = [] {
    auto* c = new ls::CtlServer("/dev/shm/ls-fuzz-ctl-" + std::to_string(getpid()) + ".sock", 0600);
    c->add("/echo", "echo", [](const ls::CtlRequest& r) { return nlohmann::json(r.query); });
    return c;
  }();
  std::string reply = s->handle_line(std::string(reinterpret_cast<const char*>(d), n));
  if (reply.empty() || reply.back() != '\n') __builtin_trap();  // every request is answered
  return 0;
}
