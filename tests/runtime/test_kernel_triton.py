"""Triton conv2d+bias+ReLU kernels against ``F.relu(F.conv2d(...))`` as the oracle.

Without CUDA these run on CPU tensors under Triton's interpreter (``TRITON_INTERPRET=1``,
set by conftest before any kernel is defined), so shapes stay small; on a CUDA machine the
same tests run compiled on the GPU, and the ``gpu`` tests also check every autotune config.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
import triton
from torch import Tensor

from runtime.kernels.conv_args import ConvArgs
from runtime.kernels.parity import CONV_RELU, TOLERANCES, max_relative_error, trusted
from runtime.kernels.triton import backward as bwd
from runtime.kernels.triton.forward import FWD_GPU_CONFIGS, INTERPRETING, triton_conv2d_relu

DEVICE = torch.device("cpu" if INTERPRETING else "cuda")
if not INTERPRETING and not torch.cuda.is_available():
    pytest.skip("Triton kernels need CUDA or TRITON_INTERPRET=1", allow_module_level=True)

# The interpreter computes in fp32 exactly like aten up to summation order.
TOLERANCE = {**TOLERANCES, torch.float32: 1e-5 if INTERPRETING else TOLERANCES[torch.float32]}
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@dataclass(frozen=True)
class Case:
    """One conv: input and weight shapes and per-axis (h, w) hyper-parameters."""

    name: str
    x_shape: tuple[int, int, int, int]
    w_shape: tuple[int, int, int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)

    def args(self) -> ConvArgs:
        return ConvArgs(self.stride, self.padding, self.dilation)


CASES = [
    Case("lenet_c1", (1, 3, 32, 32), (6, 3, 5, 5)),
    Case("lenet_c3", (2, 6, 14, 14), (16, 6, 5, 5)),
    Case("3x3_64to64", (2, 64, 8, 8), (64, 64, 3, 3), padding=(1, 1)),
    Case("stride2_odd", (2, 5, 9, 11), (7, 5, 3, 3), stride=(2, 2), padding=(1, 1)),
    Case("dilation2", (2, 4, 10, 10), (8, 4, 3, 3), padding=(2, 2), dilation=(2, 2)),
    Case("per_axis", (1, 3, 9, 7), (5, 3, 3, 2), stride=(2, 1), padding=(0, 2), dilation=(1, 2)),
]


def _make(
    case: Case, dtype: torch.dtype, channels_last: bool, bias: bool = True
) -> tuple[Tensor, Tensor, Tensor | None]:
    generator = torch.Generator().manual_seed(hash(case.name) % 2**31)
    x = torch.randn(case.x_shape, generator=generator)
    fan_in = case.w_shape[1] * case.w_shape[2] * case.w_shape[3]
    w = torch.randn(case.w_shape, generator=generator) / fan_in**0.5
    b = torch.randn(case.w_shape[0], generator=generator) if bias else None
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    x, w = x.to(DEVICE, dtype), w.to(DEVICE, dtype)
    return x, w, None if b is None else b.to(DEVICE, dtype)


def _reference(
    case: Case, x: Tensor, w: Tensor, b: Tensor | None, grad_y: Tensor
) -> tuple[Tensor, list[Tensor | None]]:
    """Output and (input, weight, bias) gradients of aten conv + relu in fp32."""
    x, w = (t.detach().float().requires_grad_() for t in (x, w))
    b = None if b is None else b.detach().float().requires_grad_()
    y = F.relu(F.conv2d(x, w, b, case.stride, case.padding, case.dilation))
    torch.autograd.backward(y, grad_y.float())
    return y.detach(), [x.grad, w.grad, None if b is None else b.grad]


def _grad_y(case: Case, dtype: torch.dtype, channels_last: bool) -> Tensor:
    """A random output gradient, shaped by aten's conv2d on the meta device."""
    shape = F.conv2d(
        torch.empty(case.x_shape, device="meta"),
        torch.empty(case.w_shape, device="meta"),
        None,
        case.stride,
        case.padding,
        case.dilation,
    ).shape
    grad_y = torch.randn(shape, generator=torch.Generator().manual_seed(1)).to(DEVICE, dtype)
    return grad_y.to(memory_format=torch.channels_last) if channels_last else grad_y


def _assert_close(name: str, got: Tensor, want: Tensor, dtype: torch.dtype) -> None:
    error = max_relative_error(got, want)
    assert error <= TOLERANCE[dtype], f"{name}: relative error {error:.2e} > {TOLERANCE[dtype]}"


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_forward_and_gradients_match_aten(
    case: Case, channels_last: bool, dtype: torch.dtype
) -> None:
    x, w, b = _make(case, dtype, channels_last)
    grad_y = _grad_y(case, dtype, channels_last)
    want_y, want_grads = _reference(case, x, w, b, grad_y)

    y = triton_conv2d_relu(x, w, b, case.args())
    grads = bwd.triton_conv2d_relu_backward(grad_y, y, x, w, case.args(), [True, True, True])

    assert y.dtype == dtype
    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last
    _assert_close("output", y, want_y, dtype)
    for name, got, want in zip(
        ("grad_input", "grad_weight", "grad_bias"), grads, want_grads, strict=True
    ):
        assert got is not None and want is not None
        assert got.dtype == dtype and got.shape == want.shape
        _assert_close(name, got, want, dtype)
    assert grads[0] is not None
    assert grads[0].is_contiguous(memory_format=torch.channels_last) == channels_last


def test_no_bias_and_output_mask_skip_unwanted_gradients() -> None:
    case = CASES[3]
    x, w, _ = _make(case, torch.float32, channels_last=False, bias=False)
    grad_y = _grad_y(case, torch.float32, channels_last=False)
    want_y, want_grads = _reference(case, x, w, None, grad_y)

    y = triton_conv2d_relu(x, w, None, case.args())
    grad_x, grad_w, grad_b = bwd.triton_conv2d_relu_backward(
        grad_y, y, x, w, case.args(), [False, True, False]
    )

    _assert_close("output", y, want_y, torch.float32)
    assert grad_x is None and grad_b is None
    assert grad_w is not None and want_grads[1] is not None
    _assert_close("grad_weight", grad_w, want_grads[1], torch.float32)


def test_channels_last_weight_and_broadcast_grad_output() -> None:
    """Every stride is honoured: a channels-last weight, and a stride-0 (expanded) grad_y."""
    case = CASES[4]
    x, w, b = _make(case, torch.float32, channels_last=False)
    w = w.to(memory_format=torch.channels_last)
    y = triton_conv2d_relu(x, w, b, case.args())
    grad_y = torch.ones((), device=DEVICE).expand(y.shape)
    want_y, want_grads = _reference(case, x, w, b, grad_y)

    grads = bwd.triton_conv2d_relu_backward(grad_y, y, x, w, case.args(), [True] * 3)

    _assert_close("output", y, want_y, torch.float32)
    for got, want in zip(grads, want_grads, strict=True):
        assert got is not None and want is not None
        _assert_close("gradient", got, want, torch.float32)
    assert grads[1] is not None and grads[1].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("splits", [2, 5])
def test_weight_gradient_split_over_pixels_sums_partials(splits: int) -> None:
    """784 pixels; with the interpreter's BLOCK_K=256: 2 splits of 512, or 5 of 256 (one empty)."""
    case = CASES[0]
    x, w, _ = _make(case, torch.float32, channels_last=True)
    g = _grad_y(case, torch.float32, channels_last=False)
    want = torch.ops.aten.convolution_backward(
        g, x, w, None, *case.args().as_lists(), False, [0, 0], 1, [False, True, False]
    )[1]

    got = bwd.triton_conv2d_grad_weight(g, x, w, case.args(), splits=splits)

    _assert_close("grad_weight", got, want, torch.float32)


def test_relu_mask_kernel_zeroes_gradient_where_output_is_zero() -> None:
    y = torch.tensor([0.0, 1.0, 0.0, 2.0], device=DEVICE).view(1, 4, 1, 1).repeat(3, 1, 2, 2)
    grad_y = torch.full_like(y, 3.0)

    g, grad_b = bwd.triton_relu_mask_bias_grad(grad_y, y, has_bias=True)

    torch.testing.assert_close(g, torch.where(y > 0, grad_y, 0.0))
    assert grad_b is not None
    torch.testing.assert_close(grad_b, torch.tensor([0.0, 36.0, 0.0, 36.0], device=DEVICE))


GPU_CONFIGS = [
    *(("conv", config) for config in FWD_GPU_CONFIGS),
    *(("grad_weight", config) for config in bwd.GRAD_WEIGHT_GPU_CONFIGS),
    *(("relu_mask", config) for config in bwd.MASK_GPU_CONFIGS),
]


def _config_id(kind_config: tuple[str, triton.Config]) -> str:
    kind, config = kind_config
    blocks = "x".join(str(v) for k, v in config.kwargs.items() if k.startswith("BLOCK"))
    return f"{kind}-{blocks}-w{config.num_warps}"


def _check_config(kind: str, config: triton.Config, case: Case, dtype: torch.dtype) -> None:
    """The kernels of ``kind`` run with ``config`` against aten, forward and backward."""
    x, w, b = _make(case, dtype, channels_last=False)
    g = _grad_y(case, dtype, channels_last=False)
    want_y, (want_x, want_w, want_b) = _reference(case, x, w, b, g)
    y = triton_conv2d_relu(x, w, b, case.args())
    if kind == "conv":
        _assert_close("output", triton_conv2d_relu(x, w, b, case.args(), config), want_y, dtype)
        got_x = bwd.triton_conv2d_grad_input(g * (y > 0), x, w, case.args(), config=config)
        assert want_x is not None
        _assert_close("grad_input", got_x, want_x, dtype)
    elif kind == "grad_weight":
        got_w = bwd.triton_conv2d_grad_weight(g * (y > 0), x, w, case.args(), config=config)
        assert want_w is not None
        _assert_close("grad_weight", got_w, want_w, dtype)
    else:
        got_g, got_b = bwd.triton_relu_mask_bias_grad(g, y, has_bias=True, config=config)
        torch.testing.assert_close(got_g, torch.where(y > 0, g, 0.0))
        assert got_b is not None and want_b is not None
        _assert_close("grad_bias", got_b, want_b, dtype)


@pytest.mark.parametrize("kind_config", GPU_CONFIGS, ids=_config_id)
def test_every_gpu_autotune_config_on_a_small_case(kind_config: tuple[str, triton.Config]) -> None:
    """Each GPU config's tiling and masking (under the interpreter: the logic, not codegen)."""
    _check_config(*kind_config, CASES[3], torch.float32)


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("kind_config", GPU_CONFIGS, ids=_config_id)
def test_every_autotune_config_matches_cudnn(
    kind_config: tuple[str, triton.Config], case: Case, dtype: torch.dtype
) -> None:
    """Inductor's conv template once miscompiled non-1x1 kernels at 8 warps (pytorch#173068)."""
    _check_config(*kind_config, case, dtype)


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
def test_parity_check_trusts_the_cuda_kernels(dtype: torch.dtype) -> None:
    assert trusted([CONV_RELU], torch.device("cuda"), dtype)
