// Included by paths.h inside each code path's namespace (so no include guard and no
// includes: <immintrin.h> and c10's BFloat16/Half come before). 16-lane fp32 AVX-512 vectors
// loaded from and stored to fp32, bf16 and fp16 memory, with masks for partial vectors, when
// the path being compiled is an AVX-512 one (CNNC_AVX512); the scalar path gets the
// constants alone.

constexpr int64_t kLanes = 16;

// The vector paths handle fp32, bf16 and fp16; double takes the scalar loops.
template <typename T>
constexpr bool kVector = !std::is_same_v<T, double>;

#ifdef CNNC_AVX512
inline __m512 load(const float* p, __mmask16 m) { return _mm512_maskz_loadu_ps(m, p); }
inline __m512 load(const c10::BFloat16* p, __mmask16 m) {
  const __m256i h = _mm256_maskz_loadu_epi16(m, p);
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
inline __m512 load(const c10::Half* p, __mmask16 m) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
}
inline void store(float* p, __m512 v, __mmask16 m) { _mm512_mask_storeu_ps(p, m, v); }
inline void store(c10::BFloat16* p, __m512 v, __mmask16 m) {
  // round to nearest even, as c10::BFloat16 does (exact for values that came from bf16);
  // NaN stays NaN
  const __m512i bits = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(bits, 16), _mm512_set1_epi32(1));
  const __m512i rounded = _mm512_add_epi32(bits, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7FFF)));
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  const __m512i out = _mm512_mask_mov_epi32(rounded, nan, bits);
  _mm256_mask_storeu_epi16(p, m, _mm512_cvtepi32_epi16(_mm512_srli_epi32(out, 16)));
}
inline void store(c10::Half* p, __m512 v, __mmask16 m) {
  _mm256_mask_storeu_epi16(p, m, _mm512_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
}
inline __mmask16 lanes(int64_t n) {
  return n >= kLanes ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
}
#endif
