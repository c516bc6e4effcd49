// Our classic-pcap record reader against libpcap's, packet for packet: every capture in
// the shared data, and hand-made files for what real captures rarely hold (byte-swapped
// and nanosecond files, pre-2.4 length order, records over the snapshot length, signed
// timestamps, damage) read through small arenas and short bursts. And the same packets
// from compressed files, pipes and standard input (dataplane/capture_input.cpp).
#include <gtest/gtest.h>
#include <lzma.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>
#include <zstd.h>

#include <cstring>
#include <filesystem>
#include <random>
#include <fstream>
#include <string>
#include <string_view>
#include <thread>
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
    for (uint32_t i = 0; i < data_bytes; i++) b_.push_back(rng_ ? char((*rng_)()) : char(seed_++ * 31 + i));
    return *this;
  }
  // Packet bytes from a generator instead of a pattern: they do not compress.
  RawPcap& random_data(std::mt19937* rng) {
    rng_ = rng;
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
  std::mt19937* rng_ = nullptr;
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

std::string slurp(const std::string& p) {
  std::ifstream f(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}
std::string put(const std::string& name, const std::string& bytes) {
  std::string p = (fs::temp_directory_path() / ("ls_rd_" + std::to_string(getpid()) + "_" + name)).string();
  std::ofstream(p, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
  return p;
}
std::string gzip(std::string_view in) {
  z_stream z{};
  EXPECT_EQ(deflateInit2(&z, 1, Z_DEFLATED, 16 + MAX_WBITS, 8, Z_DEFAULT_STRATEGY), Z_OK);
  std::string out(deflateBound(&z, uLong(in.size())) + 64, '\0');
  z.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(in.data()));
  z.avail_in = uInt(in.size());
  z.next_out = reinterpret_cast<Bytef*>(out.data());
  z.avail_out = uInt(out.size());
  EXPECT_EQ(deflate(&z, Z_FINISH), Z_STREAM_END);
  out.resize(z.total_out);
  deflateEnd(&z);
  return out;
}
std::string zstd(std::string_view in) {  // with a content checksum, as the zstd tool writes
  std::string out(ZSTD_compressBound(in.size()), '\0');
  ZSTD_CCtx* c = ZSTD_createCCtx();
  ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
  size_t n = ZSTD_compress2(c, out.data(), out.size(), in.data(), in.size());
  ZSTD_freeCCtx(c);
  EXPECT_FALSE(ZSTD_isError(n));
  out.resize(n);
  return out;
}
std::string xz(std::string_view in) {
  std::string out(lzma_stream_buffer_bound(in.size()), '\0');
  size_t n = 0;
  EXPECT_EQ(lzma_easy_buffer_encode(0, LZMA_CHECK_CRC64, nullptr, reinterpret_cast<const uint8_t*>(in.data()),
                                    in.size(), reinterpret_cast<uint8_t*>(out.data()), &n, out.size()),
            LZMA_OK);
  out.resize(n);
  return out;
}

// 3,000 records (≈ 2.2 MB): several of the reader's 1 MB buffers and the decoders'
// chunks. Random packet bytes stay over 1 MB compressed, so compressed files of it are
// decoded ahead on a thread; patterned ones (the default) are decoded in the reader.
std::string big_capture(bool random = false) {
  std::mt19937 rng(7);
  RawPcap f(kNano, false, 2, 4, 65535);
  if (random) f.random_data(&rng);
  for (uint32_t i = 0; i < 3000; i++) f.rec(1'700'000'000 + i / 10, i * 7919, 60 + (i * 37) % 1400, 1514);
  std::string path = f.write("big.pcap"), bytes = slurp(path);
  fs::remove(path);
  return bytes;
}

// Writes `bytes` into a pipe from another thread; `path` is the pipe's read end as
// /proc/self/fd/N or, with `as_stdin`, standard input for the duration.
class Piped {
 public:
  Piped(std::string bytes, bool as_stdin) {
    int p[2];
    EXPECT_EQ(pipe(p), 0);
    if (as_stdin) {
      saved_ = dup(0);
      dup2(p[0], 0);
      close(p[0]);
      path = "-";
    } else {
      read_end_ = p[0];
      path = "/proc/self/fd/" + std::to_string(p[0]);
    }
    writer_ = std::thread([w = p[1], b = std::move(bytes)] {
      for (size_t off = 0; off < b.size();) {
        ssize_t r = write(w, b.data() + off, std::min<size_t>(b.size() - off, 65536));
        if (r <= 0) break;  // the reader stopped early: its side closed
        off += size_t(r);
      }
      close(w);
    });
  }
  ~Piped() {
    if (saved_ >= 0) {
      dup2(saved_, 0);  // also closes the pipe's read end, so the writer cannot block
      close(saved_);
    }
    if (read_end_ >= 0) close(read_end_);
    writer_.join();
  }
  std::string path;

 private:
  int saved_ = -1, read_end_ = -1;
  std::thread writer_;
};

TEST(CaptureInput, CompressedFilesAndPipesReadAsThePlainFile) {
  for (bool random : {false, true}) {
  std::string plain = big_capture(random);
  std::string half = plain.substr(0, plain.size() / 2), rest = plain.substr(plain.size() / 2);
  std::string p = put("plain.pcap", plain);
  Read want = read_all({p}, PcapReader::LIBPCAP, 256, 4u << 20);
  ASSERT_EQ(want.pkts.size(), 3000u);
  struct Case {
    const char* name;
    std::string bytes;
  };
  std::vector<Case> cases = {{"gz", gzip(plain)},
                             {"zst", zstd(plain)},
                             {"two gzip members", gzip(half) + gzip(rest)},
                             {"two zstd frames", zstd(half) + zstd(rest)}};
  if (!random)  // xz is slow to make of random bytes, and its thread is the same
    cases.insert(cases.end(), {{"xz", xz(plain)}, {"two xz streams", xz(half) + xz(rest)}});
  for (auto& c : cases) {
    // Random bytes grow by the format's framing; either way one side of the thread's threshold.
    EXPECT_TRUE(random ? c.bytes.size() > (1u << 20) : c.bytes.size() < (1u << 20)) << c.name << " " << c.bytes.size();
    std::string f = put("c.pcap.x", c.bytes);
    for (auto r : {PcapReader::OWN, PcapReader::LIBPCAP})
      for (auto [burst, arena] : {std::pair<uint32_t, size_t>{256, 4u << 20}, {7, 1600}}) {
        Read got = read_all({f}, r, burst, arena);
        EXPECT_TRUE(got.pkts == want.pkts) << c.name << " burst " << burst << ": " << got.pkts.size();
        EXPECT_EQ(got.stats.truncated_files, 0u) << c.name;
        EXPECT_TRUE(got.stats.warnings.empty()) << c.name << ": " << (got.stats.warnings.empty() ? "" : got.stats.warnings[0]);
        // Ours reads the records after libpcap has read the file header through the stream.
        EXPECT_EQ(got.stats.own_reader_files, r == PcapReader::OWN ? 1u : 0u) << c.name;
      }
    {  // Closed after one burst: the thread decoding ahead (regular files) stops and joins.
      auto src = open_pcap_files({f, f});
      Arena a;
      PacketView v[8];
      EXPECT_EQ(src->next_burst(v, 8, a), 8u);
    }
    fs::remove(f);
  }
  // A pipe (a FIFO, `zcat x | linesight replay -`), plain and compressed, between files.
  for (bool as_stdin : {false, true})
    for (const std::string* bytes : {&plain, &cases[0].bytes, &cases[1].bytes}) {
      Piped pipe(*bytes, as_stdin);
      Read got = read_all({p, pipe.path, p}, PcapReader::OWN, 64, 1u << 16);
      ASSERT_EQ(got.pkts.size(), 9000u) << pipe.path;
      EXPECT_TRUE(std::equal(want.pkts.begin(), want.pkts.end(), got.pkts.begin() + 3000)) << pipe.path;
      EXPECT_EQ(got.stats.own_reader_files, 3u);
      EXPECT_TRUE(got.stats.warnings.empty());
    }
  fs::remove(p);
  }
}

TEST(CaptureInput, DamagedCompressedFilesKeepThePacketsBefore) {
  for (bool random : {false, true}) {
  std::string plain = big_capture(random);
  std::string p = put("plain.pcap", plain);
  Read want = read_all({p}, PcapReader::LIBPCAP, 256, 4u << 20);
  fs::remove(p);
  auto flip = [](std::string s) {
    if (!s.empty()) s[s.size() / 2] = char(s[s.size() / 2] ^ 0x55);
    return s;
  };
  struct Case {
    const char* name;
    std::string bytes, why;
  };
  std::string gz = gzip(plain), zs = zstd(plain), x = random ? "" : xz(plain);  // xz: as above
  std::vector<Case> cases = {{"gz cut", gz.substr(0, gz.size() / 2), "gzip data ends early"},
                             {"zst cut", zs.substr(0, zs.size() / 2), "zstd data ends early"},
                             {"xz cut", x.substr(0, x.size() / 2), "xz data ends early"},
                             {"gz damaged", flip(gz), "gzip data is damaged"},
                             {"zst damaged", flip(zs), "zstd data is damaged"},
                             {"xz damaged", flip(x), "xz data is damaged"}};
  for (auto& c : cases) {
    if (c.bytes.empty()) continue;
    std::string f = put("d.pcap.x", c.bytes);
    for (auto r : {PcapReader::OWN, PcapReader::LIBPCAP}) {
      Read got = read_all({f}, r, 256, 4u << 20);
      EXPECT_EQ(got.stats.truncated_files, 1u) << c.name;
      ASSERT_EQ(got.stats.warnings.size(), 1u) << c.name;
      // Damaged data may decode to garbage before a checksum catches it: then the pcap
      // records are what is found damaged first.
      const std::string& w = got.stats.warnings[0];
      bool named = w.find(c.why) != std::string::npos ||
                   (c.why.ends_with("damaged") && w.find("invalid packet capture length") != std::string::npos);
      EXPECT_TRUE(named) << c.name << ": " << w;
      // What came before the damage is kept, exactly (a flipped byte may pass the
      // decoder until its checksum: the packets up to there are the decoder's output).
      EXPECT_LE(got.pkts.size(), want.pkts.size()) << c.name;
      if (std::string_view(c.name).ends_with("cut")) {
        EXPECT_GT(got.pkts.size(), 1000u) << c.name;
        EXPECT_TRUE(std::equal(got.pkts.begin(), got.pkts.end(), want.pkts.begin())) << c.name;
      }
    }
    fs::remove(f);
  }
  }
}

// Found by the pcap fuzz target: a zstd frame whose second block is damaged. Decoding
// straight into the reader's buffer, libpcap's reader (1 MB reads) lost the first block
// and failed to open the file while ours (20-byte reads of the header) opened it.
TEST(CaptureInput, DamagedZstdReadsAlikeWhateverTheReadSizes) {
  std::string hex =
      "28b52ffd0002000600d4c3b2a10200000000470800000000b600425a68000000002a0000600014141414141414141414"
      "141414141414141414141414141414141414141414141414141414141414141414141414141414141414141414141414"
      "141414141414141414141414141414141414141414141414141414141414141414141414141414141414141414141414"
      "141414141414141414141414141414141414141414140000010000000010425a68000000002a00006000000001000000"
      "00105e5f0000000028002d2f2e32335e5f0000000028002d2f2e32332d30343536ffffffffffffff1b6768";
  std::string bytes;
  for (size_t i = 0; i + 1 < hex.size(); i += 2) bytes.push_back(char(std::stoi(hex.substr(i, 2), nullptr, 16)));
  std::string p = put("fuzz-zstd-damaged.pcap.zst", bytes);
  // Both open it or neither: the decoder now loses the same block for both (at open).
  auto open_error = [&](PcapReader r) -> std::string {
    try {
      read_all({p}, r, 64, 4u << 20);
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    return "";
  };
  std::string own = open_error(PcapReader::OWN), lib = open_error(PcapReader::LIBPCAP);
  EXPECT_EQ(own, lib);
  EXPECT_NE(own.find("zstd data is damaged"), std::string::npos) << own;
  fs::remove(p);
}

TEST(CaptureInput, RefusalsNameTheInputAndTheWayIn) {
  auto refused = [](const std::vector<std::string>& paths) -> std::string {
    try {
      open_pcap_files(paths);
    } catch (const std::runtime_error& e) {
      return e.what();
    }
    return "";
  };
  std::string bz = put("x.pcap.bz2", "BZh91AY&SY" + std::string(40, '\1'));
  std::string e = refused({bz});
  EXPECT_NE(e.find("bzip2-compressed"), std::string::npos) << e;
  EXPECT_NE(e.find("bzip2 -dc " + bz + " | linesight replay -"), std::string::npos) << e;
  std::string lz = put("x.pcap.lz4", std::string("\x04\x22\x4d\x18", 4) + std::string(40, '\1'));
  EXPECT_NE(refused({lz}).find("lz4-compressed"), std::string::npos);
  std::string zip = put("x.zip", std::string("PK\x03\x04", 4) + std::string(40, '\1'));
  EXPECT_NE(refused({zip}).find("unzip -p"), std::string::npos);
  std::string notpcap = put("n.gz", gzip(std::string(100, 'x')));
  EXPECT_NE(refused({notpcap}).find("unknown file format"), std::string::npos) << refused({notpcap});
  std::string cut = put("c.gz", gzip(big_capture()).substr(0, 12));  // not even the file header
  EXPECT_NE(refused({cut}).find("gzip data ends early"), std::string::npos) << refused({cut});
  EXPECT_NE(refused({"-", "-"}).find("standard input can be read only once"), std::string::npos);
  EXPECT_NE(refused({fs::temp_directory_path().string()}).find("is a directory"), std::string::npos);
  for (auto& f : {bz, lz, zip, notpcap, cut}) fs::remove(f);
}

}  // namespace
