#include <pcap/pcap.h>
#include <sys/stat.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <memory>
#include <stdexcept>

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

struct PcapHandle {
  pcap_t* p = nullptr;
  LinkType link = LinkType::ETHERNET;
  std::unique_ptr<char[]> iobuf;
  ~PcapHandle() {
    if (p) pcap_close(p);  // closes the FILE too
  }
};

void open_one(const std::string& path, PcapHandle& h) {
  char err[PCAP_ERRBUF_SIZE] = {0};
  // Our own FILE with a 1 MB buffer: libpcap reads record by record through stdio, and
  // the default 4 KB buffer costs a read() syscall every few packets.
  FILE* f = std::fopen(path.c_str(), "rb");
  if (!f) throw std::runtime_error(path + ": " + std::strerror(errno));
  // (Up to 1 MB, not zeroed: a small file needs no more than its size.)
  struct stat st {};
  size_t sz = 1u << 20;
  if (fstat(fileno(f), &st) == 0 && S_ISREG(st.st_mode))
    sz = std::clamp<size_t>(size_t(st.st_size) + 1, 4096, sz);
  h.iobuf = std::make_unique_for_overwrite<char[]>(sz);
  std::setvbuf(f, h.iobuf.get(), _IOFBF, sz);
  h.p = pcap_fopen_offline_with_tstamp_precision(f, PCAP_TSTAMP_PRECISION_NANO, err);
  if (!h.p) {
    std::fclose(f);
    throw std::runtime_error(path + ": " + err);
  }
  int dlt = pcap_datalink(h.p);
  if (!link_type_from_dlt(dlt, h.link)) {
    const char* name = pcap_datalink_val_to_name(dlt);
    throw std::runtime_error(path + ": unsupported link type " + std::to_string(dlt) + " (" +
                             (name ? name : "unknown") + ")");
  }
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
  explicit PcapFiles(std::vector<std::string> paths) : paths_(std::move(paths)) {
    // Open every file up front so a typo fails before any work is done (the first one
    // is kept open for reading).
    next_file();
    for (size_t i = 1; i < paths_.size(); i++) {
      PcapHandle h;
      open_one(paths_[i], h);
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
      pcap_pkthdr* hdr;
      const u_char* data;
      int rc = pcap_next_ex(cur_->p, &hdr, &data);
      if (rc != 1) {
        if (rc == PCAP_ERROR) {
          stats_.truncated_files++;
          stats_.warnings.push_back(paths_[idx_ - 1] + ": " + pcap_geterr(cur_->p));
        }
        next_file();
        continue;
      }
      if (a.buf.size() - a.used < hdr->caplen) {
        if (n) {
          pending_ = true;
          pend_hdr_ = *hdr;
          pend_data_ = data;
          break;
        }
        a.buf.resize(hdr->caplen);
      }
      add(out[n++], hdr, data, a);
    }
    return n;
  }

 private:
  void add(PacketView& v, const pcap_pkthdr* hdr, const u_char* data, Arena& a) {
    std::memcpy(a.buf.data() + a.used, data, hdr->caplen);
    v = {a.buf.data() + a.used, hdr->caplen, hdr->len, ts_of(hdr), 0, cur_->link, 0};
    a.used += hdr->caplen;
  }
  void next_file() {
    cur_.reset();
    if (idx_ < paths_.size()) {
      cur_ = std::make_unique<PcapHandle>();
      open_one(paths_[idx_++], *cur_);
      stats_.files++;
    }
  }
  // A packet that did not fit the arena is read again next call (libpcap keeps it).
  bool pending_ = false;
  pcap_pkthdr pend_hdr_{};
  const u_char* pend_data_ = nullptr;

  std::vector<std::string> paths_;
  size_t idx_ = 0;
  std::unique_ptr<PcapHandle> cur_;
};

class MemoryLoop final : public PacketSource {
 public:
  MemoryLoop(const std::vector<std::string>& paths, uint64_t loops) : loops_(loops) {
    PcapFiles f(paths);
    size_t total = 0;
    for (auto& p : paths) total += std::filesystem::file_size(p);
    data_.reserve(total);  // packet bytes never exceed the files' size: no regrowth copies
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

std::unique_ptr<PacketSource> open_pcap_files(const std::vector<std::string>& paths) {
  return std::make_unique<PcapFiles>(paths);
}

std::unique_ptr<PacketSource> open_memory_loop(const std::vector<std::string>& paths,
                                               uint64_t loops) {
  return std::make_unique<MemoryLoop>(paths, loops);
}

}  // namespace ls
