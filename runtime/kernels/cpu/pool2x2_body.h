// The code of pool2x2.cpp, compiled once per code path (see paths.h). The vector code is
// written once against at::vec (vec.h) and runs on the vector builds (AVX2, AVX-512, NEON) for
// fp32, bf16 and fp16, partial vectors included; the scalar loops run on the scalar build
// (the reference the vector paths are tested against) and for double.

constexpr uint8_t kNoGrad = 4;


template <typename T>
constexpr bool kVectorLoops = kVectorBuild && kVectorType<T>;

// ---- scalar path: the scalar build, and double -----------------------------------------------

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

// ---- vector path: kWidth windows at once (inlined into the loops: Vec stays in registers) ---

// Lanes of b where mask (all-ones lanes) is set, else of a: Vec::blendv, except on AVX-512,
// where at::vec's blendv turns the vector mask back into a k-mask (vpcmpeqd, on the port the
// comparisons already crowd: the forward ran up to 2x slower); the bitwise form is one
// vpternlogd there.
C10_ALWAYS_INLINE Vec select(const Vec& a, const Vec& b, const Vec& mask) {
#ifdef CPU_CAPABILITY_AVX512
  return a ^ ((a ^ b) & mask);
#else
  return Vec::blendv(a, b, mask);
#endif
}

// The window rule on kWidth lanes (same semantics as `window`); k gets the index as fp32
// lanes (0-4). Comparisons give all-ones lanes; ordered ones are false for NaN.
C10_ALWAYS_INLINE void window_vec(const Vec& a, const Vec& b, const Vec& c, const Vec& d,
                                  bool relu, Vec& out, Vec& k) {
  const Vec tb = (b > a) | b.isnan();
  const Vec m0 = select(a, b, tb);
  const Vec td = (d > c) | d.isnan();
  const Vec m1 = select(c, d, td);
  const Vec tv = (m1 > m0) | m1.isnan();
  Vec m = select(m0, m1, tv);
  const Vec one(1.f);
  k = select(tb & one, Vec(2.f) + (td & one), tv);
  if (relu) {
    const Vec zero(0.f);
    const Vec cut = m <= zero;  // false for NaN: torch's ReLU passes it and its gradient
    k = select(k, Vec(static_cast<float>(kNoGrad)), cut);
    m = select(m, zero, cut);
  }
  out = m;
}

// n <= kWidth window indices (fp32 lanes holding 0-4) to and from one byte each.
C10_ALWAYS_INLINE void store_index(uint8_t* p, const Vec& k, int64_t n) {
  at::vec::convert<uint8_t>(k).store(p, static_cast<int>(n));
}
C10_ALWAYS_INLINE Vec load_index(const uint8_t* p, int64_t n) {
  using Bytes = at::vec::Vectorized<uint8_t>;
#ifdef CPU_CAPABILITY_AVX2
  if (n == kWidth) {  // AVX2's loadu(p, n) goes through a buffer; this is one 8-byte load
    return at::vec::convert<float>(Bytes::loadu_one_fourth(p));
  }
#endif
  return at::vec::convert<float>(Bytes::loadu(p, static_cast<uint8_t>(n)));
}

// ---- forward --------------------------------------------------------------------------------

// Outputs [ow, ow + n) of an NCHW row, n <= kWidth: 2n inputs from each of r0 and r1.
template <typename T>
C10_ALWAYS_INLINE void forward_vec_nchw(const T* r0, const T* r1, T* y, uint8_t* k, int64_t ow,
                                        int64_t n, bool relu) {
  const int64_t lo = 2 * n < kWidth ? 2 * n : kWidth, hi = 2 * n - lo;
  const T* top = r0 + 2 * ow;
  const T* bottom = r1 + 2 * ow;
  // deinterleave2: (even lanes, odd lanes) of 2 * kWidth inputs, i.e. the windows' columns
  const auto [a, b] = at::vec::deinterleave2(vload(top, lo), vload(top + kWidth, hi));
  const auto [c, d] = at::vec::deinterleave2(vload(bottom, lo), vload(bottom + kWidth, hi));
  Vec out, idx;
  window_vec(a, b, c, d, relu, out, idx);
  vstore(y + ow, out, n);
  store_index(k + ow, idx, n);
}

// One output row of an NCHW plane: inputs r0/r1 (2*OW+ elements), outputs y/k.
template <typename T>
C10_ALWAYS_INLINE void forward_row_nchw(const T* r0, const T* r1, T* y, uint8_t* k, int64_t OW,
                                        bool relu) {
  int64_t ow = 0;
  if constexpr (kVectorLoops<T>) {
    for (; ow + kWidth <= OW; ow += kWidth) forward_vec_nchw(r0, r1, y, k, ow, kWidth, relu);
    if (ow < OW) forward_vec_nchw(r0, r1, y, k, ow, OW - ow, relu);
    return;
  }
  for (; ow < OW; ++ow) {
    float out;
    window(f32(r0[2 * ow]), f32(r0[2 * ow + 1]), f32(r1[2 * ow]), f32(r1[2 * ow + 1]), relu,
           out, k[ow]);
    y[ow] = static_cast<T>(out);
  }
}

// Channels [c, c + n) of one channels-last output pixel, n <= kWidth.
template <typename T>
C10_ALWAYS_INLINE void forward_vec_nhwc(const T* p00, const T* p01, const T* p10, const T* p11,
                                        T* y, uint8_t* k, int64_t c, int64_t n, bool relu) {
  Vec out, idx;
  window_vec(vload(p00 + c, n), vload(p01 + c, n), vload(p10 + c, n), vload(p11 + c, n), relu,
             out, idx);
  vstore(y + c, out, n);
  store_index(k + c, idx, n);
}

// One output pixel of a channels-last tensor: C contiguous channels per input pixel.
template <typename T>
C10_ALWAYS_INLINE void forward_pixel_nhwc(const T* p00, const T* p01, const T* p10, const T* p11,
                                          T* y, uint8_t* k, int64_t C, bool relu) {
  int64_t c = 0;
  if constexpr (kVectorLoops<T>) {
    for (; c + kWidth <= C; c += kWidth) {
      forward_vec_nhwc(p00, p01, p10, p11, y, k, c, kWidth, relu);
    }
    if (c < C) forward_vec_nhwc(p00, p01, p10, p11, y, k, c, C - c, relu);
    return;
  }
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

// Outputs [ow, ow + n) of an NCHW row, n <= kWidth: g routed to 2n inputs of r0 and of r1.
template <typename T>
C10_ALWAYS_INLINE void backward_vec_nchw(const T* g, const uint8_t* k, T* r0, T* r1, int64_t ow,
                                         int64_t n) {
  const Vec gv = vload(g + ow, n);
  const Vec kv = load_index(k + ow, n);
  Vec part[4];
  for (int j = 0; j < 4; ++j) part[j] = gv & (kv == Vec(static_cast<float>(j)));  // else +0
  const int64_t lo = 2 * n < kWidth ? 2 * n : kWidth, hi = 2 * n - lo;
  // interleave2: the two columns of each window back side by side
  const auto [top0, top1] = at::vec::interleave2(part[0], part[1]);
  const auto [bottom0, bottom1] = at::vec::interleave2(part[2], part[3]);
  vstore(r0 + 2 * ow, top0, lo);
  vstore(r0 + 2 * ow + kWidth, top1, hi);
  vstore(r1 + 2 * ow, bottom0, lo);
  vstore(r1 + 2 * ow + kWidth, bottom1, hi);
}

template <typename T>
C10_ALWAYS_INLINE void backward_row_nchw(const T* g, const uint8_t* k, T* r0, T* r1,
                                         int64_t OW) {
  int64_t ow = 0;
  if constexpr (kVectorLoops<T>) {
    for (; ow + kWidth <= OW; ow += kWidth) backward_vec_nchw(g, k, r0, r1, ow, kWidth);
    if (ow < OW) backward_vec_nchw(g, k, r0, r1, ow, OW - ow);
    return;
  }
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

// Channels [c, c + n) of one channels-last output pixel, n <= kWidth.
template <typename T>
C10_ALWAYS_INLINE void backward_vec_nhwc(const T* g, const uint8_t* k, T* const* out, int64_t c,
                                         int64_t n) {
  const Vec gv = vload(g + c, n);
  const Vec kv = load_index(k + c, n);
  for (int j = 0; j < 4; ++j) vstore(out[j] + c, gv & (kv == Vec(static_cast<float>(j))), n);
}

template <typename T>
C10_ALWAYS_INLINE void backward_pixel_nhwc(const T* g, const uint8_t* k, T* p00, T* p01, T* p10,
                                           T* p11, int64_t C) {
  T* out[4] = {p00, p01, p10, p11};
  int64_t c = 0;
  if constexpr (kVectorLoops<T>) {
    for (; c + kWidth <= C; c += kWidth) backward_vec_nhwc(g, k, out, c, kWidth);
    if (c < C) backward_vec_nhwc(g, k, out, c, C - c);
    return;
  }
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
