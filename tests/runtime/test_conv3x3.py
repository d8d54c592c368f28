"""cnnc's bf16 3x3 convolution kernels (forward, input and weight gradients) against ATen
(torch is the oracle) at every ISA level of this machine (the AVX512-BF16 path where the
level has it, the scalar path below), ``KernelConv2d``'s paths and fallbacks (it takes the
kernels at the avx512_bf16 level only: with AMX oneDNN is faster), and the training rewrite
that installs it."""

from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from runtime.kernels import parity
from runtime.kernels.cpu import conv3x3 as kernels, extension as cpu_ext
from runtime.kernels.cpu.conv3x3 import (
    KernelConv2d,
    conv3x3,
    eligible,
    kernel_available,
    weight_grad,
)
from runtime.optimize import rewrites
from tests.runtime.kernel_levels import BUILT, expected_path

pytestmark = pytest.mark.skipif(not BUILT, reason="no C++ compiler: the convolutions are ATen's")


def _native(level: str) -> bool:
    """True when KernelConv2d runs cnnc's kernels at ``level``: their AVX512-BF16 path, at
    the level where it beats oneDNN (with AMX, oneDNN's convolutions are faster)."""
    return expected_path("conv3x3", level) != "scalar" and level == "avx512_bf16"


# (batch, in, out, height, width, stride): even and odd batches (a missing pair partner),
# odd sizes, output-channel counts whose rows end mid-vector, one-row tiles (224 wide),
# and shapes that take either work split (image pairs, or output channels)
CASES = [
    (64, 16, 16, 32, 32, 1),
    (64, 16, 32, 32, 32, 2),
    (5, 32, 64, 16, 16, 2),
    (3, 64, 64, 8, 8, 1),
    (1, 16, 8, 7, 5, 1),
    (4, 32, 16, 9, 11, 2),
    (2, 16, 24, 3, 224, 1),
    (9, 48, 40, 6, 6, 1),
    (2, 256, 16, 5, 5, 1),
]


def _pair(case: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, int]:
    n, ci, co, h, w, stride = case
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, ci, h, w, generator=generator).bfloat16()
    oh, ow = (h - 1) // stride + 1, (w - 1) // stride + 1
    grad = torch.randn(n, co, oh, ow, generator=generator).bfloat16()
    channels_last = torch.channels_last
    return (
        x.contiguous(memory_format=channels_last),
        grad.contiguous(memory_format=channels_last),
        stride,
    )


def _reference(x: torch.Tensor, grad: torch.Tensor, stride: int) -> torch.Tensor:
    """The fp32 weight gradient of the same bf16 values."""
    weight = torch.zeros(grad.shape[1], x.shape[1], 3, 3)
    result: torch.Tensor = torch.ops.aten.convolution_backward(
        grad.float(), x.float(), weight, None, [stride] * 2, [1, 1], [1, 1], False, [0, 0], 1,
        [False, True, False],
    )[1]  # fmt: skip
    return result


@pytest.fixture
def conv_calls(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """One entry per call of the direct convolution kernel (which still runs)."""
    calls: list[bool] = []
    right = kernels.conv3x3

    def counted(*args: object, **kwargs: object) -> torch.Tensor:
        calls.append(True)
        return right(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(kernels, "conv3x3", counted)
    return calls


def test_kernels_run_the_path_of_their_level(level: str) -> None:
    assert cpu_ext.path("conv3x3") == cpu_ext.path("conv_wgrad") == expected_path("conv3x3", level)
    assert kernel_available() == _native(level)


@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
def test_weight_grad_matches_aten_within_bf16_rounding(case: tuple[int, ...], level: str) -> None:
    x, grad, stride = _pair(case)
    got = weight_grad(x, grad, stride)
    want = _reference(x, grad, stride)
    assert got.dtype == torch.bfloat16 and got.shape == want.shape
    assert got.is_contiguous(memory_format=torch.channels_last)
    # fp32 sums rounded once to bf16: at most half a bf16 step from the fp32 result
    torch.testing.assert_close(got.float(), want, rtol=2**-8, atol=1e-3)


def test_weight_grad_takes_any_layout_of_its_inputs(level: str) -> None:
    x, grad, stride = _pair(CASES[3])
    want = weight_grad(x, grad, stride)
    assert torch.equal(weight_grad(x.contiguous(), grad.contiguous(), stride), want)


# (batch, in, out, height, width, stride): 16, 32, 48 and 64 output channels (one, two, one
# and four vectors per register block), row widths that leave every kind of tail block,
# the fewest input channels (one pair), an odd number of pairs, stride 2 on odd sizes, and
# wide rows split into several row tiles per image (the last one short)
FORWARD = [
    (2, 16, 16, 32, 32, 1),
    (3, 32, 32, 16, 16, 1),
    (2, 64, 64, 8, 8, 1),
    (2, 16, 48, 5, 29, 1),
    (1, 2, 16, 4, 3, 1),
    (2, 18, 32, 7, 25, 1),
    (3, 16, 32, 9, 11, 2),
    (2, 32, 64, 16, 16, 2),
    (1, 64, 64, 1, 1, 1),
    (1, 64, 16, 23, 120, 1),
    (2, 64, 16, 23, 121, 2),
]


def _forward_inputs(case: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    n, ci, co, h, w, _ = case
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(n, ci, h, w, generator=generator).bfloat16()
    weight = torch.randn(co, ci, 3, 3, generator=generator) / (3 * ci**0.5)
    bias = torch.randn(co, generator=generator)
    return x.contiguous(memory_format=torch.channels_last), weight, bias


def _rounded(t: torch.Tensor) -> torch.Tensor:
    return t.bfloat16().float()


@pytest.mark.parametrize("case", FORWARD, ids=[str(c) for c in FORWARD])
def test_forward_matches_aten_within_bf16_rounding(case: tuple[int, ...], level: str) -> None:
    x, weight, bias = _forward_inputs(case)
    stride = case[-1]
    got = conv3x3(x, weight, bias, stride)
    want = F.conv2d(x.float(), _rounded(weight), _rounded(bias), stride, 1)
    assert got.dtype == torch.bfloat16 and got.shape == want.shape
    assert got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got.float(), want, rtol=2**-8, atol=1e-3)


# stride 2 on even and odd sizes (both phases of each parity, and 1x1 and 1-row inputs)
INPUT_GRAD = [c for c in CASES if c[1] * c[2] <= 4096] + [
    (2, 16, 16, 7, 9, 2),
    (1, 32, 16, 1, 1, 2),
    (2, 48, 16, 2, 5, 2),
]


@pytest.mark.parametrize("case", INPUT_GRAD, ids=[str(c) for c in INPUT_GRAD])
def test_input_grad_matches_aten_within_bf16_rounding(case: tuple[int, ...], level: str) -> None:
    x, grad, stride = _pair(case)
    weight = torch.randn(grad.shape[1], x.shape[1], 3, 3) / 10
    size = (x.shape[2], x.shape[3])
    got = conv3x3(grad, weight, None, stride, True, size)
    want = torch.nn.grad.conv2d_input(
        x.shape, _rounded(weight), grad.float(), stride=stride, padding=1
    )
    assert got.shape == x.shape and got.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(got.float(), want, rtol=2**-8, atol=1e-3)


POINTWISE = [
    (2, 16, 32, 32, 32, 2),
    (3, 32, 64, 16, 16, 2),
    (2, 16, 16, 7, 9, 2),
    (2, 16, 32, 7, 9, 1),
    (1, 2, 16, 1, 1, 2),
]


@pytest.mark.parametrize("case", POINTWISE, ids=[str(c) for c in POINTWISE])
def test_pointwise_passes_match_aten_within_bf16_rounding(
    case: tuple[int, ...], level: str
) -> None:
    n, ci, co, h, w, stride = case
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(n, ci, h, w, generator=generator).bfloat16()
    x = x.contiguous(memory_format=torch.channels_last)
    weight = torch.randn(co, ci, 1, 1, generator=generator) / ci**0.5
    y = conv3x3(x, weight, None, stride)
    want = F.conv2d(x.float(), _rounded(weight), stride=stride)
    torch.testing.assert_close(y.float(), want, rtol=2**-8, atol=1e-3)
    grad = torch.randn(want.shape, generator=generator).bfloat16()
    grad = grad.contiguous(memory_format=torch.channels_last)
    if ci % 16:
        return  # the input gradient's output channels are the forward's input channels
    dx = conv3x3(grad, weight, None, stride, True, (h, w))
    dx_want = torch.nn.grad.conv2d_input(x.shape, _rounded(weight), grad.float(), stride)
    assert dx.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(dx.float(), dx_want, rtol=2**-8, atol=1e-3)


@pytest.mark.parametrize("mode", ["autocast", "bf16"])
def test_projection_module_matches_conv2d(mode: str, level: str, conv_calls: list[bool]) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 32, 1, 2, bias=False).to(memory_format=torch.channels_last)
    x = torch.randn(4, 16, 10, 9).contiguous(memory_format=torch.channels_last)
    if mode == "bf16":
        conv, x = conv.bfloat16(), x.bfloat16()
    ours = KernelConv2d.from_module(copy.deepcopy(conv))
    got, want = _run(ours, x, mode == "autocast"), _run(conv, x, mode == "autocast")
    for have, expected in zip(got, want, strict=True):  # output, input and weight gradients
        assert have.dtype == expected.dtype and have.shape == expected.shape
        torch.testing.assert_close(have, expected, rtol=2**-7, atol=1e-2)
    assert conv_calls == ([True, True] if _native(level) else [])  # forward, input gradient


def test_forward_reads_weights_in_any_layout_and_dtype(level: str) -> None:
    x, weight, bias = _forward_inputs(FORWARD[5])
    want = conv3x3(x, weight, bias, 1)
    for other in (weight.contiguous(memory_format=torch.channels_last), weight.bfloat16()):
        assert torch.equal(conv3x3(x, other, bias, 1), want)
    assert torch.equal(conv3x3(x.contiguous(), weight, bias, 1), want)


@pytest.mark.parametrize(
    ("ci", "weight_shape", "transposed", "message"),
    [
        (15, (16, 15, 3, 3), False, "input channels must be even"),
        (16, (24, 16, 3, 3), False, "multiple of 16"),
        (16, (16, 17, 3, 3), False, "do not match"),
        (16, (17, 16, 3, 3), True, "do not match"),
        (16, (16, 16, 5, 5), False, "3x3"),
        (16, (16, 16, 3, 3), "stride 2", "needs the input's"),
    ],
)
def test_kernel_refuses_shapes_it_does_not_cover(
    ci: int, weight_shape: tuple[int, ...], transposed: bool | str, message: str, level: str
) -> None:
    x = torch.randn(1, ci, 4, 4).bfloat16().contiguous(memory_format=torch.channels_last)
    weight = torch.randn(weight_shape)
    with pytest.raises(RuntimeError, match=message):
        if transposed == "stride 2":  # an input size the gradient's 4x4 cannot come from
            conv3x3(x, weight, None, 2, True, (10, 8))
        else:
            conv3x3(x, weight, None, 1, bool(transposed))


def _run(module: nn.Module, x: torch.Tensor, autocast: bool) -> list[torch.Tensor]:
    x = x.clone().requires_grad_()
    with torch.autocast("cpu", torch.bfloat16, enabled=autocast):
        y = module(x)
    y.float().square().sum().backward()
    grads = [x.grad, *(p.grad for p in module.parameters())]
    assert all(grad is not None for grad in grads)
    return [y.detach(), *grads]


@pytest.mark.parametrize("mode", ["autocast", "bf16"])
@pytest.mark.parametrize("stride", [1, 2])
@pytest.mark.parametrize("bias", [False, True])
def test_module_matches_conv2d(
    mode: str, stride: int, bias: bool, level: str, conv_calls: list[bool]
) -> None:
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 32, 3, stride, 1, bias=bias).to(memory_format=torch.channels_last)
    x = torch.randn(6, 16, 11, 10).contiguous(memory_format=torch.channels_last)
    if mode == "bf16":
        conv, x = conv.bfloat16(), x.bfloat16()
    ours = KernelConv2d.from_module(copy.deepcopy(conv))
    want = _run(conv, x, mode == "autocast")
    got = _run(ours, x, mode == "autocast")
    for have, expected in zip(got, want, strict=True):  # output, then every gradient
        assert have.dtype == expected.dtype and have.shape == expected.shape
        torch.testing.assert_close(have, expected, rtol=2**-7, atol=1e-2)
    assert conv_calls == ([True, True] if _native(level) else [])  # below: oneDNN's


@pytest.mark.parametrize(
    "setup",
    ["fp32", "nchw_input", "no_grad_fp32"],
)
def test_module_falls_back_to_conv2d_bit_for_bit(
    setup: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("the kernel must not run here")

    monkeypatch.setattr(kernels, "weight_grad", refuse)
    monkeypatch.setattr(kernels, "conv3x3", refuse)
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 16, 3, 1, 1).to(memory_format=torch.channels_last)
    ours = KernelConv2d.from_module(copy.deepcopy(conv))
    x = torch.randn(2, 16, 6, 6).contiguous(memory_format=torch.channels_last)
    if setup == "nchw_input":
        x = x.contiguous()
    autocast = setup == "nchw_input"
    if setup == "no_grad_fp32":
        with torch.no_grad():
            assert torch.equal(ours(x), conv(x))
        return
    for have, want in zip(_run(ours, x, autocast), _run(conv, x, autocast), strict=True):
        assert torch.equal(have, want)


@pytest.mark.parametrize("mode", ["autocast", "bf16"])
@pytest.mark.parametrize("grad_mode", ["no_grad", "inference_mode"])
def test_evaluation_runs_the_forward_kernel(
    mode: str, grad_mode: str, conv_calls: list[bool], level: str
) -> None:
    calls = conv_calls
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 32, 3, 1, 1).to(memory_format=torch.channels_last).eval()
    x = torch.randn(3, 16, 9, 7).contiguous(memory_format=torch.channels_last)
    if mode == "bf16":
        conv, x = conv.bfloat16(), x.bfloat16()
    ours = KernelConv2d.from_module(copy.deepcopy(conv))
    context = torch.no_grad() if grad_mode == "no_grad" else torch.inference_mode()
    with context, torch.autocast("cpu", torch.bfloat16, enabled=mode == "autocast"):
        got, want = ours(x), conv(x)
    assert calls == ([True] if _native(level) else [])
    assert got.dtype == want.dtype == torch.bfloat16
    torch.testing.assert_close(got, want, rtol=2**-7, atol=1e-2)


def test_module_shares_the_convolution_tensors() -> None:
    conv = nn.Conv2d(16, 16, 3, padding=1)
    ours = KernelConv2d.from_module(conv)
    assert ours.weight is conv.weight and ours.bias is conv.bias
    assert ours.state_dict().keys() == conv.state_dict().keys()
    assert "kernel_size=(3, 3)" in repr(ours)


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, True),
        ({"stride": 2}, True),
        ({"padding": 0}, False),
        ({"dilation": 2, "padding": 2}, False),
        ({"groups": 2}, False),
        ({"padding_mode": "reflect"}, False),
        ({"in_channels": 8}, False),
        ({"out_channels": 12}, False),
        ({"kernel_size": 1, "padding": 0, "stride": 2}, True),  # a projection shortcut
        ({"kernel_size": 1, "padding": 0}, False),
        ({"kernel_size": 1, "padding": 0, "stride": 2, "out_channels": 24}, False),
        (
            {"kernel_size": 1, "padding": 0, "stride": 2, "in_channels": 128, "out_channels": 64},
            False,
        ),
    ],
)
def test_eligible_convolutions(kwargs: dict[str, object], expected: bool) -> None:
    args: dict[str, object] = {"in_channels": 16, "out_channels": 16, "kernel_size": 3,
                               "padding": 1} | kwargs  # fmt: skip
    assert eligible(nn.Conv2d(**args)) is expected  # type: ignore[arg-type]


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1, bias=False)
        self.conv = nn.Conv2d(16, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        x = F.relu(self.bn(self.conv(x)) + x)
        out: torch.Tensor = self.head(x.mean((2, 3)))
        return out


def test_training_rewrite_swaps_eligible_convolutions_and_trains_alike(
    monkeypatch: pytest.MonkeyPatch, level: str
) -> None:
    torch.manual_seed(0)
    model = _Block().to(memory_format=torch.channels_last)
    without = copy.deepcopy(model)
    rewritten, report = rewrites.for_training(model, exact=True, cpu_kernels=True, bf16=True)
    if not _native(level):  # no AVX512-BF16 at this level: oneDNN keeps the convolutions
        assert "conv_kernels" not in report.applied
        return
    assert report.applied["conv_kernels"] == 1  # the stem has 3 input channels
    assert isinstance(rewritten.get_submodule("conv"), KernelConv2d)
    assert type(rewritten.get_submodule("stem")) is nn.Conv2d
    assert rewritten.state_dict().keys() == without.state_dict().keys()
    monkeypatch.setattr(rewrites, "conv_kernels", lambda graph_module: 0)
    baseline, _ = rewrites.for_training(without, exact=True, cpu_kernels=True, bf16=True)
    x = torch.randn(8, 3, 12, 12).contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, 10, (8,))
    for net in (baseline, rewritten):
        with torch.autocast("cpu", torch.bfloat16):
            loss = F.cross_entropy(net(x), target)
        torch.autograd.backward(loss)
    got, want = model.conv.weight.grad, without.conv.weight.grad
    assert got is not None and want is not None
    torch.testing.assert_close(got, want, rtol=2**-7, atol=1e-4)
    for name in ("stem.weight", "bn.weight", "head.weight"):  # downstream of the kernels
        have, expected = model.get_parameter(name).grad, without.get_parameter(name).grad
        assert have is not None and expected is not None
        torch.testing.assert_close(have, expected, rtol=2**-6, atol=1e-3)


def test_rewrite_installs_nothing_without_the_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kernels, "vectorized", lambda name: False)
    _, report = rewrites.for_training(_Block(), cpu_kernels=True, bf16=True)
    assert "conv_kernels" not in report.applied


def test_fp32_training_keeps_atens_convolutions() -> None:
    # the kernels are bf16 only: an fp32 step neither swaps nor builds them
    _, report = rewrites.for_training(_Block(), cpu_kernels=True)
    assert "conv_kernels" not in report.applied


@pytest.mark.parametrize(
    ("kernel", "what"),
    [("weight_grad", "weight gradient"), ("conv3x3", "forward")],
)
def test_a_wrong_kernel_is_declined_with_a_logged_reason(
    kernel: str,
    what: str,
    level: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    right = getattr(kernels, kernel)
    monkeypatch.setattr(kernels, kernel, lambda *args: right(*args) * 1.01)
    parity.forget()
    try:
        assert not parity.trusted(["conv3x3"])
    finally:
        monkeypatch.undo()
        parity.forget()
    assert (
        f"at ISA level {level} (its {cpu_ext.path_at('conv3x3')} path): the bf16 convolution {what} differs from ATen (stride 1)"
        in (caplog.text)
    )


def test_large_layers_keep_atens_forward_and_input_gradient(
    conv_calls: list[bool], level: str
) -> None:
    """Past ``SMALL_WEIGHTS`` ATen computes them, bit for bit; the weight gradient still runs
    the kernel. A small stride-2 layer runs both on the direct kernel (at a level with the
    kernels' AVX512-BF16 path; below it, oneDNN computes everything)."""
    calls = conv_calls
    torch.manual_seed(0)
    for conv in (nn.Conv2d(128, 64, 3, 1, 1), nn.Conv2d(16, 32, 3, 2, 1)):
        conv = conv.to(memory_format=torch.channels_last)
        ours = KernelConv2d.from_module(copy.deepcopy(conv))
        x = torch.randn(2, conv.in_channels, 6, 6).contiguous(memory_format=torch.channels_last)
        got, want = _run(ours, x, True), _run(conv, x, True)
        small = conv.stride == (2, 2) and _native(level)
        for have, expected in zip(got[:2], want[:2], strict=True):  # output, input gradient
            if small:
                torch.testing.assert_close(have, expected, rtol=2**-7, atol=1e-2)
            else:
                assert torch.equal(have, expected)
        torch.testing.assert_close(got[2], want[2], rtol=2**-7, atol=1e-2)
        assert calls == ([True, True] if small else [])
        calls.clear()


@pytest.mark.parametrize("shape", [(2, 16, 16, 8, 1), (2, 16, 32, 8, 2, 1)])
def test_the_kernel_benchmark_times_every_pass(shape: tuple[int, ...]) -> None:
    """bench/conv_kernels.py runs (a 3x3 and a 1x1 layer, one round each)."""
    path = Path(__file__).resolve().parents[2] / "bench" / "conv_kernels.py"
    spec = importlib.util.spec_from_file_location("conv_kernels_bench", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.compare(shape, rounds=1)
    assert set(result) == {"forward", "input grad"} | (
        {"weight grad"} if len(shape) == 5 else set()
    )
    assert all(ms > 0 for times in result.values() for ms in times.values())
