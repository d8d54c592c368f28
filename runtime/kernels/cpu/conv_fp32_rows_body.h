// The direct convolution vectorized along output rows, for stride-1 layers with few output
// channels (LeNet's 3->6 first layer and the input gradient of its 6->16 second layer, whose
// output is 6 channels): conv_fp32's channel vectors would leave 10 of AVX-512's 16 lanes
// idle there. Included by conv_fp32_body.h inside namespace fp32conv.
//
// Each image is copied into a zero-padded NCHW buffer whose rows carry slack for whole
// vectors; a register block holds COB output channels x 2 vectors of consecutive output
// pixels of one row (1 where a row fits in one) and, per filter tap, loads those input
// vectors (contiguous along the row) and broadcasts COB weights. The input gradient is the same over the output gradient with
// transposed, flipped filters and padding k - 1 - p. The weight gradient keeps COB output
// channels x K taps of one filter row in registers, summed over vectors of output pixels,
// and adds them up lane by lane at the end of each image.

namespace rows {

constexpr int kPV = 2;  // pixel vectors of a wide row's register block (one for a narrow row)
// Output channels per forward block: PV x COB accumulators, PV inputs and a weight.
template <int PV>
constexpr int max_cob() {
  return PV == 2 ? (kRegs == 32 ? 12 : 6) : (kRegs == 32 ? 16 : 12);
}

// A padded NCHW image: C planes of Hp rows of `row` floats (Wp used, the rest slack).
struct Planes {
  int64_t C, Hp, Wp, row;
  Planes(int64_t C_, int64_t Hp_, int64_t Wp_)
      : C(C_), Hp(Hp_), Wp(Wp_), row(round_up(Wp_ + kPV * kWidth, kWidth)) {}
  int64_t size() const { return C * Hp * row; }
};

// Image n of src (any strides) into p's buffer, its pixel (0, 0) at (top, left).
void fill(const float* src, int64_t sc, int64_t sh, int64_t sw, int64_t H, int64_t W,
          int64_t top, int64_t left, const Planes& p, float* out) {
  std::fill(out, out + p.size(), 0.f);
  for (int64_t c = 0; c < p.C; ++c)
    for (int64_t h = 0; h < H; ++h) {
      float* o = out + (c * p.Hp + h + top) * p.row + left;
      const float* s = src + c * sc + h * sh;
      if (sw == 1) {
        std::memcpy(o, s, W * sizeof(float));
      } else {
        for (int64_t w = 0; w < W; ++w) o[w] = s[w * sw];
      }
    }
}

// out[co0 .. co0+COB][a][b0 .. b0 + n) for one output row a: w packed [ci][kh][kw][co].
template <int COB, int PV>
void row_block(const float* img, const Planes& p, int64_t k, const float* w, int64_t co,
               const float* bias, int64_t co0, int64_t a, int64_t b0, int64_t n, float* out,
               int64_t oplane, int64_t orow) {
  Vec acc[COB][PV];
  for (int j = 0; j < COB; ++j)
    for (int v = 0; v < PV; ++v) acc[j][v] = Vec(bias ? bias[co0 + j] : 0.f);
  for (int64_t ci = 0; ci < p.C; ++ci)
    for (int64_t r = 0; r < k; ++r) {
      const float* x = img + (ci * p.Hp + a + r) * p.row + b0;
      const float* wr = w + ((ci * k + r) * k) * co + co0;
      for (int64_t q = 0; q < k; ++q, wr += co) {
        Vec xv[PV];
        for (int v = 0; v < PV; ++v) xv[v] = Vec::loadu(x + q + v * kWidth);
        for (int j = 0; j < COB; ++j) {
          const Vec wv(wr[j]);
          for (int v = 0; v < PV; ++v) acc[j][v] = at::vec::fmadd(xv[v], wv, acc[j][v]);
        }
      }
    }
  for (int j = 0; j < COB; ++j)
    for (int v = 0; v < PV; ++v) {
      const int64_t lanes = std::min<int64_t>(kWidth, n - v * kWidth);
      if (lanes > 0) acc[j][v].store(out + (co0 + j) * oplane + a * orow + b0 + v * kWidth, lanes);
    }
}

using RowFn = void (*)(const float*, const Planes&, int64_t, const float*, int64_t,
                       const float*, int64_t, int64_t, int64_t, int64_t, float*, int64_t,
                       int64_t);
template <int PV, size_t... J>
constexpr std::array<RowFn, max_cob<PV>() + 1> row_table(std::index_sequence<J...>) {
  return {{&row_block<(J == 0 ? 1 : static_cast<int>(J)), PV>...}};
}
const auto kRow1 = row_table<1>(std::make_index_sequence<max_cob<1>() + 1>{});
const auto kRow2 = row_table<2>(std::make_index_sequence<max_cob<2>() + 1>{});

// y (n, co, oh, ow), allocated, = the stride-1 convolution of src (n, C, H, W) zero-padded by
// p with weights packed [ci][kh][kw][co] and bias (co floats or nullptr).
void convolve(const at::Tensor& src, const Floats& w, const float* bias, int64_t co, int64_t k,
              int64_t p, at::Tensor& y, OutputSums* sums = nullptr) {
  const int64_t n = src.size(0), C = src.size(1), H = src.size(2), W = src.size(3);
  const int64_t oh = y.size(2), ow = y.size(3);
  const Planes pl(C, oh - 1 + k, ow - 1 + k);
  const auto xs = src.strides(), ys = y.strides();
  const float* xd = src.data_ptr<float>();
  float* yd = y.data_ptr<float>();
  const bool direct = ys[3] == 1 && ys[2] == ow && ys[1] == oh * ow;  // NCHW rows
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    Floats img(pl.size()), buf(direct ? 0 : co * oh * ow);
    for (int64_t i = begin; i < end; ++i) {
      fill(xd + i * xs[0], xs[1], xs[2], xs[3], H, W, p, p, pl, img.data());
      float* out = direct ? yd + i * ys[0] : buf.data();
      const bool narrow = ow <= kWidth;  // one vector covers a row
      const int64_t step = narrow ? kWidth : kPV * kWidth;
      split(co, narrow ? max_cob<1>() : max_cob<2>(), [&](int64_t co0, int64_t cob) {
        const RowFn fn = narrow ? kRow1[cob] : kRow2[cob];
        for (int64_t a = 0; a < oh; ++a)
          for (int64_t b0 = 0; b0 < ow; b0 += step)
            fn(img.data(), pl, k, w.data(), co, bias, co0, a, b0,
               std::min<int64_t>(step, ow - b0), out, oh * ow, ow);
      });
      if (!direct)
        for (int64_t c = 0; c < co; ++c)
          for (int64_t h = 0; h < oh; ++h)
            for (int64_t x = 0; x < ow; ++x)
              yd[i * ys[0] + c * ys[1] + h * ys[2] + x * ys[3]] = buf[(c * oh + h) * ow + x];
      if (sums) sums->add_image(yd + i * ys[0], ys[1], ys[2], ys[3], oh, ow);
    }
  });
}

// Weights [ci][kh][kw][co] of conv2d(w) (flip: of its input gradient, ci and co swapped and
// the taps reversed).
Floats pack(const at::Tensor& weight, bool flip) {
  const auto acc = weight.accessor<float, 4>();
  const int64_t O = weight.size(0), I = weight.size(1), k = weight.size(2);
  const int64_t C = flip ? O : I, K = flip ? I : O;
  Floats out(C * k * k * K);
  for (int64_t c = 0; c < C; ++c)
    for (int64_t r = 0; r < k; ++r)
      for (int64_t q = 0; q < k; ++q)
        for (int64_t o = 0; o < K; ++o)
          out[((c * k + r) * k + q) * K + o] =
              flip ? acc[c][o][k - 1 - r][k - 1 - q] : acc[o][c][r][q];
  return out;
}

inline float lane_sum(const Vec& v) {
  alignas(64) float lanes[kWidth];
  v.store(lanes);
  float sum = 0.f;
  for (int64_t i = 0; i < kWidth; ++i) sum += lanes[i];
  return sum;
}

// dw[co0 .. co0+COB][ci][r][0 .. K) += the sums over image rows a and pixel vectors of
// dy[co][a][b] * img[ci][a + r][b + q]; dy rows padded with zeros to whole vectors.
template <int K, int COB>
void wgrad_rows(const float* img, const Planes& p, const float* dy, int64_t dyrow, int64_t oh,
                int64_t ow, int64_t co, int64_t co0, int64_t ci, int64_t r, float* dw) {
  Vec acc[COB][K];
  for (int j = 0; j < COB; ++j)
    for (int q = 0; q < K; ++q) acc[j][q] = Vec(0.f);
  for (int64_t a = 0; a < oh; ++a) {
    const float* x = img + (ci * p.Hp + a + r) * p.row;
    for (int64_t b = 0; b < ow; b += kWidth) {
      Vec e[COB];
      for (int j = 0; j < COB; ++j) e[j] = Vec::loadu(dy + ((co0 + j) * oh + a) * dyrow + b);
      for (int q = 0; q < K; ++q) {
        const Vec xv = Vec::loadu(x + b + q);
        for (int j = 0; j < COB; ++j) acc[j][q] = at::vec::fmadd(e[j], xv, acc[j][q]);
      }
    }
  }
  for (int j = 0; j < COB; ++j)
    for (int q = 0; q < K; ++q)
      dw[(((co0 + j) * p.C + ci) * K + r) * K + q] += lane_sum(acc[j][q]);
}

// Output channels per weight-gradient block: COB x K accumulators, COB gradients, an input.
template <int K>
constexpr int wgrad_cob() {
  return std::max(1, (kRegs - 2) / (K + 1));
}

template <int K>
void wgrad_image(const float* img, const Planes& p, const float* dy, int64_t dyrow, int64_t oh,
                 int64_t ow, int64_t co, float* dw) {
  constexpr int COB = wgrad_cob<K>();
  for (int64_t ci = 0; ci < p.C; ++ci)
    for (int64_t r = 0; r < K; ++r) {
      int64_t co0 = 0;
      for (; co0 + COB <= co; co0 += COB)
        wgrad_rows<K, COB>(img, p, dy, dyrow, oh, ow, co, co0, ci, r, dw);
      for (; co0 < co; ++co0) wgrad_rows<K, 1>(img, p, dy, dyrow, oh, ow, co, co0, ci, r, dw);
    }
}

}  // namespace rows

bool rows_applies(int64_t k, int64_t stride, int64_t padding) {
  return (k == 3 || k == 5) && stride == 1 && padding <= k - 1;
}

at::Tensor rows_forward(const at::Tensor& x, const at::Tensor& weight,
                        const c10::optional<at::Tensor>& bias, int64_t padding,
                        const c10::optional<at::Tensor>& sums) {
  const Shape g = shape_of(x, weight, 1, padding);
  TORCH_CHECK(rows_applies(g.k, 1, padding), "conv_fp32 rows: 3x3 or 5x5, stride 1");
  const Floats w = rows::pack(weight.contiguous(), false);
  const Floats b = bias_floats(bias, g.co, g.co);
  at::Tensor y = empty_like_format(x, {g.n, g.co, g.oh, g.ow});
  OutputSums out_sums(sums, g.co);
  rows::convolve(x, w, data_or_null(b), g.co, g.k, padding, y, &out_sums);
  out_sums.finish();
  return y;
}

// dx of a stride-1 conv2d(x, weight, padding) for x of (H, W).
at::Tensor rows_input_grad(const at::Tensor& dy, const at::Tensor& weight, int64_t padding,
                           int64_t H, int64_t W) {
  TORCH_CHECK(dy.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat,
              "conv_fp32: fp32 tensors");
  const int64_t k = weight.size(2), ci = weight.size(1);
  TORCH_CHECK(rows_applies(k, 1, padding) && weight.size(3) == k,
              "conv_fp32 rows: 3x3 or 5x5, stride 1, padding < k");
  TORCH_CHECK(dy.size(2) == H + 2 * padding - k + 1 && dy.size(3) == W + 2 * padding - k + 1,
              "conv_fp32 rows: the gradient's shape is the output's");
  const Floats w = rows::pack(weight.contiguous(), true);
  at::Tensor dx = at::empty({dy.size(0), ci, H, W},
                            dy.options().memory_format(dy.suggest_memory_format()));
  rows::convolve(dy, w, nullptr, ci, k, k - 1 - padding, dx);
  return dx;
}

// (dW, db) of a stride-1 conv2d(x, W, padding), from dy; db only `with_bias`.
std::vector<at::Tensor> rows_weight_grad(const at::Tensor& x, const at::Tensor& dy, int64_t k,
                                         int64_t padding, bool with_bias) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && dy.scalar_type() == at::kFloat,
              "conv_fp32: fp32 tensors");
  TORCH_CHECK(rows_applies(k, 1, padding), "conv_fp32 rows: 3x3 or 5x5, stride 1");
  const int64_t n = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int64_t co = dy.size(1), oh = dy.size(2), ow = dy.size(3);
  TORCH_CHECK(dy.size(0) == n && oh == H + 2 * padding - k + 1 && ow == W + 2 * padding - k + 1,
              "conv_fp32 rows: the gradient's shape is the output's");
  const rows::Planes pl(C, oh - 1 + k, ow - 1 + k);
  const rows::Planes gp(co, oh, ow);  // dy, rows zero-padded to whole vectors
  Partials part(co * C * k * k, co);  // dw as [co][C][k][k], db
  const auto xs = x.strides(), es = dy.strides();
  const float* xd = x.data_ptr<float>();
  const float* ed = dy.data_ptr<float>();
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    float* dw = part.dw();
    float* db = part.db();
    Floats img(pl.size()), grad(gp.size());
    for (int64_t i = begin; i < end; ++i) {
      rows::fill(xd + i * xs[0], xs[1], xs[2], xs[3], H, W, padding, padding, pl, img.data());
      rows::fill(ed + i * es[0], es[1], es[2], es[3], oh, ow, 0, 0, gp, grad.data());
      if (k == 3) {
        rows::wgrad_image<3>(img.data(), pl, grad.data(), gp.row, oh, ow, co, dw);
      } else {
        rows::wgrad_image<5>(img.data(), pl, grad.data(), gp.row, oh, ow, co, dw);
      }
      if (with_bias)  // rows are whole vectors, zero past the image
        for (int64_t c = 0; c < co; ++c) {
          Vec sum(0.f);
          for (int64_t q = c * oh * gp.row; q < (c + 1) * oh * gp.row; q += kWidth)
            sum = sum + Vec::loadu(grad.data() + q);
          db[c] += rows::lane_sum(sum);
        }
    }
  });
  const Floats sums = part.total();
  at::Tensor dweight = at::empty({co, C, k, k}, x.options());
  std::copy(sums.begin(), sums.begin() + part.size, dweight.data_ptr<float>());
  std::vector<at::Tensor> result{dweight};
  if (with_bias) result.push_back(part.bias(sums, co, x.options()));
  return result;
}
