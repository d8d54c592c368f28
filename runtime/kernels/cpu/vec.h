// cnnc's words over ATen's portable SIMD layer, at::vec::Vectorized<float>: the one spelling
// of the kernels' vector code. Compiled per code path (paths.h), Vec is 16 fp32 lanes of
// AVX-512, 8 of AVX2, 4 of NEON, or plain arrays on the scalar build. Included by paths.h
// before the body, outside the kernel's namespace.

#pragma once

#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>
#include <type_traits>

namespace cnnc_vec {

using Vec = at::vec::Vectorized<float>;
constexpr int64_t kWidth = Vec::size();  // fp32 lanes of one vector on this build

// False on x86-64's scalar build, where at::vec's Vectorized is plain arrays: bodies run their
// scalar loops there (the reference their vector paths are tested against; the generic int32
// lanes would also overflow where uint32 arithmetic wraps by definition).
#if defined(CPU_CAPABILITY_DEFAULT) && !defined(__aarch64__)
constexpr bool kVectorBuild = false;
#else
constexpr bool kVectorBuild = true;
#endif

// The element types the vector code handles (fp32 in registers); double takes scalar loops.
template <typename T>
constexpr bool kVectorType =
    std::is_same_v<T, float> || std::is_same_v<T, c10::BFloat16> || std::is_same_v<T, c10::Half>;

// Loads n <= kWidth elements of fp32, bf16 or fp16 as fp32 lanes (exact); lanes from n are 0.
template <typename T>
inline Vec vload(const T* p, int64_t n = kWidth) {
  if constexpr (std::is_same_v<T, float>) {
    return Vec::loadu(p, n);
  } else {
    if (n == kWidth) {
      Vec out;
      at::vec::load_to_float<T>(p, out);
      return out;
    }
    // a reduced-precision vector holds 2 * kWidth elements; the low half becomes fp32
    return std::get<0>(at::vec::convert_to_float<T>(at::vec::Vectorized<T>::loadu(p, n)));
  }
}

// Stores the first n <= kWidth lanes to fp32, bf16 or fp16 memory (round to nearest even, as
// c10's conversions; NaN stays NaN).
template <typename T>
inline void vstore(T* p, const Vec& v, int64_t n = kWidth) {
  if constexpr (std::is_same_v<T, float>) {
    v.store(p, n);
  } else {
    at::vec::convert_from_float<T>(v, v).store(p, n);
  }
}

// Lane i holds float(i): window and channel indices computed in vector registers.
inline Vec iota() { return Vec::arange(0.f, 1.f); }

}  // namespace cnnc_vec
