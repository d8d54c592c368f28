"""residual: ``after(body(x) + shortcut(x))``, the building block of ResNet.

The shortcut is ``identity``, explicit layers, or ``projection`` (the default): identity
when the body keeps the shape, otherwise torchvision's 1x1 convolution (no bias) plus
batchnorm, with the stride that maps the input H×W onto the body's. Children are named like
torchvision's BasicBlock: the body's layers directly (``conv1``, ``bn1``, ...), the
projection ``downsample``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from cnnc.graph import Node, Role, Site
from cnnc.layers.base import Composite, Example, LayerSpec, register
from cnnc.naming import scope_names
from cnnc.shapes import Shape, Window, fmt

if TYPE_CHECKING:
    from cnnc.infer import Inference
    from cnnc.spec import AnyLayer


def as_list(value: Any) -> Any:
    """Accept one layer where a list of layers is expected."""
    return value if isinstance(value, list) or value is None else [value]


def _shortcut(value: Any) -> Any:
    if value in ("identity", "projection"):
        return value
    return as_list(value)


@register("residual")
class Residual(Composite):
    """Adds the block's input (through the shortcut) to the body's output."""

    type: Literal["residual"]
    body: Annotated[list[AnyLayer], Field(min_length=1)]
    shortcut: Annotated[
        Literal["identity", "projection"] | list[AnyLayer], BeforeValidator(_shortcut)
    ] = "projection"
    after: Annotated[list[AnyLayer], BeforeValidator(as_list)] = Field(default_factory=list)

    prefix = "block"
    always_number = True
    summary = "after(body(x) + shortcut(x)); shortcut identity, projection (default) or layers"
    examples = (
        Example(
            {
                "type": "residual",
                "body": [
                    {"type": "conv2d", "out_channels": 8, "kernel_size": 3, "padding": 1},
                    "batchnorm2d",
                    "relu",
                ],
            },
            (8, 6, 6),
        ),
        Example(
            {
                "type": "residual",
                "body": [
                    {
                        "type": "conv2d",
                        "out_channels": 16,
                        "kernel_size": 3,
                        "stride": 2,
                        "padding": 1,
                        "bias": False,
                    },
                    "batchnorm2d",
                ],
                "after": "relu",
            },
            (8, 7, 7),
        ),
        Example(
            {
                "type": "residual",
                "shortcut": [{"type": "linear", "out_features": 6}],
                "body": [{"type": "linear", "out_features": 6}],
            },
            (4,),
        ),
    )

    def expand(self, inference: Inference, x: Shape, site: Site) -> Node:
        body = inference.items(self.body, (*site.path, "body"))
        after = inference.items(self.after, (*site.path, "after"))
        reserved = ("downsample", "shortcut")
        body_names, after_names = scope_names(inference, [body, after], reserved)
        inference.guard_shared_input(body, "the shortcut")
        body_nodes, y = inference.sequence(body, x, site, body_names)
        shortcut = self._shortcut_node(inference, x, y, site)
        if (shortcut.out_shape if shortcut else x) != y:
            got = shortcut.out_shape if shortcut else x
            raise inference.merge_error(
                site,
                "residual",
                f"the body gives {fmt(y)} but the shortcut gives {fmt(got)}; "
                f"{_difference(y, got)}, and the two are added",
                "use 'shortcut: projection' (the default) to project the input, or make "
                "the body keep its input shape",
            )
        after_nodes, z = inference.sequence(after, y, site, after_names)
        children = [*body_nodes, *([shortcut] if shortcut else []), *after_nodes]
        body_role: Role = "body"
        shortcut_role: Role = "shortcut"
        after_role: Role = "after"
        roles = [body_role] * len(body_nodes) + [shortcut_role] * bool(shortcut)
        roles += [after_role] * len(after_nodes)
        return inference.node(site, self.type, "residual", x, z, children, roles)

    def _shortcut_node(self, inference: Inference, x: Shape, y: Shape, site: Site) -> Node | None:
        if self.shortcut == "identity" or (self.shortcut == "projection" and x == y):
            return None
        path = (*site.path, "shortcut")
        if isinstance(self.shortcut, list):
            items = inference.items(self.shortcut, path)
            layers: list[LayerSpec] = [spec for spec, _ in items]
            name = "shortcut"
        else:
            layers, name = self._projection(inference, x, y, site), "downsample"
            items = [(layer, path) for layer in layers]
        names = (
            [str(i) for i in range(len(items))]
            if name == "downsample"
            else (scope_names(inference, [items])[0])
        )
        child = site.child(name, path)
        nodes, out = inference.sequence(items, x, child, names)
        return inference.node(child, "shortcut", "sequence", x, out, nodes)

    def _projection(self, inference: Inference, x: Shape, y: Shape, site: Site) -> list[LayerSpec]:
        from cnnc.layers.conv import Conv2d
        from cnnc.layers.linear import Linear
        from cnnc.layers.norm import BatchNorm2d

        if len(x) == 1 and len(y) == 1:
            return [Linear(type="linear", out_features=y[0], bias=False)]
        stride = _projection_stride(x, y) if len(x) == len(y) == 3 else None
        if stride is None:
            raise inference.merge_error(
                site,
                "residual",
                f"no 1x1 projection maps the input {fmt(x)} onto the body's output {fmt(y)}",
                "give the shortcut explicit layers (shortcut: [...]) or change the body",
            )
        conv = Conv2d(type="conv2d", out_channels=y[0], kernel_size=1, stride=stride, bias=False)
        return [conv, BatchNorm2d(type="batchnorm2d")]


def _projection_stride(x: Shape, y: Shape) -> int | tuple[int, int] | None:
    strides = []
    for size, target in ((x[1], y[1]), (x[2], y[2])):
        stride = max(1, -(-size // target))
        if Window(size, 1, stride).out != target:
            return None
        strides.append(stride)
    return strides[0] if strides[0] == strides[1] else (strides[0], strides[1])


def _difference(a: Shape, b: Shape) -> str:
    if len(a) != len(b):
        return f"their ranks differ ({len(a)} vs {len(b)})"
    axes = ("C", "H", "W") if len(a) == 3 else tuple(f"dim{i + 1}" for i in range(len(a)))
    diffs = [f"{axis} {p} vs {q}" for axis, p, q in zip(axes, a, b, strict=True) if p != q]
    return "they differ in " + ", ".join(diffs)
