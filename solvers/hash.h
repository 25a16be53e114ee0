// FNV-1a (64-bit): the one hash rotq uses for stable ids, per-tensor seeds and data checksums.
// Not cryptographic; chosen because it is tiny, fixed by its definition, and the same everywhere.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

namespace rotq {

constexpr uint64_t kFnvOffset = 1469598103934665603ull;

// Continues hash `h` over `n` bytes (start from kFnvOffset; feed chunks in order).
inline uint64_t fnv1a(const void* data, size_t n, uint64_t h = kFnvOffset) {
  const auto* p = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

inline uint64_t fnv1a(const std::string& s) { return fnv1a(s.data(), s.size()); }

// 16 lower-case hex digits.
inline std::string hex16(uint64_t h) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

}  // namespace rotq
