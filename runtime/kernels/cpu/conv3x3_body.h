// The code of conv3x3.cpp, compiled once per code path (see paths.h): the vdpbf16ps register
// blocks where CNNC_AVX512_BF16 is defined, a plain C++ block (same inputs, same sums)
// otherwise; packing, row tiles, planning and the stride-2 phases are shared.

#include "padded_rows.h"

constexpr int64_t kTileBytes = 65536;  // padded input rows per work item, sized for L1/L2

using cnnc_bf16::from_bf16;
using cnnc_bf16::to_bf16;

struct Geometry {
  int64_t n, ci, h, w;  // input
  int64_t co, oh, ow;   // output pixels this pass computes
  int64_t stride;
  // Where they go: pixel (a, b) is (row0 + step * a, col0 + step * b) of a (fh, fw) output;
  // a stride-2 input gradient writes each of its four phases with step 2.
  int64_t fh, fw, row0, col0, step;
  int rows;  // the window rows (bit kh) with nonzero weights
  int64_t xrow() const { return (w + 2) * ci; }  // bf16 per padded input row
};

using TapMap = std::array<int, 3>;  // window tap -> weight tap (-1: zero)

inline uint16_t bits(float v) { return to_bf16(v); }
inline uint16_t bits(c10::BFloat16 v) { return v.x; }

// Packs weights as [kh][kw][ci/2][co][2] bf16 (rounded to nearest even, as .to(bf16) does)
// for window taps (kh, kw): w(o, i, rows[kh], cols[kw]) = base[o*so + i*si + r*sh + c*sw],
// zero where a map says -1. Any layout; the maps flip or pick taps.
template <typename T>
void pack(const T* base, int64_t so, int64_t si, int64_t sh, int64_t sw, const TapMap& rows,
          const TapMap& cols, const Geometry& g, uint16_t* out) {
  const int64_t pairs = g.ci / 2;
  const int64_t grain = std::max<int64_t>(1, 8192 / (2 * g.co));
  at::parallel_for(0, 9 * pairs, grain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t tap = t / pairs, p = t % pairs;
      const int r = rows[tap / 3], c = cols[tap % 3];
      uint16_t* dst = out + t * g.co * 2;
      if (r < 0 || c < 0) {
        std::fill(dst, dst + g.co * 2, uint16_t{0});
        continue;
      }
      const T* src = base + r * sh + c * sw + 2 * p * si;
      for (int64_t o = 0; o < g.co; ++o) {
        dst[2 * o] = bits(src[o * so]);
        dst[2 * o + 1] = bits(src[o * so + si]);
      }
    }
  });
}

// `transposed`: the weight is the forward weight (ci, co, 3, 3) of the convolution whose
// input gradient this is, so the channel roles are swapped (the maps flip the taps).
std::vector<uint16_t> pack_weights(const at::Tensor& weight, const Geometry& g,
                                   bool transposed, const TapMap& rows, const TapMap& cols) {
  std::vector<uint16_t> out(9 * g.ci * g.co);
  const auto st = weight.strides();
  const int64_t so = transposed ? st[1] : st[0], si = transposed ? st[0] : st[1];
  if (weight.scalar_type() == at::kBFloat16)
    pack(weight.data_ptr<c10::BFloat16>(), so, si, st[2], st[3], rows, cols, g, out.data());
  else
    pack(weight.data_ptr<float>(), so, si, st[2], st[3], rows, cols, g, out.data());
  return out;
}

constexpr int kMaxPixels[5] = {0, 24, 11, 0, 4};  // by V: accumulators + 3V weights fit

#ifdef CNNC_AVX512_BF16

using Block = void (*)(const Geometry&, const uint16_t*, const uint16_t*, const float*,
                       uint16_t*);

// P output pixels of one row x V vectors of 16 output channels, stride S, window columns
// kw with bit kw of M set (rows: g.rows). xt: the padded tile at the block's first window;
// wp: packed weights at the block's first output channel. A sliding window: each broadcast
// input pair serves every tap (kw) and pixel that reads it, so a row of P+2 input positions
// feeds 3P products per output vector (stride 1, all taps).
template <int V, int P, int S, int M>
void block(const Geometry& g, const uint16_t* xt, const uint16_t* wp, const float* bias,
           uint16_t* y) {
  constexpr int kCols = (P - 1) * S + 3;
  __m512 acc[P][V];
#pragma GCC unroll 4
  for (int v = 0; v < V; ++v) {
    const __m512 b = bias ? _mm512_loadu_ps(bias + 16 * v) : _mm512_setzero_ps();
#pragma GCC unroll 32
    for (int j = 0; j < P; ++j) acc[j][v] = b;
  }
  const int64_t pairs = g.ci / 2;
  const int64_t tap = pairs * g.co * 2;  // bf16 per packed tap
  for (int64_t kh = 0; kh < 3; ++kh) {
    if (!((g.rows >> kh) & 1)) continue;
    const auto* x = reinterpret_cast<const uint32_t*>(xt + kh * g.xrow());
    const uint16_t* w = wp + kh * 3 * tap;
    for (int64_t p = 0; p < pairs; ++p, ++x, w += g.co * 2) {
      __m512bh wv[3][V];
#pragma GCC unroll 3
      for (int kw = 0; kw < 3; ++kw)
#pragma GCC unroll 4
        for (int v = 0; v < V; ++v)
          if ((M >> kw) & 1) wv[kw][v] = (__m512bh)_mm512_loadu_si512(w + kw * tap + 32 * v);
#pragma GCC unroll 64
      for (int c = 0; c < kCols; ++c) {
        const __m512bh xv = (__m512bh)_mm512_set1_epi32(static_cast<int>(x[c * pairs]));
#pragma GCC unroll 3
        for (int kw = 0; kw < 3; ++kw) {
          const int j = (c - kw) / S;
          if (!((M >> kw) & 1) || c < kw || (c - kw) % S != 0 || j >= P) continue;
#pragma GCC unroll 4
          for (int v = 0; v < V; ++v) acc[j][v] = _mm512_dpbf16_ps(acc[j][v], xv, wv[kw][v]);
        }
      }
    }
  }
#pragma GCC unroll 32
  for (int j = 0; j < P; ++j)
#pragma GCC unroll 4
    for (int v = 0; v < V; ++v)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(y + j * g.step * g.co + 16 * v),
                          (__m256i)_mm512_cvtneps_pbh(acc[j][v]));
}

template <int V, int S, int M, int... Ps>
constexpr std::array<Block, sizeof...(Ps)> blocks(std::integer_sequence<int, Ps...>) {
  return {&block<V, Ps + 1, S, M>...};
}

template <int S, int M>
struct Blocks {
  static constexpr auto one = blocks<1, S, M>(std::make_integer_sequence<int, kMaxPixels[1]>());
  static constexpr auto two = blocks<2, S, M>(std::make_integer_sequence<int, kMaxPixels[2]>());
  static constexpr auto four = blocks<4, S, M>(std::make_integer_sequence<int, kMaxPixels[4]>());
  static Block pick(int v, int p) {
    return v == 4 ? four[p - 1] : v == 2 ? two[p - 1] : one[p - 1];
  }
};

// Column masks: 7, all taps (a convolution); 2 and 6, the stride-2 input gradient's phases;
// 2 also a 1x1 convolution (the centre tap alone).
Block pick(int stride, int columns, int v, int p) {
  if (stride == 2) return columns == 2 ? Blocks<2, 2>::pick(v, p) : Blocks<2, 7>::pick(v, p);
  if (columns == 2) return Blocks<1, 2>::pick(v, p);
  if (columns == 6) return Blocks<1, 6>::pick(v, p);
  return Blocks<1, 7>::pick(v, p);
}

// One block of v vectors x p pixels (the arguments of `block`).
void compute(const Geometry& g, int columns, int v, int p, const uint16_t* xt,
             const uint16_t* wp, const float* bias, uint16_t* y) {
  pick(static_cast<int>(g.stride), columns, v, p)(g, xt, wp, bias, y);
}

#else  // the scalar path

constexpr int kMaxLanes = 4 * 16;  // output channels per block (V = 4)
constexpr int kMaxSums = 24 * 16;  // pixels x channels per block: the largest kMaxPixels[V] * 16V

// The register block above with V = v, P = p, S = g.stride and M = columns as run-time
// values: per output lane, the bias, then x_lo * w_lo + x_hi * w_hi for each input-channel
// pair of each tap (products of two bf16 are exact in fp32), rounded to bf16 at the end.
void compute(const Geometry& g, int columns, int v, int p, const uint16_t* xt,
             const uint16_t* wp, const float* bias, uint16_t* y) {
  const int lanes = 16 * v;
  const int stride = static_cast<int>(g.stride);
  const int cols = (p - 1) * stride + 3;
  float acc[kMaxSums];
  for (int j = 0; j < p; ++j)
    for (int o = 0; o < lanes; ++o) acc[j * lanes + o] = bias ? bias[o] : 0.f;
  const int64_t pairs = g.ci / 2;
  const int64_t tap = pairs * g.co * 2;  // bf16 per packed tap
  float lo[3][kMaxLanes], hi[3][kMaxLanes];  // one input pair's weights, by column tap
  for (int64_t kh = 0; kh < 3; ++kh) {
    if (!((g.rows >> kh) & 1)) continue;
    const uint16_t* x = xt + kh * g.xrow();
    const uint16_t* w = wp + kh * 3 * tap;
    for (int64_t q = 0; q < pairs; ++q, x += 2, w += g.co * 2) {
      for (int kw = 0; kw < 3; ++kw) {
        if (!((columns >> kw) & 1)) continue;
        for (int o = 0; o < lanes; ++o) {
          lo[kw][o] = from_bf16(w[kw * tap + 2 * o]);
          hi[kw][o] = from_bf16(w[kw * tap + 2 * o + 1]);
        }
      }
      for (int c = 0; c < cols; ++c) {
        const float x_lo = from_bf16(x[c * g.ci]), x_hi = from_bf16(x[c * g.ci + 1]);
        for (int kw = 0; kw < 3; ++kw) {
          const int j = (c - kw) / stride;
          if (!((columns >> kw) & 1) || c < kw || (c - kw) % stride != 0 || j >= p) continue;
          float* sum = acc + j * lanes;
          for (int o = 0; o < lanes; ++o) sum[o] += x_lo * lo[kw][o] + x_hi * hi[kw][o];
        }
      }
    }
  }
  for (int j = 0; j < p; ++j)
    for (int o = 0; o < lanes; ++o) y[j * g.step * g.co + o] = to_bf16(acc[j * lanes + o]);
}

#endif  // CNNC_AVX512_BF16

// Register blocking: V output vectors x P pixels, the row split into near-equal chunks of P.
struct Plan {
  int v, p;
};

Plan plan(const Geometry& g) {
  Plan best{1, 1};
  for (int v : {4, 2, 1}) {
    if ((g.co / 16) % v != 0) continue;
    const int64_t most = kMaxPixels[v];
    const int64_t chunks = (g.ow + most - 1) / most;
    const int64_t p = (g.ow + chunks - 1) / chunks;
    if (v * p > best.v * best.p) best = {v, static_cast<int>(p)};
  }
  return best;
}

// Copies the input rows output rows [h0, h0+rows) read into a zero-padded tile.
void load_tile(const Geometry& g, const uint16_t* x, int64_t h0, int64_t rows, uint16_t* tile) {
  fill_padded_rows(h0, rows, g.stride, g.h, g.w, g.ci, tile, [&](uint16_t* dst, int64_t h) {
    std::memcpy(dst, x + h * g.w * g.ci, g.w * g.ci * sizeof(uint16_t));
  });
}

void run(const Geometry& g, int columns, const uint16_t* x, const uint16_t* wp,
         const float* bias, uint16_t* y) {
  const Plan pl = plan(g);
  const int64_t tile = std::clamp<int64_t>(
      (kTileBytes / (2 * g.xrow()) - 3 + g.stride) / g.stride, 1, g.oh);
  const int64_t tiles = (g.oh + tile - 1) / tile;
  at::parallel_for(0, g.n * tiles, 1, [&](int64_t begin, int64_t end) {
    std::vector<uint16_t> buffer(((tile - 1) * g.stride + 3) * g.xrow());
    for (int64_t item = begin; item < end; ++item) {
      const int64_t n = item / tiles, h0 = (item % tiles) * tile;
      const int64_t rows = std::min(tile, g.oh - h0);
      load_tile(g, x + n * g.h * g.w * g.ci, h0, rows, buffer.data());
      for (int64_t r = 0; r < rows; ++r) {
        uint16_t* yrow = y + ((n * g.fh + g.row0 + g.step * (h0 + r)) * g.fw + g.col0) * g.co;
        const uint16_t* xrow = buffer.data() + r * g.stride * g.xrow();
        for (int64_t o = 0; o < g.co; o += 16 * pl.v)
          for (int64_t c = 0; c < g.ow; c += pl.p) {
            const int64_t count = std::min<int64_t>(pl.p, g.ow - c);
            compute(g, columns, pl.v, static_cast<int>(count), xrow + c * g.stride * g.ci,
                    wp + o * 2, bias ? bias + o : nullptr, yrow + c * g.step * g.co + o);
          }
      }
    }
  });
}

// The input gradient of a stride-2 convolution, phase by phase: output pixels of row parity
// pr and column parity pc read the output gradient through window taps 1 (parity 0, weight
// tap 1) or 1 and 2 (parity 1, weight taps 2 and 0), with the window at the pixel's half
// coordinates; each phase is a stride-1 pass with its own packed weights. A 1x1 (pointwise)
// convolution reaches only the even-even phase (window tap 1, weight tap 0); the caller
// zeroes the others.
void input_grad_stride2(const at::Tensor& gy, const at::Tensor& weight, bool pointwise,
                        Geometry g, uint16_t* y) {
  const TapMap even = pointwise ? TapMap{-1, 0, -1} : TapMap{-1, 1, -1}, odd{-1, 2, 0};
  for (int pr = 0; pr < 2; ++pr)
    for (int pc = 0; pc < 2; ++pc) {
      g.oh = (g.fh - pr + 1) / 2;
      g.ow = (g.fw - pc + 1) / 2;
      if (g.oh == 0 || g.ow == 0 || (pointwise && (pr || pc))) continue;
      g.row0 = pr, g.col0 = pc, g.step = 2;
      g.rows = pr ? 6 : 2;
      const auto wp = pack_weights(weight, g, true, pr ? odd : even, pc ? odd : even);
      run(g, pc ? 6 : 2, reinterpret_cast<const uint16_t*>(gy.data_ptr()), wp.data(), nullptr,
          y);
    }
}

// The entry point (conv3x3 in conv3x3.cpp has the arguments).
at::Tensor conv3x3_apply(const at::Tensor& x, const at::Tensor& weight,
                            const c10::optional<at::Tensor>& bias, int64_t stride,
                            bool transposed, const std::vector<int64_t>& size) {
  TORCH_CHECK(x.scalar_type() == at::kBFloat16 && x.dim() == 4 &&
                  x.is_contiguous(at::MemoryFormat::ChannelsLast),
              "conv3x3: a 4-d bf16 channels-last input expected");
  TORCH_CHECK(stride == 1 || stride == 2, "conv3x3: stride 1 or 2");
  TORCH_CHECK(weight.dim() == 4 && (weight.size(2) == 3 || weight.size(2) == 1) &&
                  weight.size(3) == weight.size(2) &&
                  (weight.scalar_type() == at::kFloat || weight.scalar_type() == at::kBFloat16),
              "conv3x3: a 3x3 or 1x1 fp32 or bf16 weight expected");
  const bool pointwise = weight.size(2) == 1;
  const int64_t ci = x.size(1), co = transposed ? weight.size(1) : weight.size(0);
  TORCH_CHECK((transposed ? weight.size(0) : weight.size(1)) == ci,
              "conv3x3: the weight's channels do not match the input");
  TORCH_CHECK(ci % 2 == 0 && co % 16 == 0,
              "conv3x3: input channels must be even and output channels a multiple of 16");
  const bool phases = transposed && stride == 2;
  int64_t oh = (x.size(2) - 1) / stride + 1, ow = (x.size(3) - 1) / stride + 1;
  if (phases) {
    TORCH_CHECK(size.size() == 2 && (size[0] - 1) / 2 + 1 == x.size(2) &&
                    (size[1] - 1) / 2 + 1 == x.size(3),
                "conv3x3: a stride-2 input gradient needs the input's (H, W), which the "
                "gradient's size must match");
    oh = size[0], ow = size[1];
  }
  const int taps = pointwise ? 2 : 7;  // window rows and columns read
  Geometry g{x.size(0), ci, x.size(2), x.size(3), co, oh, ow, stride, oh, ow, 0, 0, 1, taps};
  const auto options = x.options().memory_format(at::MemoryFormat::ChannelsLast);
  auto y = at::empty({g.n, g.co, oh, ow}, options);
  if (phases && pointwise) y.zero_();  // three of the four phases get no taps
  at::Tensor b;
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(!transposed && bias->numel() == co, "conv3x3: bias of size out_channels expected");
    b = bias->to(at::kBFloat16).to(at::kFloat).contiguous();  // rounded as autocast does
  }
  auto* out = reinterpret_cast<uint16_t*>(y.data_ptr());
  if (phases) {
    g.stride = 1;
    input_grad_stride2(x, weight, pointwise, g, out);
    return y;
  }
  const TapMap same{0, 1, 2}, flipped{2, 1, 0}, centre{-1, 0, -1};
  const TapMap& map = pointwise ? centre : transposed ? flipped : same;
  const auto wp = pack_weights(weight, g, transposed, map, map);
  run(g, taps, reinterpret_cast<const uint16_t*>(x.data_ptr()), wp.data(),
      b.defined() ? b.data_ptr<float>() : nullptr, out);
  return y;
}
