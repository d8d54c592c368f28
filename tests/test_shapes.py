"""The shared shape arithmetic against torch as the oracle."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from cnnc.shapes import ShapeProblem, Window, broadcast, check_windows, flatten, same_padding


@settings(max_examples=150, deadline=None)
@given(
    size=st.integers(1, 20),
    kernel=st.integers(1, 6),
    stride=st.integers(1, 4),
    padding=st.integers(0, 3),
    dilation=st.integers(1, 3),
)
def test_conv_window_matches_torch(
    size: int, kernel: int, stride: int, padding: int, dilation: int
) -> None:
    window = Window(size, kernel, stride, padding, padding, dilation)
    x = torch.zeros(1, 1, size, size, device="meta")
    w = torch.zeros(1, 1, kernel, kernel, device="meta")
    if window.padded < window.span:
        with pytest.raises(RuntimeError):
            F.conv2d(x, w, stride=stride, padding=padding, dilation=dilation)
        return
    out = F.conv2d(x, w, stride=stride, padding=padding, dilation=dilation)
    assert out.shape[-1] == window.out


@settings(max_examples=150, deadline=None)
@given(
    size=st.integers(1, 20),
    kernel=st.integers(1, 5),
    stride=st.integers(1, 4),
    padding=st.integers(0, 2),
    dilation=st.integers(1, 2),
    ceil_mode=st.booleans(),
)
def test_pool_window_matches_torch(
    size: int, kernel: int, stride: int, padding: int, dilation: int, ceil_mode: bool
) -> None:
    if padding > kernel // 2:
        return  # torch refuses such padding; the layer's validator reports it
    window = Window(size, kernel, stride, padding, padding, dilation, ceil_mode)
    x = torch.zeros(1, 1, size, size)
    try:
        out = F.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode=ceil_mode)
    except RuntimeError:
        with pytest.raises(ShapeProblem):
            check_windows(window, window, "pooling")
        return
    assert out.shape[-1] == window.out
    assert check_windows(window, window, "pooling") == (window.out, window.out)


@pytest.mark.parametrize("kernel,dilation", [(1, 1), (3, 1), (4, 1), (5, 2), (2, 3)])
def test_same_padding_keeps_size(kernel: int, dilation: int) -> None:
    before, after = same_padding(kernel, dilation)
    x = torch.zeros(1, 1, 9, 9)
    w = torch.zeros(1, 1, kernel, kernel)
    expected = F.conv2d(x, w, padding="same", dilation=dilation).shape[-1]
    assert Window(9, kernel, 1, before, after, dilation).out == expected == 9


def test_window_formula_has_the_numbers() -> None:
    window = Window(4, 5)
    assert window.formula("H") == (
        "H_out = floor((H + 2*padding - dilation*(kernel_size - 1) - 1) / stride) + 1"
        " = floor((4 + 2*0 - 1*(5 - 1) - 1) / 1) + 1 = 0"
    )


@pytest.mark.parametrize(
    "a,b,expected",
    [
        ((8, 5, 5), (8, 1, 1), (8, 5, 5)),
        ((8, 5, 5), (8, 5, 5), (8, 5, 5)),
        ((8, 5, 5), (4, 5, 5), None),
        ((8, 5, 5), (8, 5), None),
    ],
)
def test_broadcast(
    a: tuple[int, ...], b: tuple[int, ...], expected: tuple[int, ...] | None
) -> None:
    assert broadcast(a, b) == expected
    if expected is not None:
        assert (torch.zeros(2, *a) * torch.zeros(2, *b)).shape[1:] == expected


@pytest.mark.parametrize(
    "shape,start,end", [((16, 5, 5), 1, -1), ((4, 3, 3), 2, -1), ((4, 3, 3), 1, 2), ((7,), 1, -1)]
)
def test_flatten_matches_torch(shape: tuple[int, ...], start: int, end: int) -> None:
    expected = torch.zeros(2, *shape).flatten(start, end).shape[1:]
    assert flatten(shape, start, end) == tuple(expected)


def test_flatten_refuses_the_batch_axis() -> None:
    with pytest.raises(ShapeProblem, match="keep the batch dimension"):
        flatten((3, 4), 0, -1)
