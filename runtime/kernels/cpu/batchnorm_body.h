// The code of batchnorm.cpp, compiled once per code path (see paths.h). Its vector code is
// written once against at::vec (vec.h's Vec: 16 fp32 lanes on AVX-512, 8 on AVX2 and on the
// scalar build's plain arrays, 4 on NEON) and runs for fp32, bf16 and fp16 on every path,
// partial vectors included; fp64 takes the scalar loops.

constexpr int64_t kBlockPeriods = 64;  // periods summed in fp32 before joining fp64 totals

// Per-element constants of one stream, repeated every `period` elements.
struct Layout {
  int64_t period;              // lcm(channels per period, kWidth) elements
  std::vector<int64_t> chan;   // channel of each element of a period
};

Layout layout(int64_t C, bool channels_last) {
  Layout l;
  const int64_t c = channels_last ? C : 1;
  l.period = std::lcm(c, kWidth);
  l.chan.resize(l.period);
  for (int64_t e = 0; e < l.period; ++e) l.chan[e] = e % c;
  return l;
}

// `values[channel]` spread over one period (for NCHW, `offset` picks the plane's channel).
std::vector<float> spread(const Layout& l, const std::vector<float>& values, int64_t offset) {
  std::vector<float> out(l.period);
  for (int64_t e = 0; e < l.period; ++e) out[e] = values[offset + l.chan[e]];
  return out;
}


// What one pass computes per element: the forward's normalize(+ReLU), or the backward's
// masked gradient g = dy * [a_f x + b_f > 0] and its sums / input gradient.
struct Consts {
  const float* a;   // forward scale  (w * invstd), per element of a period
  const float* b;   // forward shift  (bias - mean * w * invstd)
  const float* ga;  // backward: dx = ga * g + gk * x + gd
  const float* gk;
  const float* gd;
};

// ---- sums: s1 += v, s2 += v * x over a stream, v = x (forward) or the masked gradient g -------

// v where `keep` > 0, else 0 (also where `keep` is NaN, as the scalar `!(keep > 0)` tests).
inline __attribute__((always_inline)) Vec where_positive(const Vec& keep, const Vec& v) {
  return v & (keep > Vec(0.f));
}

// The summand of one vector of n <= kWidth elements at `at` (lanes from n are 0): x in the
// forward; in the backward dy, masked by the ReLU (m > 0 given the output m, else a x + b > 0).
template <typename T, bool Backward>
inline __attribute__((always_inline)) Vec summand(const T* x, const T* dy, const T* m,
                                                  int64_t at, const Vec& xv, const Vec& a,
                                                  const Vec& b, bool relu, int64_t n) {
  if constexpr (!Backward) {
    return xv;
  } else {
    const Vec g = vload(dy + at, n);
    if (m) return where_positive(vload(m + at, n), g);
    if (relu) return where_positive(at::vec::fmadd(a, xv, b), g);
    return g;
  }
}

// The full periods of a stream with P phases held in registers. Short periods are unrolled
// U times, each copy with its own accumulators, so the adds do not wait on one another.
// Returns where the full periods end.
template <typename T, bool Backward, int P>
int64_t sums_registers(const T* x, const T* dy, const T* m, T* gout, int64_t len,
                       const Consts& k, bool relu, float* s1, float* s2) {
  constexpr int U = P >= 4 ? 1 : 4 / P;
  Vec acc1[U * P], acc2[U * P], a[P], b[P];
  for (int q = 0; q < U * P; ++q) {
    acc1[q] = Vec(0.f);
    acc2[q] = Vec(0.f);
  }
  for (int q = 0; q < P; ++q) {
    if constexpr (Backward) {
      a[q] = Vec::loadu(k.a + q * kWidth);
      b[q] = Vec::loadu(k.b + q * kWidth);
    }
  }
  auto vec = [&](int64_t at, int q, int slot) __attribute__((always_inline)) {
    const Vec xv = vload(x + at);
    const Vec v = summand<T, Backward>(x, dy, m, at, xv, a[q], b[q], relu, kWidth);
    if (gout) vstore(gout + at, v);
    acc1[slot] = acc1[slot] + v;
    acc2[slot] = at::vec::fmadd(v, xv, acc2[slot]);
  };
  const int64_t period = P * kWidth;
  int64_t i = 0;
  for (; i + U * period <= len; i += U * period) {
    for (int u = 0; u < U; ++u) {
      for (int q = 0; q < P; ++q) vec(i + u * period + q * kWidth, q, u * P + q);
    }
  }
  for (; i + period <= len; i += period) {
    for (int q = 0; q < P; ++q) vec(i + q * kWidth, q, q);
  }
  for (int q = 0; q < P; ++q) {
    Vec t1 = acc1[q], t2 = acc2[q];
    for (int u = 1; u < U; ++u) {
      t1 = t1 + acc1[u * P + q];
      t2 = t2 + acc2[u * P + q];
    }
    (Vec::loadu(s1 + q * kWidth) + t1).store(s1 + q * kWidth);
    (Vec::loadu(s2 + q * kWidth) + t2).store(s2 + q * kWidth);
  }
  return i;
}

// Adds the stream's sums to s1 and s2 (one entry per element of a period). With `gout`
// (the backward of a residual block's end), the masked gradient is also stored there.
template <typename T, bool Backward>
void stream_sums(const T* x, const T* dy, const T* m, T* gout, int64_t len, const Layout& l,
                 const Consts& k, bool relu, float* s1, float* s2) {
  int64_t i = 0;
  if constexpr (kVectorType<T>) {
    // one vector of n elements at `at`, phase q, summed in memory
    auto vec = [&](int64_t at, int64_t q, int64_t n) __attribute__((always_inline)) {
      const Vec xv = vload(x + at, n);
      Vec a, b;
      if constexpr (Backward) {
        a = Vec::loadu(k.a + q);
        b = Vec::loadu(k.b + q);
      }
      const Vec v = summand<T, Backward>(x, dy, m, at, xv, a, b, relu, n);
      if (gout) vstore(gout + at, v, n);
      (Vec::loadu(s1 + q) + v).store(s1 + q);
      at::vec::fmadd(v, xv, Vec::loadu(s2 + q)).store(s2 + q);
    };
    switch (l.period / kWidth) {
      case 1: i = sums_registers<T, Backward, 1>(x, dy, m, gout, len, k, relu, s1, s2); break;
      case 2: i = sums_registers<T, Backward, 2>(x, dy, m, gout, len, k, relu, s1, s2); break;
      case 3: i = sums_registers<T, Backward, 3>(x, dy, m, gout, len, k, relu, s1, s2); break;
      case 4: i = sums_registers<T, Backward, 4>(x, dy, m, gout, len, k, relu, s1, s2); break;
      default:
        for (; i + l.period <= len; i += l.period) {
          for (int64_t q = 0; q < l.period; q += kWidth) vec(i + q, q, kWidth);
        }
    }
    // the last, partial period: its zero lanes add nothing
    for (int64_t q = 0; i + q < len; q += kWidth) vec(i + q, q, std::min(kWidth, len - i - q));
    return;
  }
  for (; i < len; ++i) {
    const int64_t e = i % l.period;
    const float xv = static_cast<float>(x[i]);
    float v = xv;
    if constexpr (Backward) {
      v = static_cast<float>(dy[i]);
      if (m ? !(static_cast<float>(m[i]) > 0.f) : relu && !(std::fma(k.a[e], xv, k.b[e]) > 0.f)) {
        v = 0.f;
      }
      if (gout) gout[i] = static_cast<T>(v);
    }
    s1[e] += v;
    s2[e] += v * xv;
  }
}

// ---- apply: y = relu?(a x + b [+ r]) (forward) or dx = ga g + gk x + gd (backward) ----------
// `dy` is the output gradient in the backward; in the forward it is the residual r added
// before the ReLU (the end of a residual block), or null. In the backward of a residual
// block's end, `m` is its output y (the ReLU mask is y > 0) and the masked gradient g, which
// is also the residual's gradient, is stored to `gout`.

template <typename T, bool Backward>
void stream_apply(const T* x, const T* dy, const T* m, T* gout, T* out, int64_t len,
                  const Layout& l, const Consts& k, bool relu) {
  if constexpr (kVectorType<T>) {
    // One vector of n elements at `at` (constants at phase q). Full vectors pass the
    // constant kWidth, so their loads and stores are plain ones.
    auto vec = [&](int64_t at, int64_t q, int64_t n) __attribute__((always_inline)) {
      const Vec xv = vload(x + at, n);
      const Vec a = Vec::loadu(k.a + q), b = Vec::loadu(k.b + q);
      Vec v;
      if constexpr (Backward) {
        Vec g = vload(dy + at, n);
        if (m) {
          g = where_positive(vload(m + at, n), g);
          vstore(gout + at, g, n);
        } else if (relu) {
          g = where_positive(at::vec::fmadd(a, xv, b), g);
        }
        v = at::vec::fmadd(Vec::loadu(k.ga + q), g,
                           at::vec::fmadd(Vec::loadu(k.gk + q), xv, Vec::loadu(k.gd + q)));
      } else {
        v = at::vec::fmadd(a, xv, b);
        if (dy) v = v + vload(dy + at, n);
        if (relu) v = at::vec::clamp_min(v, Vec(0.f));  // max(0, v): NaN propagates, like torch
      }
      vstore(out + at, v, n);
    };
    int64_t i = 0;
    const int64_t full = len - len % l.period;
    for (; i < full; i += l.period) {
      for (int64_t q = 0; q < l.period; q += kWidth) vec(i + q, q, kWidth);
    }
    for (int64_t q = 0; i + q < len; q += kWidth) vec(i + q, q, std::min(kWidth, len - i - q));
    return;
  }
  for (int64_t i = 0; i < len; ++i) {
    const int64_t e = i % l.period;
    const float xv = static_cast<float>(x[i]);
    float v;
    if constexpr (Backward) {
      float g = static_cast<float>(dy[i]);
      if (m) {
        if (!(static_cast<float>(m[i]) > 0.f)) g = 0.f;
        gout[i] = static_cast<T>(g);
      } else if (relu && !(std::fma(k.a[e], xv, k.b[e]) > 0.f)) {
        g = 0.f;
      }
      v = std::fma(k.ga[e], g, std::fma(k.gk[e], xv, k.gd[e]));
    } else {
      v = std::fma(k.a[e], xv, k.b[e]);
      if (dy) v += static_cast<float>(dy[i]);
      if (relu) v = v > 0.f ? v : (v != v ? v : 0.f);
    }
    out[i] = static_cast<T>(v);
  }
}

// Constants of a pass, spread over a period (for NCHW, one set per channel).
struct PassConsts {
  std::vector<std::vector<float>> a, b, ga, gk, gd;  // [set][element of period]
  Consts at(int64_t set) const {
    auto pick = [&](const std::vector<std::vector<float>>& v) {
      return v.empty() ? nullptr : v[set].data();
    };
    return {pick(a), pick(b), pick(ga), pick(gk), pick(gd)};
  }
};

PassConsts spread_all(const Layout& l, bool channels_last, int64_t C,
                      const std::vector<std::vector<float>*>& values) {
  PassConsts out;
  std::vector<std::vector<std::vector<float>>*> slots = {&out.a, &out.b, &out.ga, &out.gk, &out.gd};
  const int64_t sets = channels_last ? 1 : C;
  for (size_t v = 0; v < values.size(); ++v) {
    for (int64_t s = 0; s < sets; ++s) slots[v]->push_back(spread(l, *values[v], s));
  }
  return out;
}

// A tensor as streams: channels-last is one stream of N*H*W*C elements (split across threads
// at period boundaries); NCHW is N*C streams (planes) of H*W elements, plane p = channel p % C.
struct Streams {
  bool channels_last;
  int64_t count, length, C;
  int64_t set(int64_t s) const { return channels_last ? 0 : s % C; }
};

// Per-channel fp64 sums over all streams.
template <typename T, bool Backward>
void reduce(const T* x, const T* dy, const T* m, T* gout, const Streams& st, const Layout& l,
            const PassConsts& pc, bool relu, std::vector<double>& t1, std::vector<double>& t2) {
  const int threads = at::get_num_threads();
  std::vector<double> p1(static_cast<size_t>(threads) * st.C, 0.0), p2(p1.size(), 0.0);
  const int64_t chunk = st.channels_last ? l.period * kBlockPeriods : st.length;
  const int64_t chunks = st.channels_last ? (st.length + chunk - 1) / chunk : st.count;
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    const int tid = at::get_thread_num();
    std::vector<float> s1(l.period), s2(l.period);
    for (int64_t j = begin; j < end; ++j) {
      std::fill(s1.begin(), s1.end(), 0.f);
      std::fill(s2.begin(), s2.end(), 0.f);
      const int64_t start = st.channels_last ? j * chunk : j * st.length;
      const int64_t len = st.channels_last ? std::min(chunk, st.length - start) : st.length;
      const int64_t set = st.set(j);
      stream_sums<T, Backward>(x + start, dy ? dy + start : nullptr, m ? m + start : nullptr,
                               gout ? gout + start : nullptr, len, l, pc.at(set), relu,
                               s1.data(), s2.data());
      for (int64_t e = 0; e < l.period; ++e) {
        const int64_t c = st.channels_last ? l.chan[e] : set;
        p1[tid * st.C + c] += s1[e];
        p2[tid * st.C + c] += s2[e];
      }
    }
  });
  t1.assign(st.C, 0.0);
  t2.assign(st.C, 0.0);
  for (int t = 0; t < threads; ++t) {
    for (int64_t c = 0; c < st.C; ++c) {
      t1[c] += p1[t * st.C + c];
      t2[c] += p2[t * st.C + c];
    }
  }
}

template <typename T, bool Backward>
void apply(const T* x, const T* dy, const T* m, T* gout, T* out, const Streams& st,
           const Layout& l, const PassConsts& pc, bool relu) {
  const int64_t chunk = st.channels_last ? l.period * kBlockPeriods : st.length;
  const int64_t chunks = st.channels_last ? (st.length + chunk - 1) / chunk : st.count;
  at::parallel_for(0, chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t j = begin; j < end; ++j) {
      const int64_t start = st.channels_last ? j * chunk : j * st.length;
      const int64_t len = st.channels_last ? std::min(chunk, st.length - start) : st.length;
      stream_apply<T, Backward>(x + start, dy ? dy + start : nullptr, m ? m + start : nullptr,
                                gout ? gout + start : nullptr, out + start, len, l,
                                pc.at(st.set(j)), relu);
    }
  });
}

bool is_channels_last(const at::Tensor& t) {
  return !t.is_contiguous() && t.is_contiguous(at::MemoryFormat::ChannelsLast);
}

Streams streams_of(const at::Tensor& x) {
  const bool cl = is_channels_last(x);
  const int64_t N = x.size(0), C = x.size(1), HW = x.size(2) * x.size(3);
  return cl ? Streams{true, 1, N * HW * C, C} : Streams{false, N * C, HW, C};
}

float param(const c10::optional<at::Tensor>& t, int64_t c, float otherwise) {
  return t && t->defined() ? t->data_ptr<float>()[c] : otherwise;
}

// Training or eval forward: (y, mean, invstd, new running mean, new running var). The op is
// functional: running statistics are read, and their updated values returned. With a
// residual r (same shape and dtype as the input), y = relu?(bn(x) + r) in the same pass.
std::vector<at::Tensor> bn_forward(const at::Tensor& input, const c10::optional<at::Tensor>& weight,
                                   const c10::optional<at::Tensor>& bias,
                                   const c10::optional<at::Tensor>& running_mean,
                                   const c10::optional<at::Tensor>& running_var, bool training,
                                   double momentum, double eps, bool relu,
                                   const c10::optional<at::Tensor>& residual,
                                   const c10::optional<at::Tensor>& sums) {
  TORCH_CHECK(input.dim() == 4 && input.device().is_cpu(), "batch_norm_relu: 4-D CPU input");
  const bool cl = is_channels_last(input);
  const auto fmt = cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::Tensor x = input.contiguous(fmt);
  const bool has_residual = residual && residual->defined();
  const at::Tensor r = has_residual ? residual->contiguous(fmt) : at::Tensor();
  TORCH_CHECK(!has_residual || (r.sizes() == x.sizes() && r.scalar_type() == x.scalar_type()),
              "batch_norm_relu: the residual must have the input's shape and dtype");
  const Streams st = streams_of(x);
  const int64_t C = st.C, M = x.numel() / C;
  const Layout l = layout(C, cl);
  const bool has_running = running_mean && running_mean->defined();
  std::vector<double> mean(C), var(C);
  at::Tensor new_mean = has_running ? running_mean->clone() : at::empty({0}, x.options().dtype(at::kFloat));
  at::Tensor new_var = has_running ? running_var->clone() : at::empty({0}, x.options().dtype(at::kFloat));
  if (training) {
    std::vector<double> s1, s2;
    if (sums && sums->defined()) {  // taken by the producer of x (a convolution) as it wrote x
      TORCH_CHECK(sums->scalar_type() == at::kDouble && sums->numel() == 2 * C &&
                      sums->is_contiguous(),
                  "batch_norm_relu: sums are a contiguous (2, C) fp64 tensor");
      const double* s = sums->const_data_ptr<double>();
      s1.assign(s, s + C);
      s2.assign(s + C, s + 2 * C);
    } else {
      AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "bn_stats", [&] {
        reduce<scalar_t, false>(x.const_data_ptr<scalar_t>(), nullptr, nullptr, nullptr, st, l,
                                PassConsts{}, false, s1, s2);
      });
    }
    const double unbias = M > 1 ? static_cast<double>(M) / (M - 1) : 1.0;
    for (int64_t c = 0; c < C; ++c) {
      mean[c] = s1[c] / M;
      var[c] = std::max(0.0, s2[c] / M - mean[c] * mean[c]);
      if (has_running) {
        float* rm = new_mean.data_ptr<float>();
        float* rv = new_var.data_ptr<float>();
        rm[c] = static_cast<float>((1 - momentum) * rm[c] + momentum * mean[c]);
        rv[c] = static_cast<float>((1 - momentum) * rv[c] + momentum * var[c] * unbias);
      }
    }
  } else {
    for (int64_t c = 0; c < C; ++c) {
      mean[c] = running_mean->data_ptr<float>()[c];
      var[c] = running_var->data_ptr<float>()[c];
    }
  }
  at::Tensor save_mean = at::empty({C}, x.options().dtype(at::kFloat));
  at::Tensor save_invstd = at::empty({C}, x.options().dtype(at::kFloat));
  std::vector<float> a(C), b(C);
  for (int64_t c = 0; c < C; ++c) {
    const double invstd = 1.0 / std::sqrt(var[c] + eps);
    const double w = param(weight, c, 1.f);
    a[c] = static_cast<float>(w * invstd);
    b[c] = static_cast<float>(param(bias, c, 0.f) - mean[c] * w * invstd);
    save_mean.data_ptr<float>()[c] = static_cast<float>(mean[c]);
    save_invstd.data_ptr<float>()[c] = static_cast<float>(invstd);
  }
  const PassConsts pc = spread_all(l, cl, C, {&a, &b});
  at::Tensor y = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "bn_apply", [&] {
    apply<scalar_t, false>(x.const_data_ptr<scalar_t>(),
                           has_residual ? r.const_data_ptr<scalar_t>() : nullptr, nullptr,
                           nullptr, y.mutable_data_ptr<scalar_t>(), st, l, pc, relu);
  });
  return {y, save_mean, save_invstd, new_mean, new_var};
}

// Backward of batch norm (+ ReLU): (grad_input, grad_weight, grad_bias), the last two fp32.
// The ReLU mask is recomputed from x, weight, bias and the saved statistics. Given the
// output of a residual block's end, y = relu(bn(x) + r), the mask is y > 0 instead, and a
// fourth tensor, the masked gradient (the residual's gradient), is returned too.
std::vector<at::Tensor> bn_backward(const at::Tensor& grad_out, const at::Tensor& input,
                                    const c10::optional<at::Tensor>& weight,
                                    const c10::optional<at::Tensor>& bias,
                                    const at::Tensor& save_mean, const at::Tensor& save_invstd,
                                    bool relu, bool training,
                                    const c10::optional<at::Tensor>& output) {
  const bool cl = is_channels_last(input);
  const auto fmt = cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::Tensor x = input.contiguous(fmt);
  const at::Tensor dy = grad_out.to(x.scalar_type()).contiguous(fmt);
  const bool has_output = output && output->defined();
  const at::Tensor y = has_output ? output->to(x.scalar_type()).contiguous(fmt) : at::Tensor();
  TORCH_CHECK(!has_output || y.sizes() == x.sizes(), "batch_norm_relu: output shape");
  at::Tensor g = has_output ? at::empty_like(x) : at::Tensor();
  const Streams st = streams_of(x);
  const int64_t C = st.C, M = x.numel() / C;
  const Layout l = layout(C, cl);
  const float* mean = save_mean.const_data_ptr<float>();
  const float* invstd = save_invstd.const_data_ptr<float>();
  std::vector<float> a(C), b(C);
  for (int64_t c = 0; c < C; ++c) {
    const float w = param(weight, c, 1.f);
    a[c] = w * invstd[c];
    b[c] = param(bias, c, 0.f) - mean[c] * w * invstd[c];
  }
  std::vector<double> s_dy, s_dyx;
  const PassConsts mask = spread_all(l, cl, C, {&a, &b});
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "bn_bwd_sums", [&] {
    reduce<scalar_t, true>(x.const_data_ptr<scalar_t>(), dy.const_data_ptr<scalar_t>(),
                           has_output ? y.const_data_ptr<scalar_t>() : nullptr,
                           has_output ? g.mutable_data_ptr<scalar_t>() : nullptr, st, l, mask,
                           relu, s_dy, s_dyx);
  });
  at::Tensor grad_weight = at::empty({C}, x.options().dtype(at::kFloat));
  at::Tensor grad_bias = at::empty({C}, x.options().dtype(at::kFloat));
  std::vector<float> ga(C), gk(C), gd(C);
  for (int64_t c = 0; c < C; ++c) {
    const double w = param(weight, c, 1.f);
    const double db = s_dy[c];
    const double dw = (s_dyx[c] - mean[c] * db) * invstd[c];  // sum(g * xhat)
    grad_weight.data_ptr<float>()[c] = static_cast<float>(dw);
    grad_bias.data_ptr<float>()[c] = static_cast<float>(db);
    const double ac = w * invstd[c];
    // training: dx = ac g - ac db / M - (ac invstd dw / M) (x - mean); eval: dx = ac g
    const double kc = training ? -ac * invstd[c] * dw / M : 0.0;
    ga[c] = static_cast<float>(ac);
    gk[c] = static_cast<float>(kc);
    gd[c] = static_cast<float>(training ? -ac * db / M - kc * mean[c] : 0.0);
  }
  const PassConsts pc = spread_all(l, cl, C, {&a, &b, &ga, &gk, &gd});
  at::Tensor dx = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "bn_bwd_apply", [&] {
    // at a residual block's end the sums pass stored the masked gradient g: read it instead
    // of dy and y
    apply<scalar_t, true>(x.const_data_ptr<scalar_t>(),
                          has_output ? g.const_data_ptr<scalar_t>() : dy.const_data_ptr<scalar_t>(),
                          nullptr, nullptr, dx.mutable_data_ptr<scalar_t>(), st, l, pc,
                          relu && !has_output);
  });
  if (has_output) return {dx, grad_weight, grad_bias, g};
  return {dx, grad_weight, grad_bias};
}
