"""cnnc's C++ CPU kernels against ATen: fused [ReLU +] 2x2 max-pooling (exact, bit for bit)
and BatchNorm2d [+ ReLU] (within tolerance) at every ISA level of this machine, their ATen
fallbacks, torch.library checks, the parity gate, and how kernels are built."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from runtime.kernels import parity
from runtime.kernels.cpu import batchnorm, extension as cpu_ext, pool
from runtime.kernels.cpu.batchnorm import FusedBatchNorm2d, batch_norm_add_relu, batch_norm_relu
from runtime.kernels.cpu.pool import fused_maxpool2x2, maxpool2x2
from runtime.optimize.config import OptimizeConfig
from runtime.optimize.prepare import prepare
from tests.runtime.kernel_levels import BUILT, VECTOR_PATHS, expected_path, vectorized_at

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
SHAPES = [(4, 6, 28, 28), (3, 16, 10, 10), (2, 3, 5, 9), (2, 20, 3, 34), (1, 33, 4, 6)]


def _input(shape: tuple[int, ...], dtype: torch.dtype, channels_last: bool) -> torch.Tensor:
    torch.manual_seed(0)
    x = torch.randn(*shape).to(dtype)
    flat = x.view(-1)
    n = (flat.numel() - 1) // 7
    flat[0 : 7 * n : 7] = flat[1 : 7 * n + 1 : 7].clone()  # ties inside windows
    flat[5] = float("nan")
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x.requires_grad_()


@pytest.mark.parametrize("kernel", sorted(VECTOR_PATHS))
def test_each_kernel_runs_the_path_of_its_level(kernel: str, level: str) -> None:
    # A vector path where the level has its instructions, the scalar path below that.
    if not BUILT:  # no compiler: no kernel, ATen everywhere
        assert cpu_ext.load(kernel) is None
        return
    assert cpu_ext.path(kernel) == expected_path(kernel, level)
    assert set(cpu_ext.paths(kernel)) >= {"scalar", *VECTOR_PATHS[kernel]}
    assert pool.kernel_available() == vectorized_at(level, ("pool2x2",))
    assert batchnorm.kernel_available() == vectorized_at(level, ("batchnorm",))


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("relu", ["none", "before", "after"])
@pytest.mark.parametrize("path", ["eager", "op"])
def test_pool_is_bit_exact(
    shape: tuple[int, ...],
    dtype: torch.dtype,
    channels_last: bool,
    relu: str,
    path: str,
    level: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if path == "op":  # what torch.compile and torch.export run: the custom op
        monkeypatch.setattr(pool, "_eager_module", lambda x: None)
    x = _input(shape, dtype, channels_last)
    reference = {
        "none": lambda t: F.max_pool2d(t, 2),
        "before": lambda t: F.max_pool2d(F.relu(t), 2),
        "after": lambda t: F.relu(F.max_pool2d(t, 2)),
    }[relu](x)
    out = fused_maxpool2x2(x, relu != "none")
    assert torch.equal(out.nan_to_num(), reference.nan_to_num())
    assert out.isnan().equal(reference.isnan())
    grad = torch.randn_like(reference)
    (expected,) = torch.autograd.grad(reference, x, grad)
    (got,) = torch.autograd.grad(out, x, grad)
    assert torch.equal(got, expected)
    assert got.is_contiguous(memory_format=torch.channels_last) == channels_last or shape[1] == 1


@pytest.mark.parametrize("relu", [False, True])
def test_pool_aten_fallback_is_exact(relu: bool) -> None:
    x = _input((2, 3, 7, 9), torch.float32, False).detach()
    y, index = pool._aten_forward(x, relu)
    kernel_y, kernel_index = maxpool2x2(x, relu)
    assert torch.equal(y.nan_to_num(), kernel_y.nan_to_num()) and torch.equal(index, kernel_index)
    grad = torch.randn_like(y)
    assert torch.equal(
        pool._aten_backward(grad, index, 7, 9), pool.maxpool2x2_backward(grad, index, 7, 9)
    )


def test_pool_op_passes_opcheck() -> None:
    x = torch.randn(2, 4, 6, 6, requires_grad=True)
    torch.library.opcheck(maxpool2x2, (x, True))
    torch.library.opcheck(
        maxpool2x2, (x.detach().contiguous(memory_format=torch.channels_last), False)
    )


def test_pool_compiles_without_graph_breaks() -> None:
    def f(t: torch.Tensor) -> torch.Tensor:
        return fused_maxpool2x2(t * 2, True).sum()

    x = torch.randn(2, 3, 8, 8)
    compiled = torch.compile(f, fullgraph=True, backend="aot_eager")
    torch.testing.assert_close(compiled(x), f(x))


def _bn_pair(channels: int, training: bool, relu: bool) -> tuple[nn.Module, FusedBatchNorm2d]:
    torch.manual_seed(1)
    bn = nn.BatchNorm2d(channels)
    bn.weight.data.uniform_(0.5, 1.5)
    bn.bias.data.uniform_(-0.5, 0.5)
    bn.running_mean.uniform_(-0.2, 0.2)
    bn.running_var.uniform_(0.5, 2.0)
    bn.train(training)
    return copy.deepcopy(bn), FusedBatchNorm2d.from_module(copy.deepcopy(bn), relu)


@pytest.mark.parametrize(
    "shape", [(8, 16, 12, 12), (4, 32, 7, 7), (3, 6, 5, 9), (2, 24, 4, 4), (2, 16, 5, 7)]
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("path", ["eager", "op"])
def test_batchnorm_matches_aten(
    shape: tuple[int, ...],
    dtype: torch.dtype,
    channels_last: bool,
    relu: bool,
    training: bool,
    path: str,
    level: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if path == "op":  # what torch.compile and torch.export run: the custom op
        monkeypatch.setattr(batchnorm, "_eager_module", lambda x, residual: None)
    reference, fused = _bn_pair(shape[1], training, relu)
    x = (torch.randn(*shape) * 2 + 0.5).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    expected = reference(x1)
    expected = F.relu(expected) if relu else expected
    out = fused(x2)
    grad = torch.randn_like(expected)
    expected.backward(grad)
    out.backward(grad.to(out.dtype))
    tol = {"atol": 1e-4, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 3e-2, "rtol": 3e-2}
    torch.testing.assert_close(out.float(), expected.float(), **tol)
    torch.testing.assert_close(x2.grad.float(), x1.grad.float(), **tol)  # type: ignore[union-attr]
    wtol = {"atol": 1e-3, "rtol": 1e-3} if dtype == torch.float32 else {"atol": 5e-2, "rtol": 2e-2}
    torch.testing.assert_close(fused.weight.grad, reference.weight.grad, **wtol)
    torch.testing.assert_close(fused.bias.grad, reference.bias.grad, **wtol)
    torch.testing.assert_close(fused.running_mean, reference.running_mean)
    torch.testing.assert_close(fused.running_var, reference.running_var)
    assert int(fused.num_batches_tracked) == int(reference.num_batches_tracked)


@pytest.mark.parametrize("shape", [(8, 16, 12, 12), (3, 6, 5, 9), (2, 24, 4, 4), (2, 16, 5, 7)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("path", ["eager", "op", "aten_fallback"])
def test_batchnorm_add_relu_matches_aten(
    shape: tuple[int, ...],
    dtype: torch.dtype,
    channels_last: bool,
    training: bool,
    path: str,
    level: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if path != "eager":
        monkeypatch.setattr(batchnorm, "_eager_module", lambda x, residual: None)
    if path == "aten_fallback":
        monkeypatch.setattr(batchnorm, "_module_for", lambda x: None)
    reference, fused = _bn_pair(shape[1], training, True)
    exact = copy.deepcopy(reference)  # fp32 ground truth for the bf16 comparisons
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    x = (torch.randn(*shape) * 2 + 0.5).to(dtype).contiguous(memory_format=fmt)
    r = torch.randn(*shape).to(dtype).contiguous(memory_format=fmt)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    r1, r2 = r.clone().requires_grad_(), r.clone().requires_grad_()
    expected = F.relu(reference(x1) + r1)
    out = fused(x2, r2)
    assert out.dtype == expected.dtype and out.is_contiguous(memory_format=fmt)
    grad = torch.randn_like(expected)
    expected.backward(grad)
    out.backward(grad)
    tol = {"atol": 1e-4, "rtol": 1e-4} if dtype == torch.float32 else {"atol": 3e-2, "rtol": 3e-2}
    torch.testing.assert_close(out.float(), expected.float(), **tol)
    # bf16: the fused kernel adds before rounding, ATen rounds bn(x) first, so a few
    # elements within one bf16 step of zero land on the other side of the ReLU
    flips = 0.0 if dtype == torch.float32 else 5e-3
    for mine, theirs in ((x2.grad, x1.grad), (r2.grad, r1.grad)):
        assert mine is not None and theirs is not None
        far = ~torch.isclose(mine.float(), theirs.float(), **tol)
        assert far.float().mean().item() <= flips, f"{int(far.sum())} of {far.numel()} differ"
    F.relu(exact(x.float()) + r.float()).backward(grad.float())
    for name in ("weight", "bias"):
        mine, theirs, truth = (getattr(m, name).grad for m in (fused, reference, exact))
        assert mine is not None and theirs is not None and truth is not None
        if dtype == torch.float32:
            torch.testing.assert_close(mine, theirs, atol=1e-3, rtol=1e-3)
        else:  # flips move whole terms of a channel's sum: as far from fp32 as ATen's bf16
            error, aten_error = (mine - truth).norm(), (theirs - truth).norm()
            assert error <= 2 * aten_error + 1e-2 * truth.norm(), (name, error, aten_error)
    torch.testing.assert_close(fused.running_mean, reference.running_mean)
    torch.testing.assert_close(fused.running_var, reference.running_var)


def test_batchnorm_add_relu_op_passes_opcheck() -> None:
    x = torch.randn(4, 3, 5, 5, requires_grad=True)
    r = torch.randn(4, 3, 5, 5, requires_grad=True)
    w = torch.rand(3, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    torch.library.opcheck(
        batch_norm_add_relu, (x, r, w, b, torch.zeros(3), torch.ones(3), True, 0.1, 1e-5)
    )


def test_batchnorm_momentum_none_is_a_cumulative_average(level: str) -> None:
    reference, fused = _bn_pair(4, True, False)
    reference.momentum = fused.momentum = None
    for _ in range(3):
        x = torch.randn(5, 4, 3, 3)
        reference(x)
        fused(x)
    torch.testing.assert_close(fused.running_mean, reference.running_mean)
    torch.testing.assert_close(fused.running_var, reference.running_var)


def test_batchnorm_shares_the_original_tensors() -> None:
    bn = nn.BatchNorm2d(8)
    fused = FusedBatchNorm2d.from_module(bn, relu=True)
    assert fused.weight is bn.weight and fused.running_mean is bn.running_mean
    assert list(fused.state_dict()) == list(bn.state_dict())


def test_batchnorm_op_passes_opcheck() -> None:
    x = torch.randn(4, 3, 5, 5, requires_grad=True)
    w = torch.rand(3, requires_grad=True)
    b = torch.randn(3, requires_grad=True)
    torch.library.opcheck(
        batch_norm_relu, (x, w, b, torch.zeros(3), torch.ones(3), True, 0.1, 1e-5, True)
    )


def test_parity_check_trusts_the_kernels_here(level: str) -> None:
    parity.forget()
    assert parity.trusted(parity.CHECKS)


def test_a_wrong_kernel_is_declined_with_a_logged_reason(
    level: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def wrong(x: torch.Tensor, relu: bool = False) -> torch.Tensor:
        return F.max_pool2d(x, 2) * 1.001  # a kernel that is subtly off

    monkeypatch.setattr(pool, "fused_maxpool2x2", wrong)
    parity.forget()
    try:
        prepared = prepare(
            nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2)),
            OptimizeConfig(cpu_kernels=True),
            torch.device("cpu"),
        )
    finally:
        monkeypatch.undo()
        parity.forget()
    if not vectorized_at(level):  # declined before the parity check: no vector path here
        assert any(f"no vector path at ISA level {level}" in n for n in prepared.notes)
        return
    assert (
        f"cpu_kernels declined: the parity check against ATen failed at ISA level {level} "
        "(see the log)" in prepared.notes
    )
    assert f"(ISA level {level}): fused max-pooling differs from ATen" in caplog.text


def test_kernels_in_use_and_their_paths_are_noted(level: str) -> None:
    prepared = prepare(
        nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2)),
        OptimizeConfig(cpu_kernels=True),
        torch.device("cpu"),
    )
    if vectorized_at(level):
        note = f"cpu_kernels at ISA level {level}: pool2x2 {expected_path('pool2x2', level)}"
        assert any(n.startswith(note) for n in prepared.notes), prepared.notes
        assert any("fused_relu_maxpool x1" in n for n in prepared.notes)
    else:
        assert not any("fused_relu_maxpool" in n for n in prepared.notes)
