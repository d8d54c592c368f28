// Shared by cnnc's bf16 kernels (conv3x3.cpp, conv_wgrad.cpp): bf16 <-> fp32 as torch does
// it, in portable C++. Included before paths.h, outside the code paths' namespaces, so every
// path (scalar or vector) calls the same generic functions.

#pragma once

#include <cstdint>
#include <cstring>

namespace cnnc_bf16 {

// Round to nearest even, as c10::BFloat16 does (NaN stays NaN).
inline uint16_t to_bf16(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  if (v != v) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7FFF + ((bits >> 16) & 1);
  return static_cast<uint16_t>(bits >> 16);
}

// Exact: a bf16 is the top half of an fp32.
inline float from_bf16(uint16_t v) {
  const uint32_t bits = static_cast<uint32_t>(v) << 16;
  float out;
  std::memcpy(&out, &bits, sizeof(out));
  return out;
}

}  // namespace cnnc_bf16
