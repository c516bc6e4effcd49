// Where a capture's bytes come from: a regular file, a pipe or standard input ("-"),
// and through gzip, zstd or xz when they start with that format's magic — backbone trace
// archives (MAWI, CAIDA) are stored compressed, and captures are piped from tcpdump or
// a remote host. The pcap source (pcap_source.cpp) reads every one of them alike.
#pragma once
#include <sys/types.h>

#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>

namespace ls {

// A sequential byte stream. read() hands out bytes in order; unread() puts bytes back
// in front (the magic numbers peeked at open).
class CaptureInput {
 public:
  virtual ~CaptureInput() = default;
  // 1 to n bytes; 0 at the end; -1 on an error (error() says what).
  ssize_t read(uint8_t* buf, size_t n);
  void unread(const uint8_t* p, size_t n);
  const std::string& error() const { return err_; }
  uint64_t consumed() const { return consumed_; }  // bytes read() handed out, less those unread

 protected:
  virtual ssize_t read_some(uint8_t* buf, size_t n) = 0;  // as read(), n ≥ 1
  std::string err_;

 private:
  std::string back_;
  uint64_t consumed_ = 0;
};

struct OpenedCapture {
  int fd = -1;                       // owned by `in` (closed with it)
  bool regular = false;              // a regular file, read with pread
  uint64_t size = 0;                 // of the file (regular files), compressed or not
  const char* codec = nullptr;       // "gzip", "zstd", "xz"; null: not compressed
  uint8_t magic[4] = {};             // the capture's first bytes, after decompression
  size_t magic_len = 0;              // < 4 only for a capture shorter than that
  std::unique_ptr<CaptureInput> in;  // positioned at the capture's first byte
};

// The compression a capture's first bytes announce: "gzip", "zstd", "xz" (read here),
// "bzip2", "lz4", "zip" (refused), or null.
const char* compression_of(const uint8_t* magic, size_t n);

// Opens PATH ("-": standard input) and looks at its first bytes. Throws
// std::runtime_error("PATH: reason") when it cannot be opened or read, and for the
// compressed formats not read here (bzip2, lz4, zip), naming how to pipe them in.
OpenedCapture open_capture(const std::string& path);

// A stdio stream over `in` for libpcap (fopencookie; `in` must outlive it and is not
// closed by fclose). Unbuffered streams hand libpcap exactly the bytes it asks for, so
// after its file header the rest is still in `in`.
FILE* capture_stdio(CaptureInput& in, bool buffered);

}  // namespace ls
