"""cnnc's CPU dropout kernel: torch's dropout semantics (keep rate, scale, gradient through
the same mask, seeding), its fallbacks, and the training rewrite that installs it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from runtime.kernels.cpu import dropout as dropout_module, extension as cpu_ext, isa
from runtime.kernels.cpu.dropout import FastDropout, _Dropout, kernel_available
from runtime.optimize import rewrites
from tests.runtime.kernel_levels import BUILT, expected_path

pytestmark = pytest.mark.skipif(not BUILT, reason="no C++ compiler: FastDropout is nn.Dropout")


def test_kernel_runs_the_path_of_its_level(level: str) -> None:
    assert cpu_ext.path("dropout") == expected_path("dropout", level)
    assert kernel_available() == (expected_path("dropout", level) != "scalar")


def test_every_path_draws_the_same_masks(level: str) -> None:
    x = torch.rand(3, 1000, 17) + 0.5  # lengths that end mid-vector
    seeds = (12345, 678)
    with isa.use("scalar"):
        reference = dropout_module.dropout(x, 0.4, seeds)
    assert torch.equal(dropout_module.dropout(x, 0.4, seeds), reference)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("p", [0.1, 0.5, 0.8])
def test_keeps_each_element_with_probability_one_minus_p(
    dtype: torch.dtype, p: float, level: str
) -> None:
    torch.manual_seed(0)
    x = (torch.rand(200_003) + 0.5).to(dtype)  # no zeros: a zero output means dropped
    y = _Dropout.apply(x, p)  # the kernel at this level, whether or not FastDropout takes it
    kept = y != 0
    # binomial: 5 standard deviations of the kept fraction
    tolerance = 5 * (p * (1 - p) / x.numel()) ** 0.5
    assert abs(kept.float().mean().item() - (1 - p)) < tolerance
    expected = (x.float() * (1.0 / (1.0 - p))).to(dtype)
    assert torch.equal(y[kept], expected[kept])


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("grad_layout", ["same", "other"])
def test_gradient_goes_through_the_forward_mask(
    channels_last: bool, grad_layout: str, level: str
) -> None:
    torch.manual_seed(1)
    x = torch.rand(4, 24, 7, 5) + 0.5
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_()
    y = _Dropout.apply(x, 0.3)
    assert y.stride() == x.stride()
    grad = torch.rand(y.shape) + 0.5
    if grad_layout == "same":
        layout = torch.channels_last if channels_last else torch.contiguous_format
        grad = grad.contiguous(memory_format=layout)
    elif channels_last:
        grad = grad.contiguous()
    else:
        grad = grad.contiguous(memory_format=torch.channels_last)
    (have,) = torch.autograd.grad(y, x, grad)
    kept = y != 0
    assert torch.equal(have != 0, kept)
    assert torch.allclose(have[kept], grad[kept] / 0.7)


def test_manual_seed_repeats_and_calls_differ(level: str) -> None:
    x = torch.ones(10_000)
    layer = FastDropout(0.5)
    torch.manual_seed(3)
    first, second = layer(x), layer(x)
    torch.manual_seed(3)
    assert torch.equal(layer(x), first)
    assert not torch.equal(first, second)


def test_masks_are_independent_of_position() -> None:
    # neighbouring elements and equal indices of other calls are uncorrelated
    torch.manual_seed(4)
    a = (_Dropout.apply(torch.ones(100_000), 0.5) != 0).float()
    b = (_Dropout.apply(torch.ones(100_000), 0.5) != 0).float()
    for u, v in ((a[1:], a[:-1]), (a, b)):
        correlation = torch.corrcoef(torch.stack([u, v]))[0, 1].item()
        assert abs(correlation) < 0.02


@pytest.mark.parametrize("setup", ["eval", "p0", "inplace", "strided", "fp64"])
def test_falls_back_to_nn_dropout(setup: str, monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object) -> None:
        raise AssertionError("the kernel must not run here")

    monkeypatch.setattr(dropout_module, "dropout", refuse)
    x = torch.rand(8, 16) + 0.5
    layer = FastDropout(0.0 if setup == "p0" else 0.5, inplace=setup == "inplace")
    if setup == "eval":
        layer.eval()
    if setup == "strided":
        x = x[:, ::2]
    if setup == "fp64":
        x = x.double()
    torch.manual_seed(5)
    got = layer(x.clone() if layer.inplace else x)
    torch.manual_seed(5)
    want = F.dropout(x.clone() if layer.inplace else x, layer.p, layer.training, layer.inplace)
    assert torch.equal(got, want)


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(8, 16)
        self.drop = nn.Dropout(0.4)
        self.drop2d = nn.Dropout2d(0.4)
        self.drop_inplace = nn.Dropout(0.4, inplace=True)
        self.head = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.drop2d(self.drop(self.body(x))[:, :, None, None])
        x = self.drop_inplace(x.flatten(1))
        out: torch.Tensor = self.head(x)
        return out


def test_training_rewrite_swaps_plain_dropout_only(level: str) -> None:
    model, report = rewrites.for_training(_Net(), cpu_kernels=True)
    if expected_path("dropout", level) == "scalar":  # no vector path: nn.Dropout is faster
        assert "fast_dropout" not in report.applied
        assert type(model.get_submodule("drop")) is nn.Dropout
        return
    assert report.applied["fast_dropout"] == 1
    assert isinstance(model.get_submodule("drop"), FastDropout)
    assert type(model.get_submodule("drop2d")) is nn.Dropout2d
    assert type(model.get_submodule("drop_inplace")) is nn.Dropout
    model.eval()  # eval mode: every dropout is the identity
    x = torch.randn(3, 8)
    reference = _Net()
    reference.load_state_dict(model.state_dict())
    assert torch.equal(model(x), reference.eval()(x))
