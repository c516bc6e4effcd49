// Small text helpers shared by the record writer, the feature CSV and the feed/rule
// loaders: number and address formatting without printf, whitespace trimming.
#pragma once
#include <arpa/inet.h>

#include <charconv>
#include <cmath>
#include <cstdint>
#include <string>

namespace ls {

inline void append_uint(std::string& o, uint64_t v) {
  char b[24];
  o.append(b, std::to_chars(b, b + sizeof b, v).ptr);
}

// Fixed 3 decimals (records) or 6 significant digits (features); non-finite → 0.
inline void append_fixed3(std::string& o, double v) {
  if (!std::isfinite(v)) v = 0;
  char b[40];
  o.append(b, std::to_chars(b, b + sizeof b, v, std::chars_format::fixed, 3).ptr);
}
inline void append_general6(std::string& o, double v) {
  if (!std::isfinite(v)) v = 0;
  char b[40];
  o.append(b, std::to_chars(b, b + sizeof b, v, std::chars_format::general, 6).ptr);
}

// IPv4 in the first 4 bytes when ip_ver is 4. Dotted quads directly: inet_ntop goes
// through printf and this runs once per record.
inline std::string format_ip(const uint8_t* a, uint8_t ip_ver) {
  if (ip_ver == 6) {
    char b[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET6, a, b, sizeof b);
    return b;
  }
  std::string s;
  s.reserve(15);
  for (int i = 0; i < 4; i++) {
    if (i) s += '.';
    uint8_t v = a[i];
    if (v >= 100) s += char('0' + v / 100);
    if (v >= 10) s += char('0' + v / 10 % 10);
    s += char('0' + v % 10);
  }
  return s;
}

inline std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r\n"), b = s.find_last_not_of(" \t\r\n");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

}  // namespace ls
