"""The conv+ReLU module swap, its declines, and the parity check that gates the fused op.

The unfused model is the oracle: after ``fuse_conv_relu`` outputs, gradients and
``state_dict`` must be unchanged; a pair the op cannot express must stay as it was, with the
reason logged; a fused op that disagrees with aten must not be trusted.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from runtime.kernels import CONV_RELU, FusedConv2dReLU, conv_args_from_module, parity
from runtime.kernels.conv_args import ConvArgs
from runtime.kernels.triton import fuse
from runtime.kernels.triton.fuse import fuse_conv_relu

CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _fresh_verdict() -> Iterator[None]:
    """Each test starts and ends without a cached fp32 CPU verdict."""
    parity.set_verdict(CONV_RELU, CPU, torch.float32, None)
    yield
    parity.set_verdict(CONV_RELU, CPU, torch.float32, None)


class TaggedConv(nn.Conv2d):
    """A Conv2d subclass: its forward could differ, so the pass must leave it alone."""


def _model() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 6, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Sequential(
            nn.Sequential(nn.Conv2d(6, 8, 3, padding="same"), nn.ReLU(inplace=True)),
            nn.Conv2d(8, 8, 3, groups=2),
            nn.ReLU(),
            nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect"),
            nn.ReLU(),
            nn.Conv2d(8, 8, 2, padding="same"),
            nn.ReLU(),
            TaggedConv(8, 8, 1),
            nn.ReLU(),
            nn.Conv2d(8, 4, 3, stride=2, dilation=2, padding=2, bias=False),
            nn.ReLU(),
        ),
        nn.Flatten(),
    )


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
def test_fuse_replaces_pairs_and_keeps_outputs_gradients_and_state_dict() -> None:
    model = _model()
    reference = copy.deepcopy(model)
    state = model.state_dict()

    fused, records = fuse_conv_relu(model)

    assert fused is model
    assert [str(r) for r in records if r.fused] == [  # in execution order
        "0 + 1: fused",
        "3.0.0 + 3.0.1: fused",
        "3.9 + 3.10: fused",
    ]
    assert isinstance(model[0], FusedConv2dReLU) and isinstance(model[1], nn.Identity)
    after = model.state_dict()
    assert list(after) == list(state)
    assert all(after[k].data_ptr() == state[k].data_ptr() for k in state)

    x = torch.randn(2, 3, 32, 32)
    out, out_ref = model(x), reference(x)
    torch.testing.assert_close(out, out_ref)
    out.square().sum().backward()
    out_ref.square().sum().backward()
    ref_grads = dict(reference.named_parameters())
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, ref_grads[name].grad, msg=name)


def test_declined_pairs_are_reported_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    model = _model()
    before = {name: type(m) for name, m in model.named_modules()}

    with caplog.at_level(logging.INFO, logger="runtime.kernels"):
        _, records = fuse_conv_relu(model)

    declined = {r.conv: r.reason for r in records if not r.fused}
    assert declined == {
        "3.1": "groups=2; the fused kernel supports groups=1 only",
        "3.3": "padding_mode='reflect'; the fused kernel pads with zeros only",
        "3.5": "padding='same' needs asymmetric padding (total 1) for this kernel",
        "3.7": "TaggedConv subclasses nn.Conv2d; its forward may differ",
    }
    for conv in declined:
        relu = f"3.{int(conv[2:]) + 1}"
        assert type(model.get_submodule(conv)) is before[conv]
        assert type(model.get_submodule(relu)) is nn.ReLU
        assert f"{conv} + {relu} declined: {declined[conv]}" in caplog.text


def test_modules_with_forward_hooks_are_not_fused() -> None:
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU())
    model[0].register_forward_hook(lambda *_: None)

    _, records = fuse_conv_relu(model)

    assert [r.reason for r in records] == ["Conv2d has forward hooks that fusion would skip"]
    assert type(model[0]) is nn.Conv2d


@pytest.mark.parametrize(
    ("conv", "expected"),
    [
        (nn.Conv2d(2, 2, 3), ConvArgs((1, 1), (0, 0), (1, 1))),
        (nn.Conv2d(2, 2, (3, 5), stride=(2, 1), padding=(1, 2)), ConvArgs((2, 1), (1, 2), (1, 1))),
        (nn.Conv2d(2, 2, 3, padding="valid"), ConvArgs((1, 1), (0, 0), (1, 1))),
        (nn.Conv2d(2, 2, (3, 5), padding="same", dilation=2), ConvArgs((1, 1), (2, 4), (2, 2))),
        (nn.Conv2d(2, 2, 4, padding="same"), "padding='same' needs asymmetric padding"),
        (nn.Conv2d(2, 2, 3, padding_mode="circular"), "padding_mode='circular'"),
        (nn.Conv2d(2, 4, 3, groups=2), "groups=2"),
    ],
)
def test_conv_args_from_module(conv: nn.Conv2d, expected: ConvArgs | str) -> None:
    got = conv_args_from_module(conv)
    if isinstance(expected, str):
        assert isinstance(got, str) and got.startswith(expected)
    else:
        assert got == expected


def test_fused_module_refuses_a_conv_it_cannot_express() -> None:
    with pytest.raises(ValueError, match="groups=3; the fused kernel supports groups=1 only"):
        FusedConv2dReLU(nn.Conv2d(3, 3, 3, groups=3))


def _broken_op(
    x: Tensor, w: Tensor, b: Tensor | None, s: list[int], p: list[int], d: list[int]
) -> Tensor:
    return F.relu(F.conv2d(x, w, b, s, p, d)) * 1.5


def test_mismatching_op_is_not_trusted_and_module_falls_back(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(parity, "conv2d_relu", _broken_op)
    monkeypatch.setattr(fuse, "conv2d_relu", _broken_op)
    conv = nn.Conv2d(3, 4, 3)
    x = torch.randn(2, 3, 8, 8)

    with caplog.at_level(logging.WARNING, logger="runtime.kernels"):
        module = FusedConv2dReLU(conv)
        out = module(x)

    assert not parity.trusted([CONV_RELU], CPU, torch.float32)
    assert "conv2d_relu is not trusted on cpu/torch.float32" in caplog.text
    assert "output relative error" in caplog.text
    torch.testing.assert_close(out, F.relu(conv(x)))


def test_op_that_raises_is_not_trusted(monkeypatch: pytest.MonkeyPatch) -> None:
    def raising(*_: object) -> Tensor:
        raise RuntimeError("kernel launch failed")

    monkeypatch.setattr(parity, "conv2d_relu", raising)

    reason = parity.mismatch(CONV_RELU, CPU, torch.float32)

    assert reason is not None and "raised RuntimeError: kernel launch failed" in reason
    assert not parity.trusted([CONV_RELU], CPU, torch.float32)


def test_cpu_op_is_trusted_and_verdict_is_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    with torch.inference_mode():
        assert parity.trusted([CONV_RELU], "cpu", torch.float32)
    monkeypatch.setattr(parity, "mismatch", lambda *_: "must not run again")
    assert parity.trusted([CONV_RELU], CPU, torch.float32)


def test_autocast_runs_the_fused_op_in_the_autocast_dtype() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    reference = copy.deepcopy(model)
    fuse_conv_relu(model)
    x = torch.randn(2, 3, 9, 9)

    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, out_ref = model(x), reference(x)

    assert out.dtype == out_ref.dtype == torch.bfloat16
    torch.testing.assert_close(out, out_ref)


def test_compile_without_a_cached_verdict_uses_the_unfused_path() -> None:
    module = FusedConv2dReLU(nn.Conv2d(3, 4, 3))
    parity.set_verdict(CONV_RELU, CPU, torch.float32, None)
    x = torch.randn(1, 3, 6, 6)
    graphs: list[torch.fx.GraphModule] = []

    def backend(gm: torch.fx.GraphModule, _: list[Tensor]) -> torch.fx.GraphModule:
        graphs.append(gm)
        return gm

    out = torch.compile(module, backend=backend, fullgraph=True)(x)

    targets = [str(node.target) for node in graphs[0].graph.nodes]
    assert "cnnc_runtime.conv2d_relu" not in targets
    torch.testing.assert_close(out, F.relu(F.conv2d(x, module.weight, module.bias)))


def test_construction_checks_trust_so_export_keeps_the_op() -> None:
    module = FusedConv2dReLU(nn.Conv2d(3, 4, 3))

    exported = torch.export.export(module, (torch.randn(1, 3, 6, 6),))

    targets = [node.target for node in exported.graph.nodes]
    assert torch.ops.cnnc_runtime.conv2d_relu.default in targets


def test_construction_on_the_meta_device_runs_no_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(parity, "mismatch", lambda *_: "must not run")

    module = FusedConv2dReLU(nn.Conv2d(3, 4, 3, device="meta"))

    assert module(torch.empty(1, 3, 6, 6, device="meta")).shape == (1, 4, 4, 4)
