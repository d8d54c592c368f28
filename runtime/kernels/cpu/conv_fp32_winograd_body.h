// Winograd F(2x2, 3x3) and F(4x4, 3x3) for the 3x3 stride-1 convolutions of conv_fp32
// (included by conv_fp32_body.h inside namespace fp32conv, so it reuses that file's
// packing and weight-gradient register blocks).
//
// An m x m output tile is A^T [sum over input channels of U ⊙ V] A, with V = B^T d B the
// n x n input tile d (n = m + 2) transformed and U = G g G^T the 3x3 filter g transformed:
// n^2 multiplies per m^2 outputs and channel pair instead of a direct convolution's 9 m^2
// (F(2x2): 2.25x fewer, F(4x4): 4x fewer), paid for with transforms linear in the channels.
// Per block of tiles:
//   1. the input tiles are transformed into V[n^2][T][C] (vectors over channels);
//   2. the n^2 products are independent matrix products M[x][t][:] = V[x][t][:] U[x], in
//      register blocks of tiles x output-channel vectors (gemm);
//   3. M is transformed back into m x m output tiles (vectors over output channels).
// The input gradient of a stride-1 convolution is the same computation over the output
// gradient with transposed, flipped filters and padding 2 - p. The weight gradient sums,
// per position x, V[x][t][c] * (A dy_t A^T)[x][k] over all tiles t (the direct convolution's
// weight-gradient blocks, run_wgrad, with one window row of C floats per tile), and maps the
// n x n sums back through G^T dU G. F(2x2)'s transforms only add, subtract and halve, so
// its rounding is within a few units in the last place of a direct convolution's; F(4x4)'s
// constants (4, 5, 1/6, 1/24, 8) cost about a decimal digit more.

namespace wino {

// F(2x2, 3x3): B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1], G = [1 0 0; 1/2 1/2 1/2;
// 1/2 -1/2 1/2; 0 0 1], A^T = [1 1 1 0; 0 1 -1 -1].
struct F2 {
  static constexpr int m = 2, n = 4;
  static constexpr int64_t kBlockKiB = 64;   // V and M of a block (see block_tiles)
  static constexpr int64_t kWGradKiB = 256;  // the weight gradient's
  static void input(const Vec* d, Vec* t) {  // B^T d
    t[0] = d[0] - d[2], t[1] = d[1] + d[2], t[2] = d[2] - d[1], t[3] = d[1] - d[3];
  }
  static void output(const Vec* s, Vec* y) {  // A^T s
    y[0] = s[0] + s[1] + s[2], y[1] = s[1] - s[2] - s[3];
  }
  static void grad(const Vec* y, Vec* x) {  // A y
    x[0] = y[0], x[1] = y[0] + y[1], x[2] = y[0] - y[1], x[3] = Vec(0.f) - y[1];
  }
  static void filter(const float* g, float* u) {  // G g
    u[0] = g[0], u[1] = 0.5f * (g[0] + g[1] + g[2]), u[2] = 0.5f * (g[0] - g[1] + g[2]);
    u[3] = g[2];
  }
  static void unfilter(const float* u, float* g) {  // G^T u
    g[0] = u[0] + 0.5f * (u[1] + u[2]), g[1] = 0.5f * (u[1] - u[2]);
    g[2] = 0.5f * (u[1] + u[2]) + u[3];
  }
};

// F(4x4, 3x3), interpolation points 0, 1, -1, 2, -2 (Lavin & Gray, 2016):
// B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0;
//        0 4 0 -5 0 1],
// G = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1],
// A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1].
struct F4 {
  static constexpr int m = 4, n = 6;
  static constexpr int64_t kBlockKiB = 64;
  static constexpr int64_t kWGradKiB = 512;
  static void input(const Vec* d, Vec* t) {
    const Vec four(4.f), two(2.f), five(5.f);
    const Vec a = d[4] - four * d[2], b = d[3] - four * d[1];
    const Vec c = d[4] - d[2], e = two * (d[3] - d[1]);
    t[0] = four * d[0] - five * d[2] + d[4];
    t[1] = a + b, t[2] = a - b, t[3] = c + e, t[4] = c - e;
    t[5] = four * d[1] - five * d[3] + d[5];
  }
  static void output(const Vec* s, Vec* y) {
    const Vec s12 = s[1] + s[2], d12 = s[1] - s[2], s34 = s[3] + s[4], d34 = s[3] - s[4];
    y[0] = s[0] + s12 + s34;
    y[1] = d12 + Vec(2.f) * d34;
    y[2] = s12 + Vec(4.f) * s34;
    y[3] = d12 + Vec(8.f) * d34 + s[5];
  }
  static void grad(const Vec* y, Vec* x) {
    const Vec s02 = y[0] + y[2], s13 = y[1] + y[3];
    const Vec q02 = y[0] + Vec(4.f) * y[2], q13 = Vec(2.f) * y[1] + Vec(8.f) * y[3];
    x[0] = y[0], x[1] = s02 + s13, x[2] = s02 - s13, x[3] = q02 + q13, x[4] = q02 - q13;
    x[5] = y[3];
  }
  static void filter(const float* g, float* u) {
    u[0] = g[0] / 4.f;
    u[1] = -(g[0] + g[1] + g[2]) / 6.f, u[2] = -(g[0] - g[1] + g[2]) / 6.f;
    u[3] = g[0] / 24.f + g[1] / 12.f + g[2] / 6.f, u[4] = g[0] / 24.f - g[1] / 12.f + g[2] / 6.f;
    u[5] = g[2];
  }
  static void unfilter(const float* u, float* g) {
    g[0] = u[0] / 4.f - (u[1] + u[2]) / 6.f + (u[3] + u[4]) / 24.f;
    g[1] = (u[2] - u[1]) / 6.f + (u[3] - u[4]) / 12.f;
    g[2] = -(u[1] + u[2]) / 6.f + (u[3] + u[4]) / 6.f + u[5];
  }
};

// Tiles per block: V and M (n^2 planes each) fit in F::kBlockKiB, measured: 64 KiB for
// F(2x2) (512 KiB blocks ran 1.3-1.5x slower at 16-32 channels), 128 KiB for F(4x4).
// The weight gradient's blocks take `scale` times that: its products sum over the tiles, so
// a block's tiles are each product's inner loop (tiles of several images share a block).
template <typename F>
int64_t block_tiles(int64_t C, int64_t cop, int64_t tiles, bool wgrad = false) {
  const int64_t budget = (wgrad ? F::kWGradKiB : F::kBlockKiB) * 1024 / 4;
  return std::min(tiles, std::max<int64_t>(8, budget / (F::n * F::n * (C + cop))));
}

// V[x][t][c0 .. c0+k) of the n x n tile at d (pixel stride C floats, row stride `row`):
// B^T d B, rows first.
template <typename F>
void input_tile(const float* d, int64_t row, int64_t C, int64_t c0, int64_t k, float* V,
                int64_t plane, int64_t at) {
  constexpr int n = F::n;
  Vec h[n][n];
  for (int i = 0; i < n; ++i) {
    Vec r[n];
    for (int j = 0; j < n; ++j) r[j] = Vec::loadu(d + i * row + j * C + c0, k);
    F::input(r, h[i]);  // h[i][j] = (d B)[i][j]
  }
  for (int j = 0; j < n; ++j) {
    Vec col[n], v[n];
    for (int i = 0; i < n; ++i) col[i] = h[i][j];
    F::input(col, v);
    for (int i = 0; i < n; ++i) v[i].store(V + (i * n + j) * plane + at + c0, k);
  }
}

// The outputs (rows x cols of the m x m inside the image) of tile `at` for output channels
// from M's vector (one kWidth slice): A^T M A + bias.
template <typename F>
void output_tile(const float* M, int64_t plane, int64_t at, const Vec& bias, float* out,
                 int64_t orow, int64_t opix, int64_t rows, int64_t cols) {
  constexpr int n = F::n, m = F::m;
  Vec s[m][n];
  for (int j = 0; j < n; ++j) {
    Vec col[n], y[m];
    for (int i = 0; i < n; ++i) col[i] = Vec::loadu(M + (i * n + j) * plane + at);
    F::output(col, y);
    for (int i = 0; i < m; ++i) s[i][j] = y[i];
  }
  for (int64_t i = 0; i < rows; ++i) {
    Vec y[m];
    F::output(s[i], y);
    for (int64_t j = 0; j < cols; ++j) (y[j] + bias).store(out + i * orow + j * opix);
  }
}

// dX[x][t][k0 ..] = A dy A^T of the m x m output-gradient tile at e (pixel stride cop).
template <typename F>
void grad_tile(const float* e, int64_t row, int64_t cop, int64_t k0, float* dX, int64_t plane,
               int64_t at) {
  constexpr int n = F::n, m = F::m;
  Vec x[m][n];
  for (int i = 0; i < m; ++i) {
    Vec y[m];
    for (int j = 0; j < m; ++j) y[j] = Vec::loadu(e + i * row + j * cop + k0);
    F::grad(y, x[i]);
  }
  for (int j = 0; j < n; ++j) {
    Vec col[m], v[n];
    for (int i = 0; i < m; ++i) col[i] = x[i][j];
    F::grad(col, v);
    for (int i = 0; i < n; ++i) v[i].store(dX + (i * n + j) * plane + at + k0);
  }
}

// U[x][c][k] = (G g G^T)[x] for the 3x3 filter g of input channel c and output channel k.
// `flip` gives the input gradient's filters: g = w[c][k] flipped, c the convolution's
// output channels. Input channels in parallel; the loops over k are contiguous in U (and in
// the gathered filters), so the compiler vectorizes them.
template <typename F>
Floats transform_filters(const at::Tensor& weight, bool flip, int64_t cop) {
  constexpr int n = F::n;
  const auto w = weight.accessor<float, 4>();
  const int64_t O = weight.size(0), I = weight.size(1);
  const int64_t C = flip ? O : I, K = flip ? I : O;
  Floats U(n * n * C * cop, 0.f);
  at::parallel_for(0, C, 1, [&](int64_t begin, int64_t end) {
    Floats g(9 * K), t(n * 3 * K);  // g[r][q][k], then t = G g: t[i][q][k]
    for (int64_t c = begin; c < end; ++c) {
      for (int r = 0; r < 3; ++r)
        for (int q = 0; q < 3; ++q)
          for (int64_t k = 0; k < K; ++k)
            g[(r * 3 + q) * K + k] = flip ? w[c][k][2 - r][2 - q] : w[k][c][r][q];
      for (int q = 0; q < 3; ++q)
        for (int64_t k = 0; k < K; ++k) {
          const float col[3] = {g[q * K + k], g[(3 + q) * K + k], g[(6 + q) * K + k]};
          float u[n];
          F::filter(col, u);
          for (int i = 0; i < n; ++i) t[(i * 3 + q) * K + k] = u[i];
        }
      for (int i = 0; i < n; ++i)
        for (int64_t k = 0; k < K; ++k) {
          const float row[3] = {t[i * 3 * K + k], t[(i * 3 + 1) * K + k], t[(i * 3 + 2) * K + k]};
          float u[n];
          F::filter(row, u);
          for (int j = 0; j < n; ++j) U[((i * n + j) * C + c) * cop + k] = u[j];
        }
    }
  });
  return U;
}

// dw[k][c] = G^T dU[.][c][k] G (3x3 from the n x n sums), input channels in parallel.
template <typename F>
void untransform_grads(const Floats& dU, int64_t C, int64_t K, int64_t cop, at::Tensor& dweight) {
  constexpr int n = F::n;
  auto dw = dweight.accessor<float, 4>();
  at::parallel_for(0, C, 1, [&](int64_t begin, int64_t end) {
    Floats t(3 * n * K);  // G^T dU: t[r][j][k]
    for (int64_t c = begin; c < end; ++c) {
      for (int j = 0; j < n; ++j)
        for (int64_t k = 0; k < K; ++k) {
          float col[n], g[3];
          for (int i = 0; i < n; ++i) col[i] = dU[((i * n + j) * C + c) * cop + k];
          F::unfilter(col, g);
          for (int r = 0; r < 3; ++r) t[(r * n + j) * K + k] = g[r];
        }
      for (int r = 0; r < 3; ++r)
        for (int64_t k = 0; k < K; ++k) {
          float row[n], g[3];
          for (int j = 0; j < n; ++j) row[j] = t[(r * n + j) * K + k];
          F::unfilter(row, g);
          for (int q = 0; q < 3; ++q) dw[k][c][r][q] = g[q];
        }
    }
  });
}

// M[t][v0 .. v0+V vectors) = sum over c of V[t][c] U[c][...] for tiles t0 .. t0+P: a
// register block of P tiles x V vectors of output channels. CS is C when it is one of the
// common channel counts (0: read C), so the P tiles' inputs are constant offsets from one
// pointer instead of P pointers that spill from the general registers.
template <int CS, int V, int P>
void gemm_block(const float* Vt, int64_t C, const float* U, int64_t cop, float* M, int64_t t0,
                int64_t v0) {
  const int64_t stride = CS ? CS : C;
  Vec acc[P][V];
  for (int j = 0; j < P; ++j)
    for (int v = 0; v < V; ++v) acc[j][v] = Vec(0.f);
  const float* x = Vt + t0 * stride;
  const float* w = U + v0 * kWidth;
  for (int64_t c = 0; c < stride; ++c, ++x, w += cop) {
    Vec wv[V];
    for (int v = 0; v < V; ++v) wv[v] = Vec::loadu(w + v * kWidth);
    for (int j = 0; j < P; ++j) {
      const Vec xv(x[j * stride]);
      for (int v = 0; v < V; ++v) acc[j][v] = at::vec::fmadd(xv, wv[v], acc[j][v]);
    }
  }
  float* o = M + t0 * cop + v0 * kWidth;
  for (int j = 0; j < P; ++j)
    for (int v = 0; v < V; ++v) acc[j][v].store(o + j * cop + v * kWidth);
}

using GemmFn = void (*)(const float*, int64_t, const float*, int64_t, float*, int64_t, int64_t);
using GemmRow = std::array<GemmFn, kMaxP + 1>;
template <int CS, int V, size_t... P>
constexpr GemmRow gemm_row(std::index_sequence<P...>) {
  return {{&gemm_block<CS, V, fit<V, static_cast<int>(P)>>...}};
}
template <int CS>
constexpr std::array<GemmRow, kMaxV + 1> gemm_table() {
  return {{{}, gemm_row<CS, 1>(Seq{}), gemm_row<CS, 2>(Seq{}), gemm_row<CS, 3>(Seq{}),
           gemm_row<CS, 4>(Seq{})}};
}
// gemm_block<CS, V, P> by [channels: any, 16, 32, 64][V][P], 1 <= P <= max_block(V)
const std::array<std::array<GemmRow, kMaxV + 1>, 4> kGemm = {
    {gemm_table<0>(), gemm_table<16>(), gemm_table<32>(), gemm_table<64>()}};

// The register blocks of M[nT][cop] = V[nT][C] U[C][cop], one of the n^2 positions: worked
// out once per block size (the divisions cost as much as a small product), run per position.
// The tiles are split into near-equal blocks of at most the widest register block (28 tiles
// as 14 + 14, not 16 + twelve of one: a one-tile block is one FMA chain, latency-bound).
struct GemmPlan {
  struct Call {
    GemmFn fn;
    int64_t t0, v0;
  };
  std::vector<Call> calls;
  int64_t nT = -1;

  void plan(int64_t C, int64_t cop, int64_t tiles) {
    if (tiles == nT) return;
    const auto& table = kGemm[C == 16 ? 1 : C == 32 ? 2 : C == 64 ? 3 : 0];
    calls.clear();
    split(cop / kWidth, kMaxV, [&](int64_t v0, int64_t nv) {
      split(tiles, max_block(static_cast<int>(nv)), [&](int64_t t0, int64_t P) {
        calls.push_back({table[nv][P], t0, v0});
      });
    });
    nT = tiles;
  }
  void run(const float* Vt, int64_t C, const float* U, int64_t cop, float* M) const {
    for (const Call& c : calls) c.fn(Vt, C, U, cop, M, c.t0, c.v0);
  }
};

// The tiles of an output of (oh, ow): TH x TW tiles of m x m, over a padded image of
// (m TH + 2, m TW + 2) pixels.
template <typename F>
struct Tiles {
  int64_t TH, TW;
  Tiles(int64_t oh, int64_t ow) : TH((oh + F::m - 1) / F::m), TW((ow + F::m - 1) / F::m) {}
  int64_t count() const { return TH * TW; }
  int64_t Hp() const { return F::m * TH + 2; }
  int64_t Wp() const { return F::m * TW + 2; }
  int64_t top(int64_t q) const { return F::m * (q / TW); }   // first output row of tile q
  int64_t left(int64_t q) const { return F::m * (q % TW); }  // first output column
};

// Transforms tile q of a padded NHWC image of C channels into slot t of V[n^2][T][C].
template <typename F>
void transform_input(const float* img, const Tiles<F>& tl, int64_t C, int64_t q, int64_t T,
                     int64_t t, float* V) {
  const int64_t row = tl.Wp() * C;
  const float* d = img + tl.top(q) * row + tl.left(q) * C;
  for (int64_t c0 = 0; c0 < C; c0 += kWidth)
    input_tile<F>(d, row, C, c0, std::min<int64_t>(kWidth, C - c0), V, T * C, t * C);
}

// y (n, K, oh, ow), allocated, = the 3x3 stride-1 convolution of src (n, C, H, W) zero-padded
// by p, with filters U (transform_filters) and bias (cop floats or nullptr).
template <typename F>
void convolve(const at::Tensor& src, const Floats& U, const float* bias, int64_t K,
              int64_t cop, int64_t p, at::Tensor& y, OutputSums* sums = nullptr) {
  constexpr int64_t n2 = F::n * F::n;
  const int64_t n = src.size(0), C = src.size(1), H = src.size(2), W = src.size(3);
  const int64_t oh = y.size(2), ow = y.size(3);
  const Tiles<F> tl(oh, ow);
  const int64_t most = block_tiles<F>(C, cop, tl.count());
  const int64_t T = (tl.count() + (tl.count() + most - 1) / most - 1) / ((tl.count() + most - 1) / most);
  const auto xs = src.strides(), ys = y.strides();
  const float* xd = src.data_ptr<float>();
  float* yd = y.data_ptr<float>();
  const bool direct = ys[1] == 1 && cop == K;  // channels-last output, whole vectors
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    Floats img(tl.Hp() * tl.Wp() * C), V(n2 * T * C), M(n2 * T * cop);
    Floats buf(direct ? 0 : oh * ow * cop);
    GemmPlan gemms;
    for (int64_t i = begin; i < end; ++i) {
      pad_image(xd + i * xs[0], xs[1], xs[2], xs[3], C, H, W, p, p, tl.Hp(), tl.Wp(),
                img.data());
      float* out = direct ? yd + i * ys[0] : buf.data();
      const int64_t orow = direct ? ys[2] : ow * cop, opix = direct ? ys[3] : cop;
      for (int64_t t0 = 0; t0 < tl.count(); t0 += T) {
        const int64_t nT = std::min(T, tl.count() - t0);
        for (int64_t t = 0; t < nT; ++t) transform_input<F>(img.data(), tl, C, t0 + t, T, t, V.data());
        gemms.plan(C, cop, nT);
        for (int64_t x = 0; x < n2; ++x)
          gemms.run(V.data() + x * T * C, C, U.data() + x * C * cop, cop, M.data() + x * T * cop);
        for (int64_t t = 0; t < nT; ++t) {
          const int64_t a = tl.top(t0 + t), b = tl.left(t0 + t);
          const int64_t rows = std::min<int64_t>(F::m, oh - a);
          const int64_t cols = std::min<int64_t>(F::m, ow - b);
          for (int64_t k0 = 0; k0 < cop; k0 += kWidth) {
            const Vec bv = bias ? Vec::loadu(bias + k0) : Vec(0.f);
            output_tile<F>(M.data() + k0, T * cop, t * cop, bv, out + a * orow + b * opix + k0,
                           orow, opix, rows, cols);
          }
        }
      }
      if (!direct) unpack_image(buf.data(), cop, K, oh, ow, yd + i * ys[0], ys[1], ys[2], ys[3]);
      if (sums) sums->add_image(yd + i * ys[0], ys[1], ys[2], ys[3], oh, ow);
    }
  });
}

template <typename F>
at::Tensor forward(const at::Tensor& x, const at::Tensor& weight,
                   const c10::optional<at::Tensor>& bias, int64_t padding,
                   const c10::optional<at::Tensor>& sums) {
  const Shape g = shape_of(x, weight, 1, padding);
  TORCH_CHECK(g.k == 3, "conv_fp32 winograd: 3x3 filters");
  const int64_t cop = round_up(g.co, kWidth);
  const Floats U = transform_filters<F>(weight.contiguous(), false, cop);
  const Floats bp = bias_floats(bias, g.co, cop);
  at::Tensor y = empty_like_format(x, {g.n, g.co, g.oh, g.ow});
  OutputSums out_sums(sums, g.co);
  convolve<F>(x, U, data_or_null(bp), g.co, cop, padding, y, &out_sums);
  out_sums.finish();
  return y;
}

// dx of a 3x3 stride-1 conv2d(x, weight, padding) for x of (H, W): the convolution of dy
// padded by 2 - padding with the flipped, transposed filters.
template <typename F>
at::Tensor input_grad(const at::Tensor& dy, const at::Tensor& weight, int64_t padding,
                      int64_t H, int64_t W) {
  TORCH_CHECK(dy.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat,
              "conv_fp32: fp32 tensors");
  TORCH_CHECK(weight.size(2) == 3 && weight.size(3) == 3 && padding >= 0 && padding <= 2,
              "conv_fp32 winograd: 3x3 filters, padding 0 to 2");
  TORCH_CHECK(dy.size(2) == H + 2 * padding - 2 && dy.size(3) == W + 2 * padding - 2,
              "conv_fp32 winograd: the gradient's shape is the output's");
  const int64_t ci = weight.size(1), cop = round_up(ci, kWidth);
  const Floats U = transform_filters<F>(weight.contiguous(), true, cop);
  at::Tensor dx = at::empty({dy.size(0), ci, H, W},
                            dy.options().memory_format(dy.suggest_memory_format()));
  convolve<F>(dy, U, nullptr, ci, cop, 2 - padding, dx);
  return dx;
}

// (dW, db) of a 3x3 stride-1 conv2d(x, W, padding), from dy; db only `with_bias`.
template <typename F>
std::vector<at::Tensor> weight_grad(const at::Tensor& x, const at::Tensor& dy, int64_t padding,
                                    bool with_bias) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && dy.scalar_type() == at::kFloat,
              "conv_fp32: fp32 tensors");
  constexpr int64_t n2 = F::n * F::n;
  const int64_t n = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t K = dy.size(1), oh = dy.size(2), ow = dy.size(3), p = padding;
  TORCH_CHECK(dy.size(0) == n && oh == H + 2 * p - 2 && ow == W + 2 * p - 2,
              "conv_fp32 winograd: the gradient's shape is the output's");
  const int64_t cop = round_up(K, kWidth);
  const Tiles<F> tl(oh, ow);
  const int64_t T = block_tiles<F>(C, cop, n * tl.count(), true);
  Partials part(n2 * C * cop, cop);  // dU, db
  const auto xs = x.strides(), es = dy.strides();
  const float* xd = x.data_ptr<float>();
  const float* ed = dy.data_ptr<float>();
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    float* dU = part.dw();
    float* db = part.db();
    const int64_t gh = F::m * tl.TH, gw = F::m * tl.TW;  // dy, zero-extended to whole tiles
    Floats img(tl.Hp() * tl.Wp() * C), grad(gh * gw * cop);
    Floats V(n2 * T * C), dX(n2 * T * cop);
    int64_t filled = 0;  // tiles in the block, from this image and the ones before
    const auto flush = [&] {
      for (int64_t x = 0; x < n2; ++x)
        run_wgrad(WGrad{V.data() + x * T * C, 0, C, 1, 1, C, dX.data() + x * T * cop, cop, 1,
                        filled, dU + x * C * cop});
      filled = 0;
    };
    for (int64_t i = begin; i < end; ++i) {
      pad_image(xd + i * xs[0], xs[1], xs[2], xs[3], C, H, W, p, p, tl.Hp(), tl.Wp(),
                img.data());
      pad_image(ed + i * es[0], es[1], es[2], es[3], K, oh, ow, 0, 0, gh, gw, grad.data());
      widen(grad.data(), gh * gw, K, cop);
      if (with_bias)
        for (int64_t q = 0; q < gh * gw; ++q)
          for (int64_t o = 0; o < cop; o += kWidth)
            (Vec::loadu(db + o) + Vec::loadu(grad.data() + q * cop + o)).store(db + o);
      for (int64_t q = 0; q < tl.count(); ++q) {
        transform_input<F>(img.data(), tl, C, q, T, filled, V.data());
        const float* e = grad.data() + (tl.top(q) * gw + tl.left(q)) * cop;
        for (int64_t k0 = 0; k0 < cop; k0 += kWidth)
          grad_tile<F>(e, gw * cop, cop, k0, dX.data(), T * cop, filled * cop);
        if (++filled == T) flush();
      }
    }
    if (filled > 0) flush();
  });
  at::Tensor dweight = at::empty({K, C, 3, 3}, x.options());
  const Floats sums = part.total();  // dU, then db
  untransform_grads<F>(sums, C, K, cop, dweight);
  std::vector<at::Tensor> out{dweight};
  if (with_bias) out.push_back(part.bias(sums, K, x.options()));
  return out;
}

}  // namespace wino

// The Python-facing calls: `tile` is the output tile, 2 (F(2x2, 3x3)) or 4 (F(4x4, 3x3)).
at::Tensor winograd_forward(const at::Tensor& x, const at::Tensor& weight,
                            const c10::optional<at::Tensor>& bias, int64_t padding, int64_t tile,
                            const c10::optional<at::Tensor>& sums) {
  TORCH_CHECK(tile == 2 || tile == 4, "conv_fp32 winograd: tile 2 or 4");
  return tile == 2 ? wino::forward<wino::F2>(x, weight, bias, padding, sums)
                   : wino::forward<wino::F4>(x, weight, bias, padding, sums);
}

at::Tensor winograd_input_grad(const at::Tensor& dy, const at::Tensor& weight, int64_t padding,
                               int64_t H, int64_t W, int64_t tile) {
  TORCH_CHECK(tile == 2 || tile == 4, "conv_fp32 winograd: tile 2 or 4");
  return tile == 2 ? wino::input_grad<wino::F2>(dy, weight, padding, H, W)
                   : wino::input_grad<wino::F4>(dy, weight, padding, H, W);
}

std::vector<at::Tensor> winograd_weight_grad(const at::Tensor& x, const at::Tensor& dy,
                                             int64_t padding, bool with_bias, int64_t tile) {
  TORCH_CHECK(tile == 2 || tile == 4, "conv_fp32 winograd: tile 2 or 4");
  return tile == 2 ? wino::weight_grad<wino::F2>(x, dy, padding, with_bias)
                   : wino::weight_grad<wino::F4>(x, dy, padding, with_bias);
}
