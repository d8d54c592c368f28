"""Property test: for random valid specs, every inferred shape equals torch's real shape."""

from __future__ import annotations

from typing import Any

import torch
from hypothesis import HealthCheck, assume, given, settings, strategies as st

import cnnc
from tests.helpers import real_shapes

small = st.integers


@st.composite
def conv(draw: st.DrawFn) -> dict[str, Any]:
    layer: dict[str, Any] = {
        "type": "conv2d",
        "kernel_size": draw(st.one_of(small(1, 4), st.tuples(small(1, 4), small(1, 4)).map(list))),
    }
    if draw(st.booleans()):
        layer["groups"] = "depthwise"
    else:
        layer["out_channels"] = draw(small(1, 6))
    if draw(st.booleans()):
        layer["padding"] = "same"
        layer["dilation"] = draw(small(1, 2))
    else:
        layer["stride"] = draw(small(1, 2))
        layer["padding"] = draw(small(0, 2))
    layer["bias"] = draw(st.booleans())
    return layer


@st.composite
def pool(draw: st.DrawFn) -> dict[str, Any]:
    kernel = draw(small(1, 3))
    layer = {
        "type": draw(st.sampled_from(["maxpool2d", "avgpool2d"])),
        "kernel_size": kernel,
        "stride": draw(small(1, 2)),
        "padding": draw(small(0, kernel // 2)),
        "ceil_mode": draw(st.booleans()),
    }
    return layer


elementwise = st.sampled_from(
    [
        "relu",
        "gelu",
        "silu",
        "batchnorm2d",
        "identity",
        "dropout2d",
        "hardswish",
        {"type": "leaky_relu", "negative_slope": 0.1},
    ]
)


@st.composite
def block(draw: st.DrawFn) -> dict[str, Any] | str:
    kind = draw(st.sampled_from(["conv", "pool", "elementwise", "residual", "concat", "add"]))
    if kind == "conv":
        return draw(conv())
    if kind == "pool":
        return draw(pool())
    if kind == "elementwise":
        return draw(elementwise)
    body = [draw(conv()), draw(elementwise)]
    if kind == "residual":
        return {"type": "residual", "body": body, "after": draw(elementwise)}
    width = draw(small(1, 5))
    branch = {"type": "conv2d", "out_channels": width, "kernel_size": 3, "padding": 1}
    return {"type": kind, "branches": [[branch], [dict(branch, kernel_size=1, padding=0)]]}


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    layers = draw(st.lists(block(), min_size=1, max_size=6))
    if draw(st.booleans()):
        layers += ["flatten", {"type": "linear", "out_features": draw(small(1, 5))}]
    shape = [draw(small(1, 4)), draw(small(6, 20)), draw(small(6, 20))]
    return {"name": "random", "input": shape, "layers": layers}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs())
def test_inferred_shapes_equal_real_shapes(spec: dict[str, Any]) -> None:
    try:
        compiled = cnnc.compile_spec(spec)
    except cnnc.ShapeError:
        assume(False)
        return
    with torch.device("meta"):
        model = cnnc.build(compiled)
    expected = {n.qualname: n.out_shape for n in compiled.graph.root.walk() if n.qualname}
    assert real_shapes(model, compiled.graph.input_shape) == expected
    assert (
        compiled.graph.output_shape
        == real_shapes(model, compiled.graph.input_shape)[compiled.graph.root.children[-1].qualname]
    )
