# Triton reads parameter annotations as type specializations, so kernel parameters stay
# unannotated and ``triton.jit`` is an untyped decorator.
# mypy: disable-error-code="no-untyped-def,untyped-decorator"
"""Triton backward kernels of the fused conv2d + bias + ReLU.

Three kernels, all in Triton (none goes through aten's ``convolution_backward``):

- ``_relu_mask_bias_grad_kernel``: ``g = grad_y * (y > 0)`` and, in the same pass, each
  tile's per-channel sum of ``g`` (bias-gradient partials, summed over tiles afterwards so the
  result is deterministic, no atomics).
- ``_conv2d_grad_input_kernel``: implicit GEMM over input pixels,
  ``dx[n, c, ih, iw] = sum_{k, kh, kw} g[n, k, oh, ow] * w[k, c, kh, kw]`` for every tap
  whose ``(ih + pad - kh * dil)`` is a non-negative multiple of the stride.
- ``_conv2d_grad_weight_kernel``: implicit GEMM with output channels as rows, input channels
  as columns, one kernel tap per program on grid axis 1 and the pixel reduction
  ``N * OH * OW`` split over grid axis 2 into fp32 partials (split-K), summed afterwards.

The structure, config lists and jit helpers (``dot_acc``, ``tile``, ``split_pixels``,
``tap_dot``) are shared with ``runtime.kernels.triton.forward``.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from runtime.kernels.conv_args import ConvArgs, output_memory_format
from runtime.kernels.triton.forward import (
    FWD_CONFIGS,
    INTERPRETING,
    Grid,
    dot_acc,
    dot_flags,
    grid_1d,
    launch,
    make_configs,
    split_pixels,
    tap_dot,
    tile,
    tuned_configs,
)

MASK_GPU_CONFIGS: list[triton.Config] = [
    triton.Config({"BLOCK_M": bm, "BLOCK_N": bn}, num_warps=4)
    for bm, bn in [(64, 64), (128, 16), (256, 32)]
]
MASK_CONFIGS = tuned_configs(MASK_GPU_CONFIGS, [triton.Config({"BLOCK_M": 256, "BLOCK_N": 32})])
# Rows are output channels and columns input channels, both small in early layers; the
# reduction over pixels is long, so BLOCK_K (pixels per step) is the wide dimension.
GRAD_WEIGHT_GPU_CONFIGS: list[triton.Config] = make_configs(
    [
        (64, 64, 64, 8, 4, 3),
        (32, 32, 128, 8, 4, 3),
        (16, 16, 256, 8, 4, 3),
        (128, 64, 32, 8, 8, 3),
    ]
)
GRAD_WEIGHT_CONFIGS = tuned_configs(GRAD_WEIGHT_GPU_CONFIGS, make_configs([(32, 32, 256, 1, 4, 1)]))


@triton.autotune(configs=MASK_CONFIGS, key=["M", "K"], reset_to_zero=["bias_partial_ptr"])
@triton.jit
def _relu_mask_bias_grad_kernel(
    # pointers
    gy_ptr, y_ptr, g_ptr, bias_partial_ptr,
    # shapes
    M, K, OH, OW,
    # strides
    stride_gyn, stride_gyk, stride_gyh, stride_gyw,
    stride_yn, stride_yk, stride_yh, stride_yw,
    stride_gn, stride_gk, stride_gh, stride_gw,
    # meta-parameters
    HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
):  # fmt: skip
    """g = grad_y * (y > 0) on one (pixels, channels) tile, plus the tile's bias-grad sums."""
    # -- program ids: a plain 2-D grid, one row of bias partials per pixel tile
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)

    # -- pointers: (n, oh, ow) per pixel row, one column per output channel
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (offs_m < M)[:, None] & (offs_n < K)[None, :]
    n, oh, ow = split_pixels(offs_m, OH, OW)
    cols = offs_n[None, :]

    # -- body: ReLU mask on the saved output, computed in fp32
    gy_rows = n * stride_gyn + oh * stride_gyh + ow * stride_gyw
    y_rows = n * stride_yn + oh * stride_yh + ow * stride_yw
    gy = tl.load(gy_ptr + gy_rows[:, None] + cols * stride_gyk, mask=mask, other=0.0)
    y = tl.load(y_ptr + y_rows[:, None] + cols * stride_yk, mask=mask, other=0.0)
    g = tl.where(y > 0, gy.to(tl.float32), 0.0)  # (BLOCK_M, BLOCK_N)

    # -- epilogue: store g and this tile's per-channel partial sum of g
    g_rows = n * stride_gn + oh * stride_gh + ow * stride_gw
    tl.store(g_ptr + g_rows[:, None] + cols * stride_gk, g.to(g_ptr.dtype.element_ty), mask=mask)
    if HAS_BIAS:
        tl.store(bias_partial_ptr + pid_m * K + offs_n, tl.sum(g, axis=0), mask=offs_n < K)


@triton.autotune(configs=FWD_CONFIGS, key=["N", "C", "H", "W", "K", "KH", "KW", "stride_gk"])
@triton.jit
def _conv2d_grad_input_kernel(
    # pointers
    g_ptr, w_ptr, dx_ptr,
    # shapes
    N, C, H, W, K, OH, OW, KH, KW,
    # conv hyper-parameters
    conv_stride_h, conv_stride_w, pad_h, pad_w, dil_h, dil_w,
    # strides
    stride_gn, stride_gk, stride_gh, stride_gw,
    stride_wk, stride_wc, stride_wh, stride_ww,
    stride_dxn, stride_dxc, stride_dxh, stride_dxw,
    # meta-parameters
    UPCAST: tl.constexpr, ALLOW_TF32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    """dx for one (BLOCK_M input pixels, BLOCK_N input channels) tile."""
    # -- program ids: one (input pixels, input channels) tile, grouped for weight reuse
    offs_m, offs_n, mask_m, mask_n = tile(tl.program_id(0), N * H * W, C, BLOCK_M, BLOCK_N, GROUP_M)

    # -- pointers: split each input pixel into (n, ih, iw)
    n, ih, iw = split_pixels(offs_m, H, W)
    g_rows = g_ptr + n * stride_gn  # (BLOCK_M,)
    w_cols = w_ptr + offs_n * stride_wc  # (BLOCK_N,)

    # -- K loop: taps that reach this pixel (stride-aligned, in range), output-channel blocks
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for kh in range(KH):
        th = ih + pad_h - kh * dil_h
        oh = th // conv_stride_h
        hit_h = (th >= 0) & (th % conv_stride_h == 0) & (oh < OH)
        for kw in range(KW):
            tw = iw + pad_w - kw * dil_w
            ow = tw // conv_stride_w
            mask_pix = mask_m & hit_h & (tw >= 0) & (tw % conv_stride_w == 0) & (ow < OW)
            g_tap = g_rows + oh * stride_gh + ow * stride_gw
            acc = tap_dot(
                acc, g_tap, mask_pix, stride_gk, w_cols, mask_n, stride_wk, K,
                kh, kw, stride_wh, stride_ww, BLOCK_K, UPCAST, ALLOW_TF32,
            )  # fmt: skip

    # -- epilogue: one cast, masked store
    dx_rows = n * stride_dxn + ih * stride_dxh + iw * stride_dxw
    dx_ptrs = dx_ptr + dx_rows[:, None] + offs_n[None, :] * stride_dxc
    tl.store(dx_ptrs, acc.to(dx_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


@triton.autotune(configs=GRAD_WEIGHT_CONFIGS, key=["N", "C", "H", "W", "K", "KH", "KW", "SPLITS"])
@triton.jit
def _conv2d_grad_weight_kernel(
    # pointers
    g_ptr, x_ptr, dw_partial_ptr,
    # shapes
    N, C, H, W, K, OH, OW, KH, KW, SPLITS,
    # conv hyper-parameters
    conv_stride_h, conv_stride_w, pad_h, pad_w, dil_h, dil_w,
    # strides (dw_partial is a contiguous (SPLITS, K, C, KH, KW) fp32 buffer)
    stride_gn, stride_gk, stride_gh, stride_gw,
    stride_xn, stride_xc, stride_xh, stride_xw,
    # meta-parameters
    UPCAST: tl.constexpr, ALLOW_TF32: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):  # fmt: skip
    """Partial dw[k, c, kh, kw] of one (BLOCK_M, BLOCK_N) tile, one tap, one pixel split."""
    # -- program ids: (out-channel, in-channel) tile on axis 0, tap on axis 1, split on axis 2
    offs_m, offs_n, mask_m, mask_n = tile(tl.program_id(0), K, C, BLOCK_M, BLOCK_N, GROUP_M)
    tap = tl.program_id(1)
    split = tl.program_id(2)
    kh = tap // KW
    kw = tap % KW

    # -- pointers: this split's slice of the N * OH * OW pixels
    P = N * OH * OW
    per_split = tl.cdiv(tl.cdiv(P, SPLITS), BLOCK_K) * BLOCK_K
    p_end = min(P, (split + 1) * per_split)

    # -- K loop: pixel blocks; the input pixel each output pixel reads at this tap
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for p0 in range(0, per_split, BLOCK_K):
        ps = split * per_split + p0 + tl.arange(0, BLOCK_K)
        mask_p = ps < p_end
        n, oh, ow = split_pixels(ps, OH, OW)
        ih = oh * conv_stride_h - pad_h + kh * dil_h
        iw = ow * conv_stride_w - pad_w + kw * dil_w
        mask_x = mask_p & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        g_cols = n * stride_gn + oh * stride_gh + ow * stride_gw
        x_rows = n * stride_xn + ih * stride_xh + iw * stride_xw
        a = tl.load(
            g_ptr + offs_m[:, None] * stride_gk + g_cols[None, :],
            mask=mask_m[:, None] & mask_p[None, :],
            other=0.0,
        )  # (BLOCK_M, BLOCK_K)
        b = tl.load(
            x_ptr + x_rows[:, None] + offs_n[None, :] * stride_xc,
            mask=mask_x[:, None] & mask_n[None, :],
            other=0.0,
        )  # (BLOCK_K, BLOCK_N)
        acc = dot_acc(a, b, acc, UPCAST, ALLOW_TF32)

    # -- epilogue: fp32 partial for (split, k, c, kh, kw), masked store
    KHW = KH * KW
    dw_rows = split * K * C * KHW + offs_m * C * KHW + tap
    dw_ptrs = dw_partial_ptr + dw_rows[:, None] + offs_n[None, :] * KHW
    tl.store(dw_ptrs, acc, mask=mask_m[:, None] & mask_n[None, :])


def _grid_2d(rows: int, cols: int) -> Grid:
    return lambda meta: (triton.cdiv(rows, meta["BLOCK_M"]), triton.cdiv(cols, meta["BLOCK_N"]))


def triton_relu_mask_bias_grad(
    grad_y: torch.Tensor,
    y: torch.Tensor,
    has_bias: bool,
    config: triton.Config | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``grad_y * (y > 0)`` and its per-channel sum, from one Triton kernel.

    Args:
        grad_y: ``(N, K, OH, OW)`` gradient of the fused op's output, any strides.
        y: ``(N, K, OH, OW)`` the fused op's output (post-ReLU).
        has_bias: whether to reduce the bias gradient.
        config: launch with this config (one of ``MASK_GPU_CONFIGS``) instead of autotuning.

    Returns:
        ``(g, grad_bias)``: ``g`` in ``y``'s dtype and layout, ``grad_bias`` ``(K,)`` or None.
    """
    n, k, oh, ow = y.shape
    m = n * oh * ow
    g = torch.empty_like(y)
    min_block_m = min(c.kwargs["BLOCK_M"] for c in ([config] if config else MASK_CONFIGS))
    partial_rows = triton.cdiv(m, min_block_m) if has_bias else 0
    partial = torch.zeros((partial_rows, k), dtype=torch.float32, device=y.device)
    args = (grad_y, y, g, partial, m, k, oh, ow, *grad_y.stride(), *y.stride(), *g.stride())
    launch(_relu_mask_bias_grad_kernel, _grid_2d(m, k), args, {"HAS_BIAS": has_bias}, config)
    return g, (partial.sum(0).to(y.dtype) if has_bias else None)


def triton_conv2d_grad_input(
    g: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    conv: ConvArgs,
    config: triton.Config | None = None,
) -> torch.Tensor:
    """Gradient of ``conv2d`` with respect to its input, by the Triton kernel.

    Args:
        g: ``(N, K, OH, OW)`` gradient at the conv output (ReLU mask already applied).
        x: the forward input; only its shape, dtype and memory format are read.
        weight: ``(K, C, KH, KW)`` filters.
        conv: stride, padding and dilation per axis.
        config: launch with this config (one of ``FWD_GPU_CONFIGS``) instead of autotuning.

    Returns:
        ``dx`` shaped, typed and laid out like ``x``.
    """
    n, c, h, w = x.shape
    _, k, oh, ow = g.shape
    dx = torch.empty(x.shape, dtype=x.dtype, device=x.device, memory_format=output_memory_format(x))
    args = (
        g, weight, dx,
        n, c, h, w, k, oh, ow, weight.shape[2], weight.shape[3],
        *conv.per_axis(),
        *g.stride(), *weight.stride(), *dx.stride(),
    )  # fmt: skip
    launch(_conv2d_grad_input_kernel, grid_1d(n * h * w, c), args, dot_flags(x.dtype), config)
    return dx


def default_weight_grad_splits(g: torch.Tensor, weight: torch.Tensor) -> int:
    """Pixel splits so the weight-grad grid fills the GPU: about two programs per SM."""
    if INTERPRETING or g.device.type != "cuda":
        return 1
    k, c, kh, kw = weight.shape
    n, _, oh, ow = g.shape
    tiles = triton.cdiv(k, 64) * triton.cdiv(c, 64) * kh * kw
    sms = int(torch.cuda.get_device_properties(g.device).multi_processor_count)
    return int(max(1, min(triton.cdiv(2 * sms, tiles), triton.cdiv(n * oh * ow, 2048))))


def triton_conv2d_grad_weight(
    g: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    conv: ConvArgs,
    splits: int | None = None,
    config: triton.Config | None = None,
) -> torch.Tensor:
    """Gradient of ``conv2d`` with respect to its weight, by the Triton kernel.

    Args:
        g: ``(N, K, OH, OW)`` gradient at the conv output (ReLU mask already applied).
        x: ``(N, C, H, W)`` forward input.
        weight: ``(K, C, KH, KW)`` filters; only shape, dtype and memory format are read.
        conv: stride, padding and dilation per axis.
        splits: how many fp32 partials the pixel reduction is split into; None picks
            ``default_weight_grad_splits``.
        config: launch with this config (one of ``GRAD_WEIGHT_GPU_CONFIGS``), no autotuning.

    Returns:
        ``dw`` shaped, typed and laid out like ``weight``.
    """
    n, c, h, w = x.shape
    k, _, kh, kw = weight.shape
    oh, ow = g.shape[2:]
    splits = splits or default_weight_grad_splits(g, weight)
    partial = torch.empty((splits, k, c, kh, kw), dtype=torch.float32, device=x.device)
    args = (
        g, x, partial,
        n, c, h, w, k, oh, ow, kh, kw, splits,
        *conv.per_axis(),
        *g.stride(), *x.stride(),
    )  # fmt: skip
    grid = lambda meta: (grid_1d(k, c)(meta)[0], kh * kw, splits)  # noqa: E731
    launch(_conv2d_grad_weight_kernel, grid, args, dot_flags(x.dtype), config)
    dw = partial.sum(0) if splits > 1 else partial[0]
    return dw.to(weight.dtype).contiguous(memory_format=output_memory_format(weight))


def triton_conv2d_relu_backward(
    grad_y: torch.Tensor,
    y: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    conv: ConvArgs,
    output_mask: list[bool],
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Gradients of ``relu(conv2d(x, weight, bias))``, every step in Triton.

    Args:
        grad_y: gradient of the fused op's output.
        y: the fused op's output (its sign is the ReLU mask).
        x: forward input.
        weight: forward filters.
        conv: stride, padding and dilation per axis.
        output_mask: ``[input, weight, bias]`` gradients wanted.

    Returns:
        ``(grad_x, grad_weight, grad_bias)``, None where the mask says not wanted.
    """
    g, grad_b = triton_relu_mask_bias_grad(grad_y, y, has_bias=output_mask[2])
    grad_x = triton_conv2d_grad_input(g, x, weight, conv) if output_mask[0] else None
    grad_w = triton_conv2d_grad_weight(g, x, weight, conv) if output_mask[1] else None
    return grad_x, grad_w, grad_b
