// Keyed client pseudonyms for operators who agree to correlate clients (off by default;
// docs/ti.md): pseudonym = HMAC-SHA256(period key, client address), period key =
// HMAC-SHA256(secret, period number). Partners holding the same secret get the same
// pseudonym for the same client within a period; without the secret it cannot be reversed
// or tested against a guessed address, and rotation stops linking a client across periods.
// Used by the TI export (ctrl/ti_export.h) and by exported client sketches
// (features/sketch_export.h).
#pragma once
#include <cstdint>
#include <string>

#include <openssl/types.h>

namespace ls {

class Pseudonymizer {
 public:
  // `secret` ≥ 16 bytes (throws std::invalid_argument); `rotate_ns` > 0.
  Pseudonymizer(std::string secret, uint64_t rotate_ns);
  ~Pseudonymizer();
  Pseudonymizer(const Pseudonymizer&) = delete;
  Pseudonymizer& operator=(const Pseudonymizer&) = delete;
  // Reads the secret from a file (trailing newline dropped); throws naming the file.
  static std::string read_secret(const std::string& path);
  uint64_t period(uint64_t t_ns) const { return t_ns / rotate_ns_; }
  uint64_t rotate_ns() const { return rotate_ns_; }
  // 24 hex digits. Not thread-safe (the period key is cached): one per thread.
  std::string of(const uint8_t* addr, uint8_t ip_ver, uint64_t t_ns);
  // 8 hex digits naming this secret and rotation, so that files pseudonymised under
  // different ones are refused rather than silently kept apart.
  std::string key_id() const;

 private:
  std::string secret_;
  uint64_t rotate_ns_;
  uint64_t key_period_ = UINT64_MAX;
  // HMAC under the period's key, keyed once a period: re-initialised per address without
  // the key, so each pseudonym costs its hashing only (HMAC() looked the algorithm up and
  // set the key every call).
  EVP_MAC* mac_ = nullptr;
  EVP_MAC_CTX* ctx_ = nullptr;
};

}  // namespace ls
