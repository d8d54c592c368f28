// The weight gradient of a bf16 3x3 convolution (padding 1, stride 1 or 2), channels-last.
//
// Why: in a bf16 ResNet-20 training step on this CPU the weight gradients were the largest
// share of the convolution time (15 of 33 ms). oneDNN runs them with its older jit_bf16
// kernel on CPUs without AMX, which re-reads its inputs and slows down by ~1.7x when the
// saved activation is no longer in cache (as it never is in a backward pass). This kernel
// reads every input element once per row tile and does all nine taps from the tile while it
// is in L1.
//
// Method: dW[o][kh][kw][i] = sum over (n, h, w) of gy[n,h,w,o] * x[n, s*h+kh-1, s*w+kw-1, i].
// AVX512-BF16's vdpbf16ps multiplies pairs of bf16 and adds both products to one fp32 lane,
// so the reduction is taken two images at a time: a row tile of images n and n+1 is
// interleaved into (x[n], x[n+1]) pairs (zero padded at the borders, zeros for a missing
// n+1), the 16 input channels of one pair-vector lie in the 16 lanes, and each (gy[n], gy[n+1])
// pair of an output channel is broadcast. Sums are fp32 (one partial sum per thread, added
// at the end) and rounded to bf16 once, as oneDNN does, so results equal ATen's within bf16
// rounding of differently ordered sums.
//
// Code paths (see paths.h): avx512_bf16, the vector code above, and scalar, the same tiles,
// image-pair interleaving, register blocks and partial sums with each block's lanes summed
// in plain C++. The scalar path is there to test the kernel's logic on any CPU and to be a
// correct fallback; it is not fast (the Python side takes this kernel only where it runs the
// avx512_bf16 path).
//
// Limits: input channels a multiple of 16, output channels a multiple of 8; the caller
// checks and otherwise uses ATen.

#include <ATen/ATen.h>
#include <torch/csrc/utils/pybind.h>  // pybind11 and its at::Tensor casters (not all of torch/extension.h)
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "bf16.h"

#define CNNC_BODY "conv_wgrad_body.h"
#include "paths.h"

// x: (N, Ci, H, W) bf16, channels-last; grad: (N, Co, OH, OW) bf16, channels-last.
// Returns dW: (Co, Ci, 3, 3) bf16, channels-last.
at::Tensor weight_grad(const at::Tensor& x, const at::Tensor& grad, int64_t stride) {
  return cnnc_kernel::wgrad_apply(x, grad, stride);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("weight_grad", &weight_grad,
        "dW of a bf16 3x3 padding-1 convolution (stride 1 or 2), channels-last");
  cnnc_paths::bind(m);
}
