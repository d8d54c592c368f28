"""Size expressions in block bodies: the grammar (never Python's eval), exact evaluation,
torchvision's make_divisible as the oracle, and located errors that show the parts."""

from __future__ import annotations

from pathlib import Path

import pytest
from torchvision.models._utils import _make_divisible

import cnnc
from cnnc import expressions
from cnnc.expressions import ExpressionError, evaluate, is_expression
from tests.test_errors import errors_of


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("$planes * 4", 64),
        ("$channels // 2", 48),
        ("$k // 2", 1),
        ("$planes * 4 + $channels", 160),
        ("($planes + 2) * 2", 36),
        ("$planes + 2 * 2", 20),  # * before +
        ("$channels - $planes - 8", 72),  # left to right
        ("$channels / 4 * 2", 48),  # exact fractions: 96 / 4 * 2
        ("$channels % 7", 5),
        ("--$planes", 16),
        ("min($planes, 8) + max($k, 1, 2)", 11),
        ("make_divisible($channels / 4, 8)", 24),
        ("make_divisible($planes * 0.25, 8)", 8),
        ("  $planes*4  ", 64),
    ],
)
def test_expressions_evaluate_exactly(text: str, value: int) -> None:
    assert evaluate(text, {"planes": 16, "channels": 96, "k": 3}) == value


@pytest.mark.parametrize("channels", [8, 16, 24, 40, 72, 96, 112, 120, 240, 480, 576, 960])
@pytest.mark.parametrize("ratio", ["/ 4", "/ 16", "* 0.25"])
@pytest.mark.parametrize("divisor", [1, 4, 8])
def test_make_divisible_is_torchvisions(channels: int, ratio: str, divisor: int) -> None:
    value = eval(f"{channels} {ratio}")  # the oracle's own float input (test code, not spec)
    got = evaluate(f"make_divisible($channels {ratio}, {divisor})", {"channels": channels})
    assert got == _make_divisible(value, divisor)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("$planes * 4", True), ("$planes", False), (" $planes ", False), ("relu", False),
     ("same", False), (64, False), ("make_divisible($c / 4, 8)", True)],
)  # fmt: skip
def test_what_counts_as_an_expression(value: object, expected: bool) -> None:
    assert is_expression(value) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("$planes * 4 // 0", "'$planes * 4 // 0' divides by zero: (($planes * 4) // 0) is 64 // 0 "
         "(with $planes = 16)"),
        ("$planes / 3", "'$planes / 3' is 5.33333 with $planes = 16, not a whole number; use // "
         "to divide whole numbers or make_divisible(x, d) to round"),
        ("$planes - 20", "'$planes - 20' is -4 with $planes = 16: negative"),
        ("$planes * 4 +", "'$planes * 4 +' is not a size expression: it ends too soon"),
        ("$planes ** 2", "'$planes ** 2' is not a size expression: unexpected '*'"),
        ("($planes * 4", "'($planes * 4' is not a size expression: expected ')' at the end"),
        ("$planes * planes", "'$planes * planes': unknown function or bare name 'planes' "
         "(functions: min, max, make_divisible; arguments are written with a $, as in $planes)"),
        ("__import__('os') and $planes", "'__import__('os') and $planes' is not a size "
         "expression: cannot read ''os') and $planes'"),
        ("__import__($planes)", "'__import__($planes)': unknown function or bare name "
         "'__import__'"),
        ("$planes; 1", "'$planes; 1' is not a size expression: cannot read '; 1'"),
        ("make_divisible($planes)", "'make_divisible($planes)': make_divisible takes 2 "
         "arguments, not 1"),
        ("make_divisible($planes, 0)", "'make_divisible($planes, 0)': make_divisible needs a "
         "positive integer divisor, not 0 (with $planes = 16)"),
        ("$name * 2", "'$name * 2': $name must be a number, but it is 'relu' (with $name = 'relu')"),
        ("$other * 2", "'$other * 2': $other must be a number, but it is not bound"),
    ],
)  # fmt: skip
def test_bad_expressions_say_what_and_show_the_parts(text: str, message: str) -> None:
    with pytest.raises(ExpressionError) as info:
        evaluate(text, {"planes": 16, "name": "relu"})
    assert str(info.value).startswith(message)


BOTTLENECK = """name: net
input: [3, 32, 32]
blocks:
  bottleneck:
    args: {planes: int, stride: 1}
    layers:
      - type: residual
        body:
          - {type: conv2d, out_channels: $planes, kernel_size: 1, bias: false}
          - batchnorm2d
          - relu
          - {type: conv2d, out_channels: $planes, kernel_size: 3, stride: $stride, padding: 1}
          - relu
          - {type: conv2d, out_channels: $planes * 4, kernel_size: 1, bias: false}
        after: relu
  se:
    args: {divisor: 8}
    layers:
      - type: mul
        branches:
          - [identity]
          - [{type: adaptive_avgpool2d, output_size: 1},
             {type: conv2d, out_channels: "make_divisible($channels / 4, $divisor)", kernel_size: 1},
             relu, {type: conv2d, out_channels: $channels, kernel_size: 1}, hardsigmoid]
layers:
  - {type: conv2d, out_channels: 64, kernel_size: 3, padding: 1}
  - {type: bottleneck, planes: 16}
  - {type: bottleneck, planes: 32, stride: 2}
  - se
"""


def test_blocks_compute_their_sizes() -> None:
    model = cnnc.build(BOTTLENECK)
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    assert shapes["bottleneck1.conv3.weight"] == (64, 16, 1, 1)  # $planes * 4
    assert shapes["bottleneck2.conv3.weight"] == (128, 32, 1, 1)
    assert shapes["bottleneck2.downsample.0.weight"] == (128, 64, 1, 1)  # the shape changed
    assert shapes["se1.branch2.conv1.weight"] == (32, 128, 1, 1)  # make_divisible(128 / 4, 8)


def test_a_failing_expression_is_located_at_the_use(tmp_path: Path) -> None:
    text = BOTTLENECK.replace("{type: bottleneck, planes: 32, stride: 2}", "{type: se, divisor: 0}")
    (error,) = errors_of(tmp_path, text, cnnc.SpecError)
    assert error == (
        "net.yaml:23:43: blocks.se.layers[0].branches[1][1].out_channels: "
        "'make_divisible($channels / 4, $divisor)': make_divisible needs a positive integer "
        "divisor, not 0 (with $channels = 64, $divisor = 0)\n"
        "  note: in block 'se' used at net.yaml:28:5 (layers[2])\n"
        "  hint: check the values the use passes (the note says where it is)"
    )


def test_expressions_are_checked_before_any_use(tmp_path: Path) -> None:
    text = BOTTLENECK.replace("$planes * 4", "$plane * 4").replace("$channels / 4", "$channels /")
    errors = errors_of(tmp_path, text, cnnc.SpecError)
    assert errors[0].startswith(
        "net.yaml:14:42: blocks.bottleneck.layers[0].body[5].out_channels: unknown reference "
        "'$plane' in block 'bottleneck'. Did you mean '$planes'?"
    )
    assert errors[1].startswith(
        "net.yaml:23:43: blocks.se.layers[0].branches[1][1].out_channels: "
        "'make_divisible($channels /, $divisor)' is not a size expression: unexpected ','\n"
        "  hint: a size expression combines"
    )
    assert len(errors) == 2


def test_the_grammar_names_every_function() -> None:
    assert set(expressions.FUNCTIONS) == {"min", "max", "make_divisible"}
