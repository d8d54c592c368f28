// BatchNorm2d (+ ReLU) for CPU, training and eval, forward and backward.
//
// Why: batch norm and its ReLU are memory-bound, and ATen runs them as separate passes
// (statistics, normalize, ReLU; and in the backward the ReLU mask, two reductions and the
// input gradient). Here the forward is one statistics pass and one normalize+ReLU pass; the
// backward is one reduction pass and one write pass, recomputing the ReLU mask from x instead
// of reading the saved output.
//
// Streams: every pass walks contiguous memory. Channels-last rows make the channel pattern
// periodic with period C, so per-channel constants are laid out once per lcm(C, W) elements
// ("phases" of one W-lane vector each; W = 16 on AVX-512, 8 on AVX2, 4 on NEON) and the loop
// is a flat stream of vectors; an NCHW plane is a run of one channel (constants broadcast).
// The vector code is at::vec's (batchnorm_body.h), built once per code path (paths.h).
//
// Numerics: sums accumulate in fp32 over blocks and in fp64 across blocks; the variance is
// E[x^2] - E[x]^2 in fp64; one fused multiply-add per element. Results match ATen within
// floating-point tolerance, not bit for bit. Running statistics follow nn.BatchNorm2d
// (unbiased batch variance; the caller passes momentum 1/n for momentum=None).

#include <ATen/ATen.h>
#include <torch/csrc/utils/pybind.h>  // pybind11 and its at::Tensor casters (not all of torch/extension.h)
#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <type_traits>
#include <vector>

#define CNNC_BODY "batchnorm_body.h"
#include "paths.h"

std::vector<at::Tensor> forward(const at::Tensor& input, const c10::optional<at::Tensor>& weight,
                                const c10::optional<at::Tensor>& bias,
                                const c10::optional<at::Tensor>& running_mean,
                                const c10::optional<at::Tensor>& running_var, bool training,
                                double momentum, double eps, bool relu,
                                const c10::optional<at::Tensor>& residual,
                                const c10::optional<at::Tensor>& sums) {
  return cnnc_kernel::bn_forward(input, weight, bias, running_mean, running_var, training,
                       momentum, eps, relu, residual, sums);
}

std::vector<at::Tensor> backward(const at::Tensor& grad_out, const at::Tensor& input,
                                 const c10::optional<at::Tensor>& weight,
                                 const c10::optional<at::Tensor>& bias,
                                 const at::Tensor& save_mean, const at::Tensor& save_invstd,
                                 bool relu, bool training,
                                 const c10::optional<at::Tensor>& output) {
  return cnnc_kernel::bn_backward(grad_out, input, weight, bias, save_mean, save_invstd, relu,
                       training, output);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &forward,
        "batch norm (+residual)(+ReLU): (y, mean, invstd, running mean, running var); "
        "`sums`, the input's per-channel sum and sum of squares as (2, C) fp64, spares the "
        "statistics pass",
        py::arg("input"), py::arg("weight"), py::arg("bias"), py::arg("running_mean"),
        py::arg("running_var"), py::arg("training"), py::arg("momentum"), py::arg("eps"),
        py::arg("relu"), py::arg("residual") = py::none(), py::arg("sums") = py::none());
  m.def("backward", &backward,
        "its backward: (grad_input, grad_weight, grad_bias[, grad_residual])",
        py::arg("grad_out"), py::arg("input"), py::arg("weight"), py::arg("bias"),
        py::arg("save_mean"), py::arg("save_invstd"), py::arg("relu"), py::arg("training"),
        py::arg("output") = py::none());
  cnnc_paths::bind(m);
}
