// One kernel source, compiled once per code path, with the path chosen at run time.
//
// A kernel's .cpp includes what it needs (torch, ATen, <immintrin.h> comes from here),
// defines CNNC_BODY as the header that holds its code (no includes of its own) and the
// vector paths it has (CNNC_PATH_AVX512, CNNC_PATH_AVX512_BF16), then includes this file.
// The body is compiled as namespace cnnc_scalar (portable C++ for any CPU) and, on x86-64,
// again as cnnc_avx512 / cnnc_avx512_bf16 with those instructions enabled for the body's
// functions only (a target pragma: the headers before it stay generic, so no inline
// function of torch's is compiled for an ISA the CPU may lack). Inside the body,
// CNNC_AVX512 and CNNC_AVX512_BF16 say which path is being compiled.
//
// One build thus serves every CPU. `use(path)` (Python calls it for the level in use, see
// runtime/kernels/cpu/isa.py) selects the path the entry points run, and refuses one this
// build or this CPU lacks; CNNC_DISPATCH(fn, args...) calls the selected path's `fn`.
// Everything here has internal linkage: each extension keeps its own selection.

#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define CNNC_X86 1
#include <immintrin.h>
#else
#undef CNNC_PATH_AVX512
#undef CNNC_PATH_AVX512_BF16
#endif

namespace {

namespace cnnc_scalar {
#include "simd.h"
#include CNNC_BODY
}  // namespace cnnc_scalar

// Enables `isa` (a string literal of target features) for the functions that follow, until
// CNNC_TARGET_POP(); _Pragma lets one macro hold the clang and GCC spellings.
#define CNNC_PRAGMA(...) _Pragma(#__VA_ARGS__)
#if defined(__clang__)
#define CNNC_TARGET_PUSH(isa) \
  CNNC_PRAGMA(clang attribute push(__attribute__((target(isa))), apply_to = function))
#define CNNC_TARGET_POP() CNNC_PRAGMA(clang attribute pop)
#else
#define CNNC_TARGET_PUSH(isa) CNNC_PRAGMA(GCC push_options) CNNC_PRAGMA(GCC target(isa))
#define CNNC_TARGET_POP() CNNC_PRAGMA(GCC pop_options)
#endif

#ifdef CNNC_PATH_AVX512
CNNC_TARGET_PUSH("avx512f,avx512bw,avx512vl,fma")
namespace cnnc_avx512 {
#define CNNC_AVX512 1
#include "simd.h"
#include CNNC_BODY
#undef CNNC_AVX512
}  // namespace cnnc_avx512
CNNC_TARGET_POP()
#endif

#ifdef CNNC_PATH_AVX512_BF16
CNNC_TARGET_PUSH("avx512f,avx512bw,avx512vl,avx512bf16,fma")
namespace cnnc_avx512_bf16 {
#define CNNC_AVX512 1
#define CNNC_AVX512_BF16 1
#include "simd.h"
#include CNNC_BODY
#undef CNNC_AVX512_BF16
#undef CNNC_AVX512
}  // namespace cnnc_avx512_bf16
CNNC_TARGET_POP()
#endif

namespace cnnc_paths {

enum class Path { scalar, avx512, avx512_bf16 };

Path selected = Path::scalar;

struct Known {
  Path path;
  const char* name;
};

const Known kKnown[] = {
    {Path::scalar, "scalar"},
#ifdef CNNC_PATH_AVX512
    {Path::avx512, "avx512"},
#endif
#ifdef CNNC_PATH_AVX512_BF16
    {Path::avx512_bf16, "avx512_bf16"},
#endif
};

// True when this CPU can run `path` (whatever Python asked for, never an illegal instruction).
bool cpu_runs(Path path) {
#ifdef CNNC_X86
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("fma");
  if (path == Path::avx512) return avx512;
  if (path == Path::avx512_bf16) return avx512 && __builtin_cpu_supports("avx512bf16");
#endif
  return path == Path::scalar;
}

// The paths this build has, lowest first.
std::vector<std::string> paths() {
  std::vector<std::string> out;
  for (const Known& k : kKnown) out.push_back(k.name);
  return out;
}

std::string current() {
  for (const Known& k : kKnown)
    if (k.path == selected) return k.name;
  return "scalar";
}

void use(const std::string& name) {
  for (const Known& k : kKnown) {
    if (name != k.name) continue;
    if (!cpu_runs(k.path)) throw std::invalid_argument("this CPU cannot run the " + name + " path");
    selected = k.path;
    return;
  }
  throw std::invalid_argument("this kernel has no " + name + " path");
}

// Adds paths(), path() and use(name) to an extension module.
void bind(pybind11::module_& m) {
  m.def("paths", &paths, "the code paths compiled into this build, lowest first");
  m.def("path", &current, "the code path the entry points run");
  m.def("use", &use, "select a code path (it must be compiled in and run on this CPU)");
}

}  // namespace cnnc_paths

}  // namespace

// A switch case calling `fn` of path `p` (enumerator Path::p, namespace cnnc_p).
#define CNNC_CASE(p, fn, ...) \
  case cnnc_paths::Path::p:   \
    return cnnc_##p::fn(__VA_ARGS__);
#ifdef CNNC_PATH_AVX512
#define CNNC_CASE_AVX512(fn, ...) CNNC_CASE(avx512, fn, __VA_ARGS__)
#else
#define CNNC_CASE_AVX512(fn, ...)
#endif
#ifdef CNNC_PATH_AVX512_BF16
#define CNNC_CASE_AVX512_BF16(fn, ...) CNNC_CASE(avx512_bf16, fn, __VA_ARGS__)
#else
#define CNNC_CASE_AVX512_BF16(fn, ...)
#endif

// Calls the selected path's `fn(args...)`.
#define CNNC_DISPATCH(fn, ...)                   \
  [&]() {                                        \
    switch (cnnc_paths::selected) {              \
      CNNC_CASE_AVX512(fn, __VA_ARGS__)          \
      CNNC_CASE_AVX512_BF16(fn, __VA_ARGS__)     \
      default:                                   \
        return cnnc_scalar::fn(__VA_ARGS__);     \
    }                                            \
  }()
