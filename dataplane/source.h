// Packet sources. The replay pipeline and the DPDK runtime both pull bursts of
// PacketViews from a source; everything after the source is the same code.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "dataplane/packet.h"

namespace ls {

// Scratch space a copying source writes packet bytes into; views point into it and stay
// valid until the caller reuses the arena.
struct Arena {
  explicit Arena(size_t bytes = 4u << 20) : buf(bytes) {}
  std::vector<uint8_t> buf;
  size_t used = 0;
};

struct SourceStats {
  uint64_t files = 0;
  uint64_t truncated_files = 0;  // a file ended mid-record; packets before it were used
  uint64_t own_reader_files = 0;  // classic pcap read by our record reader, not libpcap's
  uint64_t unread_files = 0;  // a pipe or standard input that was not a capture (warned)
  std::vector<std::string> warnings;
};

class PacketSource {
 public:
  virtual ~PacketSource() = default;
  // Up to `max` packets; 0 = end of input. Copying sources write into `arena` (after
  // resetting it); zero-copy sources leave it alone.
  virtual uint32_t next_burst(PacketView* out, uint32_t max, Arena& arena) = 0;
  const SourceStats& stats() const { return stats_; }

 protected:
  SourceStats stats_;
};

// Maps a libpcap DLT value to the link types the parser understands; false if unknown.
bool link_type_from_dlt(int dlt, LinkType& out);

// One or more pcap / pcapng files read in order, nanosecond timestamps. libpcap opens
// them; classic pcap records in regular files are read by our own reader (OWN, faster),
// everything else by libpcap (LIBPCAP: libpcap for every file, to compare against).
// Throws std::runtime_error naming the file and libpcap's reason when one cannot be opened.
enum class PcapReader : uint8_t { OWN, LIBPCAP };
std::unique_ptr<PacketSource> open_pcap_files(const std::vector<std::string>& paths,
                                              PcapReader reader = PcapReader::OWN);

// Loads the files into memory once and plays them `loops` times. Loop n > 0 rewrites
// addresses deterministically (PacketView::rewrite = n) and shifts timestamps by
// n × (capture span + 1 s) so time keeps moving forward.
std::unique_ptr<PacketSource> open_memory_loop(const std::vector<std::string>& paths,
                                               uint64_t loops);

}  // namespace ls
