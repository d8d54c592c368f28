"""Each kind of bad spec gets a located, actionable error: exact messages for each kind."""

from __future__ import annotations

from pathlib import Path

import pytest

import cnnc
from cnnc.errors import CnncError


def errors_of(tmp_path: Path, text: str, kind: type[CnncError] = CnncError) -> list[str]:
    path = tmp_path / "net.yaml"
    path.write_text(text)
    with pytest.raises(kind) as info:
        cnnc.build(path)
    return [p.render().replace(str(path), "net.yaml") for p in info.value.problems]


HEAD = "name: net\ninput: [3, 32, 32]\nlayers:\n"


def test_unknown_type_suggests_and_lists(tmp_path: Path) -> None:
    (error,) = errors_of(tmp_path, HEAD + "  - {type: conv2, out_channels: 6, kernel_size: 5}\n")
    assert error.startswith(
        "net.yaml:4:6: layers[0]: unknown layer type 'conv2'. Did you mean "
        "'conv2d'? Known layer types: adaptive_avgpool2d, "
    )


def test_unknown_key_suggests_and_lists_accepted_keys(tmp_path: Path) -> None:
    text = HEAD + "  - {type: conv2d, out_channels: 6, kernel_size: 5, strid: 2}\n"
    (error,) = errors_of(tmp_path, text)
    assert error == (
        "net.yaml:4:53: layers[0].strid: unknown key 'strid'. Did you mean 'stride'? Accepted "
        "keys: type, name, repeat, first, lint, out_channels, kernel_size, stride, padding, "
        "dilation, groups, bias, padding_mode\n"
        "  hint: remove 'strid' or rename it to one of the accepted keys"
    )


def test_all_errors_are_reported(tmp_path: Path) -> None:
    text = HEAD + (
        "  - {type: conv2d, out_channels: '6', kernel_size: 0}\n"
        "  - {type: maxpool2d, kernel_size: 2, stride: -1}\n"
        "  - {type: linear, out_features: 10, name: 2fc}\n"
    )
    assert errors_of(tmp_path, text, cnnc.SpecError) == [
        "net.yaml:4:34: layers[0].out_channels: input should be a valid integer. Received: '6'",
        "net.yaml:4:52: layers[0].kernel_size: expected a positive integer or a pair [h, w] of "
        "them. Received: 0",
        "net.yaml:5:47: layers[1].stride: expected a positive integer or a pair [h, w] of them. "
        "Received: -1",
        "net.yaml:6:44: layers[2].name: a name must be a Python identifier (letters, digits and "
        "'_', not starting with a digit). Received: '2fc'",
    ]


def test_zero_sized_input_is_refused(tmp_path: Path) -> None:
    (error,) = errors_of(tmp_path, "name: net\ninput: [3, 0, 32]\nlayers: [relu]\n")
    assert error == "net.yaml:2:12: input[1]: input should be greater than 0. Received: 0"


def test_kernel_larger_than_input_shows_formula_and_smallest_input(tmp_path: Path) -> None:
    text = (
        "name: net\ninput: [3, 8, 8]\nlayers:\n"
        "  - {type: conv2d, out_channels: 6, kernel_size: 5}\n"
        "  - {type: maxpool2d, kernel_size: 2}\n"
        "  - {type: conv2d, out_channels: 16, kernel_size: 5}\n"
    )
    (error,) = errors_of(tmp_path, text, cnnc.ShapeError)
    assert error == (
        "net.yaml:6:5: layers[2]: conv2d 'conv2': the convolution window (5 after dilation) is "
        "larger than the padded input height (2 + 0 = 2)\n"
        "  note: input: (B, 6, 2, 2)\n"
        "  note: formula: H_out = floor((H + 2*padding - dilation*(kernel_size - 1) - 1) / "
        "stride) + 1 = floor((2 + 2*0 - 1*(5 - 1) - 1) / 1) + 1 = 0\n"
        "  hint: the smallest input that works is 14×14 (the spec's input is 8×8): set input: "
        "[3, 14, 14], or use a larger input, a smaller kernel_size or more padding"
    )


def test_conv_after_flatten(tmp_path: Path) -> None:
    (error,) = errors_of(
        tmp_path, HEAD + "  - flatten\n  - {type: conv2d, out_channels: 6, kernel_size: 5}\n"
    )
    assert error == (
        "net.yaml:5:5: layers[1]: conv2d 'conv1': conv2d expects a 4-D (batch + C, H, W) input "
        "but receives 2-D (B, 3072)\n  note: input: (B, 3072)\n"
        "  hint: conv2d needs (C, H, W) feature maps; move 'flatten' after the last conv2d"
    )


def test_linear_on_feature_maps_says_flatten_is_missing(tmp_path: Path) -> None:
    (error,) = errors_of(tmp_path, HEAD + "  - {type: linear, out_features: 10}\n")
    assert (
        "hint: a flatten is missing: add 'flatten' before this linear to turn "
        "(B, 3, 32, 32) into (B, 3072)" in error
    )


def test_groups_must_divide_channels(tmp_path: Path) -> None:
    (error,) = errors_of(
        tmp_path, HEAD + "  - {type: conv2d, out_channels: 6, kernel_size: 3, groups: 2}\n"
    )
    assert "conv2d 'conv1': groups=2 must divide the input channels (3)" in error


def test_residual_mismatch_says_how(tmp_path: Path) -> None:
    text = HEAD + (
        "  - type: residual\n    shortcut: identity\n"
        "    body: [{type: conv2d, out_channels: 16, kernel_size: 3, stride: 2, "
        "padding: 1}]\n"
    )
    (error,) = errors_of(tmp_path, text, cnnc.ShapeError)
    assert error == (
        "net.yaml:4:5: layers[0]: residual 'block1': the body gives (16, 16, 16) but the "
        "shortcut gives (3, 32, 32); they differ in C 16 vs 3, H 16 vs 32, W 16 vs 32, and the "
        "two are added\n"
        "  hint: use 'shortcut: projection' (the default) to project the input, or make the "
        "body keep its input shape"
    )


@pytest.mark.parametrize(
    "op,message",
    [
        (
            "concat",
            "concatenation joins channels, so every other axis of the branches must "
            "match; branch1 gives (4, 30, 30), branch2 gives (4, 32, 32)",
        ),
        (
            "add",
            "add needs branch outputs that broadcast (each axis equal, or 1 in one of them); "
            "branch1 gives (4, 30, 30), branch2 gives (4, 32, 32)",
        ),
        (
            "mul",
            "mul needs branch outputs that broadcast (each axis equal, or 1 in one of them); "
            "branch1 gives (4, 30, 30), branch2 gives (4, 32, 32)",
        ),
    ],
)
def test_branch_mismatch_names_the_branches(tmp_path: Path, op: str, message: str) -> None:
    text = HEAD + (
        f"  - type: {op}\n    branches:\n"
        "      - [{type: conv2d, out_channels: 4, kernel_size: 3}]\n"
        "      - [{type: conv2d, out_channels: 4, kernel_size: 3, padding: 1}]\n"
    )
    (error,) = errors_of(tmp_path, text, cnnc.ShapeError)
    assert error.startswith(f"net.yaml:4:5: layers[0]: {op} '{op}': {message}\n  hint: ")


def test_block_problems(tmp_path: Path) -> None:
    text = (
        "name: net\ninput: [3, 32, 32]\nblocks:\n"
        "  a:\n    args: {width: 8}\n    layers: [{type: b, width: $width}]\n"
        "  b:\n    args: {width: int}\n    layers: [{type: a, width: $widht}]\n"
        "layers:\n  - {type: c}\n"
    )
    errors = errors_of(tmp_path, text, cnnc.SpecError)
    assert errors[0].startswith("net.yaml:11:6: layers[0]: unknown layer type 'c'.")
    assert errors[1].startswith(
        "net.yaml:9:31: blocks.b.layers[0].width: unknown reference '$widht' in block 'b'. "
        "Did you mean '$width'? Declared arguments: $width; built-in: $channels"
    )
    assert errors[2] == (
        "net.yaml:4:3: blocks.a: block 'a' uses itself: a -> b -> a; blocks cannot be "
        "recursive\n  hint: build depth with 'repeat: N' on a use instead of recursion"
    )


def test_block_arguments(tmp_path: Path) -> None:
    text = (
        "name: net\ninput: [3, 32, 32]\nblocks:\n  c3:\n    args: {out: int, k: 3}\n"
        "    layers: [{type: conv2d, out_channels: $out, kernel_size: $k}]\n"
        "layers:\n  - {type: c3, uot: 4, k: 1.5}\n"
    )
    assert errors_of(tmp_path, text, cnnc.SpecError) == [
        "net.yaml:8:16: layers[0].uot: block 'c3' has no argument 'uot'. Did you mean 'out'? "
        "Its arguments: out, k\n  hint: arguments are declared under blocks.c3.args",
        "net.yaml:8:27: layers[0].k: argument 'k' must be int. Received: 1.5\n  hint: to "
        "accept both, declare it as 'k: int | float' (a required argument: uses then give it) "
        "under blocks.c3.args",
        "net.yaml:8:5: layers[0]: block 'c3' needs the argument 'out'\n"
        "  hint: add 'out: <value>' to this use",
    ]


def test_error_inside_a_block_names_the_use(tmp_path: Path) -> None:
    text = (
        "name: net\ninput: [3, 32, 32]\nblocks:\n  c3:\n    args: {out: 8}\n"
        "    layers: [{type: conv2d, out_channels: $out, kernel_size: 3}]\n"
        "layers:\n  - {type: c3, out: 0}\n"
    )
    (error,) = errors_of(tmp_path, text, cnnc.SpecError)
    assert error == (
        "net.yaml:6:43: blocks.c3.layers[0].out_channels: input should be greater than 0. "
        "Received: 0\n  note: in block 'c3' used at net.yaml:8:5 (layers[0])"
    )


def test_names_must_be_unique_in_a_scope(tmp_path: Path) -> None:
    text = HEAD + (
        "  - {type: conv2d, out_channels: 6, kernel_size: 3, name: stem}\n"
        "  - {type: relu, name: stem}\n"
    )
    (error,) = errors_of(tmp_path, text, cnnc.SpecError)
    assert error == (
        "net.yaml:5:24: layers[1].name: name 'stem' collides in this scope: also "
        "used at net.yaml:4:5 (layers[0])\n  hint: names must be unique among the "
        "layers of one scope; rename one"
    )


@pytest.mark.parametrize("name", ["forward", "training", "weight_decay2x", "_private", "for"])
def test_names_must_be_usable_attributes(tmp_path: Path, name: str) -> None:
    text = HEAD + f"  - {{type: relu, name: {name}}}\n"
    if name == "weight_decay2x":
        cnnc.compile_spec(HEAD.replace("net", "ok") + f"  - {{type: relu, name: {name}}}\n")
        return
    (error,) = errors_of(tmp_path, text, cnnc.SpecError)
    assert "layers[0].name:" in error


def test_memory_limit_refuses_before_allocating(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_text(
        "name: huge\ninput: [100000]\nlayers:\n  - {type: linear, out_features: 100000}\n"
    )
    with pytest.raises(cnnc.ResourceError) as info:
        cnnc.build(path, max_memory=2**30)
    assert info.value.problems[0].render().replace(str(path), "huge.yaml") == (
        "huge.yaml:1:1: building 'huge' would need about 37.3 GiB (37.3 GiB of fp32 parameters "
        "for 10,000,100,000 parameters, 781.2 KiB of activations per image), more than the "
        "limit of 1.0 GiB\n"
        "  hint: shrink the layers, or raise the limit with --max-memory or $CNNC_MAX_MEMORY"
    )


def test_pool_padding_larger_than_half_kernel(tmp_path: Path) -> None:
    (error,) = errors_of(tmp_path, HEAD + "  - {type: maxpool2d, kernel_size: 2, padding: 2}\n")
    assert error == (
        "net.yaml:4:5: layers[0]: padding 2 is more than half the kernel_size (2); "
        "torch allows at most 1. Received: {'type': 'maxpool2d', 'kernel_size': 2, "
        "'padding': 2}"
    )


@pytest.mark.parametrize(
    "body",
    [
        "[{type: relu, inplace: true}, {type: conv2d, out_channels: 3, kernel_size: 1}]",
        "[identity, {type: relu, inplace: true}]",
    ],
)
def test_inplace_layer_on_a_shared_input_is_refused(tmp_path: Path, body: str) -> None:
    text = HEAD + f"  - type: residual\n    body: {body}\n"
    (error,) = errors_of(tmp_path, text, cnnc.SpecError)
    assert "relu with inplace: true would overwrite the input that the shortcut also reads" in error


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        (
            "{type: split, sizes: [2, 3], branches: [[identity], [relu]]}",
            "split 'split': sizes [2, 3] (2 slices, 2 + 3 = 5 channels) must give each of the 2 "
            "branches a slice and add up to the 3 input channels of (3, 32, 32)\n"
            "  hint: use 2 sizes that add up to 3, or leave sizes out for equal slices",
        ),
        (
            "{type: split, branches: [[identity], [relu]]}",
            "split 'split': 2 equal slices need the 3 input channels of (3, 32, 32) to be a "
            "multiple of 2\n  hint: give the slices' sizes: 'sizes: [a, b, ...]' adding up to "
            "the channels",
        ),
        (
            "{type: permute, dims: [1, 0, 2, 3]}",
            "permute 'permute': dims [1, 0, 2, 3] moves the batch axis; it must stay first\n"
            "  note: input: (B, 3, 32, 32)\n  hint: start dims with 0 and order the other axes",
        ),
        (
            "{type: permute, dims: [0, 2, 1]}",
            "permute 'permute': dims [0, 2, 1] is not an order of the 4 axes 0..3 of a 4-D input "
            "(B, 3, 32, 32)\n  note: input: (B, 3, 32, 32)\n  hint: list every axis once, the "
            "batch axis 0 first, e.g. [0, 2, 3, 1]",
        ),
        (
            "{type: reshape, shape: [-1, 7]}",
            "reshape 'reshape': shape [-1, 7] does not hold the 3072 elements it reshapes (3072 "
            "is not a multiple of 7)\n  note: input: (B, 3, 32, 32)\n  hint: choose sizes whose "
            "product is 3072",
        ),
        (
            "{type: unflatten, dim: 0, unflattened_size: [3, 1]}",
            "unflatten 'unflatten': dim=0 is not an axis after the batch axis of a 4-D input "
            "(B, 3, 32, 32)\n  note: input: (B, 3, 32, 32)\n  hint: use 1..3 (or -1 for the "
            "last axis)",
        ),
        (
            "{type: channel_shuffle, groups: 2}",
            "channel_shuffle 'shuffle': channel_shuffle needs groups=2 to divide the 3 channels "
            "of (3, 32, 32)\n  note: input: (B, 3, 32, 32)\n  hint: choose groups among the "
            "divisors of 3",
        ),
    ],
)
def test_rearranging_layers_say_what_does_not_fit(tmp_path: Path, layer: str, message: str) -> None:
    (error,) = errors_of(tmp_path, HEAD + f"  - {layer}\n", cnnc.ShapeError)
    assert error == "net.yaml:4:5: layers[0]: " + message


def test_every_argument_mistake_of_a_file_comes_in_one_run(tmp_path: Path) -> None:
    text = (
        "name: net\ninput: [3, 32, 32]\nblocks:\n"
        "  unit:\n    args: {k: int, half: 8, out: 8}\n"
        "    layers: [{type: conv2d, out_channels: $out, kernel_size: $k, padding: $k // 2}]\n"
        "  pair:\n    args: {}\n"
        "    layers:\n      - {type: unit, k: [1, 7]}\n      - {type: unit, k: 3, out: 2.5}\n"
        "      - {type: unit, kk: 3}\n"
        "layers:\n  - pair\n  - {type: unit, k: true}\n"
    )
    assert errors_of(tmp_path, text, cnnc.SpecError) == [
        "net.yaml:10:25: blocks.pair.layers[0].k: argument 'k' must be int. Received: [1, 7]\n"
        "  hint: to accept both, declare it as 'k: int | list' under blocks.unit.args",
        "net.yaml:11:33: blocks.pair.layers[1].out: argument 'out' must be int. Received: 2.5\n"
        "  hint: to accept both, declare it as 'out: int | float' (a required argument: uses "
        "then give it) under blocks.unit.args",
        "net.yaml:12:22: blocks.pair.layers[2].kk: block 'unit' has no argument 'kk'. Did you "
        "mean 'k'? Its arguments: k, half, out\n  hint: arguments are declared under "
        "blocks.unit.args",
        "net.yaml:12:9: blocks.pair.layers[2]: block 'unit' needs the argument 'k'\n"
        "  hint: add 'k: <value>' to this use",
        "net.yaml:15:21: layers[1].k: argument 'k' must be int. Received: True\n  hint: to "
        "accept both, declare it as 'k: int | bool' under blocks.unit.args",
    ]


def test_union_arguments_and_free_argument_names(tmp_path: Path) -> None:
    text = (
        "name: net\ninput: [3, 32, 32]\nblocks:\n"
        "  unit:\n    args: {k: int | list, half: 8}\n"
        "    layers: [{type: conv2d, out_channels: $half, kernel_size: $k}]\n"
        "layers:\n  - {type: unit, k: 3}\n  - {type: unit, k: [1, 7]}\n"
    )
    path = tmp_path / "net.yaml"
    path.write_text(text)
    model = cnnc.build(path)
    assert tuple(model.unit1.weight.shape) == (8, 3, 3, 3)
    assert tuple(model.unit2.weight.shape) == (8, 8, 1, 7)


@pytest.mark.parametrize("name", ["channels", "repeat", "name", "1st"])
def test_argument_names_a_use_reads_itself_are_refused(tmp_path: Path, name: str) -> None:
    text = (
        f"name: net\ninput: [3, 32, 32]\nblocks:\n  unit:\n    args: {{{name}: 8}}\n"
        "    layers: [relu]\nlayers:\n  - unit\n"
    )
    (error,) = errors_of(tmp_path, text, cnnc.SpecError)
    assert "argument" in error and (name in error or "letters" in error)
