// Dropout for CPU training: y = x * keep / (1 - p), with the keep mask from a counter-based
// hash, so the backward recomputes it instead of storing it.
//
// Why: ATen's CPU dropout draws one mt19937 number per element in a scalar loop: 18 ms for
// SqueezeNet's 16x512x13x13 classifier input, about an eighth of its whole training step. This
// kernel hashes (element index, seed) with vector integer multiplies (written once against
// at::vec, built for AVX2, AVX-512 and NEON, see paths.h): well under a millisecond for the
// same tensor. Every path, the scalar one included, gives the same masks.
//
// Randomness: element i is kept when mix(mix(i ^ s0) + s1) >= p * 2^32, with mix the
// "lowbias32" integer hash (Wellons); the 64-bit seed (s0, s1) is drawn from torch's default
// generator per call, so torch.manual_seed makes runs repeat. The masks are not torch's (the
// stream differs), only distributed alike: each element kept with probability 1 - p,
// independently. Each path computes the same masks: a given seed keeps the same elements at
// every ISA level.
//
// Layout: the index is the element's position in memory; the caller passes tensors dense in
// one memory format, and the backward's gradient in the forward input's format.

#include <ATen/ATen.h>
#include <torch/csrc/utils/pybind.h>  // pybind11 and its at::Tensor casters (not all of torch/extension.h)
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#define CNNC_BODY "dropout_body.h"
#include "paths.h"

at::Tensor apply(const at::Tensor& x, double p, int64_t s0, int64_t s1) {
  return cnnc_kernel::dropout_apply(x, p, s0, s1);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("apply", &apply,
        "x * keep / (1 - p) with the keep mask hashed from (memory index, seed)");
  cnnc_paths::bind(m);
}
