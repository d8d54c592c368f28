// The code of conv_wgrad.cpp, compiled once per code path (see paths.h): `interleave` and
// `sweep` in AVX512-BF16 where CNNC_AVX512_BF16 is defined, in plain C++ (same data layout,
// same sums) otherwise; tiles, work split and partial sums are shared.

#include "padded_rows.h"

constexpr int64_t kOutBlock = 8;      // output channels per register block (3 taps each)
constexpr int64_t kTileBytes = 262144;    // x and gy row tile, sized to stay in L2
constexpr int64_t kPartialBytes = 1 << 20;  // per-thread partial sums kept up to this size

using cnnc_bf16::from_bf16;
using cnnc_bf16::to_bf16;

struct Shape {
  int64_t n, ci, h, w;  // input
  int64_t co, oh, ow;   // gradient (output)
  int64_t stride;
};

#ifdef CNNC_AVX512_BF16

alignas(64) const uint16_t kPairs[32] = {0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,
                                         21, 6, 22, 7, 23, 8, 24, 9, 25, 10, 26,
                                         11, 27, 12, 28, 13, 29, 14, 30, 15, 31};

// out[2j] = a[j], out[2j+1] = b[j] (zeros when b is null)
void interleave(const uint16_t* a, const uint16_t* b, uint16_t* out, int64_t count) {
  const __m512i index = _mm512_loadu_si512(kPairs);
  for (int64_t k = 0; k < count; k += 16) {
    const int64_t left = std::min<int64_t>(16, count - k);
    const __mmask16 in = static_cast<__mmask16>((1u << left) - 1u);
    const __mmask32 pairs = static_cast<__mmask32>((uint64_t{1} << (2 * left)) - 1u);
    const __m256i va = _mm256_maskz_loadu_epi16(in, a + k);
    const __m256i vb = b ? _mm256_maskz_loadu_epi16(in, b + k) : _mm256_setzero_si256();
    const __m512i both = _mm512_inserti64x4(_mm512_castsi256_si512(va), vb, 1);
    _mm512_mask_storeu_epi16(out + 2 * k, pairs, _mm512_permutexvar_epi16(index, both));
  }
}

// One register block: taps (kh, 0..2) for output channels o0..o0+7 and input channels
// 16*cb..16*cb+15, summed over the tile's `rows` gradient rows.
void sweep(const Shape& s, const uint16_t* xb, const uint32_t* gb, float* acc, int64_t rows,
           int64_t kh, int64_t o0, int64_t cb) {
  __m512 sum[kOutBlock][3];
  float* base = acc + (o0 * 9 + kh * 3) * s.ci + cb * 16;
  for (int64_t o = 0; o < kOutBlock; ++o)
    for (int64_t kw = 0; kw < 3; ++kw) sum[o][kw] = _mm512_loadu_ps(base + (o * 9 + kw) * s.ci);
  const int64_t pos = s.ci * 2;  // uint16 per padded input position (a pair of images)
  const int64_t xrow = (s.w + 2) * pos;
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t* x = xb + (r * s.stride + kh) * xrow + cb * 32;
    const uint32_t* g = gb + r * s.ow * s.co + o0;
    for (int64_t c = 0; c < s.ow; ++c, g += s.co, x += s.stride * pos) {
      const __m512bh b0 = (__m512bh)_mm512_loadu_si512(x);
      const __m512bh b1 = (__m512bh)_mm512_loadu_si512(x + pos);
      const __m512bh b2 = (__m512bh)_mm512_loadu_si512(x + 2 * pos);
      for (int64_t o = 0; o < kOutBlock; ++o) {
        const __m512bh go = (__m512bh)_mm512_set1_epi32(static_cast<int>(g[o]));
        sum[o][0] = _mm512_dpbf16_ps(sum[o][0], b0, go);
        sum[o][1] = _mm512_dpbf16_ps(sum[o][1], b1, go);
        sum[o][2] = _mm512_dpbf16_ps(sum[o][2], b2, go);
      }
    }
  }
  for (int64_t o = 0; o < kOutBlock; ++o)
    for (int64_t kw = 0; kw < 3; ++kw) _mm512_storeu_ps(base + (o * 9 + kw) * s.ci, sum[o][kw]);
}

#else  // the scalar path

// out[2j] = a[j], out[2j+1] = b[j] (zeros when b is null)
void interleave(const uint16_t* a, const uint16_t* b, uint16_t* out, int64_t count) {
  for (int64_t k = 0; k < count; ++k) {
    out[2 * k] = a[k];
    out[2 * k + 1] = b ? b[k] : uint16_t{0};
  }
}

// The register block above, one lane at a time: lane l of tap kw gets
// x_n * gy_n + x_n+1 * gy_n+1 (products of two bf16 are exact in fp32) per gradient pixel.
void sweep(const Shape& s, const uint16_t* xb, const uint32_t* gb, float* acc, int64_t rows,
           int64_t kh, int64_t o0, int64_t cb) {
  float sum[kOutBlock][3][16];
  float* base = acc + (o0 * 9 + kh * 3) * s.ci + cb * 16;
  for (int64_t o = 0; o < kOutBlock; ++o)
    for (int64_t kw = 0; kw < 3; ++kw)
      std::memcpy(sum[o][kw], base + (o * 9 + kw) * s.ci, sizeof(sum[o][kw]));
  const int64_t pos = s.ci * 2;  // uint16 per padded input position (a pair of images)
  const int64_t xrow = (s.w + 2) * pos;
  float lo[3][16], hi[3][16];  // the three taps' inputs, image n and n+1
  for (int64_t r = 0; r < rows; ++r) {
    const uint16_t* x = xb + (r * s.stride + kh) * xrow + cb * 32;
    const uint32_t* g = gb + r * s.ow * s.co + o0;
    for (int64_t c = 0; c < s.ow; ++c, g += s.co, x += s.stride * pos) {
      for (int64_t kw = 0; kw < 3; ++kw)
        for (int l = 0; l < 16; ++l) {
          lo[kw][l] = from_bf16(x[kw * pos + 2 * l]);
          hi[kw][l] = from_bf16(x[kw * pos + 2 * l + 1]);
        }
      for (int64_t o = 0; o < kOutBlock; ++o) {
        const float g_lo = from_bf16(static_cast<uint16_t>(g[o] & 0xFFFF));
        const float g_hi = from_bf16(static_cast<uint16_t>(g[o] >> 16));
        for (int64_t kw = 0; kw < 3; ++kw)
          for (int l = 0; l < 16; ++l) sum[o][kw][l] += lo[kw][l] * g_lo + hi[kw][l] * g_hi;
      }
    }
  }
  for (int64_t o = 0; o < kOutBlock; ++o)
    for (int64_t kw = 0; kw < 3; ++kw)
      std::memcpy(base + (o * 9 + kw) * s.ci, sum[o][kw], sizeof(sum[o][kw]));
}

#endif  // CNNC_AVX512_BF16

// The padded, pair-interleaved input rows a tile of `rows` gradient rows from h0 reads.
void load_x(const Shape& s, const uint16_t* x0, const uint16_t* x1, int64_t h0, int64_t rows,
            uint16_t* xb) {
  fill_padded_rows(h0, rows, s.stride, s.h, s.w, s.ci * 2, xb, [&](uint16_t* dst, int64_t h) {
    const int64_t at = h * s.w * s.ci;
    interleave(x0 + at, x1 ? x1 + at : nullptr, dst, s.w * s.ci);
  });
}

// Adds image pair `pair`'s contribution to the output channels [o_begin, o_end) of acc.
void accumulate(const Shape& s, const uint16_t* x, const uint16_t* gy, float* acc, int64_t pair,
                int64_t o_begin, int64_t o_end, std::vector<uint16_t>& xb,
                std::vector<uint32_t>& gb, int64_t tile) {
  const int64_t n0 = 2 * pair;
  const bool second = n0 + 1 < s.n;
  const uint16_t* x0 = x + n0 * s.h * s.w * s.ci;
  const uint16_t* g0 = gy + n0 * s.oh * s.ow * s.co;
  for (int64_t h0 = 0; h0 < s.oh; h0 += tile) {
    const int64_t rows = std::min(tile, s.oh - h0);
    load_x(s, x0, second ? x0 + s.h * s.w * s.ci : nullptr, h0, rows, xb.data());
    for (int64_t r = 0; r < rows; ++r) {
      const uint16_t* a = g0 + (h0 + r) * s.ow * s.co;
      uint16_t* dst = reinterpret_cast<uint16_t*>(gb.data() + r * s.ow * s.co);
      interleave(a, second ? a + s.oh * s.ow * s.co : nullptr, dst, s.ow * s.co);
    }
    for (int64_t kh = 0; kh < 3; ++kh)
      for (int64_t o0 = o_begin; o0 < o_end; o0 += kOutBlock)
        for (int64_t cb = 0; cb < s.ci / 16; ++cb)
          sweep(s, xb.data(), gb.data(), acc, rows, kh, o0, cb);
  }
}

// Gradient rows per tile: as many as keep the tile's two buffers within kTileBytes.
int64_t tile_rows(const Shape& s) {
  const int64_t x_row = (s.w + 2) * s.ci * 4 * s.stride;
  const int64_t g_row = s.ow * s.co * 4;
  return std::clamp<int64_t>((kTileBytes - 2 * x_row) / (x_row + g_row), 1, s.oh);
}

// The entry point (weight_grad in conv_wgrad.cpp has the arguments).
at::Tensor wgrad_apply(const at::Tensor& x, const at::Tensor& grad, int64_t stride) {
  TORCH_CHECK(x.scalar_type() == at::kBFloat16 && grad.scalar_type() == at::kBFloat16,
              "conv_wgrad: bf16 tensors expected");
  TORCH_CHECK(x.dim() == 4 && grad.dim() == 4 && x.size(0) == grad.size(0), "conv_wgrad: shapes");
  TORCH_CHECK(x.is_contiguous(at::MemoryFormat::ChannelsLast) &&
                  grad.is_contiguous(at::MemoryFormat::ChannelsLast),
              "conv_wgrad: channels-last tensors expected");
  const Shape s{x.size(0), x.size(1),    x.size(2),    x.size(3),
                grad.size(1), grad.size(2), grad.size(3), stride};
  TORCH_CHECK(stride == 1 || stride == 2, "conv_wgrad: stride 1 or 2");
  TORCH_CHECK(s.oh == (s.h - 1) / stride + 1 && s.ow == (s.w - 1) / stride + 1,
              "conv_wgrad: the gradient's size does not match a 3x3, padding-1 convolution");
  TORCH_CHECK(s.ci % 16 == 0 && s.co % kOutBlock == 0,
              "conv_wgrad: channels must be multiples of 16 (input) and 8 (output)");
  const int64_t size = s.co * 9 * s.ci;
  const auto layout = x.options().memory_format(at::MemoryFormat::ChannelsLast);
  auto out = at::empty({s.co, s.ci, 3, 3}, layout);
  std::vector<float> total(size, 0.f);
  const auto* xp = reinterpret_cast<const uint16_t*>(x.data_ptr());
  const auto* gp = reinterpret_cast<const uint16_t*>(grad.data_ptr());
  const int64_t pairs = (s.n + 1) / 2;
  const int64_t tile = tile_rows(s);
  const auto buffers = [&] {
    return std::make_pair(std::vector<uint16_t>(((tile - 1) * s.stride + 3) * (s.w + 2) * s.ci * 2),
                          std::vector<uint32_t>(tile * s.ow * s.co));
  };
  const int threads = at::get_num_threads();
  if (pairs >= 2 * threads && size * 4 <= kPartialBytes) {
    // image pairs split over threads, one partial sum each, added at the end
    std::vector<float> partial(static_cast<size_t>(threads) * size, 0.f);
    at::parallel_for(0, pairs, 1, [&](int64_t begin, int64_t end) {
      float* acc = partial.data() + at::get_thread_num() * size;
      auto [xb, gb] = buffers();
      for (int64_t pair = begin; pair < end; ++pair)
        accumulate(s, xp, gp, acc, pair, 0, s.co, xb, gb, tile);
    });
    for (int t = 0; t < threads; ++t)
      for (int64_t k = 0; k < size; ++k) total[k] += partial[t * size + k];
  } else {
    // few images or large weights: output channels split over threads, no partial sums
    at::parallel_for(0, s.co / kOutBlock, 1, [&](int64_t begin, int64_t end) {
      auto [xb, gb] = buffers();
      for (int64_t pair = 0; pair < pairs; ++pair)
        accumulate(s, xp, gp, total.data(), pair, begin * kOutBlock, end * kOutBlock, xb, gb, tile);
    });
  }
  auto* op = reinterpret_cast<uint16_t*>(out.data_ptr());  // memory order [Co][3][3][Ci]
  at::parallel_for(0, size, 16384, [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) op[k] = to_bf16(total[k]);
  });
  return out;
}
