// Text outputs (CSV, JSON lines) whose failed writes never pass unnoticed.
#pragma once
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <string>
#include <string_view>

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

// Writes `path` whole or not at all: body(FILE*) writes PATH.tmp, renamed over PATH only
// when body returned true and the close succeeded, so a reader (a reload, a merge) never
// sees half a file. Otherwise PATH is untouched, PATH.tmp removed, and Error thrown
// naming the path and errno's reason.
template <class Error = std::runtime_error, class Body>
void write_replacing(const std::string& path, Body&& body) {
  std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw Error(path + ": " + std::strerror(errno));
  bool ok = body(f);
  int err = ok ? 0 : errno;
  if (std::fclose(f) != 0 && ok) {
    ok = false;
    err = errno;
  }
  if (ok && std::rename(tmp.c_str(), path.c_str()) != 0) {
    ok = false;
    err = errno;
  }
  if (!ok) {
    std::remove(tmp.c_str());
    throw Error(path + ": " + std::strerror(err ? err : EIO));
  }
}

// Throws Error when write_replacing(path) could not even start (no directory, no
// permission): refused when a run starts, not after hours of traffic.
template <class Error = std::runtime_error>
void check_replaceable(const std::string& path) {
  std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) throw Error(path + ": " + std::strerror(errno));
  std::fclose(f);
  std::remove(tmp.c_str());
}

}  // namespace ls

namespace ls {

// An append-only line output that survives a full disk or a stalled reader (the design:
// "a full export queue is counted and, for detections, spooled"). Lines are written with
// write(2) from our own buffer; what the file does not take (ENOSPC, EAGAIN, EIO…) stays
// in a bounded spool and is retried on the next write and on tick(), so nothing is lost
// while the fault lasts and the spool fits; past `max_spool` bytes new lines are dropped
// and counted. Bytes reach the file in order: a line cut by a full disk is completed
// when space returns.
class SpoolFile {
 public:
  struct Stats {
    uint64_t lines = 0;          // accepted
    uint64_t write_errors = 0;   // failed write(2) calls (the fault, counted once per try)
    uint64_t dropped_lines = 0;  // the spool was full
    uint64_t spooled_peak = 0;   // bytes
    int last_errno = 0;
  };
  // "-" = stdout. Throws naming the path when it cannot be opened.
  explicit SpoolFile(const std::string& path, size_t max_spool = size_t(64) << 20);
  ~SpoolFile();
  SpoolFile(const SpoolFile&) = delete;
  SpoolFile& operator=(const SpoolFile&) = delete;

  void write(std::string_view line);  // one or more complete lines
  void tick();                        // retry the spool, flush the buffer
  // Retries for up to `wait_ms`, then closes; throws naming the file when bytes stayed
  // unwritten or lines were dropped.
  void close(uint64_t wait_ms = 0);
  size_t spooled() const { return buf_.size() - off_; }
  const Stats& stats() const { return st_; }
  const std::string& path() const { return path_; }

 private:
  bool drain();  // true when everything went out
  std::string path_;
  int fd_ = -1;
  std::string buf_;
  size_t off_ = 0;  // buf_[off_..] is not yet written
  size_t max_;
  bool failing_ = false;
  bool interactive_ = false;
  Stats st_;
};

}  // namespace ls
