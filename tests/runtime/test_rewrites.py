"""Exact rewrites: equal outputs (and, for training rewrites, equal gradients)."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import cnnc
from cnnc.baselines import Seed004CNN
from runtime.optimize import rewrites
from tests.helpers import ROOT

SPECS = ["lenet", "resnet20", "seed000_cnn", "seed002_cifar", "squeezenet"]
SMALL_INPUT = {"squeezenet": (3, 64, 64)}


def _model(name: str) -> tuple[nn.Module, tuple[int, ...]]:
    torch.manual_seed(0)
    if name == "hand_written":
        return Seed004CNN(), (3, 32, 32)  # the seed 004 tutorial's class, functional calls
    model = cnnc.build(ROOT / "specs" / f"{name}.yaml", input_shape=SMALL_INPUT.get(name))
    return model, SMALL_INPUT.get(name, tuple(model.input_shape))


@pytest.mark.parametrize("name", [*SPECS, "hand_written"])
def test_training_rewrites_keep_outputs_and_gradients(name: str) -> None:
    model, shape = _model(name)
    reference = copy.deepcopy(model)
    rewritten, report = rewrites.for_training(model)
    if name in ("lenet", "seed000_cnn", "hand_written"):
        assert report.applied.get("relu_after_maxpool", 0) >= 1
    assert list(rewritten.state_dict()) == list(reference.state_dict())
    x = torch.randn(4, *shape)
    torch.manual_seed(1)
    out = rewritten(x)
    torch.manual_seed(1)
    expected = reference(x)
    torch.testing.assert_close(out, expected)
    out.square().sum().backward()
    expected.square().sum().backward()
    grads = dict(rewritten.named_parameters())
    for key, param in reference.named_parameters():
        torch.testing.assert_close(grads[key].grad, param.grad, msg=key)


@pytest.mark.parametrize("fused", [False, True], ids=["unfused", "fused_conv_relu"])
@pytest.mark.parametrize("name", [*SPECS, "hand_written"])
def test_inference_rewrites_keep_outputs(name: str, fused: bool) -> None:
    model, shape = _model(name)
    model.eval()
    # give batchnorm non-trivial statistics so folding is really tested
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
    reference = copy.deepcopy(model)
    rewritten, report = rewrites.for_inference(model, fused_conv_relu=fused)
    if fused and name in ("seed000_cnn", "resnet20"):
        # conv-bn-relu becomes one fused op once batchnorm is folded
        assert report.applied["fused_conv_relu"] >= 2
    if name == "resnet20":
        assert report.applied["fold_conv_bn"] == 21
        assert not any(isinstance(m, nn.BatchNorm2d) for m in rewritten.modules())
    if name == "squeezenet":
        assert report.applied["drop_dropout"] >= 1
    x = torch.randn(3, *shape)
    with torch.no_grad():
        torch.testing.assert_close(rewritten(x), reference(x), atol=1e-5, rtol=1e-4)


def test_training_mode_model_is_not_folded() -> None:
    model, _ = _model("resnet20")
    same, report = rewrites.for_inference(model)
    assert same is model and "training mode" in report.declined[0]


def test_untraceable_model_is_declined_with_reason() -> None:
    class DataDependent(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x if x.sum() > 0 else -x

    model = DataDependent()
    same, report = rewrites.for_training(model)
    assert same is model
    assert report.declined[0].startswith("torch.fx cannot trace DataDependent")


def test_residual_block_ends_fold_into_the_fused_batchnorm() -> None:
    import operator

    model, shape = _model("resnet20")
    reference = copy.deepcopy(model)
    rewritten, report = rewrites.for_training(model, cpu_kernels=True)
    assert report.applied["fused_batchnorm"] == 21
    graph = rewritten.graph  # type: ignore[union-attr]
    adds = [n for n in graph.nodes if n.op == "call_function" and n.target is operator.add]
    assert adds == []  # relu(bn(x) + shortcut) of all nine blocks is one call each
    two_inputs = [n for n in graph.nodes if n.op == "call_module" and len(n.args) == 2]
    assert len(two_inputs) == 9
    x = torch.randn(4, *shape)
    out, expected = rewritten(x), reference(x)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)
    out.square().sum().backward()
    expected.square().sum().backward()
    grads = dict(rewritten.named_parameters())
    for key, param in reference.named_parameters():
        torch.testing.assert_close(grads[key].grad, param.grad, atol=1e-3, rtol=1e-3, msg=key)
