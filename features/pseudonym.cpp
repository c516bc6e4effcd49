#include "features/pseudonym.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/stat.h>

namespace ls {

namespace {

void put_hex(std::string& o, const unsigned char* b, size_t n) {
  static const char hex[] = "0123456789abcdef";
  o.resize(2 * n);
  for (size_t i = 0; i < n; i++) {
    o[2 * i] = hex[b[i] >> 4];
    o[2 * i + 1] = hex[b[i] & 15];
  }
}

}  // namespace

Pseudonymizer::Pseudonymizer(std::string secret, uint64_t rotate_ns) : secret_(std::move(secret)), rotate_ns_(rotate_ns) {
  if (secret_.size() < 16) throw std::invalid_argument("pseudonym secret must be at least 16 bytes");
  if (!rotate_ns_) throw std::invalid_argument("pseudonym rotation period must be > 0");
}

std::string Pseudonymizer::read_secret(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(path + ": cannot read the pseudonym secret");
  std::string s((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  if (s.size() < 16) throw std::runtime_error(path + ": pseudonym secret shorter than 16 bytes");
  struct stat st {};
  if (stat(path.c_str(), &st) == 0 && (st.st_mode & 077))
    std::fprintf(stderr, "linesight: warning: %s is readable by group or others (chmod 600)\n", path.c_str());
  return s;
}

std::string Pseudonymizer::of(const uint8_t* addr, uint8_t ver, uint64_t t_ns) {
  uint64_t p = period(t_ns);
  unsigned int len = 32;
  if (p != key_period_) {  // derive this period's key once
    std::string label = "linesight-pseudonym-v1|" + std::to_string(rotate_ns_) + "|" + std::to_string(p);
    HMAC(EVP_sha256(), secret_.data(), int(secret_.size()), reinterpret_cast<const unsigned char*>(label.data()),
         label.size(), key_, &len);
    key_period_ = p;
  }
  unsigned char msg[17], out[32];
  msg[0] = ver;
  std::memcpy(msg + 1, addr, 16);
  if (ver == 4) std::memset(msg + 5, 0, 12);
  HMAC(EVP_sha256(), key_, 32, msg, sizeof msg, out, &len);
  std::string o;
  put_hex(o, out, 12);
  return o;
}

std::string Pseudonymizer::key_id() const {
  std::string label = "linesight-pseudonym-key-v1|" + std::to_string(rotate_ns_);
  unsigned char out[32];
  unsigned int len = 32;
  HMAC(EVP_sha256(), secret_.data(), int(secret_.size()), reinterpret_cast<const unsigned char*>(label.data()),
       label.size(), out, &len);
  std::string o;
  put_hex(o, out, 4);
  return o;
}

}  // namespace ls
