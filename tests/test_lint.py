"""Lint warnings for classic mistakes, with their locations and fixes."""

from __future__ import annotations

from typing import get_args

import pytest

import cnnc
from cnnc.lintcodes import CODES, Code
from tests.helpers import ROOT

HEAD = "name: net\ninput: [3, 8, 8]\nlayers:\n"


def warnings(text: str) -> list[str]:
    return [w.render().replace("<string>", "net.yaml") for w in cnnc.compile_spec(text).warnings]


def test_softmax_before_cross_entropy() -> None:
    warning = warnings(HEAD + "  - flatten\n  - {type: linear, out_features: 3}\n  - softmax\n")[0]
    assert warning.startswith(
        "net.yaml:6:5: layers[2]: the network ends with softmax ('softmax'); cross_entropy "
        "expects raw logits"
    )


def test_conv_bias_before_batchnorm() -> None:
    text = HEAD + (
        "  - {type: conv2d, out_channels: 4, kernel_size: 3}\n  - batchnorm2d\n"
        "  - {type: adaptive_avgpool2d, output_size: 1}\n"
    )
    (warning,) = warnings(text)
    assert warning == (
        "net.yaml:4:5: layers[0]: conv2d 'conv1' has a bias right before batchnorm2d 'bn1', "
        "which subtracts the per-channel mean and cancels it [conv-bias-before-batchnorm]\n"
        "  hint: set 'bias: false' on this conv2d (saves 4 parameters and their gradient work)"
    )


def test_flatten_tied_to_resolution() -> None:
    text = HEAD + "  - flatten\n  - {type: linear, out_features: 3}\n"
    (warning,) = warnings(text)
    assert warning == (
        "net.yaml:4:5: layers[0]: 'flatten' turns 3×8×8 into 192 features, so 'fc1' only works "
        "for the 8×8 input size [resolution-tied]\n"
        "  hint: add {type: adaptive_avgpool2d, output_size: [8, 8]} before flatten to accept "
        "any input size with the same weights"
    )


def test_clean_network_has_no_warnings() -> None:
    text = HEAD + (
        "  - {type: conv2d, out_channels: 4, kernel_size: 3, bias: false}\n"
        "  - batchnorm2d\n  - relu\n  - {type: adaptive_avgpool2d, output_size: 1}\n"
        "  - flatten\n  - {type: linear, out_features: 3}\n"
    )
    assert warnings(text) == []


BLOCK = """name: net
input: [3, 8, 8]
blocks:
  conv_bn:
    args: {out: 4}
    layers:
      - {type: conv2d, out_channels: $out, kernel_size: 3, padding: 1}
      - batchnorm2d
layers:
  - {type: conv_bn, repeat: 6}
  - {type: conv2d, out_channels: 4, kernel_size: 1}
  - batchnorm2d
"""


def test_a_warning_is_reported_once_per_place_in_the_spec() -> None:
    second, first = warnings(BLOCK)  # the walk reaches the top-level pair first
    assert first.startswith(
        "net.yaml:7:9: blocks.conv_bn.layers[0]: conv2d 'layer1.0.conv1' has a bias right "
        "before batchnorm2d 'layer1.0.bn1', which subtracts the per-channel mean and cancels it "
        "[conv-bias-before-batchnorm]\n"
        "  note: in block 'conv_bn' used at net.yaml:10:5 (layers[0])\n"
        "  note: the same in 5 more copies of this layer: 'layer1.1.conv1', 'layer1.2.conv1', "
        "'layer1.3.conv1', 'layer1.4.conv1' and 1 more\n"
    )
    assert second.startswith("net.yaml:11:5: layers[1]: conv2d 'conv1' has a bias")


def test_warnings_are_silenced_per_spec_or_per_layer() -> None:
    assert warnings(BLOCK + "lint: {ignore: [conv-bias-before-batchnorm]}\n") == []
    in_block = BLOCK.replace(
        "padding: 1}", "padding: 1, lint: {ignore: [conv-bias-before-batchnorm]}}"
    )
    (left,) = warnings(in_block)  # the block's copies are silenced, the last conv is not
    assert left.startswith("net.yaml:11:5: layers[1]:")
    assert warnings(in_block.replace("kernel_size: 1}", "kernel_size: 1, lint: {ignore: "
                                      "[conv-bias-before-batchnorm]}}")) == []  # fmt: skip
    compiled = cnnc.compile_spec(BLOCK)
    assert compiled.warnings[0].to_dict()["code"] == "conv-bias-before-batchnorm"


def test_an_unknown_code_is_an_error_that_lists_the_codes() -> None:
    with pytest.raises(cnnc.SpecError) as info:
        cnnc.compile_spec(BLOCK + "lint: {ignore: [conv-bias]}\n")
    message = info.value.problems[0].message
    assert "conv-bias-before-batchnorm" in message and "resolution-tied" in message


def test_every_rule_has_a_documented_code() -> None:
    assert set(get_args(Code)) == set(CODES)
    text = (ROOT / "docs" / "spec.md").read_text()
    assert all(f"`{code}`" in text for code in CODES)
