#include <pcap/pcap.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <stdexcept>

#include "dataplane/capture_input.h"
#include "dataplane/source.h"

namespace ls {

bool link_type_from_dlt(int dlt, LinkType& out) {
  switch (dlt) {
    case DLT_EN10MB: out = LinkType::ETHERNET; return true;
    case DLT_RAW:
#ifdef DLT_RAW_BSD
    case 14:
#endif
      out = LinkType::RAW; return true;
    case DLT_LINUX_SLL: out = LinkType::LINUX_SLL; return true;
#ifdef DLT_LINUX_SLL2
    case DLT_LINUX_SLL2: out = LinkType::LINUX_SLL2; return true;
#endif
    case DLT_IPV4: out = LinkType::IPV4; return true;
    case DLT_IPV6: out = LinkType::IPV6; return true;
    case DLT_NULL:
    case DLT_LOOP: out = LinkType::NULL_LOOP; return true;
    default: return false;
  }
}

namespace {

// Classic pcap records (24-byte file header, 16-byte record headers) read with one
// pread per megabyte instead of libpcap's pcap_next_ex: that costs two stdio calls and a
// copy into its own buffer per record, the largest single cost of a replay
// (docs/performance.md). libpcap still opens every file — it validates the header, maps
// the link type and adjusts the snapshot length, and we take those from it — and reads
// pcapng, Kuznetzov's patched records and anything that is not a regular file. Record
// handling follows libpcap's savefile reader (sf-pcap.c), checked against it packet for
// packet on every capture of the test data and by the pcap fuzz target.
class PcapRecords {
 public:
  static constexpr uint32_t kMaxCaplen = 262144;  // libpcap's limit for our link types
  static constexpr size_t kHeader = 16, kFileHeader = 24;

  // `in` stands after the file header; `size_hint`: its bytes, if known (sizes the buffer).
  PcapRecords(CaptureInput& in, uint32_t magic, pcap_t* p, uint64_t size_hint) : in_(in) {
    swapped_ = magic == 0xd4c3b2a1u || magic == 0x4d3cb2a1u;
    nano_ = magic == 0xa1b23c4du || magic == 0x4d3cb2a1u;
    int major = pcap_major_version(p), minor = pcap_minor_version(p);
    // Version 2.3 and older interchanged caplen and len (543.0: DG/UX tcpdump).
    lengths_ = major == 543 || (major == 2 && minor < 3) ? SWAPPED
             : major == 2 && minor == 3 ? MAYBE : AS_IS;
    snapshot_ = uint32_t(pcap_snapshot(p));
    cap_ = std::clamp<uint64_t>(size_hint, 4096, 1u << 20);
    buf_ = std::make_unique_for_overwrite<uint8_t[]>(cap_);
  }

  // The next record without taking it: 1 (h, data valid until the next peek), 0 at the
  // end of the file, -1 on a damaged file (err() says why; nothing after it is read).
  int peek(pcap_pkthdr& h, const uint8_t*& data) {
    if (!fill(kHeader)) {
      if (end_ == pos_ && !failed_) return 0;
      if (!failed_) err_ = "truncated dump file; tried to read 16 header bytes, only got " + std::to_string(end_ - pos_);
      return -1;
    }
    uint32_t f[4];
    std::memcpy(f, buf_.get() + pos_, kHeader);
    if (swapped_)
      for (auto& x : f) x = __builtin_bswap32(x);
    // As libpcap reads them: signed 32-bit fields, but its byte swap yields unsigned ones.
    h.ts.tv_sec = swapped_ ? int64_t(f[0]) : int64_t(int32_t(f[0]));
    h.ts.tv_usec = swapped_ ? int64_t(f[1]) : int64_t(int32_t(f[1]));
    if (!nano_) h.ts.tv_usec *= 1000;
    h.caplen = f[2];
    h.len = f[3];
    if (lengths_ == SWAPPED || (lengths_ == MAYBE && h.caplen > h.len)) std::swap(h.caplen, h.len);
    if (h.caplen > kMaxCaplen) {
      err_ = "invalid packet capture length " + std::to_string(h.caplen) + ", bigger than maximum of " +
             std::to_string(kMaxCaplen);
      return -1;
    }
    if (!fill(kHeader + h.caplen)) {
      if (!failed_) err_ = "truncated dump file; tried to read " + std::to_string(h.caplen) +
                           " captured bytes, only got " + std::to_string(end_ - pos_ - kHeader);
      return -1;
    }
    next_ = kHeader + h.caplen;
    // A record longer than the file's snapshot length is cut to it (the rest skipped).
    h.caplen = std::min(h.caplen, snapshot_);
    data = buf_.get() + pos_ + kHeader;
    return 1;
  }
  void take() { pos_ += next_; }
  const std::string& err() const { return err_; }

 private:
  // At least `need` unread bytes in the buffer; false at the end of the file or on a
  // read error (failed_, err_ set).
  bool fill(size_t need) {
    if (end_ - pos_ >= need) return true;
    if (pos_) {
      std::memmove(buf_.get(), buf_.get() + pos_, end_ - pos_);
      end_ -= pos_;
      pos_ = 0;
    }
    if (need > cap_) {  // a file that grew past the size it had at open
      auto bigger = std::make_unique_for_overwrite<uint8_t[]>(need);
      std::memcpy(bigger.get(), buf_.get(), end_);
      buf_ = std::move(bigger);
      cap_ = need;
    }
    while (end_ < need) {
      ssize_t r = in_.read(buf_.get() + end_, cap_ - end_);
      if (r < 0) {
        failed_ = true;
        err_ = "error reading dump file: " + in_.error();
        return false;
      }
      if (r == 0) return false;
      end_ += size_t(r);
    }
    return true;
  }

  enum Lengths : uint8_t { AS_IS, SWAPPED, MAYBE };
  CaptureInput& in_;
  bool swapped_ = false, nano_ = false, failed_ = false;
  Lengths lengths_ = AS_IS;
  uint32_t snapshot_ = 0;
  std::unique_ptr<uint8_t[]> buf_;
  size_t cap_ = 0, pos_ = 0, end_ = 0, next_ = 0;
  std::string err_;
};

struct PcapHandle {
  std::unique_ptr<CaptureInput> in;  // the bytes; outlives p, whose stream may read them
  pcap_t* p = nullptr;
  LinkType link = LinkType::ETHERNET;
  std::unique_ptr<char[]> iobuf;
  std::unique_ptr<PcapRecords> records;  // null: libpcap reads the records
  ~PcapHandle() {
    records.reset();
    if (p) pcap_close(p);  // closes the FILE too
  }
};

bool classic_magic(uint32_t magic) {
  for (uint32_t m : {0xa1b2c3d4u, 0xa1b23c4du, 0xd4c3b2a1u, 0x4d3cb2a1u})
    if (magic == m) return true;
  return false;
}

void open_one(const std::string& path, PcapHandle& h, bool own_reader) {
  char err[PCAP_ERRBUF_SIZE] = {0};
  OpenedCapture c = open_capture(path);
  uint32_t magic = 0;
  if (c.magic_len == 4) std::memcpy(&magic, c.magic, 4);
  bool classic = own_reader && classic_magic(magic);
  // A plain file: libpcap's own stdio stream on the file, ours by pread (c.in) beside it.
  // Anything else (a pipe, a compressed file): libpcap reads through c.in, unbuffered
  // when ours takes over after the file header.
  bool plain = c.regular && !c.codec;
  FILE* f = nullptr;
  if (plain) {
    int d = fcntl(c.fd, F_DUPFD_CLOEXEC, 0);
    f = d < 0 ? nullptr : fdopen(d, "rb");
    if (!f && d >= 0) close(d);
  } else {
    f = capture_stdio(*c.in, !classic);
  }
  if (!f) throw std::runtime_error(path + ": " + std::strerror(errno));
  if (!classic) {
    // libpcap reads record by record through stdio: our own FILE buffer of up to 1 MB
    // (not zeroed; a small file needs no more than its size) instead of the default
    // 4 KB, which costs a read() syscall every few packets.
    size_t sz = 1u << 20;
    if (plain) sz = std::clamp<size_t>(size_t(c.size) + 1, 4096, sz);
    h.iobuf = std::make_unique_for_overwrite<char[]>(sz);
    std::setvbuf(f, h.iobuf.get(), _IOFBF, sz);
  }
  h.p = pcap_fopen_offline_with_tstamp_precision(f, PCAP_TSTAMP_PRECISION_NANO, err);
  if (!h.p) {
    std::fclose(f);
    std::string why = c.in->error().empty() ? err : c.in->error();
    throw std::runtime_error(path + ": " + why + (c.codec ? std::string(" (") + c.codec + "-compressed)" : ""));
  }
  h.in = std::move(c.in);
  int dlt = pcap_datalink(h.p);
  if (!link_type_from_dlt(dlt, h.link)) {
    const char* name = pcap_datalink_val_to_name(dlt);
    throw std::runtime_error(path + ": unsupported link type " + std::to_string(dlt) + " (" +
                             (name ? name : "unknown") + ")");
  }
  // Byte-swapped cooked captures: libpcap also swaps SocketCAN ids inside the packet.
  if (classic && (magic == 0xd4c3b2a1u || magic == 0x4d3cb2a1u) &&
      (h.link == LinkType::LINUX_SLL || h.link == LinkType::LINUX_SLL2))
    classic = false;
  if (!classic) return;
  if (plain) {
    // The file position stays libpcap's; ours starts after the file header.
    uint8_t hdr[PcapRecords::kFileHeader];
    for (size_t got = 0; got < sizeof hdr;) {
      ssize_t r = h.in->read(hdr + got, sizeof hdr - got);
      if (r <= 0) return;  // libpcap read it a moment ago: it stays libpcap's file
      got += size_t(r);
    }
#ifdef POSIX_FADV_SEQUENTIAL
    posix_fadvise(c.fd, 0, 0, POSIX_FADV_SEQUENTIAL);
#endif
  } else if (h.in->consumed() != PcapRecords::kFileHeader) {
    return;  // stdio read past the header: libpcap keeps the stream
  }
  // The reader's buffer: a plain file's size, 4× a compressed one's, 1 MB for a pipe (at
  // most 1 MB, and more only for a record that needs it).
  uint64_t hint = plain ? c.size : c.regular ? c.size * 4 : 1u << 20;
  h.records = std::make_unique<PcapRecords>(*h.in, magic, h.p, hint);
}

inline uint64_t ts_of(const pcap_pkthdr* h) {
  // A pcap record's seconds are an unsigned 32-bit field that libpcap hands back signed:
  // 2038-2106 arrive negative. pcapng's 64-bit stamps can pass 2^64 ns (after 2554):
  // saturate there instead of wrapping to an earlier time.
  constexpr uint64_t kMaxSec = UINT64_MAX / 1'000'000'000ull - 1;
  uint64_t sec = h->ts.tv_sec < 0 ? uint64_t(uint32_t(h->ts.tv_sec)) : uint64_t(h->ts.tv_sec);
  if (sec > kMaxSec) return kMaxSec * 1'000'000'000ull;
  // Opened with nanosecond precision: tv_usec holds nanoseconds.
  return sec * 1'000'000'000ull + uint64_t(h->ts.tv_usec);
}

class PcapFiles final : public PacketSource {
 public:
  PcapFiles(std::vector<std::string> paths, bool own_reader)
      : paths_(std::move(paths)), own_reader_(own_reader) {
    // Open every file up front so a typo fails before any work is done (the first one
    // is kept open for reading). Pipes and standard input are opened when their turn
    // comes: what is read from them to check them would be gone.
    if (std::count(paths_.begin(), paths_.end(), "-") > 1)
      throw std::runtime_error("-: standard input can be read only once");
    next_file();
    for (size_t i = 1; i < paths_.size(); i++) {
      struct stat st {};
      if (paths_[i] == "-") continue;
      if (stat(paths_[i].c_str(), &st) != 0) throw std::runtime_error(paths_[i] + ": " + std::strerror(errno));
      if (!S_ISREG(st.st_mode)) continue;
      PcapHandle h;
      open_one(paths_[i], h, own_reader_);
    }
  }

  uint32_t next_burst(PacketView* out, uint32_t max, Arena& a) override {
    a.used = 0;
    uint32_t n = 0;
    if (pending_ && max) {
      pending_ = false;
      if (a.buf.size() < pend_hdr_.caplen) a.buf.resize(pend_hdr_.caplen);
      add(out[n++], &pend_hdr_, pend_data_, a);
    }
    while (n < max && cur_) {
      PcapRecords* own = cur_->records.get();
      pcap_pkthdr own_hdr, *hdr = &own_hdr;
      const u_char* data;
      int rc = own ? own->peek(own_hdr, data) : pcap_next_ex(cur_->p, &hdr, &data);
      if (rc != 1) {
        if (rc == PCAP_ERROR) {  // -1 from both readers
          stats_.truncated_files++;
          // A decompression or read error reaches libpcap as EIO: the reason is ours.
          const std::string& why = cur_->in->error();
          stats_.warnings.push_back(paths_[idx_ - 1] + ": " +
                                    (own ? own->err() : !why.empty() ? why : std::string(pcap_geterr(cur_->p))));
        }
        next_file();
        continue;
      }
      if (a.buf.size() - a.used < hdr->caplen) {
        if (n) {
          // Ours stays unread; libpcap's is kept until the next call.
          if (!own) {
            pending_ = true;
            pend_hdr_ = *hdr;
            pend_data_ = data;
          }
          break;
        }
        a.buf.resize(hdr->caplen);
      }
      add(out[n++], hdr, data, a);
      if (own) own->take();
    }
    return n;
  }

 private:
  void add(PacketView& v, const pcap_pkthdr* hdr, const u_char* data, Arena& a) {
    std::memcpy(a.buf.data() + a.used, data, hdr->caplen);
    v = {a.buf.data() + a.used, hdr->caplen, hdr->len, ts_of(hdr), 0, cur_->link, 0};
    a.used += hdr->caplen;
  }
  // The first file's failure to open is the caller's (thrown before any work). A later
  // one's can only be a pipe's or standard input's (files were checked at the start): a
  // warning, and the replay goes on with the next input.
  void next_file() {
    cur_.reset();
    while (idx_ < paths_.size()) {
      cur_ = std::make_unique<PcapHandle>();
      try {
        open_one(paths_[idx_++], *cur_, own_reader_);
      } catch (const std::runtime_error& e) {
        if (idx_ == 1) throw;
        cur_.reset();
        stats_.unread_files++;
        stats_.warnings.push_back(std::string(e.what()) + " (not read)");
        continue;
      }
      stats_.files++;
      stats_.own_reader_files += cur_->records != nullptr;
      return;
    }
  }
  // A packet that did not fit the arena is read again next call (libpcap keeps it).
  bool pending_ = false;
  pcap_pkthdr pend_hdr_{};
  const u_char* pend_data_ = nullptr;

  std::vector<std::string> paths_;
  bool own_reader_;
  size_t idx_ = 0;
  std::unique_ptr<PcapHandle> cur_;
};

class MemoryLoop final : public PacketSource {
 public:
  MemoryLoop(const std::vector<std::string>& paths, uint64_t loops) : loops_(loops) {
    PcapFiles f(paths, true);
    size_t total = 0;
    // Packet bytes never exceed a plain file's size: no regrowth copies for those
    // (pipes and compressed files grow the vector; views are fixed up below).
    std::error_code ec;
    for (auto& p : paths)
      if (auto n = std::filesystem::file_size(p, ec); !ec) total += n;
    data_.reserve(total);
    Arena a(1u << 20);
    PacketView v[256];
    std::vector<std::pair<size_t, PacketView>> tmp;
    for (uint32_t n; (n = f.next_burst(v, 256, a));) {
      for (uint32_t i = 0; i < n; i++) {
        tmp.push_back({data_.size(), v[i]});
        data_.insert(data_.end(), v[i].data, v[i].data + v[i].cap_len);
      }
    }
    stats_ = f.stats();
    pkts_.reserve(tmp.size());
    for (auto& [off, pv] : tmp) {
      pv.data = data_.data() + off;
      pkts_.push_back(pv);
    }
    if (!pkts_.empty()) {
      uint64_t span = pkts_.back().ts_ns > pkts_.front().ts_ns
                          ? pkts_.back().ts_ns - pkts_.front().ts_ns : 0;
      shift_ = span + 1'000'000'000ull;
      // Timestamps must not wrap: without room, loops restart the clock instead.
      if (loops_ > 1 && (UINT64_MAX - pkts_.back().ts_ns) / (loops_ - 1) < shift_) shift_ = 0;
    }
  }

  uint32_t next_burst(PacketView* out, uint32_t max, Arena&) override {
    uint32_t n = 0;
    while (n < max && loop_ < loops_ && !pkts_.empty()) {
      PacketView v = pkts_[pos_];
      v.rewrite = uint32_t(loop_);
      v.ts_ns += loop_ * shift_;
      out[n++] = v;
      if (++pos_ == pkts_.size()) {
        pos_ = 0;
        loop_++;
      }
    }
    return n;
  }

 private:
  std::vector<uint8_t> data_;
  std::vector<PacketView> pkts_;
  uint64_t loops_, loop_ = 0, shift_ = 0;
  size_t pos_ = 0;
};

}  // namespace

std::unique_ptr<PacketSource> open_pcap_files(const std::vector<std::string>& paths,
                                              PcapReader reader) {
  return std::make_unique<PcapFiles>(paths, reader == PcapReader::OWN);
}

std::unique_ptr<PacketSource> open_memory_loop(const std::vector<std::string>& paths,
                                               uint64_t loops) {
  return std::make_unique<MemoryLoop>(paths, loops);
}

}  // namespace ls
