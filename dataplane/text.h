// Small text helpers shared by the record writer, the feature CSV and the feed/rule
// loaders: number and address formatting without printf, whitespace trimming.
#pragma once
#include <arpa/inet.h>

#include <bit>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <string_view>

namespace ls {

// put_*: write into a buffer with room for the longest form (kMaxNumber for a number,
// kMaxIp for an address) and return the end; append_* wrap them for strings.
constexpr size_t kMaxNumber = 24;  // 20 digits of a uint64, or "-1.23457e-308"
constexpr size_t kMaxIp = 48;      // INET6_ADDRSTRLEN and then some

// "00" … "99": two digits per table read.
inline constexpr char kDigitPairs[] =
    "00010203040506070809101112131415161718192021222324252627282930313233343536373839"
    "40414243444546474849505152535455565758596061626364656667686970717273747576777879"
    "8081828384858687888990919293949596979899";

// Decimal digits of v (1 for 0): from the bit length, one compare to correct it.
inline int decimal_digits(uint64_t v) {
  static constexpr uint64_t kPow10[20] = {1ull, 10ull, 100ull, 1000ull, 10000ull, 100000ull, 1000000ull,
                                          10000000ull, 100000000ull, 1000000000ull, 10000000000ull,
                                          100000000000ull, 1000000000000ull, 10000000000000ull,
                                          100000000000000ull, 1000000000000000ull, 10000000000000000ull,
                                          100000000000000000ull, 1000000000000000000ull, 10000000000000000000ull};
  uint64_t w = v | 1;  // 0 has one digit; 10^d (d ≥ 1) is even, so the compare is v's
  int b = 64 - std::countl_zero(w);  // 1..64
  int d = (b * 1233) >> 12;          // floor(b · log10 2): v's digits, or one less
  return d + (w >= kPow10[d]);
}

// Two digits per step from the end, the length known first: libstdc++'s to_chars finds
// the length with a loop of divisions (timestamps are 19 digits, written four times a
// record), then does the same steps. Above 10^8, one 64-bit division splits off eight
// digits that 32-bit steps write (two independent halves): a timestamp takes two such
// divisions instead of nine.
inline char* put_uint(char* p, uint64_t v) {
  char* end = p + decimal_digits(v);
  char* q = end;
  while (v >= 100'000'000) {
    uint32_t lo = uint32_t(v % 100'000'000);
    v /= 100'000'000;
    uint32_t hi4 = lo / 10000, lo4 = lo % 10000;
    std::memcpy(q - 2, kDigitPairs + 2 * (lo4 % 100), 2);
    std::memcpy(q - 4, kDigitPairs + 2 * (lo4 / 100), 2);
    std::memcpy(q - 6, kDigitPairs + 2 * (hi4 % 100), 2);
    std::memcpy(q - 8, kDigitPairs + 2 * (hi4 / 100), 2);
    q -= 8;
  }
  uint32_t w = uint32_t(v);  // < 10^8
  while (w >= 100) {
    uint32_t r = w % 100;
    w /= 100;
    q -= 2;
    std::memcpy(q, kDigitPairs + 2 * r, 2);
  }
  if (w >= 10) std::memcpy(q - 2, kDigitPairs + 2 * w, 2);
  else q[-1] = char('0' + w);
  return end;
}
inline char* put_int(char* p, int64_t v) {
  if (v < 0) {
    *p++ = '-';
    return put_uint(p, 0 - uint64_t(v));
  }
  return put_uint(p, uint64_t(v));
}

// Fixed 3 decimals (records) or 6 significant digits (features); non-finite → 0.
// Both take an integer fast path where the result is the same: to_chars with a
// precision goes through a slow exact-decimal routine, and these run per CSV/JSON field.

// Exactly `width` digits, zero-padded: v < 10^width (a fraction's digits).
inline char* put_digits(char* p, uint64_t v, int width) {
  char* q = p + width;
  for (; q - p >= 2; q -= 2, v /= 100) std::memcpy(q - 2, kDigitPairs + 2 * (v % 100), 2);
  if (q > p) *p = char('0' + v);
  return p + width;
}

// True when x is so near a rounding tie that the binary product may round the wrong way:
// then only the exact routine knows.
inline bool near_tie(double x) { return std::fabs(x - std::floor(x) - 0.5) < 1e-6; }

// |v| ≥ 1e36 does not fit kMaxFixed3 bytes in fixed form: scientific then.
constexpr size_t kMaxFixed3 = 40;
inline char* put_fixed3(char* p, double v) {
  if (!std::isfinite(v)) v = 0;
  double a = std::fabs(v);
  if (a < 1e12 && !near_tie(a * 1000)) {
    uint64_t r = uint64_t(std::llround(a * 1000));
    if (std::signbit(v) && r) *p++ = '-';
    p = put_uint(p, r / 1000);
    *p++ = '.';
    return put_digits(p, r % 1000, 3);
  }
  auto r = std::to_chars(p, p + kMaxFixed3, v, std::chars_format::fixed, 3);
  return r.ec == std::errc{} ? r.ptr : std::to_chars(p, p + kMaxFixed3, v, std::chars_format::scientific, 3).ptr;
}

// printf's %g: 6 significant digits, trailing zeros dropped, exponent form outside
// [1e-4, 1e6).
inline char* put_general6(char* p, double v) {
  if (!std::isfinite(v)) v = 0;
  static constexpr double kPow[] = {1, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9};
  double a = std::fabs(v);
  if (a == 0) {
    *p++ = '0';
    return p;
  }
  if (a < 999999.5 && a == std::floor(a)) {  // whole numbers (counts): the digits as they are
    if (std::signbit(v)) *p++ = '-';
    return put_uint(p, uint64_t(a));
  }
  if (a >= 1e-4 && a < 999999.5) {
    int e = 0;  // floor(log10(a)), from -4 to 5
    if (a >= 1) {
      while (e < 5 && a >= kPow[e + 1]) e++;
    } else {  // only here is -e a valid index (UBSan found kPow[-e] read for e > 0)
      while (e > -4 && a < 1 / kPow[-e]) e--;
    }
    int d = 5 - e;  // decimals for 6 significant digits
    // x + 0.5 truncated = llround(x) unless x is within 1e-6 of a tie (x < 2e6: the
    // addition's error is ~1e-10), and ties go to to_chars below.
    // Both roundings must be clear of a tie (99999.95, stored as 99999.949999…, is
    // 999999.5 once scaled: the first rounding alone would make it 100000).
    double x = a * kPow[d];
    uint32_t r = uint32_t(x + 0.5);
    bool tie = near_tie(x);
    if (r >= 1'000'000 && d > 0) {  // 9.999995 → 10.0000
      x = a * kPow[--d];
      r = uint32_t(x + 0.5);
      tie |= near_tie(x);
    }
    if ((r < 1'000'000 || d == 0) && !tie) {
      uint32_t unit = uint32_t(kPow[d]);
      uint32_t ip = r / unit, fp = r % unit;
      while (d > 0 && fp % 10 == 0) {  // %g drops trailing zeros
        fp /= 10;
        d--;
      }
      if (std::signbit(v)) *p++ = '-';
      p = put_uint(p, ip);
      if (d > 0) {
        *p++ = '.';
        p = put_digits(p, fp, d);
      }
      return p;
    }
  }
  return std::to_chars(p, p + kMaxNumber, v, std::chars_format::general, 6).ptr;
}

// %g of std::round(x): the sketches' estimates, written as counts. Below 10^6 the rounded
// value is an integer %g prints as is; x - trunc(x) is exact, so the half-way test is too.
inline char* put_rounded_g6(char* p, double x) {
  if (x >= 0 && x < 999999.5) {
    uint64_t r = uint64_t(x);
    return put_uint(p, r + (x - double(r) >= 0.5));
  }
  return put_general6(p, std::round(x));
}

// Per octet value: its digits, then their count in the last byte. Four bytes copied and
// the position moved by the count: no branch per digit (addresses are in every record).
inline constexpr auto kOctets = [] {
  struct Table {
    char c[256][4];
  } t{};
  for (int v = 0; v < 256; v++) {
    int n = v >= 100 ? 3 : v >= 10 ? 2 : 1;
    for (int i = n - 1, x = v; i >= 0; i--, x /= 10) t.c[v][i] = char('0' + x % 10);
    t.c[v][3] = char(n);
  }
  return t;
}();

inline char* put_ip4(char* p, const uint8_t* a) {
  for (int i = 0; i < 4; i++) {
    const char* o = kOctets.c[a[i]];
    std::memcpy(p, o, 4);  // the count byte lands past the digits: overwritten or unused
    p += o[3];
    *p++ = '.';
  }
  return p - 1;  // the last '.' is not part of the address
}

// The text glibc's inet_ntop gives, character for character (tested against it): the
// longest run of two or more zero groups (the first of equal runs) as "::", groups in
// lowercase hex without leading zeros, and the dotted form for the last 32 bits after
// six zero groups or after ::ffff (IPv4-compatible and IPv4-mapped).
inline char* put_ip6(char* p, const uint8_t* a) {
  static constexpr char kHex[] = "0123456789abcdef";
  uint16_t w[8];
  for (int i = 0; i < 8; i++) w[i] = uint16_t(a[2 * i] << 8 | a[2 * i + 1]);
  int best = -1, best_len = 0;
  for (int i = 0; i < 8;) {
    if (w[i]) {
      i++;
      continue;
    }
    int j = i;
    while (j < 8 && !w[j]) j++;
    if (j - i > best_len) best = i, best_len = j - i;
    i = j;
  }
  if (best_len < 2) best = -1;
  for (int i = 0; i < 8; i++) {
    if (best >= 0 && i >= best && i < best + best_len) {
      if (i == best) *p++ = ':';
      continue;
    }
    if (i) *p++ = ':';
    if (i == 6 && best == 0 && (best_len == 6 || (best_len == 5 && w[5] == 0xffff))) return put_ip4(p, a + 12);
    uint16_t v = w[i];
    int shift = v >= 0x1000 ? 12 : v >= 0x100 ? 8 : v >= 0x10 ? 4 : 0;
    for (; shift >= 0; shift -= 4) *p++ = kHex[(v >> shift) & 15];
  }
  if (best >= 0 && best + best_len == 8) *p++ = ':';
  return p;
}

// IPv4 in the first 4 bytes when ip_ver is 4. Not inet_ntop: it goes through printf
// (4,600 instructions an IPv6 address) and this runs for every record.
inline char* put_ip(char* p, const uint8_t* a, uint8_t ip_ver) {
  return ip_ver == 6 ? put_ip6(p, a) : put_ip4(p, a);
}

inline void append_uint(std::string& o, uint64_t v) {
  char b[kMaxNumber];
  o.append(b, put_uint(b, v));
}
inline void append_fixed3(std::string& o, double v) {
  char b[kMaxFixed3];
  o.append(b, put_fixed3(b, v));
}
inline void append_general6(std::string& o, double v) {
  char b[kMaxNumber];
  o.append(b, put_general6(b, v));
}
inline std::string format_ip(const uint8_t* a, uint8_t ip_ver) {
  char b[kMaxIp];
  return std::string(b, put_ip(b, a, ip_ver));
}

// Text built in a stack buffer and appended to `o` in a few pieces (when the buffer
// nears its end, around long fields, and on destruction): no string growth per field.
class TextBuf {
 public:
  // The longest field a Run writes: an address (or a literal of up to that) and a separator.
  static constexpr size_t kMaxField = kMaxIp + 1;

  // Up to N fields written back to back after one room check for all of them: a record's
  // ~60 fields each checked the room and reloaded the position (4 % of the full pipeline's
  // instructions). The Run keeps the position in a register and hands it back when it ends.
  // Variable-length text (text(), hex()) goes through the TextBuf between Runs.
  class Run {
   public:
    Run(const Run&) = delete;
    Run& operator=(const Run&) = delete;
    ~Run() { w_.p_ = p_; }
    Run& num(uint64_t v) { return fits(kMaxNumber), p_ = put_uint(p_, v), *this; }
    Run& sint(int64_t v) { return fits(kMaxNumber), p_ = put_int(p_, v), *this; }
    Run& g6(double v) { return fits(kMaxNumber), p_ = put_general6(p_, v), *this; }  // %g
    Run& rounded(double v) { return fits(kMaxNumber), p_ = put_rounded_g6(p_, v), *this; }
    Run& f3(double v) { return fits(kMaxFixed3), p_ = put_fixed3(p_, v), *this; }  // %.3f
    Run& ip(const uint8_t* a, uint8_t ver) { return fits(kMaxIp), p_ = put_ip(p_, a, ver), *this; }
    template <size_t N>
    Run& lit(const char (&s)[N]) {
      static_assert(N - 1 <= kMaxField - 1);
      fits(N - 1);
      std::memcpy(p_, s, N - 1);
      p_ += N - 1;
      return *this;
    }
    Run& c(char ch = ',') { return fits(1), *p_++ = ch, *this; }

   private:
    friend class TextBuf;
    Run(TextBuf& w, [[maybe_unused]] size_t bytes) : w_(w), p_(w.p_) {
#ifndef NDEBUG
      end_ = p_ + bytes;
#endif
    }
    // Debug builds (the sanitizer suites) check every write against the room reserved:
    // a Run given too small an N fails there, not silently past the buffer.
    void fits([[maybe_unused]] size_t n) const {
#ifndef NDEBUG
      if (size_t(end_ - p_) < n) {
        std::fputs("TextBuf::Run: more fields than reserved\n", stderr);
        std::abort();
      }
#endif
    }
    TextBuf& w_;
    char* p_;
#ifndef NDEBUG
    char* end_;
#endif
  };
  template <size_t N>
  Run run() {
    static_assert(N * kMaxField <= sizeof buf_);
    room(N * kMaxField);
    return Run(*this, N * kMaxField);
  }

  explicit TextBuf(std::string& o) : o_(o) {}
  ~TextBuf() { flush(); }
  TextBuf(const TextBuf&) = delete;
  TextBuf& operator=(const TextBuf&) = delete;
  // Numbers, addresses, literals and separators go through a Run (run<1>() for one).
  void text(std::string_view s) {
    if (s.size() > sizeof buf_ / 8) {
      flush();
      o_.append(s);
      return;
    }
    room(s.size());
    std::memcpy(p_, s.data(), s.size());
    p_ += s.size();
  }
  void hex(const uint8_t* d, size_t n) {
    static constexpr char kDigits[] = "0123456789abcdef";
    for (size_t i = 0; i < n;) {
      room(2);
      for (size_t k = size_t(buf_ + sizeof buf_ - p_) / 2; k && i < n; k--, i++) {
        *p_++ = kDigits[d[i] >> 4];
        *p_++ = kDigits[d[i] & 15];
      }
    }
  }
  void flush() {
    o_.append(buf_, p_);
    p_ = buf_;
  }

 private:
  void room(size_t n) {
    if (size_t(buf_ + sizeof buf_ - p_) < n) flush();
  }
  std::string& o_;
  char buf_[4096];
  char* p_ = buf_;
};

inline std::string trim(const std::string& s) {
  size_t a = s.find_first_not_of(" \t\r\n"), b = s.find_last_not_of(" \t\r\n");
  return a == std::string::npos ? "" : s.substr(a, b - a + 1);
}

}  // namespace ls
