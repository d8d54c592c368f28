// A direct fp32 convolution for small layers (groups 1, dilation 1, square k x k kernels,
// any stride and zero padding): forward, input gradient and weight gradient (+ bias
// gradient), in registers as FMA over output-channel vectors.
//
// Why: oneDNN runs the small convolutions of LeNet (3-16 channels, 5x5) and ResNet-20
// (16-64 channels, 3x3) far below the fp32 FMA peak (about 50 of 172 GFLOP/s on a 2-core
// AVX2 machine), where each call is a few hundred microseconds of work plus ATen's glue.
//
// Method (conv_fp32_body.h): each image is copied, zero-padded, into a per-thread NHWC
// buffer (from NCHW or channels-last, so eager NCHW models need no conversion pass); a
// window row of k pixels x ci channels is then k*ci contiguous floats. A register block
// holds P output pixels of one row x V vectors of output channels and, per float of the
// window, loads V weight vectors and broadcasts P inputs (P*V FMAs). Weights are packed per
// call as [kh][kw*ci + i][co padded to whole vectors] (a few KiB to 150 KiB). The input
// gradient is the same window over the padded output gradient with transposed, flipped
// weights; at stride 2 one window per output phase, each with only the taps that reach it.
// The weight gradient holds a block of window floats x output-channel vectors in registers
// and sums over a band of pixels at a time; each thread sums its images into its own
// partial, added at the end. Sums are fp32 in another order than oneDNN's (results agree
// within fp32 rounding). Work is split over images with at::parallel_for.
//
// Code paths (paths.h): scalar, avx2, avx512 on x86-64 and neon on aarch64, all the same
// code over cnnc_vec::Vec; register blocks are sized for 16 (AVX2) or 32 (AVX-512) vector
// registers. The Python side (conv_fp32.py) times this kernel against oneDNN per layer and
// pass and uses it only where it is faster.

#include <ATen/ATen.h>
#include <torch/csrc/utils/pybind.h>  // pybind11 and its at::Tensor casters (not all of torch/extension.h)
#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <new>
#include <utility>
#include <vector>

#define CNNC_BODY "conv_fp32_body.h"
#include "paths.h"

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("forward", &cnnc_kernel::fp32conv::forward,
        "conv2d(x, weight, bias, stride, padding) in fp32; y in x's memory format",
        py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("stride"), py::arg("padding"),
        py::arg("sums") = py::none());
  m.def("input_grad", &cnnc_kernel::fp32conv::input_grad,
        "dx of conv2d(x, weight, stride, padding) for x of (H, W), from dy; in dy's format",
        py::arg("grad"), py::arg("weight"), py::arg("stride"), py::arg("padding"),
        py::arg("height"), py::arg("width"));
  m.def("weight_grad", &cnnc_kernel::fp32conv::weight_grad,
        "[dW] or [dW, db] of conv2d(x, W, stride, padding) for k x k W, from dy",
        py::arg("x"), py::arg("grad"), py::arg("kernel"), py::arg("stride"),
        py::arg("padding"), py::arg("bias"));
  m.def("rows_forward", &cnnc_kernel::fp32conv::rows_forward,
        "stride-1 conv2d(x, weight, bias, padding), vectorized along output rows",
        py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("padding"),
        py::arg("sums") = py::none());
  m.def("rows_input_grad", &cnnc_kernel::fp32conv::rows_input_grad,
        "dx of a stride-1 conv2d, vectorized along rows, in dy's format", py::arg("grad"),
        py::arg("weight"), py::arg("padding"), py::arg("height"), py::arg("width"));
  m.def("rows_weight_grad", &cnnc_kernel::fp32conv::rows_weight_grad,
        "[dW] or [dW, db] of a stride-1 conv2d, vectorized along rows", py::arg("x"),
        py::arg("grad"), py::arg("kernel"), py::arg("padding"), py::arg("bias"));
  m.def("winograd_forward", &cnnc_kernel::fp32conv::winograd_forward,
        "3x3 stride-1 conv2d(x, weight, bias, padding) by Winograd F(tile x tile, 3x3)",
        py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("padding"), py::arg("tile"),
        py::arg("sums") = py::none());
  m.def("winograd_input_grad", &cnnc_kernel::fp32conv::winograd_input_grad,
        "dx of a 3x3 stride-1 conv2d by Winograd F(tile x tile, 3x3), in dy's format",
        py::arg("grad"), py::arg("weight"), py::arg("padding"), py::arg("height"),
        py::arg("width"), py::arg("tile"));
  m.def("winograd_weight_grad", &cnnc_kernel::fp32conv::winograd_weight_grad,
        "[dW] or [dW, db] of a 3x3 stride-1 conv2d by Winograd F(tile x tile, 3x3)",
        py::arg("x"), py::arg("grad"), py::arg("padding"), py::arg("bias"), py::arg("tile"));
  m.def("width", [] { return cnnc_kernel::kWidth; }, "fp32 lanes of this build's vectors");
  cnnc_paths::bind(m);
}
