#include "dataplane/capture_input.h"

#include <fcntl.h>
#include <lzma.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <algorithm>
#include <cerrno>
#include <condition_variable>
#include <cstring>
#include <initializer_list>
#include <mutex>
#include <stdexcept>
#include <thread>

namespace ls {

ssize_t CaptureInput::read(uint8_t* buf, size_t n) {
  if (!n) return 0;
  if (!back_.empty()) {
    size_t k = std::min(n, back_.size());
    std::memcpy(buf, back_.data(), k);
    back_.erase(0, k);
    consumed_ += k;
    return ssize_t(k);
  }
  ssize_t r = read_some(buf, n);
  if (r > 0) consumed_ += uint64_t(r);
  return r;
}

void CaptureInput::unread(const uint8_t* p, size_t n) {
  back_.insert(0, reinterpret_cast<const char*>(p), n);
  consumed_ -= n;
}

namespace {

// A file descriptor: pread from a regular file (its offset stays free for libpcap's own
// stdio stream on a dup), read from anything else.
class FdInput final : public CaptureInput {
 public:
  FdInput(int fd, bool regular) : fd_(fd), regular_(regular) {}
  ~FdInput() override { ::close(fd_); }

 protected:
  ssize_t read_some(uint8_t* buf, size_t n) override {
    for (;;) {
      ssize_t r = regular_ ? pread(fd_, buf, n, off_t(off_)) : ::read(fd_, buf, n);
      if (r >= 0) {
        off_ += uint64_t(r);
        return r;
      }
      if (errno == EINTR) continue;
      err_ = std::strerror(errno);
      return -1;
    }
  }

 private:
  int fd_;
  bool regular_;
  uint64_t off_ = 0;
};

// Compressed bytes are read from `raw_` in chunks of up to this size (a small file's
// size: a fresh megabyte per open is most of the work of opening a small file).
constexpr size_t kChunk = 256u << 10;

// Decoders decode into their own buffer of a fixed size and hand bytes out from it, so
// the library sees the same calls whatever sizes the reader asks for. (zstd drops what a
// call decoded before a damaged block: decoding straight into the reader's 1 MB or its
// 20 bytes lost different amounts, and libpcap's reader and ours disagreed — found by the
// pcap fuzz target.)
class Decoder : public CaptureInput {
 protected:
  Decoder(std::unique_ptr<CaptureInput> raw, size_t chunk)
      : raw_(std::move(raw)), chunk_(new uint8_t[chunk]), chunk_size_(chunk), out_(new uint8_t[kOut]) {}
  // Decodes 1 to n bytes into buf; 0 at the end; -1 (err_ set).
  virtual ssize_t decode(uint8_t* buf, size_t n) = 0;
  ssize_t read_some(uint8_t* buf, size_t n) final {
    if (out_pos_ == out_len_) {
      ssize_t r = decode(out_.get(), kOut);
      if (r <= 0) return r;
      out_pos_ = 0;
      out_len_ = size_t(r);
    }
    size_t k = std::min(n, out_len_ - out_pos_);
    std::memcpy(buf, out_.get() + out_pos_, k);
    out_pos_ += k;
    return ssize_t(k);
  }
  // More compressed bytes into chunk_: their count, 0 at the end, -1 (err_ set).
  ssize_t refill() {
    ssize_t r = raw_->read(chunk_.get(), chunk_size_);
    if (r < 0) err_ = raw_->error();
    if (r == 0) eof_ = true;
    return r;
  }
  std::unique_ptr<CaptureInput> raw_;
  std::unique_ptr<uint8_t[]> chunk_;
  size_t chunk_size_;
  bool eof_ = false;

 private:
  static constexpr size_t kOut = 128u << 10;  // ZSTD_DStreamOutSize(): one whole zstd block
  std::unique_ptr<uint8_t[]> out_;
  size_t out_pos_ = 0, out_len_ = 0;
};

// gzip, member after member (`cat a.gz b.gz` is one stream, as gzip -d reads it).
class GzipInput final : public Decoder {
 public:
  GzipInput(std::unique_ptr<CaptureInput> raw, size_t chunk) : Decoder(std::move(raw), chunk) {
    if (inflateInit2(&z_, 16 + MAX_WBITS) != Z_OK) throw std::runtime_error("gzip: cannot start zlib");
  }
  ~GzipInput() override { inflateEnd(&z_); }

 protected:
  ssize_t decode(uint8_t* buf, size_t n) override {
    for (;;) {
      if (z_.avail_in == 0 && !eof_) {
        ssize_t r = refill();
        if (r < 0) return -1;
        z_.next_in = chunk_.get();
        z_.avail_in = uInt(r);
      }
      if (member_done_) {
        if (z_.avail_in == 0) {
          if (eof_) return 0;
          continue;
        }
        inflateReset(&z_);
        member_done_ = false;
      }
      z_.next_out = buf;
      z_.avail_out = uInt(std::min<size_t>(n, 1u << 30));
      int rc = inflate(&z_, Z_NO_FLUSH);
      size_t got = std::min<size_t>(n, 1u << 30) - z_.avail_out;
      if (rc == Z_STREAM_END) member_done_ = true;
      if (got) return ssize_t(got);
      if (rc == Z_BUF_ERROR && z_.avail_in == 0 && eof_) {
        err_ = "gzip data ends early (the file is cut short)";
        return -1;
      }
      if (rc != Z_OK && rc != Z_STREAM_END && rc != Z_BUF_ERROR) {
        err_ = std::string("gzip data is damaged: ") + (z_.msg ? z_.msg : "zlib error " + std::to_string(rc));
        return -1;
      }
    }
  }

 private:
  z_stream z_{};
  bool member_done_ = false;
};

// zstd, frame after frame (skippable frames skipped by the library).
class ZstdInput final : public Decoder {
 public:
  ZstdInput(std::unique_ptr<CaptureInput> raw, size_t chunk) : Decoder(std::move(raw), chunk), d_(ZSTD_createDCtx()) {
    if (!d_) throw std::runtime_error("zstd: cannot start the decoder");
  }
  ~ZstdInput() override { ZSTD_freeDCtx(d_); }

 protected:
  ssize_t decode(uint8_t* buf, size_t n) override {
    for (;;) {
      if (in_.pos == in_.size && !eof_) {
        ssize_t r = refill();
        if (r < 0) return -1;
        in_ = {chunk_.get(), size_t(r), 0};
      }
      ZSTD_outBuffer out{buf, n, 0};
      size_t pos = in_.pos;
      size_t r = ZSTD_decompressStream(d_, &out, &in_);
      if (ZSTD_isError(r)) {
        if (out.pos) return ssize_t(out.pos);
        err_ = std::string("zstd data is damaged: ") + ZSTD_getErrorName(r);
        return -1;
      }
      // 0: a frame ended and was flushed. (A call without input between frames asks for
      // the next header, so only a call that moved something says where we are.)
      if (out.pos || in_.pos != pos) in_frame_ = r != 0;
      if (out.pos) return ssize_t(out.pos);
      // No output, no input left: the end, inside a frame or between frames.
      if (in_.pos == in_.size && eof_) {
        if (in_frame_) {
          err_ = "zstd data ends early (the file is cut short)";
          return -1;
        }
        return 0;
      }
    }
  }

 private:
  ZSTD_DCtx* d_;
  ZSTD_inBuffer in_{nullptr, 0, 0};
  bool in_frame_ = false;
};

// xz (.xz streams, concatenated as xz -d reads them).
class XzInput final : public Decoder {
 public:
  XzInput(std::unique_ptr<CaptureInput> raw, size_t chunk) : Decoder(std::move(raw), chunk) {
    if (lzma_stream_decoder(&s_, UINT64_MAX, LZMA_CONCATENATED) != LZMA_OK)
      throw std::runtime_error("xz: cannot start the decoder");
  }
  ~XzInput() override { lzma_end(&s_); }

 protected:
  ssize_t decode(uint8_t* buf, size_t n) override {
    while (!done_) {
      if (s_.avail_in == 0 && !eof_) {
        ssize_t r = refill();
        if (r < 0) return -1;
        s_.next_in = chunk_.get();
        s_.avail_in = size_t(r);
      }
      s_.next_out = buf;
      s_.avail_out = n;
      lzma_ret rc = lzma_code(&s_, eof_ ? LZMA_FINISH : LZMA_RUN);
      size_t got = n - s_.avail_out;
      if (rc == LZMA_STREAM_END) done_ = true;
      if (got) return ssize_t(got);
      if (rc == LZMA_OK || rc == LZMA_STREAM_END) continue;
      err_ = rc == LZMA_BUF_ERROR ? "xz data ends early (the file is cut short)"
           : rc == LZMA_MEM_ERROR ? "xz: out of memory"
           : rc == LZMA_OPTIONS_ERROR ? "xz data uses options this liblzma does not read"
           : "xz data is damaged (liblzma error " + std::to_string(int(rc)) + ")";
      return -1;
    }
    return 0;
  }

 private:
  lzma_stream s_ = LZMA_STREAM_INIT;
  bool done_ = false;
};

// A compressed file decoded ahead on its own thread, a few blocks at a time, so the
// decoder's time overlaps the pipeline's instead of adding to it (as `zcat | replay -`
// overlaps by its own process). Only over regular files: their reads cannot block
// forever, so the destructor's join cannot hang on a pipe whose writer never closes.
class DecodedAhead final : public CaptureInput {
 public:
  // Blocks of `block` bytes (1 MB; less for a file whose 4× is less).
  DecodedAhead(std::unique_ptr<CaptureInput> in, size_t block) : in_(std::move(in)), block_(block) {
    for (auto& b : blocks_) b.data.reset(new uint8_t[block_]);
    thread_ = std::thread([this] { produce(); });
  }
  ~DecodedAhead() override {
    {
      std::lock_guard g(m_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }

 protected:
  ssize_t read_some(uint8_t* buf, size_t n) override {
    Block& b = blocks_[head_ % kBlocks];
    if (pos_ == 0) {
      std::unique_lock g(m_);
      cv_.wait(g, [&] { return filled_ > head_; });
    }
    if (b.len <= 0) {  // the end, or the decoder's error, comes in order after the data
      if (b.len < 0) err_ = b.err;
      return b.len;
    }
    size_t k = std::min(n, size_t(b.len) - pos_);
    std::memcpy(buf, b.data.get() + pos_, k);
    if ((pos_ += k) == size_t(b.len)) {
      pos_ = 0;
      {
        std::lock_guard g(m_);
        head_++;
      }
      cv_.notify_all();
    }
    return ssize_t(k);
  }

 private:
  static constexpr size_t kBlocks = 4;
  struct Block {
    std::unique_ptr<uint8_t[]> data;
    ssize_t len = 0;  // bytes; 0: the end; -1: err
    std::string err;
  };
  void produce() {
    for (uint64_t i = 0;; i++) {
      {
        std::unique_lock g(m_);
        cv_.wait(g, [&] { return stop_ || i - head_ < kBlocks; });
        if (stop_) return;
      }
      Block& b = blocks_[i % kBlocks];
      b.len = 0;
      ssize_t r = 1;
      while (size_t(b.len) < block_ && (r = in_->read(b.data.get() + b.len, block_ - size_t(b.len))) > 0) b.len += r;
      if (r < 0 && b.len == 0) {
        b.len = -1;
        b.err = in_->error();
      }
      bool last = r <= 0 && b.len <= 0;
      {
        std::lock_guard g(m_);
        filled_ = i + 1;
      }
      cv_.notify_all();
      if (last) return;
      if (r <= 0) {  // data, then the end or an error: that goes in the next block
        std::unique_lock g(m_);
        cv_.wait(g, [&] { return stop_ || i + 1 - head_ < kBlocks; });
        if (stop_) return;
        Block& e = blocks_[(i + 1) % kBlocks];
        e.len = r < 0 ? -1 : 0;
        e.err = r < 0 ? in_->error() : "";
        filled_ = i + 2;
        g.unlock();
        cv_.notify_all();
        return;
      }
    }
  }
  std::unique_ptr<CaptureInput> in_;
  size_t block_;
  Block blocks_[kBlocks];
  std::mutex m_;
  std::condition_variable cv_;
  uint64_t head_ = 0, filled_ = 0;  // blocks taken by the reader / written by the thread
  size_t pos_ = 0;                  // in blocks_[head_ % kBlocks]
  bool stop_ = false;
  std::thread thread_;
};

constexpr uint64_t kDecodeAheadFrom = 1u << 20;  // compressed bytes

// Up to n bytes (fewer only at the end), or -1.
ssize_t read_full(CaptureInput& in, uint8_t* p, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = in.read(p + got, n - got);
    if (r < 0) return -1;
    if (r == 0) break;
    got += size_t(r);
  }
  return ssize_t(got);
}

}  // namespace

const char* compression_of(const uint8_t* m, size_t n) {
  auto is = [&](std::initializer_list<uint8_t> sig) { return n >= sig.size() && std::equal(sig.begin(), sig.end(), m); };
  if (is({0x1f, 0x8b})) return "gzip";
  if (is({0x28, 0xb5, 0x2f, 0xfd})) return "zstd";
  if (is({0xfd, '7', 'z', 'X'})) return "xz";
  if (is({'B', 'Z', 'h'})) return "bzip2";
  if (is({0x04, 0x22, 0x4d, 0x18})) return "lz4";
  if (is({'P', 'K', 3, 4})) return "zip";
  return nullptr;
}

OpenedCapture open_capture(const std::string& path) {
  OpenedCapture c;
  bool stdin_ = path == "-";
  int fd = stdin_ ? fcntl(STDIN_FILENO, F_DUPFD_CLOEXEC, 0) : ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw std::runtime_error(path + ": " + std::strerror(errno));
  struct stat st {};
  // Standard input is a stream even when redirected from a file: read from where it stands.
  if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && !stdin_) {
    c.regular = true;
    c.size = uint64_t(st.st_size);
  } else if (S_ISDIR(st.st_mode)) {
    ::close(fd);
    throw std::runtime_error(path + ": is a directory");
  }
  c.fd = fd;
  std::unique_ptr<CaptureInput> in = std::make_unique<FdInput>(fd, c.regular);
  auto peek = [&] {
    ssize_t k = read_full(*in, c.magic, sizeof c.magic);
    if (k < 0) throw std::runtime_error(path + ": " + in->error());
    c.magic_len = size_t(k);
    in->unread(c.magic, c.magic_len);
  };
  peek();
  auto refuse = [&](const char* what, const char* tool) {
    throw std::runtime_error(path + ": " + what + "-compressed, which is not read directly: " +
                             (stdin_ ? std::string("pipe it through ") + tool
                                     : std::string(tool) + " " + path + " | linesight replay -"));
  };
  const char* codec = compression_of(c.magic, c.magic_len);
  auto named = [&](const char* n) { return codec && !std::strcmp(codec, n); };
  size_t chunk = c.regular ? std::clamp<uint64_t>(c.size, 4096, kChunk) : kChunk;
  if (named("gzip")) {
    in = std::make_unique<GzipInput>(std::move(in), chunk);
  } else if (named("zstd")) {
    in = std::make_unique<ZstdInput>(std::move(in), chunk);
  } else if (named("xz")) {
    in = std::make_unique<XzInput>(std::move(in), chunk);
  } else if (codec) {
    refuse(codec, !std::strcmp(codec, "zip") ? "unzip -p" : !std::strcmp(codec, "lz4") ? "lz4 -dc" : "bzip2 -dc");
  }
  c.codec = codec;
  if (c.codec) {
    // A thread pays off only where decoding takes longer than starting one (and under
    // the sanitizers a thread's start is most of the cost of opening a small file).
    if (c.regular && c.size >= kDecodeAheadFrom)
      in = std::make_unique<DecodedAhead>(std::move(in), std::clamp<uint64_t>(c.size * 4, 64u << 10, 1u << 20));
    peek();  // the capture's own first bytes: a damaged stream fails here, at open
  }
  c.in = std::move(in);
  return c;
}

FILE* capture_stdio(CaptureInput& in, bool buffered) {
  cookie_io_functions_t io{};
  io.read = [](void* cookie, char* buf, size_t n) -> ssize_t {
    ssize_t r = static_cast<CaptureInput*>(cookie)->read(reinterpret_cast<uint8_t*>(buf), n);
    if (r < 0) errno = EIO;  // the reason stays in CaptureInput::error()
    return r;
  };
  io.close = [](void*) { return 0; };
  FILE* f = fopencookie(&in, "rb", io);
  if (f && !buffered) std::setvbuf(f, nullptr, _IONBF, 0);
  return f;
}

}  // namespace ls
