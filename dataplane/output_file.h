// Closing a text output (CSV, JSON lines) so that no failed write goes unnoticed.
#pragma once
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>

namespace ls {

// Flushes and closes `f` (stdout is only flushed) and sets it to null; throws naming
// `path` when this or any earlier write (`bad`) failed: a full disk must not pass silently.
inline void close_output(FILE*& f, bool bad, const std::string& path) {
  if (!f) return;
  bad = bad || std::fflush(f) != 0;
  if (f != stdout && std::fclose(f) != 0) bad = true;
  f = nullptr;
  if (bad) throw std::runtime_error(path + ": write failed: " + std::strerror(errno));
}

}  // namespace ls
