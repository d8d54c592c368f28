// Winograd F(2x2, 3x3) for the 3x3 stride-1 convolutions of conv_fp32 (included by
// conv_fp32_body.h inside namespace fp32conv, so it reuses that file's register blocks).
//
// A 2x2 output tile is A^T [sum over input channels of U ⊙ V] A, with V = B^T d B the 4x4
// input tile d transformed and U = G g G^T the 3x3 filter g transformed: 16 multiplies per
// tile and channel pair instead of the direct convolution's 36 (2.25x fewer FLOPs), paid
// for with transforms that are linear in the channels. Per block of tiles:
//   1. the input tiles are transformed into V[16][T][C] (vectors over channels);
//   2. the 16 products are 16 independent matrix products M[x][t][:] = V[x][t][:] U[x], in
//      register blocks of tiles x output-channel vectors (gemm);
//   3. M is transformed back into 2x2 output tiles (vectors over output channels).
// The input gradient of a stride-1 convolution is the same computation over the output
// gradient with transposed, flipped filters and padding 2 - p. The weight gradient sums,
// per position x, V[x][t][c] * (A dy_t A^T)[x][k] over all tiles t (the direct convolution's
// weight-gradient blocks, run_wgrad, with one window row of C floats per tile), and maps the
// 4x4 sums back through G^T dU G. Rounding differs from a direct convolution's by a few
// units in the last place of fp32 (the transforms only add, subtract and halve).

namespace wino {

constexpr int kPos = 16;  // transformed positions of a 4x4 tile

// Tiles per block: V and M of a block fit in 64 KiB, about L1 (measured: 512 KiB blocks
// ran 1.3-1.5x slower at 16-32 channels).
inline int64_t block_tiles(int64_t C, int64_t cop, int64_t tiles) {
  const int64_t most = std::max<int64_t>(8, (64 * 1024 / 4) / (kPos * (C + cop)));
  return std::min(tiles, most);
}

// V[x][t][c0 .. c0+n) of the 4x4 tile at d (pixel stride C floats, row stride `row`):
// B^T d B with B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1].
inline void input_tile(const float* d, int64_t row, int64_t C, int64_t c0, int64_t n,
                       float* V, int64_t plane, int64_t at) {
  Vec h[4][4];
  for (int i = 0; i < 4; ++i) {
    const float* p = d + i * row + c0;
    const Vec d0 = Vec::loadu(p, n), d1 = Vec::loadu(p + C, n);
    const Vec d2 = Vec::loadu(p + 2 * C, n), d3 = Vec::loadu(p + 3 * C, n);
    h[i][0] = d0 - d2, h[i][1] = d1 + d2, h[i][2] = d2 - d1, h[i][3] = d1 - d3;
  }
  for (int j = 0; j < 4; ++j) {
    const Vec v[4] = {h[0][j] - h[2][j], h[1][j] + h[2][j], h[2][j] - h[1][j],
                      h[1][j] - h[3][j]};
    for (int i = 0; i < 4; ++i) v[i].store(V + (i * 4 + j) * plane + at + c0, n);
  }
}

// M[t][v0 .. v0+V vectors) = sum over c of V[t][c] U[c][...] for tiles t0 .. t0 + n*P, in
// blocks of P tiles: a register block of P tiles x V vectors of output channels.
template <int V, int P>
void gemm_blocks(const float* Vt, int64_t C, const float* U, int64_t cop, float* M, int64_t t0,
                 int64_t n, int64_t v0) {
  const float* w0 = U + v0 * kWidth;
  for (int64_t blk = 0; blk < n; ++blk) {
    const int64_t t = t0 + blk * P;
    Vec acc[P][V];
    for (int j = 0; j < P; ++j)
      for (int v = 0; v < V; ++v) acc[j][v] = Vec(0.f);
    const float* x = Vt + t * C;
    const float* w = w0;
    for (int64_t c = 0; c < C; ++c, w += cop) {
      Vec wv[V];
      for (int v = 0; v < V; ++v) wv[v] = Vec::loadu(w + v * kWidth);
      for (int j = 0; j < P; ++j) {
        const Vec xv(x[j * C + c]);
        for (int v = 0; v < V; ++v) acc[j][v] = at::vec::fmadd(xv, wv[v], acc[j][v]);
      }
    }
    float* o = M + t * cop + v0 * kWidth;
    for (int j = 0; j < P; ++j)
      for (int v = 0; v < V; ++v) acc[j][v].store(o + j * cop + v * kWidth);
  }
}

// All nT tiles of one position: full blocks of the widest register block, then the rest.
template <int V>
void gemm_vectors(const float* Vt, int64_t C, const float* U, int64_t cop, float* M, int64_t nT,
                  int64_t v0) {
  constexpr int P = max_block(V);
  const int64_t full = nT / P;
  gemm_blocks<V, P>(Vt, C, U, cop, M, 0, full, v0);
  const int64_t rest = nT - full * P;
  const int64_t t = full * P;
  for (int64_t j = 0; j < rest; ++j) gemm_blocks<V, 1>(Vt, C, U, cop, M, t + j, 1, v0);
}

// M[nT][cop] = V[nT][C] U[C][cop] (one of the 16 positions).
inline void gemm(const float* Vt, int64_t C, const float* U, int64_t cop, float* M, int64_t nT) {
  split(cop / kWidth, kMaxV, [&](int64_t v0, int64_t nv) {
    switch (nv) {
      case 1: return gemm_vectors<1>(Vt, C, U, cop, M, nT, v0);
      case 2: return gemm_vectors<2>(Vt, C, U, cop, M, nT, v0);
      case 3: return gemm_vectors<3>(Vt, C, U, cop, M, nT, v0);
      default: return gemm_vectors<4>(Vt, C, U, cop, M, nT, v0);
    }
  });
}

// The 2x2 outputs (rows x cols of them inside the image) of tile `at` for output channels
// k0 .. k0 + kWidth: A^T M A + bias, A^T = [1 1 1 0; 0 1 -1 -1].
inline void output_tile(const float* M, int64_t plane, int64_t at, const Vec& bias, float* out,
                        int64_t orow, int64_t opix, int64_t rows, int64_t cols) {
  Vec s[2][4];
  for (int j = 0; j < 4; ++j) {
    const Vec m0 = Vec::loadu(M + j * plane + at), m1 = Vec::loadu(M + (4 + j) * plane + at);
    const Vec m2 = Vec::loadu(M + (8 + j) * plane + at);
    const Vec m3 = Vec::loadu(M + (12 + j) * plane + at);
    s[0][j] = m0 + m1 + m2, s[1][j] = m1 - m2 - m3;
  }
  for (int64_t i = 0; i < rows; ++i) {
    (s[i][0] + s[i][1] + s[i][2] + bias).store(out + i * orow);
    if (cols > 1) (s[i][1] - s[i][2] - s[i][3] + bias).store(out + i * orow + opix);
  }
}

// dX[x][t][k0 ..] = A dy A^T of the 2x2 output-gradient tile at e (pixel stride cop).
inline void grad_tile(const float* e, int64_t row, int64_t cop, int64_t k0, float* dX,
                      int64_t plane, int64_t at) {
  Vec x[2][4];
  for (int i = 0; i < 2; ++i) {
    const Vec y0 = Vec::loadu(e + i * row + k0), y1 = Vec::loadu(e + i * row + cop + k0);
    x[i][0] = y0, x[i][1] = y0 + y1, x[i][2] = y0 - y1, x[i][3] = Vec(0.f) - y1;
  }
  for (int j = 0; j < 4; ++j) {
    const Vec v[4] = {x[0][j], x[0][j] + x[1][j], x[0][j] - x[1][j], Vec(0.f) - x[1][j]};
    for (int i = 0; i < 4; ++i) v[i].store(dX + (i * 4 + j) * plane + at + k0);
  }
}

// U[x][c][k] = (G g G^T)[x] for the 3x3 filter g of input channel c and output channel k,
// G = [1 0 0; 1/2 1/2 1/2; 1/2 -1/2 1/2; 0 0 1]. `flip` gives the input gradient's filters:
// g = w[c][k] flipped, with c the output channels of the convolution.
std::vector<float> transform_filters(const at::Tensor& weight, bool flip, int64_t cop) {
  const auto w = weight.accessor<float, 4>();
  const int64_t O = weight.size(0), I = weight.size(1);
  const int64_t C = flip ? O : I, K = flip ? I : O;
  std::vector<float> U(kPos * C * cop, 0.f);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t k = 0; k < K; ++k) {
      float g[3][3], t[4][3];
      for (int r = 0; r < 3; ++r)
        for (int q = 0; q < 3; ++q)
          g[r][q] = flip ? w[c][k][2 - r][2 - q] : w[k][c][r][q];
      for (int q = 0; q < 3; ++q) {
        t[0][q] = g[0][q], t[3][q] = g[2][q];
        t[1][q] = 0.5f * (g[0][q] + g[1][q] + g[2][q]);
        t[2][q] = 0.5f * (g[0][q] - g[1][q] + g[2][q]);
      }
      for (int i = 0; i < 4; ++i) {
        const float u[4] = {t[i][0], 0.5f * (t[i][0] + t[i][1] + t[i][2]),
                            0.5f * (t[i][0] - t[i][1] + t[i][2]), t[i][2]};
        for (int j = 0; j < 4; ++j) U[((i * 4 + j) * C + c) * cop + k] = u[j];
      }
    }
  return U;
}

// dw[k][c] = G^T dU[.][c][k] G (3x3 from the 4x4 sums), G^T = [1 1/2 1/2 0; 0 1/2 -1/2 0;
// 0 1/2 1/2 1].
void untransform_grads(const std::vector<float>& dU, int64_t C, int64_t K, int64_t cop,
                       at::Tensor& dweight) {
  auto dw = dweight.accessor<float, 4>();
  for (int64_t c = 0; c < C; ++c)
    for (int64_t k = 0; k < K; ++k) {
      float t[3][4];
      for (int j = 0; j < 4; ++j) {
        const float u0 = dU[((0 + j) * C + c) * cop + k], u1 = dU[((4 + j) * C + c) * cop + k];
        const float u2 = dU[((8 + j) * C + c) * cop + k], u3 = dU[((12 + j) * C + c) * cop + k];
        t[0][j] = u0 + 0.5f * (u1 + u2), t[1][j] = 0.5f * (u1 - u2), t[2][j] = 0.5f * (u1 + u2) + u3;
      }
      for (int r = 0; r < 3; ++r) {
        dw[k][c][r][0] = t[r][0] + 0.5f * (t[r][1] + t[r][2]);
        dw[k][c][r][1] = 0.5f * (t[r][1] - t[r][2]);
        dw[k][c][r][2] = 0.5f * (t[r][1] + t[r][2]) + t[r][3];
      }
    }
}

// The tiles of an output of (oh, ow): TH x TW tiles of 2x2, over a padded image of
// (2 TH + 2, 2 TW + 2) pixels.
struct Tiles {
  int64_t TH, TW;
  Tiles(int64_t oh, int64_t ow) : TH((oh + 1) / 2), TW((ow + 1) / 2) {}
  int64_t count() const { return TH * TW; }
  int64_t Hp() const { return 2 * TH + 2; }
  int64_t Wp() const { return 2 * TW + 2; }
};

// Transforms tiles t0 .. t0+nT of a padded NHWC image of C channels into V[16][T][C].
void transform_inputs(const float* img, const Tiles& tl, int64_t C, int64_t t0, int64_t nT,
                      int64_t T, float* V) {
  const int64_t row = tl.Wp() * C;
  for (int64_t t = 0; t < nT; ++t) {
    const int64_t q = t0 + t, th = q / tl.TW, tw = q % tl.TW;
    const float* d = img + (2 * th) * row + (2 * tw) * C;
    for (int64_t c0 = 0; c0 < C; c0 += kWidth)
      input_tile(d, row, C, c0, std::min<int64_t>(kWidth, C - c0), V, T * C, t * C);
  }
}

// y (n, K, oh, ow), allocated, = the 3x3 stride-1 convolution of src (n, C, H, W) zero-padded
// by p, with filters U (transform_filters) and bias (cop floats or nullptr).
void convolve(const at::Tensor& src, const std::vector<float>& U, const float* bias, int64_t K,
              int64_t cop, int64_t p, at::Tensor& y) {
  const int64_t n = src.size(0), C = src.size(1), H = src.size(2), W = src.size(3);
  const int64_t oh = y.size(2), ow = y.size(3);
  const Tiles tl(oh, ow);
  const int64_t T = block_tiles(C, cop, tl.count());
  const auto xs = src.strides(), ys = y.strides();
  const float* xd = src.data_ptr<float>();
  float* yd = y.data_ptr<float>();
  const bool direct = ys[1] == 1 && cop == K;  // channels-last output, whole vectors
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> img(tl.Hp() * tl.Wp() * C), V(kPos * T * C), M(kPos * T * cop);
    std::vector<float> buf(direct ? 0 : oh * ow * cop);
    for (int64_t i = begin; i < end; ++i) {
      pad_image(xd + i * xs[0], xs[1], xs[2], xs[3], C, H, W, p, p, tl.Hp(), tl.Wp(),
                img.data());
      float* out = direct ? yd + i * ys[0] : buf.data();
      const int64_t orow = direct ? ys[2] : ow * cop, opix = direct ? ys[3] : cop;
      for (int64_t t0 = 0; t0 < tl.count(); t0 += T) {
        const int64_t nT = std::min(T, tl.count() - t0);
        transform_inputs(img.data(), tl, C, t0, nT, T, V.data());
        for (int x = 0; x < kPos; ++x)
          gemm(V.data() + x * T * C, C, U.data() + x * C * cop, cop, M.data() + x * T * cop, nT);
        for (int64_t t = 0; t < nT; ++t) {
          const int64_t q = t0 + t, a = 2 * (q / tl.TW), b = 2 * (q % tl.TW);
          const int64_t rows = std::min<int64_t>(2, oh - a), cols = std::min<int64_t>(2, ow - b);
          for (int64_t k0 = 0; k0 < cop; k0 += kWidth) {
            const Vec bv = bias ? Vec::loadu(bias + k0) : Vec(0.f);
            output_tile(M.data() + k0, T * cop, t * cop, bv, out + a * orow + b * opix + k0,
                        orow, opix, rows, cols);
          }
        }
      }
      if (!direct) unpack_image(buf.data(), cop, K, oh, ow, yd + i * ys[0], ys[1], ys[2], ys[3]);
    }
  });
}

}  // namespace wino

at::Tensor winograd_forward(const at::Tensor& x, const at::Tensor& weight,
                            const c10::optional<at::Tensor>& bias, int64_t padding) {
  const Shape g = shape_of(x, weight, 1, padding);
  TORCH_CHECK(g.k == 3, "conv_fp32 winograd: 3x3 filters");
  const int64_t cop = round_up(g.co, kWidth);
  const std::vector<float> U = wino::transform_filters(weight.contiguous(), false, cop);
  std::vector<float> bp(cop, 0.f);
  const bool has_bias = bias.has_value() && bias->defined();
  if (has_bias) {
    const at::Tensor b = bias->contiguous();
    std::copy(b.data_ptr<float>(), b.data_ptr<float>() + g.co, bp.begin());
  }
  at::Tensor y = empty_like_format(x, {g.n, g.co, g.oh, g.ow});
  wino::convolve(x, U, has_bias ? bp.data() : nullptr, g.co, cop, padding, y);
  return y;
}

// dx of a 3x3 stride-1 conv2d(x, weight, padding) for x of (H, W): the convolution of dy
// padded by 2 - padding with the flipped, transposed filters.
at::Tensor winograd_input_grad(const at::Tensor& dy, const at::Tensor& weight, int64_t padding,
                               int64_t H, int64_t W) {
  TORCH_CHECK(dy.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat,
              "conv_fp32: fp32 tensors");
  TORCH_CHECK(weight.size(2) == 3 && weight.size(3) == 3 && padding >= 0 && padding <= 2,
              "conv_fp32 winograd: 3x3 filters, padding 0 to 2");
  TORCH_CHECK(dy.size(2) == H + 2 * padding - 2 && dy.size(3) == W + 2 * padding - 2,
              "conv_fp32 winograd: the gradient's shape is the output's");
  const int64_t ci = weight.size(1), cop = round_up(ci, kWidth);
  const std::vector<float> U = wino::transform_filters(weight.contiguous(), true, cop);
  at::Tensor dx = at::empty({dy.size(0), ci, H, W},
                            dy.options().memory_format(dy.suggest_memory_format()));
  wino::convolve(dy, U, nullptr, ci, cop, 2 - padding, dx);
  return dx;
}

// (dW, db) of a 3x3 stride-1 conv2d(x, W, padding), from dy; db only `with_bias`.
std::vector<at::Tensor> winograd_weight_grad(const at::Tensor& x, const at::Tensor& dy,
                                             int64_t padding, bool with_bias) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && dy.scalar_type() == at::kFloat,
              "conv_fp32: fp32 tensors");
  const int64_t n = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t K = dy.size(1), oh = dy.size(2), ow = dy.size(3), p = padding;
  TORCH_CHECK(dy.size(0) == n && oh == H + 2 * p - 2 && ow == W + 2 * p - 2,
              "conv_fp32 winograd: the gradient's shape is the output's");
  const int64_t cop = round_up(K, kWidth);
  const wino::Tiles tl(oh, ow);
  const int64_t T = wino::block_tiles(C, cop, tl.count());
  const int64_t size = wino::kPos * C * cop;
  const int threads = at::get_num_threads();
  std::vector<float> partial(threads * (size + cop), 0.f);  // per thread: dU, then db
  const auto xs = x.strides(), es = dy.strides();
  const float* xd = x.data_ptr<float>();
  const float* ed = dy.data_ptr<float>();
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    float* dU = partial.data() + at::get_thread_num() * (size + cop);
    float* db = dU + size;
    const int64_t gh = 2 * tl.TH, gw = 2 * tl.TW;  // dy, zero-extended to whole tiles
    std::vector<float> img(tl.Hp() * tl.Wp() * C), grad(gh * gw * cop);
    std::vector<float> V(wino::kPos * T * C), dX(wino::kPos * T * cop);
    for (int64_t i = begin; i < end; ++i) {
      pad_image(xd + i * xs[0], xs[1], xs[2], xs[3], C, H, W, p, p, tl.Hp(), tl.Wp(),
                img.data());
      pad_image(ed + i * es[0], es[1], es[2], es[3], K, oh, ow, 0, 0, gh, gw, grad.data());
      widen(grad.data(), gh * gw, K, cop);
      if (with_bias)
        for (int64_t q = 0; q < gh * gw; ++q)
          for (int64_t o = 0; o < cop; o += kWidth)
            (Vec::loadu(db + o) + Vec::loadu(grad.data() + q * cop + o)).store(db + o);
      for (int64_t t0 = 0; t0 < tl.count(); t0 += T) {
        const int64_t nT = std::min(T, tl.count() - t0);
        wino::transform_inputs(img.data(), tl, C, t0, nT, T, V.data());
        for (int64_t t = 0; t < nT; ++t) {
          const int64_t q = t0 + t, a = 2 * (q / tl.TW), b = 2 * (q % tl.TW);
          for (int64_t k0 = 0; k0 < cop; k0 += kWidth)
            wino::grad_tile(grad.data() + (a * gw + b) * cop, gw * cop, cop, k0, dX.data(),
                            T * cop, t * cop);
        }
        for (int x = 0; x < wino::kPos; ++x)
          run_wgrad(WGrad{V.data() + x * T * C, 0, C, 1, 1, C, dX.data() + x * T * cop, cop, 1,
                          nT, dU + x * C * cop});
      }
    }
  });
  std::vector<float> dU(size + cop, 0.f);
  for (int t = 0; t < threads; ++t)
    for (int64_t j = 0; j < size + cop; ++j) dU[j] += partial[t * (size + cop) + j];
  at::Tensor dweight = at::empty({K, C, 3, 3}, x.options());
  wino::untransform_grads(dU, C, K, cop, dweight);
  std::vector<at::Tensor> out{dweight};
  if (with_bias) {
    at::Tensor dbias = at::empty({K}, x.options());
    std::copy(dU.begin() + size, dU.begin() + size + K, dbias.data_ptr<float>());
    out.push_back(dbias);
  }
  return out;
}
