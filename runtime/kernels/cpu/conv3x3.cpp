// A bf16 3x3 convolution (padding 1, stride 1 or 2), channels-last; also a 1x1 convolution
// (padding 0), as the centre tap of the same window.
//
// Why: oneDNN runs small-channel bf16 convolutions (ResNet-20's 16-64 channels) at about 40 %
// of this CPU's bf16 matmul peak, and its ATen glue costs tens of microseconds per call
// (a primitive descriptor is created every time). This direct convolution keeps a block of
// output pixels x output channels in registers and streams the 3x3 window through
// vdpbf16ps. The same kernel computes input gradients: at stride 1 a convolution of the
// output gradient with the transposed, flipped weights; at stride 2 four such passes, one
// per output phase, each reading only the taps that reach it.
//
// Method: y[n,h,w,o] = sum over (kh, kw, i) of x[n, s*h+kh-1, s*w+kw-1, i] * W[o,i,kh,kw].
// Input channels are taken in pairs (vdpbf16ps sums a pair of bf16 products into one fp32
// lane), 16 output channels lie in the lanes, and each input pair is broadcast once per
// block and row of the window, serving all three column taps that read it (a sliding
// window). Weights are repacked per call (they are small) into [kh][kw][i/2][o][2]; a tile
// of input rows is copied into a zero-padded buffer, so the inner loop has no bounds checks.
// Sums are fp32, rounded to bf16 once (round to nearest even, as oneDNN does).
//
// Code paths (see paths.h): avx512_bf16, the register blocks above, and scalar, the same
// packing, row tiles, blocks and stride-2 phases with each block's sums done one lane at a
// time in plain C++. The scalar path is there to test the kernel's logic on any CPU and to
// be a correct fallback; it is not fast (the Python side takes these kernels only where
// they run the avx512_bf16 path).
//
// Limits: input channels even, output channels a multiple of 16 (checked here). The weights
// are streamed once per block of output pixels, so large layers (weights past L2) are slower
// than oneDNN; the Python side uses this kernel up to 64x64 channels.

#include <ATen/ATen.h>
#include <torch/csrc/utils/pybind.h>  // pybind11 and its at::Tensor casters (not all of torch/extension.h)
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>
#include <vector>

#include "bf16.h"

#define CNNC_BODY "conv3x3_body.h"
#include "paths.h"

// x: (N, Ci, H, W) bf16 channels-last. weight: (Co, Ci, k, k), or with `transposed` the
// forward weight (Ci, Co, k, k) of the convolution whose input gradient this is, from its
// output gradient x; a stride-2 one needs `size`, the (H, W) of that convolution's input.
// k = 3 with padding 1, or k = 1 with padding 0 (the centre tap of the same window).
// Returns (N, Co, OH, OW) bf16 channels-last.
at::Tensor conv3x3(const at::Tensor& x, const at::Tensor& weight,
                      const c10::optional<at::Tensor>& bias, int64_t stride, bool transposed,
                      const std::vector<int64_t>& size) {
  return cnnc_kernel::conv3x3_apply(x, weight, bias, stride, transposed, size);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("conv3x3", &conv3x3, "bf16 3x3 padding-1 (or 1x1) convolution, channels-last",
        py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("stride"),
        py::arg("transposed"), py::arg("size") = std::vector<int64_t>{});
  cnnc_paths::bind(m);
}
