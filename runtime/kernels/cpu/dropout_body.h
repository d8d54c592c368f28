// The code of dropout.cpp, compiled once per code path (see paths.h): the vector loop, written
// once against at::vec (vec.h), on the vector builds (AVX2, AVX-512, NEON) for fp32, bf16 and
// fp16; the scalar loop on the scalar build and for double. All give the same masks.

inline uint32_t mix(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}

inline bool keep(uint32_t index, uint32_t s0, uint32_t s1, uint32_t threshold) {
  return mix(mix(index ^ s0) + s1) >= threshold;
}

// ---- vector path: the same uint32 arithmetic on int32 lanes (two's complement wraps alike) ---

using IVec = at::vec::Vectorized<int32_t>;
static_assert(IVec::size() == kWidth, "one int32 lane per fp32 lane");

C10_ALWAYS_INLINE IVec i32(uint32_t v) { return IVec(static_cast<int32_t>(v)); }

// x >> s on uint32 lanes: at::vec's int32 shift is arithmetic, so the sign copies are masked off.
C10_ALWAYS_INLINE IVec shr(const IVec& x, int s) { return (x >> IVec(s)) & i32(0xFFFFFFFFU >> s); }

C10_ALWAYS_INLINE IVec mix(IVec x) {
  x = x ^ shr(x, 16);
  x = x * i32(0x7feb352dU);
  x = x ^ shr(x, 15);
  x = x * i32(0x846ca68bU);
  return x ^ shr(x, 16);
}

// Elements [i, i + n), n <= kWidth, whose uint32 indices are the lanes of `index`: kept where
// mix(mix(index ^ s0) + s1) >= threshold (the sign flips of `limit` and here make it unsigned).
template <typename T>
C10_ALWAYS_INLINE void apply_vec(const T* in, T* out, int64_t i, int64_t n, const IVec& index,
                                 const IVec& s0, const IVec& s1, const IVec& limit,
                                 const Vec& scale) {
  const IVec hash = mix(mix(index ^ s0) + s1);
  const Vec kept = at::vec::cast<float>((hash ^ i32(0x80000000U)) >= limit);  // all-ones lanes
  vstore(out + i, (vload(in + i, n) * scale) & kept, n);  // dropped lanes: +0
}

// out[i] = in[i] * scale where element i is kept, else 0, for i in [begin, end)
template <typename T>
void apply(const T* in, T* out, int64_t begin, int64_t end, uint32_t s0, uint32_t s1,
           uint32_t threshold, float scale) {
  int64_t i = begin;
  if constexpr (kVectorBuild && kVectorType<T>) {
    const IVec seed0 = i32(s0), seed1 = i32(s1), limit = i32(threshold ^ 0x80000000U);
    const IVec stride(static_cast<int32_t>(kWidth));
    const Vec factor(scale);
    IVec index = i32(static_cast<uint32_t>(i)) + IVec::arange(0, 1);
    for (; i + kWidth <= end; i += kWidth, index = index + stride) {
      apply_vec(in, out, i, kWidth, index, seed0, seed1, limit, factor);
    }
    if (i < end) apply_vec(in, out, i, end - i, index, seed0, seed1, limit, factor);
    return;
  }
  for (; i < end; ++i) {
    const bool k = keep(static_cast<uint32_t>(i), s0, s1, threshold);
    out[i] = static_cast<T>(k ? static_cast<float>(in[i]) * scale : 0.f);
  }
}

// x dense in its memory format. The backward is the same map applied to the gradient.
at::Tensor dropout_apply(const at::Tensor& x, double p, int64_t s0, int64_t s1) {
  TORCH_CHECK(x.is_non_overlapping_and_dense(), "dropout kernel: a dense tensor expected");
  TORCH_CHECK(x.numel() < (int64_t{1} << 32), "dropout kernel: over 2^32 elements");
  TORCH_CHECK(p >= 0.0 && p < 1.0, "dropout kernel: p must be in [0, 1)");
  auto out = at::empty_like(x);
  const auto threshold = static_cast<uint32_t>(std::min(p * 4294967296.0, 4294967295.0));
  const auto scale = static_cast<float>(1.0 / (1.0 - p));
  const auto a = static_cast<uint32_t>(s0), b = static_cast<uint32_t>(s1);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "dropout", [&] {
    const auto* in = x.data_ptr<scalar_t>();
    auto* o = out.data_ptr<scalar_t>();
    at::parallel_for(0, (x.numel() + 255) / 256, 64, [&](int64_t begin, int64_t end) {
      apply(in, o, begin * 256, std::min(end * 256, x.numel()), a, b, threshold, scale);
    });
  });
  return out;
}
