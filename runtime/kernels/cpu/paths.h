// One kernel source, built once per code path, each build an extension of its own.
//
// A kernel's .cpp includes what it needs (torch, ATen), defines CNNC_BODY as the header that
// holds its code (no includes of its own), then includes this file and calls the body's
// functions as cnnc_kernel::fn. extension.py compiles the .cpp once for each code path this
// machine's level needs, with that path's compiler flags (see _PATH_FLAGS there):
//
//   scalar       x86-64's baseline; at::vec's generic Vectorized (plain arrays)
//   avx2         -mavx2 -mfma -mf16c,  CPU_CAPABILITY_AVX2: at::vec's 8-lane AVX2 vectors
//   avx512       -mavx512{f,bw,vl,dq}, CPU_CAPABILITY_AVX512: 16-lane vectors
//   avx512_bf16  avx512 + -mavx512bf16; CNNC_AVX512_BF16 (vdpbf16ps, which at::vec lacks)
//   neon         aarch64's baseline: at::vec's 4-lane NEON vectors
//
// So the vector code of a body is written once against at::vec::Vectorized<float> (vec.h),
// and each build is that code at one instruction set. Intrinsics appear only for what
// at::vec has no spelling of, under CNNC_AVX512_BF16. Python loads the build of the path for
// the level in use (runtime/kernels/cpu/isa.py, capped by $CNNC_CPU_ISA) and never loads one
// this CPU cannot run. Every definition here has internal linkage (and extension.py builds
// with hidden visibility), so builds for different paths loaded into one process stay apart.

#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "vec.h"

#ifndef CNNC_PATH_NAME
#define CNNC_PATH_NAME scalar
#endif
#define CNNC_STRINGIFY_(x) #x
#define CNNC_STRINGIFY(x) CNNC_STRINGIFY_(x)

namespace {

namespace cnnc_kernel {
using namespace cnnc_vec;
#include CNNC_BODY
}  // namespace cnnc_kernel

namespace cnnc_paths {

// Adds path() to an extension module: the code path this build was compiled for.
void bind(pybind11::module_& m) {
  m.def("path", [] { return std::string(CNNC_STRINGIFY(CNNC_PATH_NAME)); },
        "the code path (instruction set) this build was compiled for");
}

}  // namespace cnnc_paths

}  // namespace
