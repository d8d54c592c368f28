// The code of dropout.cpp, compiled once per code path (see paths.h): the AVX-512 loop where CNNC_AVX512 is defined,
// the scalar loop everywhere; both give the same masks.

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

#ifdef CNNC_AVX512
inline __m512i mix(__m512i x) {
  x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
  x = _mm512_mullo_epi32(x, _mm512_set1_epi32(0x7feb352d));
  x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 15));
  x = _mm512_mullo_epi32(x, _mm512_set1_epi32(static_cast<int>(0x846ca68bU)));
  return _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
}
#endif

// out[i] = in[i] * scale where element i is kept, else 0, for i in [begin, end)
template <typename T>
void apply(const T* in, T* out, int64_t begin, int64_t end, uint32_t s0, uint32_t s1,
           uint32_t threshold, float scale) {
  int64_t i = begin;
#ifdef CNNC_AVX512
  if constexpr (kVector<T>) {
    const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    const __m512i seed0 = _mm512_set1_epi32(static_cast<int>(s0));
    const __m512i seed1 = _mm512_set1_epi32(static_cast<int>(s1));
    const __m512i limit = _mm512_set1_epi32(static_cast<int>(threshold));
    const __m512 factor = _mm512_set1_ps(scale);
    for (; i < end; i += kLanes) {
      const __mmask16 valid = lanes(end - i);
      const __m512i index = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(i)), lane);
      const __m512i hash = mix(_mm512_add_epi32(mix(_mm512_xor_si512(index, seed0)), seed1));
      const __mmask16 kept = _mm512_cmpge_epu32_mask(hash, limit);
      const __m512 x = load(in + i, valid);
      store(out + i, _mm512_maskz_mul_ps(kept, x, factor), valid);
    }
    return;
  }
#endif
  for (; i < end; ++i) {
    const bool k = keep(static_cast<uint32_t>(i), s0, s1, threshold);
    out[i] = static_cast<T>(k ? static_cast<float>(in[i]) * scale : 0.f);
  }
}

// x dense in its memory format. The backward is the same map applied to the gradient.
torch::Tensor dropout_apply(const torch::Tensor& x, double p, int64_t s0, int64_t s1) {
  TORCH_CHECK(x.is_non_overlapping_and_dense(), "dropout kernel: a dense tensor expected");
  TORCH_CHECK(x.numel() < (int64_t{1} << 32), "dropout kernel: over 2^32 elements");
  TORCH_CHECK(p >= 0.0 && p < 1.0, "dropout kernel: p must be in [0, 1)");
  auto out = torch::empty_like(x);
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
