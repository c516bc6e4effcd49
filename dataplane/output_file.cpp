#include "dataplane/output_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>

namespace ls {

namespace {
constexpr size_t kFlushAt = 16 << 10;  // a write(2) per 16 KB while the file takes it
}

SpoolFile::SpoolFile(const std::string& path, size_t max_spool) : path_(path), max_(max_spool) {
  fd_ = path == "-" ? 1 : ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd_ < 0) throw std::runtime_error(path + ": " + std::strerror(errno));
  // A pipe or FIFO whose reader stalls must not stall us: EAGAIN spools like ENOSPC.
  // (Not stdout, whose open file description the terminal shares.)
  if (fd_ > 2) ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) | O_NONBLOCK);
  interactive_ = ::isatty(fd_);  // someone is watching: each line at once
}

SpoolFile::~SpoolFile() {
  if (fd_ > 1) ::close(fd_);
}

bool SpoolFile::drain() {
  while (off_ < buf_.size()) {
    // stdout goes through stdio: flow records may share it, and must not be cut mid-line.
    ssize_t n = fd_ == 1 ? ssize_t(std::fwrite(buf_.data() + off_, 1, buf_.size() - off_, stdout))
                         : ::write(fd_, buf_.data() + off_, buf_.size() - off_);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      st_.write_errors++;
      st_.last_errno = n < 0 ? errno : ENOSPC;
      failing_ = true;
      return false;
    }
    off_ += size_t(n);
  }
  buf_.clear();
  off_ = 0;
  failing_ = false;
  return true;
}

void SpoolFile::write(std::string_view line) {
  if (spooled() + line.size() > max_) {
    // Keep what is queued, in order; count the lines that do not fit.
    st_.dropped_lines += uint64_t(std::count(line.begin(), line.end(), '\n'));
    return;
  }
  if (off_ > (1u << 20) && off_ > buf_.size() / 2) {  // reclaim the written head
    buf_.erase(0, off_);
    off_ = 0;
  }
  buf_.append(line);
  st_.lines += uint64_t(std::count(line.begin(), line.end(), '\n'));
  st_.spooled_peak = std::max<uint64_t>(st_.spooled_peak, spooled());
  // While the file refuses, retry only on tick(): not a failing syscall per line.
  if (!failing_ && (spooled() >= kFlushAt || interactive_)) drain();
}

void SpoolFile::tick() {
  if (spooled()) drain();
  if (fd_ == 1) std::fflush(stdout);
}

void SpoolFile::close(uint64_t wait_ms) {
  if (fd_ < 0) return;
  bool ok = drain();
  // A reader that is slow (or a disk being cleaned) gets a bounded grace period.
  for (uint64_t waited = 0; !ok && waited < wait_ms; waited += 50) {
    ::usleep(50'000);
    ok = drain();
  }
  if (fd_ == 1 && std::fflush(stdout) != 0 && ok) {
    ok = false;
    st_.last_errno = errno;
  }
  if (fd_ > 1 && ::close(fd_) != 0 && ok) {
    ok = false;
    st_.last_errno = errno;
  }
  fd_ = -1;
  if (!ok || st_.dropped_lines)
    throw std::runtime_error(path_ + ": write failed (" + std::strerror(st_.last_errno) + "): " +
                             std::to_string(spooled()) + " bytes still spooled, " +
                             std::to_string(st_.dropped_lines) + " lines dropped with the spool full");
}

}  // namespace ls
