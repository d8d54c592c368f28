# Triton reads parameter annotations as type specializations, so kernel parameters stay
# unannotated and ``triton.jit`` is an untyped decorator.
# mypy: disable-error-code="no-untyped-def,untyped-decorator"
"""Triton forward kernel of the fused conv2d + bias + ReLU, and what the kernels share.

The forward is an implicit GEMM (no im2col buffer): output pixels ``n, oh, ow`` are the GEMM
rows (``M = N * OH * OW``), output channels the columns, and the reduction runs over kernel
taps ``(kh, kw)`` and blocks of input channels. Bias and ReLU are applied to the fp32
accumulator before the single cast and store. Every tensor stride is an argument, so one
compiled kernel serves NCHW and channels-last inputs. The structure follows Triton's
tutorial 03-matrix-multiplication: program ids -> pointers -> K loop -> epilogue.

Also owned here, shared with the backward kernels: the autotune config lists (one small
config under ``TRITON_INTERPRET=1``, where the interpreter runs every program in Python), the
``dot_acc`` helper that works around the interpreter's bf16 ``tl.dot`` (it multiplies the raw
uint16 storage), the jit helpers every kernel's prologue and K loop are made of (``tile``,
``split_pixels``, ``tap_dot``), and the launcher ``triton_conv2d_relu``, callable on CPU
tensors under the interpreter.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import triton
import triton.language as tl

from runtime.kernels.conv_args import ConvArgs, conv2d_output_shape, output_memory_format

INTERPRETING: bool = bool(triton.knobs.runtime.interpret)


def make_configs(shapes: list[tuple[int, int, int, int, int, int]]) -> list[triton.Config]:
    """``(BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, num_warps, num_stages)`` rows as Configs."""
    return [
        triton.Config(
            {"BLOCK_M": bm, "BLOCK_N": bn, "BLOCK_K": bk, "GROUP_M": gm},
            num_warps=warps,
            num_stages=stages,
        )
        for bm, bn, bk, gm, warps, stages in shapes
    ]


def tuned_configs(
    gpu: list[triton.Config], interpreted: list[triton.Config]
) -> list[triton.Config]:
    """The configs a kernel autotunes over in this process: ``gpu`` when compiled, else
    ``interpreted``; the interpreter's cost is Python per program and per loop step, so it
    gets one config of few, wide programs."""
    return interpreted if INTERPRETING else gpu


# Tensor-core tiles from the matmul tutorial, plus narrow-N tiles for layers with few
# output channels (LeNet's 6 and 16), where a 64-wide tile would be mostly masked.
FWD_GPU_CONFIGS: list[triton.Config] = make_configs(
    [
        (128, 64, 32, 8, 4, 3),
        (64, 64, 32, 8, 4, 4),
        (128, 128, 32, 8, 8, 3),
        (256, 64, 32, 8, 8, 3),
        (128, 32, 32, 8, 4, 4),
        (128, 16, 16, 8, 4, 4),
        (64, 32, 16, 8, 2, 4),
    ]
)
FWD_CONFIGS = tuned_configs(FWD_GPU_CONFIGS, make_configs([(256, 32, 32, 4, 4, 1)]))


def dot_flags(dtype: torch.dtype) -> dict[str, bool]:
    """The ``UPCAST``/``ALLOW_TF32`` meta-parameters every kernel's ``dot_acc`` takes."""
    return {
        "UPCAST": INTERPRETING,
        "ALLOW_TF32": dtype == torch.float32 and torch.backends.cudnn.allow_tf32,
    }


@triton.jit
def dot_acc(a, b, acc, UPCAST: tl.constexpr, ALLOW_TF32: tl.constexpr):
    """``acc + a @ b`` in fp32; ``UPCAST`` feeds fp32 operands (the interpreter's bf16 fix)."""
    if UPCAST:
        a = a.to(tl.float32)
        b = b.to(tl.float32)
    if ALLOW_TF32:
        acc = tl.dot(a, b, acc, input_precision="tf32")
    else:
        acc = tl.dot(a, b, acc, input_precision="ieee")
    return acc


@triton.jit
def tile_ids(pid, rows, cols, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """(pid_m, pid_n) of program ``pid``, grouped so GROUP_M row tiles share column tiles."""
    num_pid_m = tl.cdiv(rows, BLOCK_M)
    num_pid_n = tl.cdiv(cols, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    first_pid_m = (pid // num_pid_in_group) * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m
    return pid_m, pid_n


@triton.jit
def tile(pid, rows, cols, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """Row and column offsets of program ``pid``'s grouped tile of a rows x cols output, and
    their in-range masks: ``(offs_m, offs_n, mask_m, mask_n)``."""
    pid_m, pid_n = tile_ids(pid, rows, cols, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    return offs_m, offs_n, offs_m < rows, offs_n < cols


@triton.jit
def split_pixels(offs, H, W):
    """Flat pixel indices over (N, H, W) as ``(n, h, w)``; ``n`` in int64 for the offsets."""
    return (offs // (H * W)).to(tl.int64), (offs // W) % H, offs % W


@triton.jit
def tap_dot(
    acc, a_rows, mask_a, stride_a, w_cols, mask_b, stride_b, C,
    kh, kw, stride_wh, stride_ww,
    BLOCK_K: tl.constexpr, UPCAST: tl.constexpr, ALLOW_TF32: tl.constexpr,
):  # fmt: skip
    """``acc`` plus ``A @ B`` at weight tap ``(kh, kw)``, reduced over C channels in BLOCK_K
    blocks: ``A[i, c] = *(a_rows[i] + c * stride_a)``, ``B[c, j] = *(b_cols[j] + c * stride_b)``
    with ``b_cols = w_cols + kh * stride_wh + kw * stride_ww``; masked rows, columns and
    channels read zero (padding is a masked load)."""
    b_cols = w_cols + kh * stride_wh + kw * stride_ww
    offs_c = tl.arange(0, BLOCK_K)
    for c0 in range(0, C, BLOCK_K):
        cs = c0 + offs_c
        mask_c = cs < C
        a = tl.load(
            a_rows[:, None] + cs[None, :] * stride_a,
            mask=mask_a[:, None] & mask_c[None, :],
            other=0.0,
        )  # (BLOCK_M, BLOCK_K)
        b = tl.load(
            b_cols[None, :] + cs[:, None] * stride_b,
            mask=mask_c[:, None] & mask_b[None, :],
            other=0.0,
        )  # (BLOCK_K, BLOCK_N)
        acc = dot_acc(a, b, acc, UPCAST, ALLOW_TF32)
    return acc


@triton.autotune(configs=FWD_CONFIGS, key=["N", "C", "H", "W", "K", "KH", "KW", "stride_xc"])
@triton.jit
def _conv2d_relu_fwd_kernel(
    # pointers
    x_ptr, w_ptr, b_ptr, y_ptr,
    # shapes
    N, C, H, W, K, OH, OW, KH, KW,
    # conv hyper-parameters
    conv_stride_h, conv_stride_w, pad_h, pad_w, dil_h, dil_w,
    # strides
    stride_xn, stride_xc, stride_xh, stride_xw,
    stride_wk, stride_wc, stride_wh, stride_ww,
    stride_yn, stride_yk, stride_yh, stride_yw,
    # meta-parameters
    HAS_BIAS: tl.constexpr, UPCAST: tl.constexpr, ALLOW_TF32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    """y = relu(conv2d(x, w) + b) for one (BLOCK_M pixels, BLOCK_N channels) output tile."""
    # -- program ids: one (output pixels, output channels) tile, grouped for weight reuse
    offs_m, offs_n, mask_m, mask_n = tile(
        tl.program_id(0), N * OH * OW, K, BLOCK_M, BLOCK_N, GROUP_M
    )

    # -- pointers: split each output pixel into (n, oh, ow) and find its input window corner
    n, oh, ow = split_pixels(offs_m, OH, OW)
    ih0 = oh * conv_stride_h - pad_h
    iw0 = ow * conv_stride_w - pad_w
    x_rows = x_ptr + n * stride_xn  # (BLOCK_M,)
    w_cols = w_ptr + offs_n * stride_wk  # (BLOCK_N,)

    # -- K loop: kernel taps outside, input-channel blocks inside; padding is a masked load
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kh in range(KH):
        ih = ih0 + kh * dil_h
        for kw in range(KW):
            iw = iw0 + kw * dil_w
            mask_pix = mask_m & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            x_tap = x_rows + ih * stride_xh + iw * stride_xw
            acc = tap_dot(
                acc, x_tap, mask_pix, stride_xc, w_cols, mask_n, stride_wc, C,
                kh, kw, stride_wh, stride_ww, BLOCK_K, UPCAST, ALLOW_TF32,
            )  # fmt: skip

    # -- epilogue: bias and ReLU on the fp32 accumulator, one cast, masked store
    if HAS_BIAS:
        bias = tl.load(b_ptr + offs_n, mask=mask_n, other=0.0).to(tl.float32)
        acc = acc + bias[None, :]
    acc = tl.maximum(acc, 0.0)
    y_rows = n * stride_yn + oh * stride_yh + ow * stride_yw
    y_ptrs = y_ptr + y_rows[:, None] + offs_n[None, :] * stride_yk
    tl.store(y_ptrs, acc.to(y_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


Grid = Callable[[dict[str, Any]], tuple[int, ...]]


def grid_1d(rows: int, cols: int) -> Grid:
    """Grid of one program per (BLOCK_M, BLOCK_N) tile of a rows x cols output."""
    return lambda meta: (triton.cdiv(rows, meta["BLOCK_M"]) * triton.cdiv(cols, meta["BLOCK_N"]),)


def launch(
    kernel: Any,
    grid: Grid,
    args: tuple[Any, ...],
    meta: dict[str, Any],
    config: triton.Config | None,
) -> None:
    """Run an autotuned kernel, or bypass the tuner with one given config (parity tests)."""
    if config is None:
        kernel[grid](*args, **meta)
    else:
        kernel.fn[grid](*args, **meta, **config.all_kwargs())


def triton_conv2d_relu(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    conv: ConvArgs,
    config: triton.Config | None = None,
) -> torch.Tensor:
    """``relu(conv2d(x, weight, bias))`` computed by the Triton kernel.

    Runs on CUDA tensors, or on CPU tensors when ``TRITON_INTERPRET=1`` was set before this
    module was imported. groups=1 only; the caller checks that.

    Args:
        x: ``(N, C, H, W)`` input, NCHW or channels-last, fp32/fp16/bf16.
        weight: ``(K, C, KH, KW)`` filters of ``x``'s dtype, any strides.
        bias: ``(K,)`` or ``None``.
        conv: stride, zero padding (each side) and dilation per axis.
        config: launch with this config (one of ``FWD_GPU_CONFIGS``) instead of autotuning.

    Returns:
        ``(N, K, OH, OW)`` in ``x``'s dtype and memory format.
    """
    shape = conv2d_output_shape(x.shape, weight.shape, *conv.as_lists())
    y = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=output_memory_format(x))
    n, k, oh, ow = shape
    args = (
        x, weight, weight if bias is None else bias, y,
        n, x.shape[1], x.shape[2], x.shape[3], k, oh, ow, weight.shape[2], weight.shape[3],
        *conv.per_axis(),
        *x.stride(), *weight.stride(), *y.stride(),
    )  # fmt: skip
    meta = {"HAS_BIAS": bias is not None, **dot_flags(x.dtype)}
    launch(_conv2d_relu_fwd_kernel, grid_1d(n * oh * ow, k), args, meta, config)
    return y
