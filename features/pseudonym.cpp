#include "features/pseudonym.h"

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/params.h>
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
  mac_ = EVP_MAC_fetch(nullptr, "HMAC", nullptr);
  ctx_ = mac_ ? EVP_MAC_CTX_new(mac_) : nullptr;
  if (!ctx_) {
    EVP_MAC_free(mac_);
    throw std::runtime_error("OpenSSL has no HMAC");
  }
}

Pseudonymizer::~Pseudonymizer() {
  EVP_MAC_CTX_free(ctx_);
  EVP_MAC_free(mac_);
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
  if (p != key_period_) {  // derive this period's key and key the context with it, once
    std::string label = "linesight-pseudonym-v1|" + std::to_string(rotate_ns_) + "|" + std::to_string(p);
    unsigned char key[32];
    unsigned int len = 32;
    HMAC(EVP_sha256(), secret_.data(), int(secret_.size()), reinterpret_cast<const unsigned char*>(label.data()),
         label.size(), key, &len);
    char digest[] = "SHA256";
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", digest, 0), OSSL_PARAM_construct_end()};
    if (!EVP_MAC_init(ctx_, key, sizeof key, params)) throw std::runtime_error("HMAC-SHA256: cannot set the key");
    key_period_ = p;
  } else if (!EVP_MAC_init(ctx_, nullptr, 0, nullptr)) {  // the same key again
    throw std::runtime_error("HMAC-SHA256: cannot restart");
  }
  unsigned char msg[17], out[32];
  msg[0] = ver;
  std::memcpy(msg + 1, addr, 16);
  if (ver == 4) std::memset(msg + 5, 0, 12);
  size_t len = 0;
  if (!EVP_MAC_update(ctx_, msg, sizeof msg) || !EVP_MAC_final(ctx_, out, &len, sizeof out) || len != 32)
    throw std::runtime_error("HMAC-SHA256 failed");
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
