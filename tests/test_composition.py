"""Composition: blocks with arguments and $channels, repeat with first, residuals, branches,
and the names the modules get."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import cnnc
from tests.helpers import real_shapes

SE_NET = """
name: se_net
input: [16, 8, 8]
blocks:
  se:                                        # squeeze-and-excitation gate
    args: {squeeze: 4}
    layers:
      - type: mul
        branches:
          - [identity]
          - [{type: adaptive_avgpool2d, output_size: 1},
             {type: conv2d, out_channels: $squeeze, kernel_size: 1}, relu,
             {type: conv2d, out_channels: $channels, kernel_size: 1}, hardsigmoid]
  conv_bn:
    args: {out: int, stride: 1}
    layers:
      - {type: conv2d, out_channels: $out, kernel_size: 3, stride: $stride, padding: 1, bias: false}
      - batchnorm2d
      - relu
layers:
  - se
  - {type: conv_bn, out: 32, repeat: 3, first: {stride: 2}}
  - {type: se, squeeze: 8, name: gate}
  - {type: conv2d, out_channels: 8, kernel_size: 1, repeat: 2, first: {out_channels: 4}}
"""


def test_blocks_with_channels_repeat_and_first() -> None:
    compiled = cnnc.compile_spec(SE_NET)
    model = cnnc.build(compiled)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert shapes["se1.branch2.conv2.weight"] == (16, 4, 1, 1)  # $channels of a 16-ch input
    assert shapes["gate.branch2.conv1.weight"] == (8, 32, 1, 1)  # squeeze given at the use
    assert shapes["gate.branch2.conv2.weight"] == (32, 8, 1, 1)  # $channels is now 32
    assert shapes["layer1.0.conv1.weight"] == (32, 16, 3, 3)
    assert shapes["layer1.1.conv1.weight"] == (32, 32, 3, 3)
    assert shapes["layer2.0.weight"] == (4, 32, 1, 1)  # first: out_channels 4
    assert shapes["layer2.1.weight"] == (8, 4, 1, 1)
    stride = {
        n.qualname: n.layer.stride
        for n in compiled.graph.leaves()
        if n.tag == "conv2d" and n.qualname.startswith("layer1")
    }
    assert stride == {"layer1.0.conv1": 2, "layer1.1.conv1": 1, "layer1.2.conv1": 1}
    assert compiled.graph.output_shape == (8, 4, 4)
    expected = {n.qualname: n.out_shape for n in compiled.graph.root.walk() if n.qualname}
    assert real_shapes(model, (16, 8, 8), device="cpu") == expected


def test_se_gate_multiplies_the_input() -> None:
    model = cnnc.build(SE_NET).eval()
    se = model.se1
    x = torch.randn(2, 16, 8, 8)
    gate = se.branch2(x)
    assert gate.shape == (2, 16, 1, 1)
    torch.testing.assert_close(se(x), x * gate)


def test_residual_projection_and_explicit_shortcut() -> None:
    spec = {
        "name": "res",
        "input": [8, 9, 9],
        "layers": [
            {
                "type": "residual",
                "body": [
                    {
                        "type": "conv2d",
                        "out_channels": 16,
                        "kernel_size": 3,
                        "stride": 2,
                        "padding": 1,
                    }
                ],
                "after": "relu",
            },
            {
                "type": "residual",
                "shortcut": [{"type": "conv2d", "out_channels": 4, "kernel_size": 1}],
                "body": [{"type": "conv2d", "out_channels": 4, "kernel_size": 3, "padding": 1}],
            },
        ],
    }
    model = cnnc.build(spec)
    names = [n for n, _ in model.named_parameters()]
    assert names == [
        "block1.conv1.weight",
        "block1.conv1.bias",
        "block1.downsample.0.weight",
        "block1.downsample.1.weight",
        "block1.downsample.1.bias",
        "block2.conv1.weight",
        "block2.conv1.bias",
        "block2.shortcut.conv1.weight",
        "block2.shortcut.conv1.bias",
    ]
    assert model.block1.downsample[0].stride == (2, 2)  # 9 -> 5 needs a stride-2 projection
    x = torch.randn(2, 8, 9, 9)
    block = model.block1.eval()
    expected = torch.relu(block.conv1(x) + block.downsample(x))
    torch.testing.assert_close(block(x), expected)


def test_concat_branches() -> None:
    spec = {
        "name": "inception",
        "input": [3, 8, 8],
        "layers": [
            {
                "type": "concat",
                "branches": [
                    [{"type": "conv2d", "out_channels": 4, "kernel_size": 1}],
                    [{"type": "conv2d", "out_channels": 6, "kernel_size": 3, "padding": 1}, "relu"],
                    [{"type": "maxpool2d", "kernel_size": 3, "stride": 1, "padding": 1}],
                ],
            }
        ],
    }
    compiled = cnnc.compile_spec(spec)
    assert compiled.graph.output_shape == (13, 8, 8)
    model = cnnc.build(compiled)
    x = torch.randn(1, 3, 8, 8)
    parts = [model.concat.branch1(x), model.concat.branch2(x), model.concat.branch3(x)]
    torch.testing.assert_close(model(x), torch.cat(parts, 1))


def test_generated_names_read_like_tutorials() -> None:
    spec = {
        "name": "n",
        "input": [3, 16, 16],
        "layers": [
            {"type": "conv2d", "out_channels": 4, "kernel_size": 3},
            "batchnorm2d",
            "relu",
            {"type": "conv2d", "out_channels": 4, "kernel_size": 3},
            "relu",
            {"type": "maxpool2d", "kernel_size": 2},
            "flatten",
            "dropout",
            {"type": "linear", "out_features": 3, "name": "head"},
        ],
    }
    model = cnnc.build(spec)
    assert [n for n, _ in model.named_children()] == [
        "conv1",
        "bn1",
        "relu1",
        "conv2",
        "relu2",
        "pool",
        "flatten",
        "dropout",
        "head",
    ]


def test_generated_names_skip_user_names() -> None:
    spec = {
        "name": "n",
        "input": [4],
        "layers": [
            {"type": "linear", "out_features": 4, "name": "fc1"},
            {"type": "linear", "out_features": 4},
            {"type": "linear", "out_features": 2},
        ],
    }
    assert [n for n, _ in cnnc.build(spec).named_children()] == ["fc1", "fc2", "fc3"]


def test_sequential_groups_layers() -> None:
    spec = {
        "name": "n",
        "input": [1, 8, 8],
        "layers": [
            {
                "type": "sequential",
                "name": "features",
                "layers": [{"type": "conv2d", "out_channels": 2, "kernel_size": 3}, "relu"],
            },
            "flatten",
            {"type": "linear", "out_features": 2, "name": "classifier"},
        ],
    }
    model = cnnc.build(spec)
    assert isinstance(model.features, nn.Sequential)
    assert list(model.state_dict()) == [
        "features.conv1.weight",
        "features.conv1.bias",
        "classifier.weight",
        "classifier.bias",
    ]


@pytest.mark.parametrize("value", [1, 3])
def test_repeat_builds_numbered_children(value: int) -> None:
    spec = {
        "name": "n",
        "input": [4],
        "layers": [{"type": "linear", "out_features": 4, "repeat": value, "name": "stack"}],
    }
    model = cnnc.build(spec)
    assert [n for n, _ in model.stack.named_children()] == [str(i) for i in range(value)]


def test_first_without_repeat_is_an_error() -> None:
    with pytest.raises(cnnc.SpecError, match="'first' overrides the first of several repeats"):
        cnnc.compile_spec(
            {
                "name": "n",
                "input": [4],
                "layers": [{"type": "linear", "out_features": 4, "first": {"out_features": 2}}],
            }
        )


REFERENCES = """
name: refs
input: [8, 8, 8]
blocks:
  unit:
    args: {act: relu, short: list, out: 8}
    layers:
      - type: residual
        body:
          - {type: conv2d, out_channels: $out, kernel_size: 3, padding: 1}
          - {type: $act}
          - $act
        shortcut: $short
  two:
    args: {b: list}
    layers:
      - type: concat
        branches: [[identity], $b]
layers:
  - {type: unit, act: gelu, short: [{type: conv2d, out_channels: 8, kernel_size: 1}]}
  - {type: two, b: [{type: conv2d, out_channels: 4, kernel_size: 1}, relu]}
"""


def test_references_stand_for_types_layers_and_lists() -> None:
    """``$name`` as a layer's type, as a whole layer, as a shortcut and as a branch (the
    places docs/spec.md names)."""
    compiled = cnnc.compile_spec(REFERENCES)
    tags = [(n.qualname, n.tag) for n in compiled.graph.leaves()]
    assert tags == [
        ("unit1.conv1", "conv2d"),
        ("unit1.gelu1", "gelu"),
        ("unit1.gelu2", "gelu"),
        ("unit1.shortcut.conv1", "conv2d"),
        ("two1.branch1.identity", "identity"),
        ("two1.branch2.conv1", "conv2d"),
        ("two1.branch2.relu", "relu"),
    ]
    assert compiled.graph.output_shape == (12, 8, 8)


SHUFFLE_UNIT = """
name: shuffle_unit
input: [8, 6, 6]
layers:
  - type: split                              # ShuffleNetV2's unit, stride 1
    branches:
      - [identity]
      - [{type: conv2d, out_channels: 4, kernel_size: 1, bias: false}, relu,
         {type: conv2d, out_channels: 4, kernel_size: 3, padding: 1, groups: depthwise}]
  - {type: channel_shuffle, groups: 2}
  - {type: permute, dims: [0, 2, 3, 1]}
  - {type: reshape, shape: [36, -1]}
  - {type: unflatten, dim: 1, unflattened_size: [6, 6]}
"""


def test_split_shuffle_and_rearranging_match_torch() -> None:
    """The split gives each branch its own slice and concatenates; then torch's own ops."""
    torch.manual_seed(0)
    model = cnnc.build(SHUFFLE_UNIT)
    x = torch.randn(2, 8, 6, 6)
    left, right = x.chunk(2, dim=1)
    branch = model.split.branch2
    y = torch.cat([left, branch.conv2(torch.relu(branch.conv1(right)))], dim=1)
    y = nn.functional.channel_shuffle(y, 2).permute(0, 2, 3, 1).reshape(2, 36, -1)
    torch.testing.assert_close(model(x), y.unflatten(1, (6, 6)))
    assert model.split.sizes == (4, 4)


def test_index_names_are_positions_like_nn_sequential() -> None:
    text = (
        "name: net\ninput: [3, 8, 8]\nlayers:\n  - type: sequential\n    name: features\n"
        "    names: index\n    layers: [{type: conv2d, out_channels: 4, kernel_size: 3}, relu,\n"
        "             {type: maxpool2d, kernel_size: 2}, {type: conv2d, out_channels: 4, "
        "kernel_size: 1}]\n"
    )
    model = cnnc.build(text)
    assert list(model.state_dict()) == [
        "features.0.weight", "features.0.bias", "features.3.weight", "features.3.bias",
    ]  # fmt: skip
    assert "nn.Sequential(\n" in cnnc.generate_code(text)  # no OrderedDict: plain positions
