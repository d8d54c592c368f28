"""cnnc's fp32 convolutions, direct and Winograd (forward, input, weight and bias gradients),
against torch in float64 at every ISA level of this machine (its avx2/avx512 paths where the
level has them, the scalar path below), in NCHW and channels-last; ``Fp32Conv2d`` (its
outputs and gradients, its fallbacks) and the measured per-pass decision (``conv_choice``);
the rewrites that install it."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from runtime.kernels import parity
from runtime.kernels.cpu import conv_choice as cc, conv_fp32 as cf, extension as cpu_ext
from runtime.kernels.cpu.conv_choice import Algorithm, Choice, Geometry
from runtime.kernels.cpu.conv_fp32 import Fp32Conv2d
from runtime.optimize import rewrites
from tests.runtime.kernel_levels import BUILT, expected_path

pytestmark = pytest.mark.skipif(not BUILT, reason="no C++ compiler: the convolutions are ATen's")

TOLERANCE = 2e-5  # max |error| / max |float64 result|: fp32 sums in another order
WINOGRAD_TOLERANCE = 5e-5  # and Winograd's transforms

# (batch, in, out, size, kernel, stride, padding): LeNet's and ResNet-20's layers (smaller
# batches), then odd sizes, channel counts that end mid-vector, 1x1 and 7x7 kernels, stride 2
# with sizes of either parity, padding past the kernel's reach, a kernel below the stride
CASES = [
    (4, 3, 6, 32, 5, 1, 0),
    (4, 6, 16, 14, 5, 1, 0),
    (2, 3, 16, 32, 3, 1, 1),
    (2, 16, 16, 32, 3, 1, 1),
    (2, 16, 32, 32, 3, 2, 1),
    (2, 32, 64, 16, 3, 2, 1),
    (2, 64, 64, 8, 3, 1, 1),
    (3, 5, 7, 11, 3, 2, 1),
    (1, 4, 9, 7, 1, 2, 0),
    (2, 4, 33, 9, 7, 1, 3),
    (1, 3, 20, 13, 4, 2, 2),
    (2, 2, 3, 5, 2, 1, 2),
    (2, 3, 5, 6, 1, 3, 0),
    (1, 17, 40, 6, 3, 1, 0),
]


def _tensors(case: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
    n, ci, co, size, k, stride, padding = case
    generator = torch.Generator().manual_seed(sum(case))
    x = torch.randn(n, ci, size, size + 1, generator=generator, dtype=torch.float64)
    weight = torch.randn(co, ci, k, k, generator=generator, dtype=torch.float64)
    bias = torch.randn(co, generator=generator, dtype=torch.float64)
    y = F.conv2d(x, weight, bias, stride, padding)
    grad = torch.randn(y.shape, generator=generator, dtype=torch.float64)
    return x, weight, bias, y, grad


# Winograd's cases: every 3x3 stride-1 case above, and odd sizes with paddings 0 and 2
WINOGRAD_CASES = [c for c in CASES if c[4:6] == (3, 1)] + [
    (2, 5, 11, 7, 3, 1, 0),
    (1, 9, 4, 6, 3, 1, 2),
]
# the row-vectorized direct convolution's: every stride-1 3x3 or 5x5 case, and padding k - 1
ROWS_CASES = [c for c in CASES if c[4] in (3, 5) and c[5] == 1] + [(2, 4, 6, 9, 5, 1, 4)]
RUNS = (
    [("direct", c) for c in CASES]
    + [("direct_rows", c) for c in ROWS_CASES]
    + [(a, c) for a in ("winograd_2x2", "winograd_4x4") for c in WINOGRAD_CASES]
)


def _close(got: torch.Tensor | None, want: torch.Tensor, tolerance: float = TOLERANCE) -> None:
    assert got is not None and got.dtype == torch.float32 and got.shape == want.shape
    assert parity.max_relative_error(got.double(), want) <= tolerance


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize(
    ("algorithm", "case"), RUNS, ids=[f"{a}-{'-'.join(map(str, c))}" for a, c in RUNS]
)
def test_passes_match_torch_in_float64(
    algorithm: Algorithm, case: tuple[int, ...], channels_last: bool, level: str
) -> None:
    co, size, k, stride, padding = case[2:]
    tolerance = WINOGRAD_TOLERANCE if algorithm.startswith("winograd") else TOLERANCE
    a = algorithm
    x, weight, bias, y, grad = _tensors(case)
    dx, dw, db = torch.ops.aten.convolution_backward(
        grad, x, weight, [co], [stride] * 2, [padding] * 2, [1, 1], False, [0, 0], 1,
        [True, True, True],
    )  # fmt: skip
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x32, grad32, w32 = x.float().contiguous(memory_format=fmt), grad.float(), weight.float()
    grad32 = grad32.contiguous(memory_format=fmt)
    sums = torch.full((2, co), float("nan"), dtype=torch.float64)
    out = cf.forward(x32, w32, bias.float(), stride, padding, a, sums)
    _close(out, y, tolerance)
    assert out.is_contiguous(memory_format=fmt)  # the input's memory format
    # the output's per-channel sum and sum of squares, taken as it was written
    for got, want in zip(sums, (out.double(), out.double().square()), strict=True):
        scale = want.abs().sum((0, 2, 3))
        assert ((got - want.sum((0, 2, 3))).abs() <= 1e-5 * scale).all()
    _close(cf.forward(x32, w32, None, stride, padding, a), y - bias.view(-1, 1, 1), tolerance)
    dx32 = cf.input_grad(grad32, w32, stride, padding, (size, size + 1), a)
    _close(dx32, dx, tolerance)
    assert dx32.is_contiguous(memory_format=fmt)
    dw32, db32 = cf.weight_grad(x32, grad32, k, stride, padding, True, a)
    _close(dw32, dw, tolerance)
    _close(db32, db, tolerance)
    assert cf.weight_grad(x32, grad32, k, stride, padding, False, a)[1] is None
    assert cpu_ext.path(cf.KERNEL) == expected_path(cf.KERNEL, level)


@pytest.mark.parametrize("algorithm", ["direct", "direct_rows", "winograd_2x2", "winograd_4x4"])
def test_strided_views_are_read_as_they_are(algorithm: Algorithm, level: str) -> None:
    base = torch.randn(2, 8, 12, 12)
    x = base[:, ::2, 1:, :-1]  # neither layout: any strides are read directly
    weight = torch.randn(5, 4, 3, 3)
    want = F.conv2d(x.double(), weight.double(), None, 1, 1)
    _close(cf.forward(x, weight, None, 1, 1, algorithm), want, WINOGRAD_TOLERANCE)


# ---- the module ------------------------------------------------------------------------------


def _always(choice: Choice, monkeypatch: pytest.MonkeyPatch) -> list[Geometry]:
    seen: list[Geometry] = []

    def decide(g: Geometry) -> Choice:
        seen.append(g)
        return choice

    monkeypatch.setattr(cf, "decide", decide)
    return seen


# (in, out, kernel, padding, stride), input shape, the algorithms of the passes
MODULE_CASES = {
    "all-direct": ((6, 16, 5, 1, 2), (3, 6, 15, 14), Choice("direct", "direct", "direct")),
    "input_grad": ((6, 16, 5, 1, 2), (3, 6, 15, 14), Choice("onednn", "direct", "onednn")),
    "fwd+wgrad": ((6, 16, 5, 1, 2), (3, 6, 15, 14), Choice("direct", "onednn", "direct")),
    "winograd": (
        (16, 24, 3, 1, 1),
        (2, 16, 9, 10),
        Choice("winograd_4x4", "winograd_2x2", "winograd_4x4"),
    ),
    "rows": ((4, 6, 5, 1, 1), (2, 4, 12, 13), Choice("direct_rows", "direct_rows", "direct_rows")),
}


@pytest.mark.parametrize("case", MODULE_CASES)
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_module_keeps_outputs_and_gradients(
    case: str, channels_last: bool, level: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (ci, co, k, p, s), shape, choice = MODULE_CASES[case]
    seen = _always(choice, monkeypatch)
    torch.manual_seed(0)
    conv = nn.Conv2d(ci, co, k, padding=p, stride=s)
    swapped = Fp32Conv2d.from_module(copy.deepcopy(conv))
    assert swapped.state_dict().keys() == conv.state_dict().keys()
    x = torch.randn(shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    grads = []
    for module in (conv, swapped):
        xi = x.clone().requires_grad_()
        out = module(xi)
        out.backward(torch.linspace(-1, 1, out.numel()).view_as(out))
        grads.append([out, xi.grad, module.weight.grad, module.bias.grad])
    for got, want in zip(grads[1], grads[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    geometry = Geometry(shape[0], ci, co, shape[2], shape[3], k, s, p, True, channels_last)
    assert seen == ([geometry] if cf.kernel_available() else [])


def test_module_without_bias_and_a_frozen_weight(
    level: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _always(Choice("winograd_2x2", "direct_rows", "winograd_2x2"), monkeypatch)
    conv = nn.Conv2d(4, 8, 3, bias=False).requires_grad_(False)
    swapped = Fp32Conv2d.from_module(conv)
    x = torch.randn(2, 4, 9, 9, requires_grad=True)
    (want,) = torch.autograd.grad(conv(x).square().sum(), x)
    (got,) = torch.autograd.grad(swapped(x).square().sum(), x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    with torch.no_grad():  # evaluation: the forward kernel alone
        torch.testing.assert_close(swapped(x), conv(x), rtol=1e-4, atol=1e-4)


def test_module_leaves_bf16_autocast_and_other_dtypes_to_aten(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen = _always(Choice("direct", "direct", "direct"), monkeypatch)
    swapped = Fp32Conv2d.from_module(nn.Conv2d(3, 6, 5))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert swapped(torch.randn(2, 3, 12, 12)).dtype == torch.bfloat16
    swapped.double()(torch.randn(2, 3, 12, 12, dtype=torch.float64))
    assert seen == []


def test_eligible_layers() -> None:
    assert cf.eligible(nn.Conv2d(3, 6, 5))
    assert cf.eligible(nn.Conv2d(64, 64, 3, stride=2, padding=1, bias=False))
    assert not cf.eligible(nn.Conv2d(8, 8, 3, groups=2))
    assert not cf.eligible(nn.Conv2d(8, 8, 3, dilation=2))
    assert not cf.eligible(nn.Conv2d(8, 8, (3, 5)))
    assert not cf.eligible(nn.Conv2d(8, 8, 3, stride=(1, 2)))
    assert not cf.eligible(nn.Conv2d(8, 8, 3, padding="same"))
    assert not cf.eligible(nn.Conv2d(8, 8, 9))
    assert not cf.eligible(nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect"))
    assert not cf.eligible(nn.Conv2d(256, 256, 3))


# ---- the decision ------------------------------------------------------------------------------


def test_choose_takes_cnnc_fastest_only_past_the_margin() -> None:
    times: cc.Times = {
        "forward": {"onednn": 1.0, "direct": 0.5, "winograd_2x2": 0.45, "winograd_4x4": 0.4},
        "input_grad": {"onednn": 1.0, "direct": 0.99, "winograd_4x4": 1.2},
        "weight_grad": {"onednn": 0.5, "direct": 1.0},
    }
    assert cc.choose(times) == Choice("winograd_4x4", "onednn", "onednn")
    times["weight_grad"]["direct"] = 0.2
    assert cc.choose(times).weight_grad == "direct"


def test_winograd_and_rows_are_candidates_where_they_apply() -> None:
    assert Geometry(2, 16, 16, 8, 8, 3, 1, 1, False, True).algorithms() == cc.ALGORITHMS
    for g in (
        Geometry(2, 16, 16, 8, 8, 3, 2, 1, False, True),
        Geometry(2, 16, 16, 8, 8, 7, 1, 2, False, True),
        Geometry(2, 16, 16, 8, 8, 3, 1, 3, False, True),
    ):
        assert g.algorithms() == ("onednn", "direct")
    assert Geometry(2, 3, 6, 32, 32, 5, 1, 0, True, False).algorithms() == (
        "onednn", "direct", "direct_rows",
    )  # fmt: skip


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("CNNC_CACHE_DIR", str(tmp_path))
    cc.forget()
    yield tmp_path
    cc.forget()


@pytest.mark.usefixtures("cache")
def test_a_kernel_forced_to_lose_keeps_onednn(monkeypatch: pytest.MonkeyPatch) -> None:
    if not cf.kernel_available():
        pytest.skip("no vector build of the kernel at this machine's level")
    real = cf.forward

    def slow(*args: object) -> torch.Tensor:
        time.sleep(0.25)  # beyond any preemption of oneDNN's call on a shared machine
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(cf, "forward", slow)
    g = Geometry(4, 16, 16, 14, 14, 3, 1, 1, True, False)
    choice = cc.decide(g)
    assert choice.forward == "onednn"
    assert cc.decision_seconds() > 0


@pytest.mark.usefixtures("cache")
def test_decisions_are_cached_in_memory_and_on_disk(monkeypatch: pytest.MonkeyPatch) -> None:
    if not cf.kernel_available():
        pytest.skip("no vector build of the kernel at this machine's level")
    timed: list[Geometry] = []

    def measure(g: Geometry, rounds: int = cc.ROUNDS) -> cc.Times:
        timed.append(g)
        return {
            "forward": {"onednn": 2.0, "direct": 1.0},
            "input_grad": {"onednn": 1.0, "direct": 2.0},
            "weight_grad": {"onednn": 3.0, "direct": 1.0},
        }

    monkeypatch.setattr(cc, "measure", measure)
    g = Geometry(2, 3, 6, 12, 12, 5, 1, 0, True, False)
    want = Choice("direct", "onednn", "direct")
    assert cc.decide(g) == want and cc.decide(g) == want
    assert timed == [g]
    assert cc.cache_file().exists()
    cc.forget()  # a new process: the choice comes from the disk
    assert cc.decide(g) == want and timed == [g]
    assert cc.decision_seconds() == 0


@pytest.mark.usefixtures("cache")
def test_a_cached_entry_of_another_format_is_measured_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    g = Geometry(2, 3, 6, 12, 12, 5, 1, 0, True, False)
    text = f"{cc.machine_key()} | {g.label()}"
    cc.cache_file().write_text(
        json.dumps({text: {"forward": True, "input_grad": False, "weight_grad": True}})
    )
    monkeypatch.setattr(cc, "measure", lambda g, rounds=cc.ROUNDS: {
        name: {"onednn": 1.0, "direct": 2.0} for name in cc.PASSES
    })  # fmt: skip
    assert cc.decide(g) == Choice()
    assert json.loads(cc.cache_file().read_text())[text]["forward"] == "onednn"


@pytest.mark.usefixtures("cache")
def test_measure_times_every_candidate_of_every_pass() -> None:
    if not cf.kernel_available():
        pytest.skip("no vector build of the kernel at this machine's level")
    times = cc.measure(Geometry(2, 3, 6, 12, 12, 5, 2, 0, True, True), rounds=2)
    assert set(times) == set(cc.PASSES)
    assert all(set(by) == {"onednn", "direct"} for by in times.values())
    times = cc.measure(Geometry(2, 8, 8, 6, 6, 3, 1, 1, False, True), rounds=2)
    assert all(set(by) == set(cc.ALGORITHMS) for by in times.values())
    assert all(ms > 0 for by in times.values() for ms in by.values())


# ---- the rewrites -------------------------------------------------------------------------------


def _lenet() -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(3, 6, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 10 * 10, 10),
    )  # fmt: skip


@pytest.mark.parametrize("bf16", [False, True], ids=["fp32", "bf16"])
def test_training_rewrite_swaps_fp32_convolutions(bf16: bool, level: str) -> None:
    model = _lenet()
    prepared, report = rewrites.for_training(model, exact=False, cpu_kernels=True, bf16=bf16)
    swapped = [m for m in prepared.modules() if isinstance(m, Fp32Conv2d)]
    expect = cf.kernel_available() and not bf16
    assert len(swapped) == (2 if expect else 0)
    assert report.applied.get("conv_fp32", 0) == len(swapped)
    assert list(prepared.state_dict()) == list(model.state_dict())


@pytest.mark.usefixtures("cache")
def test_rewritten_model_trains_like_the_original(level: str) -> None:
    torch.manual_seed(0)
    model = _lenet()
    prepared, _ = rewrites.for_training(
        copy.deepcopy(model), exact=False, cpu_kernels=True, bf16=False
    )
    x = torch.randn(4, 3, 32, 32)
    outs = []
    for net in (model, prepared):
        out = net(x)
        out.square().sum().backward()
        outs.append([out, *(p.grad for p in net.parameters())])
    for got, want in zip(outs[1], outs[0], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


class _Block(nn.Module):
    """conv-bn-relu, then conv-bn + the block's input, relu; and a conv with two users."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.conv2, self.bn2 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv3, self.bn3 = nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x))))) + x)
        z = self.conv3(y)
        return self.bn3(z) + z


@pytest.mark.parametrize("forward", ["direct", "winograd_4x4", "onednn"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
def test_batch_norms_take_their_statistics_from_the_convolution(
    forward: Algorithm, channels_last: bool, level: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    _always(Choice(forward, "winograd_2x2", "direct"), monkeypatch)
    torch.manual_seed(0)
    model = _Block()
    prepared, report = rewrites.for_training(
        copy.deepcopy(model), exact=False, cpu_kernels=True, bf16=False
    )
    if cf.kernel_available():  # conv3's output has two users: it keeps its own pass
        assert report.applied.get("conv_output_sums") == 2
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = (torch.randn(3, 8, 9, 10) + 0.5).contiguous(memory_format=fmt)
    results = []
    for net in (model, prepared):
        out = net(x)
        out.backward(torch.linspace(-1, 1, out.numel()).view_as(out))
        buffers = [b.clone() for b in net.buffers()]
        results.append([out, *(p.grad for p in net.parameters()), *buffers])
    for got, want in zip(results[1], results[0], strict=True):  # Winograd, then normalized
        torch.testing.assert_close(got, want, rtol=5e-4, atol=5e-4)


def test_inference_rewrite_swaps_fp32_convolutions(level: str) -> None:
    model = _lenet().eval()
    prepared, _ = rewrites.for_inference(model, cpu_kernels=True)
    swapped = [m for m in prepared.modules() if isinstance(m, Fp32Conv2d)]
    assert len(swapped) == (2 if cf.kernel_available() else 0)


def test_parity_gate_trusts_the_kernel(level: str) -> None:
    parity.forget()
    try:
        assert parity.mismatch(cf.KERNEL) is None
    finally:
        parity.forget()
