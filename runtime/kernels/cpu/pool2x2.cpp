// Fused [ReLU +] 2x2 stride-2 max pooling for CPU, forward and backward.
//
// Why: ATen's CPU max_pool2d is a scalar, branchy loop (~1-2 ms for LeNet's 128x6x28x28 on
// two cores, a quarter of a training step); this one is vectorized (its vector code is
// written once against at::vec and built for AVX2, AVX-512 and NEON, see paths.h),
// branch-free, and stores a one-byte window index instead of int64 indices. Every path,
// the scalar one included (for tests, and below the AVX2 level), gives the same results bit
// for bit.
//
// Exactness: the window is scanned in torch's order (top-left, top-right, bottom-left,
// bottom-right); the first maximum wins, and a NaN wins over numbers (the last NaN over
// earlier ones), exactly as aten::max_pool2d_with_indices on CPU. With `relu`, the result is
// relu(maxpool(x)) == maxpool(relu(x)): outputs <= 0 become 0 with index 4, "no gradient"
// (torch's ReLU passes NaN and its gradient), which reproduces both orders' gradients bit
// for bit.
//
// Layout: NCHW (contiguous) and channels-last, fp32 / bf16 / fp16. Rows are split over
// at::parallel_for (torch's own OpenMP runtime, loaded once by libtorch).

#include <ATen/ATen.h>
#include <torch/csrc/utils/pybind.h>  // pybind11 and its at::Tensor casters (not all of torch/extension.h)
#include <ATen/Parallel.h>

#include <cstdint>
#include <type_traits>

#define CNNC_BODY "pool2x2_body.h"
#include "paths.h"

std::vector<at::Tensor> forward(const at::Tensor& x, bool relu) {
  return cnnc_kernel::pool2x2_forward(x, relu);
}

at::Tensor backward(const at::Tensor& grad, const at::Tensor& k, int64_t H, int64_t W) {
  return cnnc_kernel::pool2x2_backward(grad, k, H, W);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward, "fused [ReLU +] 2x2 max pooling: (y, window index)");
  m.def("backward", &backward, "its input gradient");
  cnnc_paths::bind(m);
}
