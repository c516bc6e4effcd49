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
// Both take an integer fast path where the result is the same: to_chars with a
// precision goes through a slow exact-decimal routine, and these run per CSV/JSON field.
inline void append_digits(std::string& o, uint64_t v, int width) {  // zero-padded
  char b[24];
  char* e = std::to_chars(b, b + sizeof b, v).ptr;
  for (int pad = width - int(e - b); pad > 0; pad--) o += '0';
  o.append(b, e);
}

// True when x is so near a rounding tie that the binary product may round the wrong way:
// then only the exact routine knows.
inline bool near_tie(double x) { return std::fabs(x - std::floor(x) - 0.5) < 1e-6; }

inline void append_fixed3(std::string& o, double v) {
  if (!std::isfinite(v)) v = 0;
  double a = std::fabs(v);
  if (a < 1e12 && !near_tie(a * 1000)) {
    uint64_t r = uint64_t(std::llround(a * 1000));
    if (std::signbit(v) && r) o += '-';
    append_uint(o, r / 1000);
    o += '.';
    append_digits(o, r % 1000, 3);
    return;
  }
  char b[40];
  o.append(b, std::to_chars(b, b + sizeof b, v, std::chars_format::fixed, 3).ptr);
}

// printf's %g: 6 significant digits, trailing zeros dropped, exponent form outside
// [1e-4, 1e6).
inline void append_general6(std::string& o, double v) {
  if (!std::isfinite(v)) v = 0;
  static constexpr double kPow[] = {1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9};
  double a = std::fabs(v);
  if (a == 0) {
    o += '0';
    return;
  }
  if (a >= 1e-4 && a < 999999.5) {
    int e = 0;  // floor(log10(a)), from -4 to 5
    if (a >= 1) {
      while (e < 5 && a >= kPow[e + 1]) e++;
    } else {  // only here is -e a valid index (UBSan found kPow[-e] read for e > 0)
      while (e > -4 && a < 1 / kPow[-e]) e--;
    }
    int d = 5 - e;  // decimals for 6 significant digits
    uint64_t r = uint64_t(std::llround(a * kPow[d]));
    if (r >= 1'000'000 && d > 0) r = uint64_t(std::llround(a * kPow[--d]));  // 9.999995 → 10.0000
    if ((r < 1'000'000 || d == 0) && !near_tie(a * kPow[d])) {
      uint64_t unit = uint64_t(kPow[d]);
      uint64_t ip = r / unit, fp = r % unit;
      while (d > 0 && fp % 10 == 0) {  // %g drops trailing zeros
        fp /= 10;
        d--;
      }
      if (std::signbit(v)) o += '-';
      append_uint(o, ip);
      if (d > 0) {
        o += '.';
        append_digits(o, fp, d);
      }
      return;
    }
  }
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
