// Builds test packets layer by layer (outermost first); lengths and checksums that the
// parser reads are filled in by finish(). Only for tests.
#pragma once
#include <cstdint>
#include <cstring>
#include <initializer_list>
#include <vector>

#include "dataplane/packet.h"

namespace lstest {

struct Pkt {
  std::vector<uint8_t> b;
  std::vector<size_t> ip4_at, ip6_at, udp_at;  // offsets whose length fields finish() sets

  Pkt& bytes(std::initializer_list<uint8_t> x) {
    b.insert(b.end(), x);
    return *this;
  }
  Pkt& u16(uint16_t v) { return bytes({uint8_t(v >> 8), uint8_t(v)}); }
  Pkt& u32(uint32_t v) { return u16(uint16_t(v >> 16)).u16(uint16_t(v)); }
  Pkt& zeros(size_t n) {
    b.insert(b.end(), n, 0);
    return *this;
  }
  Pkt& eth(uint16_t type) {
    bytes({2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2});
    return u16(type);
  }
  Pkt& vlan(uint16_t id, uint16_t next) { return u16(id).u16(next); }
  Pkt& mpls(uint32_t label, bool bos) { return u32(label << 12 | (bos ? 0x100 : 0) | 64); }
  Pkt& ip4(std::initializer_list<uint8_t> src, std::initializer_list<uint8_t> dst, uint8_t proto,
           uint16_t frag = 0, uint16_t id = 1, size_t opt_words = 0) {
    ip4_at.push_back(b.size());
    bytes({uint8_t(0x40 | (5 + opt_words)), 0, 0, 0}).u16(id).u16(frag).bytes({64, proto, 0, 0});
    b.insert(b.end(), src);
    b.insert(b.end(), dst);
    for (size_t i = 0; i < opt_words; i++) bytes({1, 1, 1, 1});  // NOPs
    return *this;
  }
  Pkt& ip6(uint8_t src_last, uint8_t dst_last, uint8_t nh) {
    ip6_at.push_back(b.size());
    bytes({0x60, 0, 0, 0, 0, 0, nh, 64});
    bytes({0x20, 0x01, 0x0d, 0xb8}).zeros(11).bytes({src_last});
    bytes({0x20, 0x01, 0x0d, 0xb8}).zeros(11).bytes({dst_last});
    return *this;
  }
  Pkt& tcp(uint16_t sp, uint16_t dp, uint8_t flags, size_t opt_words = 0) {
    u16(sp).u16(dp).u32(1).u32(0).bytes({uint8_t((5 + opt_words) << 4), flags}).u16(1024).u16(0).u16(0);
    for (size_t i = 0; i < opt_words; i++) bytes({1, 1, 1, 1});
    return *this;
  }
  Pkt& udp(uint16_t sp, uint16_t dp) {
    udp_at.push_back(b.size());
    return u16(sp).u16(dp).u16(0).u16(0);
  }
  Pkt& payload(const char* s) {
    b.insert(b.end(), s, s + std::strlen(s));
    return *this;
  }
  // Sets IPv4 total length, IPv6 payload length and UDP length from the final size.
  Pkt& finish() {
    for (size_t o : ip4_at) put16(o + 2, uint16_t(b.size() - o));
    for (size_t o : ip6_at) put16(o + 4, uint16_t(b.size() - o - 40));
    for (size_t o : udp_at) put16(o + 4, uint16_t(b.size() - o));
    return *this;
  }
  void put16(size_t o, uint16_t v) {
    b[o] = uint8_t(v >> 8);
    b[o + 1] = uint8_t(v);
  }
  ls::PacketView view(uint64_t ts = 1'000'000'000, ls::LinkType lt = ls::LinkType::ETHERNET) const {
    return {b.data(), uint32_t(b.size()), uint32_t(b.size()), ts, 0, lt, 0};
  }
};

inline Pkt tcp4(std::initializer_list<uint8_t> s, std::initializer_list<uint8_t> d, uint16_t sp,
                uint16_t dp, uint8_t flags = 0x10, const char* pay = "") {
  Pkt p;
  p.eth(0x0800).ip4(s, d, 6).tcp(sp, dp, flags).payload(pay).finish();
  return p;
}

inline Pkt udp4(std::initializer_list<uint8_t> s, std::initializer_list<uint8_t> d, uint16_t sp,
                uint16_t dp, const char* pay = "") {
  Pkt p;
  p.eth(0x0800).ip4(s, d, 17).udp(sp, dp).payload(pay).finish();
  return p;
}

}  // namespace lstest
