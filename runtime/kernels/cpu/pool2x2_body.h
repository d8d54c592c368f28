// The code of pool2x2.cpp, compiled once per code path (see paths.h): the AVX-512 blocks
// where CNNC_AVX512 is defined, the scalar loops everywhere (and for the vector tails).

constexpr uint8_t kNoGrad = 4;

// ---- scalar path: any ISA, and the tails of the vector path --------------------------------

inline void window(float a, float b, float c, float d, bool relu, float& out, uint8_t& k) {
  const bool tb = (b > a) | (b != b);
  const float m0 = tb ? b : a;
  const bool td = (d > c) | (d != d);
  const float m1 = td ? d : c;
  const bool tv = (m1 > m0) | (m1 != m1);
  float m = tv ? m1 : m0;
  uint8_t kk = tv ? static_cast<uint8_t>(2 + td) : static_cast<uint8_t>(tb);
  if (relu && m <= 0.f) {  // torch's ReLU passes NaN and its gradient through
    kk = kNoGrad;
    m = 0.f;
  }
  out = m;
  k = kk;
}

template <typename T>
inline float f32(T v) { return static_cast<float>(v); }

#ifdef CNNC_AVX512
// The window rule on 16 lanes at once (same semantics as `window`).
inline void window16(__m512 a, __m512 b, __m512 c, __m512 d, bool relu, __m512& out,
                     __m128i& k) {
  const __mmask16 tb = _mm512_cmp_ps_mask(b, a, _CMP_GT_OQ) | _mm512_cmp_ps_mask(b, b, _CMP_UNORD_Q);
  const __m512 m0 = _mm512_mask_blend_ps(tb, a, b);
  const __mmask16 td = _mm512_cmp_ps_mask(d, c, _CMP_GT_OQ) | _mm512_cmp_ps_mask(d, d, _CMP_UNORD_Q);
  const __m512 m1 = _mm512_mask_blend_ps(td, c, d);
  const __mmask16 tv = _mm512_cmp_ps_mask(m1, m0, _CMP_GT_OQ) | _mm512_cmp_ps_mask(m1, m1, _CMP_UNORD_Q);
  __m512 m = _mm512_mask_blend_ps(tv, m0, m1);
  const __m128i one = _mm_set1_epi8(1);
  const __m128i kb = _mm_maskz_mov_epi8(tb, one);
  const __m128i kd = _mm_add_epi8(_mm_set1_epi8(2), _mm_maskz_mov_epi8(td, one));
  k = _mm_mask_blend_epi8(tv, kb, kd);
  if (relu) {
    const __m512 zero = _mm512_setzero_ps();
    const __mmask16 cut = _mm512_cmp_ps_mask(m, zero, _CMP_LE_OQ);  // false for NaN
    k = _mm_mask_mov_epi8(k, cut, _mm_set1_epi8(static_cast<char>(kNoGrad)));
    m = _mm512_mask_mov_ps(m, cut, zero);
  }
  out = m;
}

// Lane-pair shuffles between "two windows side by side" and "one row of 32 inputs".
inline __m512i even_idx() {
  return _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
}
inline __m512i odd_idx() {
  return _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
}
inline __m512i interleave_lo() {
  return _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
}
inline __m512i interleave_hi() {
  return _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
}
#endif

// ---- forward --------------------------------------------------------------------------------

// One output row of an NCHW plane: inputs r0/r1 (2*ow_count+ elements), outputs y/k.
template <typename T>
void forward_row_nchw(const T* r0, const T* r1, T* y, uint8_t* k, int64_t OW, bool relu) {
  int64_t ow = 0;
#ifdef CNNC_AVX512
  if constexpr (kVector<T>) for (; ow < OW; ow += 16) {
    const int64_t n = OW - ow < 16 ? OW - ow : 16;
    const __mmask16 lo = lanes(2 * n), hi = lanes(2 * n - 16 > 0 ? 2 * n - 16 : 0);
    const __m512 p0 = load(r0 + 2 * ow, lo), q0 = load(r0 + 2 * ow + 16, hi);
    const __m512 p1 = load(r1 + 2 * ow, lo), q1 = load(r1 + 2 * ow + 16, hi);
    const __m512 a = _mm512_permutex2var_ps(p0, even_idx(), q0);
    const __m512 b = _mm512_permutex2var_ps(p0, odd_idx(), q0);
    const __m512 c = _mm512_permutex2var_ps(p1, even_idx(), q1);
    const __m512 d = _mm512_permutex2var_ps(p1, odd_idx(), q1);
    __m512 out;
    __m128i idx;
    window16(a, b, c, d, relu, out, idx);
    store(y + ow, out, lanes(n));
    _mm_mask_storeu_epi8(k + ow, lanes(n), idx);
  }
#endif
  for (; ow < OW; ++ow) {
    float out;
    window(f32(r0[2 * ow]), f32(r0[2 * ow + 1]), f32(r1[2 * ow]), f32(r1[2 * ow + 1]), relu,
           out, k[ow]);
    y[ow] = static_cast<T>(out);
  }
}

// One output pixel of a channels-last tensor: C contiguous channels per input pixel.
template <typename T>
void forward_pixel_nhwc(const T* p00, const T* p01, const T* p10, const T* p11, T* y,
                        uint8_t* k, int64_t C, bool relu) {
  int64_t c = 0;
#ifdef CNNC_AVX512
  if constexpr (kVector<T>) for (; c < C; c += 16) {
    const __mmask16 m = lanes(C - c);
    __m512 out;
    __m128i idx;
    window16(load(p00 + c, m), load(p01 + c, m), load(p10 + c, m), load(p11 + c, m), relu, out,
             idx);
    store(y + c, out, m);
    _mm_mask_storeu_epi8(k + c, m, idx);
  }
#endif
  for (; c < C; ++c) {
    float out;
    window(f32(p00[c]), f32(p01[c]), f32(p10[c]), f32(p11[c]), relu, out, k[c]);
    y[c] = static_cast<T>(out);
  }
}

template <typename T>
void forward(const at::Tensor& x, at::Tensor& y, at::Tensor& k, bool relu, bool channels_last) {
  const int64_t N = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t OH = H / 2, OW = W / 2;
  const T* xp = x.const_data_ptr<T>();
  T* yp = y.mutable_data_ptr<T>();
  uint8_t* kp = k.mutable_data_ptr<uint8_t>();
  if (!channels_last) {
    at::parallel_for(0, N * C * OH, 16, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t plane = r / OH, oh = r % OH;
        const T* r0 = xp + plane * H * W + 2 * oh * W;
        forward_row_nchw(r0, r0 + W, yp + r * OW, kp + r * OW, OW, relu);
      }
    });
    return;
  }
  at::parallel_for(0, N * OH, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / OH, oh = r % OH;
      const T* row0 = xp + (n * H + 2 * oh) * W * C;
      const T* row1 = row0 + W * C;
      for (int64_t ow = 0; ow < OW; ++ow) {
        const int64_t out = (r * OW + ow) * C;
        forward_pixel_nhwc(row0 + 2 * ow * C, row0 + (2 * ow + 1) * C, row1 + 2 * ow * C,
                           row1 + (2 * ow + 1) * C, yp + out, kp + out, C, relu);
      }
    }
  });
}

// ---- backward -------------------------------------------------------------------------------

template <typename T>
void backward_row_nchw(const T* g, const uint8_t* k, T* r0, T* r1, int64_t OW) {
  int64_t ow = 0;
#ifdef CNNC_AVX512
  if constexpr (kVector<T>) for (; ow < OW; ow += 16) {
    const int64_t n = OW - ow < 16 ? OW - ow : 16;
    const __mmask16 m = lanes(n);
    const __m512 gv = load(g + ow, m);
    const __m128i kv = _mm_maskz_loadu_epi8(m, k + ow);
    __m512 part[4];
    for (int j = 0; j < 4; ++j) {
      part[j] = _mm512_maskz_mov_ps(_mm_cmpeq_epi8_mask(kv, _mm_set1_epi8(static_cast<char>(j))), gv);
    }
    const __mmask16 lo = lanes(2 * n), hi = lanes(2 * n - 16 > 0 ? 2 * n - 16 : 0);
    store(r0 + 2 * ow, _mm512_permutex2var_ps(part[0], interleave_lo(), part[1]), lo);
    store(r0 + 2 * ow + 16, _mm512_permutex2var_ps(part[0], interleave_hi(), part[1]), hi);
    store(r1 + 2 * ow, _mm512_permutex2var_ps(part[2], interleave_lo(), part[3]), lo);
    store(r1 + 2 * ow + 16, _mm512_permutex2var_ps(part[2], interleave_hi(), part[3]), hi);
  }
#endif
  const T zero = static_cast<T>(0.f);
  for (; ow < OW; ++ow) {
    const T v = g[ow];
    const uint8_t w = k[ow];
    r0[2 * ow] = w == 0 ? v : zero;
    r0[2 * ow + 1] = w == 1 ? v : zero;
    r1[2 * ow] = w == 2 ? v : zero;
    r1[2 * ow + 1] = w == 3 ? v : zero;
  }
}

template <typename T>
void backward_pixel_nhwc(const T* g, const uint8_t* k, T* p00, T* p01, T* p10, T* p11,
                         int64_t C) {
  T* out[4] = {p00, p01, p10, p11};
  int64_t c = 0;
#ifdef CNNC_AVX512
  if constexpr (kVector<T>) for (; c < C; c += 16) {
    const __mmask16 m = lanes(C - c);
    const __m512 gv = load(g + c, m);
    const __m128i kv = _mm_maskz_loadu_epi8(m, k + c);
    for (int j = 0; j < 4; ++j) {
      const __mmask16 hit = _mm_cmpeq_epi8_mask(kv, _mm_set1_epi8(static_cast<char>(j)));
      store(out[j] + c, _mm512_maskz_mov_ps(hit, gv), m);
    }
  }
#endif
  const T zero = static_cast<T>(0.f);
  for (; c < C; ++c) {
    for (int j = 0; j < 4; ++j) {
      out[j][c] = k[c] == j ? g[c] : zero;
    }
  }
}

template <typename T>
void backward(const at::Tensor& g, const at::Tensor& k, at::Tensor& gx, bool channels_last) {
  const int64_t N = gx.size(0), C = gx.size(1), H = gx.size(2), W = gx.size(3);
  const int64_t OH = H / 2, OW = W / 2;
  const T* gp = g.const_data_ptr<T>();
  const uint8_t* kp = k.const_data_ptr<uint8_t>();
  T* xp = gx.mutable_data_ptr<T>();
  if (!channels_last) {
    at::parallel_for(0, N * C * OH, 16, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const int64_t plane = r / OH, oh = r % OH;
        T* r0 = xp + plane * H * W + 2 * oh * W;
        backward_row_nchw(gp + r * OW, kp + r * OW, r0, r0 + W, OW);
      }
    });
    return;
  }
  at::parallel_for(0, N * OH, 1, [&](int64_t begin, int64_t end) {
    for (int64_t r = begin; r < end; ++r) {
      const int64_t n = r / OH, oh = r % OH;
      T* row0 = xp + (n * H + 2 * oh) * W * C;
      T* row1 = row0 + W * C;
      for (int64_t ow = 0; ow < OW; ++ow) {
        const int64_t at = (r * OW + ow) * C;
        backward_pixel_nhwc(gp + at, kp + at, row0 + 2 * ow * C, row0 + (2 * ow + 1) * C,
                            row1 + 2 * ow * C, row1 + (2 * ow + 1) * C, C);
      }
    }
  });
}

bool is_channels_last(const at::Tensor& t) {
  return !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast);
}

void check_input(const at::Tensor& x) {
  TORCH_CHECK(x.dim() == 4, "pool2x2 expects a 4-D (N, C, H, W) tensor, got ", x.dim(), "-D");
  TORCH_CHECK(x.device().is_cpu(), "pool2x2 runs on CPU tensors");
  TORCH_CHECK(x.is_contiguous() || x.is_contiguous(at::MemoryFormat::ChannelsLast),
              "pool2x2 expects a contiguous or channels-last tensor");
  TORCH_CHECK(x.size(2) >= 2 && x.size(3) >= 2, "pool2x2 needs H and W of at least 2");
}

// Returns (y, k): the pooled values and the winning window position (0-3, 4 = no gradient),
// both in the memory format of x.
std::vector<at::Tensor> pool2x2_forward(const at::Tensor& x, bool relu) {
  check_input(x);
  const bool cl = is_channels_last(x);
  const auto format = cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const auto shape = std::vector<int64_t>{x.size(0), x.size(1), x.size(2) / 2, x.size(3) / 2};
  at::Tensor y = at::empty(shape, x.options().memory_format(format));
  at::Tensor k = at::empty(shape, x.options().dtype(at::kByte).memory_format(format));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "pool2x2_forward",
                                  [&] { forward<scalar_t>(x, y, k, relu, cl); });
  return {y, k};
}

// The input gradient: g routed to the winning position of each window, zeros elsewhere.
at::Tensor pool2x2_backward(const at::Tensor& grad, const at::Tensor& k, int64_t H, int64_t W) {
  const bool cl = is_channels_last(k);
  const auto format = cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::Tensor g = grad.contiguous(format);
  const bool odd = (H % 2) || (W % 2);
  const auto options = g.options().memory_format(format);
  at::Tensor gx = at::empty({g.size(0), g.size(1), H, W}, options);  // zeros() drops the format
  if (odd) {
    gx.zero_();  // the row/column outside every window gets no gradient
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, g.scalar_type(), "pool2x2_backward",
                                  [&] { backward<scalar_t>(g, k, gx, cl); });
  return gx;
}
