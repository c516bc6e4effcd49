// Our classic-pcap record reader against libpcap's, packet for packet: every capture in
// the shared data, and hand-made files for what real captures rarely hold (byte-swapped
// and nanosecond files, pre-2.4 length order, records over the snapshot length, signed
// timestamps, damage) read through small arenas and short bursts.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>
#include <vector>

#include "dataplane/source.h"

using namespace ls;
namespace fs = std::filesystem;

namespace {

struct Packet {
  uint32_t caplen, len;
  uint64_t ts_ns;
  LinkType link;
  std::string bytes;
  bool operator==(const Packet&) const = default;
};

struct Read {
  std::vector<Packet> pkts;
  SourceStats stats;
};

Read read_all(const std::vector<std::string>& paths, PcapReader r, uint32_t burst, size_t arena_bytes) {
  Read out;
  auto src = open_pcap_files(paths, r);
  Arena a(arena_bytes);
  std::vector<PacketView> v(burst);
  for (uint32_t n; (n = src->next_burst(v.data(), burst, a));) {
    EXPECT_LE(n, burst);
    for (uint32_t i = 0; i < n; i++)
      out.pkts.push_back({v[i].cap_len, v[i].wire_len, v[i].ts_ns, v[i].link,
                          std::string(reinterpret_cast<const char*>(v[i].data), v[i].cap_len)});
  }
  out.stats = src->stats();
  return out;
}

// Both readers on the same files; returns how many files our reader took.
uint64_t expect_same(const std::vector<std::string>& paths, uint32_t burst = 256, size_t arena = 4u << 20) {
  Read own = read_all(paths, PcapReader::OWN, burst, arena);
  Read lib = read_all(paths, PcapReader::LIBPCAP, burst, arena);
  EXPECT_EQ(lib.stats.own_reader_files, 0u);
  std::string where = paths[0] + " burst " + std::to_string(burst) + " arena " + std::to_string(arena);
  EXPECT_EQ(own.pkts.size(), lib.pkts.size()) << where;
  for (size_t i = 0; i < std::min(own.pkts.size(), lib.pkts.size()); i++)
    if (!(own.pkts[i] == lib.pkts[i])) {
      ADD_FAILURE() << where << ": packet " << i << " differs: caplen " << own.pkts[i].caplen << "/"
                    << lib.pkts[i].caplen << " len " << own.pkts[i].len << "/" << lib.pkts[i].len << " ts "
                    << own.pkts[i].ts_ns << "/" << lib.pkts[i].ts_ns;
      break;
    }
  EXPECT_EQ(own.stats.files, lib.stats.files) << where;
  EXPECT_EQ(own.stats.truncated_files, lib.stats.truncated_files) << where;
  EXPECT_EQ(own.stats.warnings.size(), lib.stats.warnings.size()) << where;
  return own.stats.own_reader_files;
}

// A classic pcap file written byte by byte.
class RawPcap {
 public:
  RawPcap(uint32_t magic, bool swap, uint16_t major, uint16_t minor, uint32_t snaplen, uint32_t link = 1)
      : swap_(swap) {
    u32(magic);
    u16(major);
    u16(minor);
    u32(0);
    u32(0);
    u32(snaplen);
    u32(link);
  }
  // caplen_field bytes of data follow the header (a lying caplen gets what it claims).
  RawPcap& rec(uint32_t sec, uint32_t frac, uint32_t caplen_field, uint32_t len_field, uint32_t data_bytes) {
    u32(sec);
    u32(frac);
    u32(caplen_field);
    u32(len_field);
    for (uint32_t i = 0; i < data_bytes; i++) b_.push_back(char(seed_++ * 31 + i));
    return *this;
  }
  RawPcap& rec(uint32_t sec, uint32_t frac, uint32_t caplen, uint32_t len) { return rec(sec, frac, caplen, len, caplen); }
  RawPcap& cut(size_t bytes) {
    b_.resize(b_.size() - bytes);
    return *this;
  }
  std::string write(const std::string& name) const {
    std::string p = (fs::temp_directory_path() / ("ls_rd_" + std::to_string(getpid()) + "_" + name)).string();
    std::ofstream(p, std::ios::binary).write(b_.data(), std::streamsize(b_.size()));
    return p;
  }

 private:
  void u32(uint32_t x) {
    if (swap_) x = __builtin_bswap32(x);
    b_.append(reinterpret_cast<const char*>(&x), 4);
  }
  void u16(uint16_t x) {
    if (swap_) x = __builtin_bswap16(x);
    b_.append(reinterpret_cast<const char*>(&x), 2);
  }
  bool swap_;
  uint8_t seed_ = 1;
  std::string b_;
};

constexpr uint32_t kMicro = 0xa1b2c3d4, kNano = 0xa1b23c4d;

// Every shape, each read with bursts of 1, 7 and 256 through a 4 MB and a 1,600-byte arena.
void expect_same_everywhere(const std::string& path) {
  for (uint32_t burst : {1u, 7u, 256u})
    for (size_t arena : {size_t(4) << 20, size_t(1600)}) EXPECT_EQ(expect_same({path}, burst, arena), 1u);
  fs::remove(path);
}

TEST(PcapReader, NativeAndSwappedMicroAndNano) {
  for (bool swap : {false, true})
    for (uint32_t magic : {kMicro, kNano}) {
      RawPcap f(magic, swap, 2, 4, 65535);
      for (uint32_t i = 0; i < 50; i++) f.rec(1'600'000'000 + i, i * 19'999, 60 + i * 29, 60 + i * 29);
      expect_same_everywhere(f.write("basic.pcap"));
    }
}

TEST(PcapReader, OldLengthOrderAndSignedTimestamps) {
  // 2.2 and DG/UX 543.0 always swap caplen and len; 2.3 only where caplen > len.
  for (auto [major, minor] : {std::pair<uint16_t, uint16_t>{2, 2}, {2, 3}, {543, 0}}) {
    RawPcap f(kMicro, false, major, minor, 65535);
    f.rec(1, 2, 1514, 100, 100).rec(3, 4, 80, 80).rec(5, 6, 50, 70, 50).rec(7, 8, 70, 50, 70);
    expect_same_everywhere(f.write("old.pcap"));
  }
  // Seconds past 2038 (negative as int32), a negative and an over-range fraction.
  for (bool swap : {false, true})
    for (uint32_t magic : {kMicro, kNano}) {
      RawPcap f(magic, swap, 2, 4, 65535);
      f.rec(0x80000001u, 5, 64, 64).rec(0xfffffff0u, 0xffffffffu, 64, 64).rec(100, 3'000'000, 64, 64);
      f.rec(7, 0x80000000u, 64, 64);
      expect_same_everywhere(f.write("ts.pcap"));
    }
}

TEST(PcapReader, RecordsOverTheSnapshotLengthAreCut) {
  for (uint32_t snaplen : {100u, 0u, 300'000u}) {  // 0 and over-large: libpcap's maximum applies
    RawPcap f(kMicro, false, 2, 4, snaplen);
    f.rec(1, 0, 60, 60).rec(2, 0, 200, 1500).rec(3, 0, 100, 100).rec(4, 0, 262'144, 262'144).rec(5, 0, 1, 9000);
    expect_same_everywhere(f.write("snap.pcap"));
  }
}

TEST(PcapReader, DamageStopsTheFileAndIsCounted) {
  auto base = [] {
    RawPcap f(kMicro, false, 2, 4, 65535);
    f.rec(1, 0, 60, 60).rec(2, 0, 70, 70);
    return f;
  };
  std::vector<RawPcap> cases;
  cases.push_back(base().rec(3, 0, 80, 80).cut(5));    // inside the data
  cases.push_back(base().rec(3, 0, 80, 80).cut(75));   // inside the header
  cases.push_back(base().rec(3, 0, 300'000, 300'000, 10).rec(4, 0, 60, 60));  // caplen over any limit
  cases.push_back(base().rec(3, 0, 300'000, 300'000).rec(4, 0, 60, 60));      // ... with its bytes there
  cases.push_back(base().rec(3, 0, 0xffffffffu, 60, 0));
  cases.push_back(base());  // intact, for contrast
  for (size_t i = 0; i < cases.size(); i++) {
    std::string p = cases[i].write("damage" + std::to_string(i) + ".pcap");
    Read r = read_all({p}, PcapReader::OWN, 256, 4u << 20);
    EXPECT_EQ(r.pkts.size(), 2u) << i;
    EXPECT_EQ(r.stats.truncated_files, i + 1 < cases.size() ? 1u : 0u) << i;
    expect_same_everywhere(p);
  }
}

TEST(PcapReader, EmptyAndMixedFileSequences) {
  std::string empty = RawPcap(kNano, true, 2, 4, 65535).write("empty.pcap");
  RawPcap a(kMicro, false, 2, 4, 65535);
  for (uint32_t i = 0; i < 300; i++) a.rec(10 + i, i, 1000 + i % 500, 1500);
  std::string big = a.write("big.pcap");
  std::vector<std::string> seq = {empty, big, empty, big};
  const char* d = std::getenv("LINESIGHT_DATA");
  fs::path ng = fs::path(d ? d : "../shared/data");
  if (fs::exists(ng))
    for (auto& e : fs::recursive_directory_iterator(ng, fs::directory_options::skip_permission_denied)) {
      char magic[4] = {};
      if (e.is_regular_file()) std::ifstream(e.path(), std::ios::binary).read(magic, 4);
      if (std::memcmp(magic, "\x0a\x0d\x0d\x0a", 4) == 0) {  // pcapng (whatever the name says)
        seq.insert(seq.begin() + 2, e.path().string());     // libpcap reads this one
        break;
      }
    }
  uint64_t own = expect_same(seq, 7, 1600);
  EXPECT_EQ(own, 4u);
  EXPECT_EQ(read_all(seq, PcapReader::OWN, 7, 1600).stats.files, seq.size());
  fs::remove(empty);
  fs::remove(big);
}

TEST(PcapReader, EveryCaptureInTheSharedData) {
  const char* d = std::getenv("LINESIGHT_DATA");
  fs::path root = fs::path(d ? d : "../shared/data");
  if (!fs::exists(root)) GTEST_SKIP() << root << " absent: shared captures not compared";
  uint64_t files = 0, own = 0;
  for (auto& e : fs::recursive_directory_iterator(root, fs::directory_options::skip_permission_denied)) {
    auto ext = e.path().extension();
    if (!e.is_regular_file() || (ext != ".pcap" && ext != ".pcapng" && ext != ".cap")) continue;
    files++;
    own += expect_same({e.path().string()});
  }
  EXPECT_GT(files, 10u);
  EXPECT_GT(own, files / 2);  // most are classic pcap: the comparison is not libpcap against itself
}

}  // namespace
