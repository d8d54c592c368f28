// The code of conv_fp32.cpp, compiled once per code path (see paths.h): written once against
// cnnc_vec::Vec (vec.h), so each build is the same register blocks at 8 (AVX2), 16
// (AVX-512) or the generic/NEON width of fp32 lanes.
//
// Every pass is one primitive, a "window": out[a, b, :] = sum over window rows r and the
// floats m of a window row of img[(a*s + r), b*s*cin + m] * w[r][m][:], where img is a
// zero-padded NHWC image (a window row of kw pixels x cin channels is kw*cin contiguous
// floats) and w is packed [r][m][output channels padded to whole vectors]. The forward is
// one window per image; the input gradient is a window over the padded output gradient with
// transposed, flipped weights, one per output phase at stride 2 (each phase reads only the
// taps that reach it); the weight gradient sums the same window products over pixels.

namespace fp32conv {

// std::allocator raised to cache-line alignment: rows of whole vectors in these buffers
// (packed weights, tiles, partial sums) never straddle two lines by accident of where the
// heap put them (a 16-byte offset made every other AVX2 load a split load: the same call
// ran 1.2 or 1.6 ms from one process to the next).
template <typename T>
struct CacheAligned {
  using value_type = T;
  static constexpr std::align_val_t kAlign{64};
  CacheAligned() = default;
  template <typename U>
  CacheAligned(const CacheAligned<U>&) {}
  T* allocate(size_t n) { return static_cast<T*>(::operator new(n * sizeof(T), kAlign)); }
  void deallocate(T* p, size_t) { ::operator delete(p, kAlign); }
  template <typename U>
  bool operator==(const CacheAligned<U>&) const { return true; }
  template <typename U>
  bool operator!=(const CacheAligned<U>&) const { return false; }
};
using Floats = std::vector<float, CacheAligned<float>>;

constexpr int kRegs = kWidth >= 16 ? 32 : 16;  // vector registers of the path (AVX-512: 32)
constexpr int kMaxV = 4;                        // output-channel vectors per register block
constexpr int kMaxP = 16;                       // pixels (or window floats) per block

// Accumulators of a block of V vectors: the registers left for a weight vector per V and a
// broadcast input, with at least 8 independent sums for two 4-cycle FMA pipes.
constexpr int max_block(int V) {
  if (kRegs == 32) return V == 1 ? 16 : V == 2 ? 12 : V == 3 ? 8 : 6;
  return V == 1 ? 12 : V == 2 ? 6 : V == 3 ? 4 : 3;
}

inline int64_t round_up(int64_t v, int64_t m) { return (v + m - 1) / m * m; }

struct Window {
  const float* img;  // padded NHWC image at the first window of output pixel (0, 0)
  int64_t row;       // floats per padded image row
  int64_t cin;       // floats per image pixel
  int64_t s;         // stride (image pixels per output pixel)
  int64_t R;         // window rows
  int64_t M;         // floats per window row (window columns x cin)
  const float* w;    // packed weights [R][M][cop]
  int64_t cop;       // output channels, padded to whole vectors
  const float* bias; // cop floats, or nullptr
  float* out;        // output pixel (a, b) at out + a*orow + b*opix (cop floats)
  int64_t orow, opix;
  int64_t oh, ow;    // output pixels
};

// P output pixels of row a (from column b0) x V vectors of output channels (from v0).
template <int V, int P>
void window_block(const Window& g, int64_t a, int64_t b0, int64_t v0) {
  Vec acc[P][V];
  for (int v = 0; v < V; ++v) {
    const Vec b = g.bias ? Vec::loadu(g.bias + (v0 + v) * kWidth) : Vec(0.f);
    for (int j = 0; j < P; ++j) acc[j][v] = b;
  }
  const int64_t step = g.s * g.cin;
  for (int64_t r = 0; r < g.R; ++r) {
    const float* x = g.img + (a * g.s + r) * g.row + b0 * step;
    const float* w = g.w + r * g.M * g.cop + v0 * kWidth;
    for (int64_t m = 0; m < g.M; ++m, w += g.cop) {
      Vec wv[V];
      for (int v = 0; v < V; ++v) wv[v] = Vec::loadu(w + v * kWidth);
      for (int j = 0; j < P; ++j) {
        const Vec xv(x[j * step + m]);
        for (int v = 0; v < V; ++v) acc[j][v] = at::vec::fmadd(xv, wv[v], acc[j][v]);
      }
    }
  }
  float* o = g.out + a * g.orow + b0 * g.opix + v0 * kWidth;
  for (int j = 0; j < P; ++j)
    for (int v = 0; v < V; ++v) acc[j][v].store(o + j * g.opix + v * kWidth);
}

struct WGrad {
  const float* img;  // padded NHWC image at the first window of output pixel (0, 0)
  int64_t row, cin, s, R, M;
  const float* dy;   // output gradient, pixel (a, b) at dy + (a*ow + b)*cop
  int64_t cop, oh, ow;
  float* dw;         // [R][M][cop], accumulated into
};

// dw[r][m0 .. m0+J][v0 .. v0+V vectors] += sum over rows [a0, a1) and all columns.
template <int V, int J>
void wgrad_block(const WGrad& g, int64_t r, int64_t m0, int64_t v0, int64_t a0, int64_t a1) {
  Vec acc[J][V];
  float* d = g.dw + (r * g.M + m0) * g.cop + v0 * kWidth;
  for (int j = 0; j < J; ++j)
    for (int v = 0; v < V; ++v) acc[j][v] = Vec::loadu(d + j * g.cop + v * kWidth);
  const int64_t step = g.s * g.cin;
  for (int64_t a = a0; a < a1; ++a) {
    const float* x = g.img + (a * g.s + r) * g.row + m0;
    const float* e = g.dy + a * g.ow * g.cop + v0 * kWidth;
    for (int64_t b = 0; b < g.ow; ++b, x += step, e += g.cop) {
      Vec ev[V];
      for (int v = 0; v < V; ++v) ev[v] = Vec::loadu(e + v * kWidth);
      for (int j = 0; j < J; ++j) {
        const Vec xv(x[j]);
        for (int v = 0; v < V; ++v) acc[j][v] = at::vec::fmadd(xv, ev[v], acc[j][v]);
      }
    }
  }
  for (int j = 0; j < J; ++j)
    for (int v = 0; v < V; ++v) acc[j][v].store(d + j * g.cop + v * kWidth);
}

// Tables of the blocks by (V, P): entry [V][P] for 1 <= P <= max_block(V).
using WindowFn = void (*)(const Window&, int64_t, int64_t, int64_t);
using WGradFn = void (*)(const WGrad&, int64_t, int64_t, int64_t, int64_t, int64_t);

template <int V, int P>
constexpr int fit = (P >= 1 && P <= max_block(V)) ? P : 1;

template <int V, size_t... P>
constexpr std::array<WindowFn, kMaxP + 1> window_row(std::index_sequence<P...>) {
  return {{&window_block<V, fit<V, static_cast<int>(P)>>...}};
}
template <int V, size_t... P>
constexpr std::array<WGradFn, kMaxP + 1> wgrad_row(std::index_sequence<P...>) {
  return {{&wgrad_block<V, fit<V, static_cast<int>(P)>>...}};
}
using Seq = std::make_index_sequence<kMaxP + 1>;
const std::array<std::array<WindowFn, kMaxP + 1>, kMaxV + 1> kWindow = {
    {{}, window_row<1>(Seq{}), window_row<2>(Seq{}), window_row<3>(Seq{}), window_row<4>(Seq{})}};
const std::array<std::array<WGradFn, kMaxP + 1>, kMaxV + 1> kWGrad = {
    {{}, wgrad_row<1>(Seq{}), wgrad_row<2>(Seq{}), wgrad_row<3>(Seq{}), wgrad_row<4>(Seq{})}};

// Splits `total` items into the fewest blocks of at most `most`, as even as possible: calls
// fn(start, size) for each.
template <typename F>
void split(int64_t total, int64_t most, F&& fn) {
  const int64_t blocks = (total + most - 1) / most;
  int64_t start = 0;
  for (int64_t i = 0; i < blocks; ++i) {
    const int64_t size = (total - start + (blocks - i) - 1) / (blocks - i);
    fn(start, size);
    start += size;
  }
}

// The whole window: output-channel vectors in chunks of up to kMaxV, pixels in row blocks.
void run_window(const Window& g) {
  split(g.cop / kWidth, kMaxV, [&](int64_t v0, int64_t V) {
    split(g.ow, max_block(static_cast<int>(V)), [&](int64_t b0, int64_t P) {
      const WindowFn fn = kWindow[V][P];
      for (int64_t a = 0; a < g.oh; ++a) fn(g, a, b0, v0);
    });
  });
}

// The weight-gradient sums of one image, a band of output rows at a time (the band's input
// and output-gradient rows stay in L1 while every block reads them).
void run_wgrad(const WGrad& g) {
  const int64_t band_bytes = 4 * (g.ow * g.cop + g.s * g.row);
  const int64_t band = std::max<int64_t>(1, 24576 / std::max<int64_t>(1, band_bytes));
  for (int64_t a0 = 0; a0 < g.oh; a0 += band) {
    const int64_t a1 = std::min(g.oh, a0 + band);
    split(g.cop / kWidth, kMaxV, [&](int64_t v0, int64_t V) {
      split(g.M, max_block(static_cast<int>(V)), [&](int64_t m0, int64_t J) {
        const WGradFn fn = kWGrad[V][J];
        for (int64_t r = 0; r < g.R; ++r) fn(g, r, m0, v0, a0, a1);
      });
    });
  }
}

// ---- packing ----------------------------------------------------------------------------

// Image n of a (N, C, H, W) fp32 tensor (any strides) into an (Hp, Wp, C) zero-padded NHWC
// buffer whose pixel (top, left) is the image's (0, 0); what falls outside is cropped.
void pad_image(const float* src, int64_t sc, int64_t sh, int64_t sw, int64_t C, int64_t H,
               int64_t W, int64_t top, int64_t left, int64_t Hp, int64_t Wp, float* out) {
  const int64_t h0 = std::max<int64_t>(0, -top), h1 = std::min(H, Hp - top);
  const int64_t w0 = std::max<int64_t>(0, -left), w1 = std::min(W, Wp - left);
  if (h0 >= h1 || w0 >= w1) {
    std::fill(out, out + Hp * Wp * C, 0.f);
    return;
  }
  // zeros only where no pixel is copied: the rows above and below, the columns either side
  const int64_t r0 = h0 + top, r1 = h1 + top, c0 = w0 + left, c1 = w1 + left;
  std::fill(out, out + r0 * Wp * C, 0.f);
  std::fill(out + r1 * Wp * C, out + Hp * Wp * C, 0.f);
  for (int64_t r = r0; r < r1; ++r) {
    std::fill(out + r * Wp * C, out + (r * Wp + c0) * C, 0.f);
    std::fill(out + (r * Wp + c1) * C, out + (r + 1) * Wp * C, 0.f);
  }
  if (sc == 1) {  // channels-last: rows of pixels of C floats, one copy per row when dense
    const int64_t run = sw == C ? w1 - w0 : 1;
    for (int64_t h = h0; h < h1; ++h)
      for (int64_t w = w0; w < w1; w += run)
        std::memcpy(out + ((h + top) * Wp + w + left) * C, src + h * sh + w * sw,
                    run * C * sizeof(float));
    return;
  }
  for (int64_t c = 0; c < C; ++c)
    for (int64_t h = h0; h < h1; ++h) {
      const float* s = src + c * sc + h * sh;
      float* o = out + ((h + top) * Wp + left) * C + c;
      for (int64_t w = w0; w < w1; ++w) o[w * C] = s[w * sw];
    }
}

// An (H*W, cop) buffer's first C channels into image n of a (N, C, H, W) tensor (any strides).
void unpack_image(const float* buf, int64_t cop, int64_t C, int64_t H, int64_t W, float* dst,
                  int64_t sc, int64_t sh, int64_t sw) {
  if (sc == 1) {
    for (int64_t h = 0; h < H; ++h)
      for (int64_t w = 0; w < W; ++w)
        std::memcpy(dst + h * sh + w * sw, buf + (h * W + w) * cop, C * sizeof(float));
    return;
  }
  for (int64_t c = 0; c < C; ++c)
    for (int64_t h = 0; h < H; ++h) {
      float* d = dst + c * sc + h * sh;
      const float* b = buf + h * W * cop + c;
      for (int64_t w = 0; w < W; ++w) d[w * sw] = b[w * cop];
    }
}

// Spreads `pixels` pixels of C floats, packed, to cop >= C floats each in place (the buffer
// holds pixels * cop), zeroing channels C .. cop: whole vectors of output channels.
void widen(float* buf, int64_t pixels, int64_t C, int64_t cop) {
  if (cop == C) return;
  for (int64_t q = pixels - 1; q >= 0; --q) {
    std::memmove(buf + q * cop, buf + q * C, C * sizeof(float));
    std::fill(buf + q * cop + C, buf + (q + 1) * cop, 0.f);
  }
}

// Each thread's sums of a weight gradient (`size` floats) and its bias gradient (`nb`
// floats), added up at the end: threads never write the same memory.
struct Partials {
  int64_t size, nb;
  int threads;
  Floats sums;
  Partials(int64_t size_, int64_t nb_)
      : size(size_), nb(nb_), threads(at::get_num_threads()), sums(threads * (size_ + nb_)) {}
  float* dw() { return sums.data() + at::get_thread_num() * (size + nb); }  // this thread's
  float* db() { return dw() + size; }
  Floats total() const {  // every thread's, added: size + nb floats
    Floats out(size + nb, 0.f);
    for (int t = 0; t < threads; ++t)
      for (int64_t j = 0; j < size + nb; ++j) out[j] += sums[t * (size + nb) + j];
    return out;
  }
  // The bias gradient's first K sums, from total()'s result.
  at::Tensor bias(const Floats& totals, int64_t K, const at::TensorOptions& options) const {
    at::Tensor db = at::empty({K}, options);
    std::copy(totals.begin() + size, totals.begin() + size + K, db.data_ptr<float>());
    return db;
  }
};

// Per-channel sums of a forward's output, sum y and sum y^2 (fp64), taken image by image
// right after the image is written, while it is still in cache: a following batch norm's
// statistics, which it would otherwise read the whole output again for. Each thread adds
// into its own row; `finish` writes the totals into the caller's (2, K) fp64 tensor.
class OutputSums {
 public:
  OutputSums(const c10::optional<at::Tensor>& out, int64_t K)
      : out_(out && out->defined() ? *out : at::Tensor()), K_(K),
        parts_(out_.defined() ? at::get_num_threads() * 2 * K : 0, 0.0) {
    TORCH_CHECK(!out_.defined() || (out_.scalar_type() == at::kDouble && out_.numel() == 2 * K &&
                                    out_.is_contiguous()),
                "conv_fp32: the output sums are a contiguous (2, out channels) fp64 tensor");
  }
  bool wanted() const { return out_.defined(); }

  // Adds image y (K channels of oh x ow, strides sc, sh, sw) to this thread's sums.
  void add_image(const float* y, int64_t sc, int64_t sh, int64_t sw, int64_t oh, int64_t ow) {
    if (!wanted()) return;
    double* s = parts_.data() + at::get_thread_num() * 2 * K_;
    if (sc == 1) {  // channels-last: vectors over channels, pixel by pixel
      for (int64_t c0 = 0; c0 < K_; c0 += kWidth) {
        const int64_t n = std::min<int64_t>(kWidth, K_ - c0);
        for (int64_t h = 0; h < oh; ++h) {
          Vec s1(0.f), s2(0.f);
          for (int64_t w = 0; w < ow; ++w) {
            const Vec v = Vec::loadu(y + h * sh + w * sw + c0, n);
            s1 = s1 + v;
            s2 = at::vec::fmadd(v, v, s2);
          }
          add(s1, s2, s + c0, n);
        }
      }
      return;
    }
    for (int64_t c = 0; c < K_; ++c) {  // NCHW planes: vectors along rows, kRows at a time
      for (int64_t h0 = 0; h0 < oh; h0 += kRows) {
        Vec s1(0.f), s2(0.f);
        for (int64_t h = h0; h < std::min(oh, h0 + kRows); ++h) {
          const float* row = y + c * sc + h * sh;
          for (int64_t w = 0; w < ow; w += kWidth) {
            const int64_t n = std::min<int64_t>(kWidth, ow - w);
            Vec v;
            if (sw == 1) {
              v = Vec::loadu(row + w, n);
            } else {
              float lanes[kWidth] = {};
              for (int64_t j = 0; j < n; ++j) lanes[j] = row[(w + j) * sw];
              v = Vec::loadu(lanes);
            }
            s1 = s1 + v;
            s2 = at::vec::fmadd(v, v, s2);
          }
        }
        float a[kWidth], b[kWidth];
        s1.store(a);
        s2.store(b);
        for (int j = 0; j < kWidth; ++j) s[c] += a[j], s[K_ + c] += b[j];
      }
    }
  }

  void finish() {
    if (!wanted()) return;
    double* o = out_.data_ptr<double>();
    std::fill(o, o + 2 * K_, 0.0);
    for (size_t t = 0; t < parts_.size() / (2 * K_); ++t)
      for (int64_t j = 0; j < 2 * K_; ++j) o[j] += parts_[t * 2 * K_ + j];
  }

 private:
  static constexpr int64_t kRows = 64;  // rows of a plane summed in fp32 before fp64

  void add(const Vec& s1, const Vec& s2, double* s, int64_t n) const {
    float a[kWidth], b[kWidth];
    s1.store(a);
    s2.store(b);
    for (int64_t j = 0; j < n; ++j) s[j] += a[j], s[K_ + j] += b[j];
  }

  at::Tensor out_;
  int64_t K_;
  std::vector<double> parts_;
};

// The bias as `n` floats (zeros past its channels), or empty without one.
Floats bias_floats(const c10::optional<at::Tensor>& bias, int64_t channels, int64_t n) {
  if (!bias.has_value() || !bias->defined()) return {};
  Floats out(n, 0.f);
  const at::Tensor b = bias->contiguous();
  std::copy(b.data_ptr<float>(), b.data_ptr<float>() + channels, out.begin());
  return out;
}

// The data of an optional buffer: nullptr when empty.
inline const float* data_or_null(const Floats& v) { return v.empty() ? nullptr : v.data(); }

at::Tensor empty_like_format(const at::Tensor& like, at::IntArrayRef sizes) {
  return at::empty(sizes, like.options().memory_format(like.suggest_memory_format()));
}

struct Shape {
  int64_t n, ci, h, w, co, k, oh, ow, s, p;
};

Shape shape_of(const at::Tensor& x, const at::Tensor& weight, int64_t stride, int64_t padding) {
  TORCH_CHECK(x.dim() == 4 && weight.dim() == 4, "conv_fp32: 4-d input and weight");
  TORCH_CHECK(x.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat,
              "conv_fp32: fp32 tensors");
  TORCH_CHECK(weight.size(2) == weight.size(3) && weight.size(1) == x.size(1),
              "conv_fp32: square kernel over the input's channels");
  TORCH_CHECK(stride >= 1 && padding >= 0, "conv_fp32: stride >= 1, padding >= 0");
  Shape g;
  g.n = x.size(0), g.ci = x.size(1), g.h = x.size(2), g.w = x.size(3);
  g.co = weight.size(0), g.k = weight.size(2), g.s = stride, g.p = padding;
  g.oh = (g.h + 2 * padding - g.k) / stride + 1;
  g.ow = (g.w + 2 * padding - g.k) / stride + 1;
  TORCH_CHECK(g.oh >= 1 && g.ow >= 1, "conv_fp32: empty output");
  return g;
}

// Forward weights packed [kh][kw*ci + i][cop]: w[o, i, kh, kw].
Floats pack_forward(const at::Tensor& weight, const Shape& g, int64_t cop) {
  Floats out(g.k * g.k * g.ci * cop, 0.f);
  const auto acc = weight.accessor<float, 4>();
  for (int64_t r = 0; r < g.k; ++r)
    for (int64_t c = 0; c < g.k; ++c)
      for (int64_t i = 0; i < g.ci; ++i)
        for (int64_t o = 0; o < g.co; ++o)
          out[((r * g.k + c) * g.ci + i) * cop + o] = acc[o][i][r][c];
  return out;
}

// ---- the three passes -----------------------------------------------------------------

at::Tensor forward(const at::Tensor& x, const at::Tensor& weight,
                   const c10::optional<at::Tensor>& bias, int64_t stride, int64_t padding,
                   const c10::optional<at::Tensor>& sums) {
  const Shape g = shape_of(x, weight, stride, padding);
  const int64_t cop = round_up(g.co, kWidth);
  const Floats wp = pack_forward(weight.contiguous(), g, cop);
  const Floats bp = bias_floats(bias, g.co, cop);
  at::Tensor y = empty_like_format(x, {g.n, g.co, g.oh, g.ow});
  const int64_t Hp = (g.oh - 1) * g.s + g.k, Wp = (g.ow - 1) * g.s + g.k;
  const auto xs = x.strides(), ys = y.strides();
  const float* xd = x.data_ptr<float>();
  float* yd = y.data_ptr<float>();
  const bool direct = ys[1] == 1 && cop == g.co;  // channels-last output, whole vectors
  OutputSums out_sums(sums, g.co);
  at::parallel_for(0, g.n, 1, [&](int64_t begin, int64_t end) {
    Floats img(Hp * Wp * g.ci), buf(direct ? 0 : g.oh * g.ow * cop);
    for (int64_t n = begin; n < end; ++n) {
      pad_image(xd + n * xs[0], xs[1], xs[2], xs[3], g.ci, g.h, g.w, g.p, g.p, Hp, Wp,
                img.data());
      Window win{img.data(), Wp * g.ci, g.ci, g.s, g.k, g.k * g.ci, wp.data(), cop,
                 data_or_null(bp), nullptr, 0, 0, g.oh, g.ow};
      if (direct) {
        win.out = yd + n * ys[0], win.orow = ys[2], win.opix = ys[3];
      } else {
        win.out = buf.data(), win.orow = g.ow * cop, win.opix = cop;
      }
      run_window(win);
      if (!direct) unpack_image(buf.data(), cop, g.co, g.oh, g.ow, yd + n * ys[0], ys[1],
                                ys[2], ys[3]);
      out_sums.add_image(yd + n * ys[0], ys[1], ys[2], ys[3], g.oh, g.ow);
    }
  });
  out_sums.finish();
  return y;
}

// dx of conv2d(x, weight, stride, padding) for x of (H, W), from the output gradient dy.
// Phase (ph, pw) of dx, pixels (s*a + ph, s*b + pw), reads taps kh = kh0 + s*t (kh0 =
// (ph + p) mod s) at dy row a + q - t (q = (ph + p - kh0) / s): a window over dy's rows
// a + q - T + 1 ... a + q with the taps flipped, and the same in columns.
at::Tensor input_grad(const at::Tensor& dy, const at::Tensor& weight, int64_t stride,
                      int64_t padding, int64_t H, int64_t W) {
  TORCH_CHECK(dy.scalar_type() == at::kFloat && weight.scalar_type() == at::kFloat,
              "conv_fp32: fp32 tensors");
  const int64_t n = dy.size(0), co = dy.size(1), oh = dy.size(2), ow = dy.size(3);
  const int64_t ci = weight.size(1), k = weight.size(2), s = stride, p = padding;
  TORCH_CHECK(weight.size(0) == co, "conv_fp32: the gradient's channels are the weight's");
  const int64_t cop = round_up(ci, kWidth);
  const at::Tensor wc = weight.contiguous();
  const auto wa = wc.accessor<float, 4>();
  struct Phase {
    int64_t ph, pw, rows, cols, A, B, top, left;  // taps, output pixels, window origin
    Floats w;                          // [rows][cols*co + o][cop]
  };
  std::vector<Phase> phases;
  const int64_t pad = k;  // dy's zero border: every phase's windows start inside it
  bool gaps = false;      // some dx pixels get no tap (kernel smaller than the stride)
  for (int64_t ph = 0; ph < std::min(s, H); ++ph)
    for (int64_t pw = 0; pw < std::min(s, W); ++pw) {
      Phase f;
      f.ph = ph, f.pw = pw;
      const int64_t kh0 = (ph + p) % s, kw0 = (pw + p) % s;
      f.rows = kh0 < k ? (k - kh0 + s - 1) / s : 0;
      f.cols = kw0 < k ? (k - kw0 + s - 1) / s : 0;
      f.A = (H - ph + s - 1) / s, f.B = (W - pw + s - 1) / s;
      if (f.rows == 0 || f.cols == 0) {
        gaps = true;
        continue;
      }
      const int64_t q = (ph + p - kh0) / s, qc = (pw + p - kw0) / s;
      f.top = q - f.rows + 1 + pad, f.left = qc - f.cols + 1 + pad;
      f.w.assign(f.rows * f.cols * co * cop, 0.f);
      for (int64_t r = 0; r < f.rows; ++r)
        for (int64_t c = 0; c < f.cols; ++c)
          for (int64_t o = 0; o < co; ++o)
            for (int64_t i = 0; i < ci; ++i)
              f.w[((r * f.cols + c) * co + o) * cop + i] =
                  wa[o][i][kh0 + s * (f.rows - 1 - r)][kw0 + s * (f.cols - 1 - c)];
      phases.push_back(std::move(f));
    }
  // dy padded by `pad` on every side, and far enough down/right for every phase's windows
  int64_t Hp = oh + 2 * pad, Wp = ow + 2 * pad;
  for (const Phase& f : phases) {
    Hp = std::max(Hp, f.top + f.A - 1 + f.rows);
    Wp = std::max(Wp, f.left + f.B - 1 + f.cols);
  }
  at::Tensor dx = at::empty({n, ci, H, W}, dy.options().memory_format(dy.suggest_memory_format()));
  const auto es = dy.strides(), xs = dx.strides();
  const float* ed = dy.data_ptr<float>();
  float* xd = dx.data_ptr<float>();
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    Floats img(Hp * Wp * co), buf(H * W * cop);
    for (int64_t i = begin; i < end; ++i) {
      pad_image(ed + i * es[0], es[1], es[2], es[3], co, oh, ow, pad, pad, Hp, Wp, img.data());
      if (gaps) std::fill(buf.begin(), buf.end(), 0.f);
      for (const Phase& f : phases) {
        const Window win{img.data() + (f.top * Wp + f.left) * co, Wp * co, co, 1, f.rows,
                         f.cols * co, f.w.data(), cop, nullptr,
                         buf.data() + (f.ph * W + f.pw) * cop, s * W * cop, s * cop, f.A, f.B};
        run_window(win);
      }
      unpack_image(buf.data(), cop, ci, H, W, xd + i * xs[0], xs[1], xs[2], xs[3]);
    }
  });
  return dx;
}

// (dW, db) of conv2d(x, W, stride, padding) for k x k W, from the output gradient dy; db is
// empty unless `with_bias`.
std::vector<at::Tensor> weight_grad(const at::Tensor& x, const at::Tensor& dy, int64_t k,
                                    int64_t stride, int64_t padding, bool with_bias) {
  TORCH_CHECK(x.scalar_type() == at::kFloat && dy.scalar_type() == at::kFloat,
              "conv_fp32: fp32 tensors");
  const int64_t n = x.size(0), ci = x.size(1), h = x.size(2), w = x.size(3);
  const int64_t co = dy.size(1), oh = dy.size(2), ow = dy.size(3), s = stride, p = padding;
  TORCH_CHECK(dy.size(0) == n && oh == (h + 2 * p - k) / s + 1 && ow == (w + 2 * p - k) / s + 1,
              "conv_fp32: the gradient's shape is the output's");
  const int64_t cop = round_up(co, kWidth);
  const int64_t Hp = (oh - 1) * s + k, Wp = (ow - 1) * s + k;
  Partials part(k * k * ci * cop, cop);
  const auto xs = x.strides(), es = dy.strides();
  const float* xd = x.data_ptr<float>();
  const float* ed = dy.data_ptr<float>();
  at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
    float* dw = part.dw();
    float* db = part.db();
    Floats img(Hp * Wp * ci + kMaxP), grad(oh * ow * cop);
    for (int64_t i = begin; i < end; ++i) {
      pad_image(xd + i * xs[0], xs[1], xs[2], xs[3], ci, h, w, p, p, Hp, Wp, img.data());
      pad_image(ed + i * es[0], es[1], es[2], es[3], co, oh, ow, 0, 0, oh, ow, grad.data());
      widen(grad.data(), oh * ow, co, cop);
      if (with_bias)
        for (int64_t q = 0; q < oh * ow; ++q)
          for (int64_t o = 0; o < cop; o += kWidth) {
            const Vec sum = Vec::loadu(db + o) + Vec::loadu(grad.data() + q * cop + o);
            sum.store(db + o);
          }
      run_wgrad(WGrad{img.data(), Wp * ci, ci, s, k, k * ci, grad.data(), cop, oh, ow, dw});
    }
  });
  const Floats sums = part.total();  // [kh][kw * ci + j][cop]
  at::Tensor dweight = at::empty({co, ci, k, k}, x.options());
  auto wa = dweight.accessor<float, 4>();
  for (int64_t r = 0; r < k; ++r)
    for (int64_t c = 0; c < k; ++c)
      for (int64_t j = 0; j < ci; ++j)
        for (int64_t o = 0; o < co; ++o) wa[o][j][r][c] = sums[((r * k + c) * ci + j) * cop + o];
  std::vector<at::Tensor> out{dweight};
  if (with_bias) out.push_back(part.bias(sums, co, x.options()));
  return out;
}

#include "conv_fp32_rows_body.h"
#include "conv_fp32_winograd_body.h"

}  // namespace fp32conv
