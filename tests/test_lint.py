"""Lint warnings for classic mistakes, with their locations and fixes."""

from __future__ import annotations

import cnnc

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
        "which subtracts the per-channel mean and cancels it\n"
        "  hint: set 'bias: false' on this conv2d (saves 4 parameters and their gradient work)"
    )


def test_flatten_tied_to_resolution() -> None:
    text = HEAD + "  - flatten\n  - {type: linear, out_features: 3}\n"
    (warning,) = warnings(text)
    assert warning == (
        "net.yaml:4:5: layers[0]: 'flatten' turns 3×8×8 into 192 features, so 'fc1' only works "
        "for the 8×8 input size\n"
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
