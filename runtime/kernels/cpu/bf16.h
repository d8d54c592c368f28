// Shared by cnnc's AVX512-BF16 kernels (conv3x3.cpp, conv_wgrad.cpp): the target attribute
// their vector code is compiled with, the run-time check that this CPU has the instructions,
// and fp32 -> bf16 rounding as torch does it. The vector code is compiled for AVX512-BF16
// through the target attribute (whatever the build flags) and runs only where
// `cpu_has_bf16()` says so; CNNC_BF16 is undefined where it cannot be compiled at all.

#pragma once

#include <cstdint>
#include <cstring>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define CNNC_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))
#define CNNC_BF16 1
#endif

namespace cnnc_bf16 {

inline bool cpu_has_bf16() {
#ifdef CNNC_BF16
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512bf16");
#else
  return false;
#endif
}

// Round to nearest even, as c10::BFloat16 does (NaN stays NaN).
inline uint16_t to_bf16(float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof(bits));
  if (v != v) return static_cast<uint16_t>((bits >> 16) | 0x40);
  bits += 0x7FFF + ((bits >> 16) & 1);
  return static_cast<uint16_t>(bits >> 16);
}

}  // namespace cnnc_bf16
