"""sequential: a named group of layers, its own naming scope (``features.conv1``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal

from pydantic import Field

from cnnc.graph import Node, Site
from cnnc.layers.base import Composite, Example, register
from cnnc.naming import scope_names
from cnnc.shapes import Shape

if TYPE_CHECKING:
    from cnnc.infer import Inference
    from cnnc.spec import AnyLayer


@register("sequential")
class Sequential(Composite):
    """Layers run one after another inside one named module (torch.nn.Sequential)."""

    type: Literal["sequential"]
    layers: Annotated[list[AnyLayer], Field(min_length=1)]
    names: Literal["generated", "index"] = "generated"

    prefix = "seq"
    always_number = True
    summary = (
        "a named group of layers run in order (a torch.nn.Sequential); names: index names "
        "them 0, 1, 2, ... as torchvision's are"
    )
    examples = (
        Example(
            {
                "type": "sequential",
                "name": "features",
                "layers": [
                    {"type": "conv2d", "out_channels": 4, "kernel_size": 3},
                    "relu",
                    {"type": "maxpool2d", "kernel_size": 2},
                ],
            },
            (1, 10, 10),
        ),
        Example(
            {
                "type": "sequential",
                "name": "features",
                "names": "index",
                "layers": [{"type": "conv2d", "out_channels": 4, "kernel_size": 3}, "relu"],
            },
            (1, 10, 10),
        ),
    )

    def expand(self, inference: Inference, x: Shape, site: Site) -> Node:
        items = inference.items(self.layers, (*site.path, "layers"))
        names = scope_names(inference, [items])[0]
        if self.names == "index":  # as nn.Sequential names them: 0, 1, 2, ... (torchvision);
            # a name the user gives is an identifier, so it never takes a position's
            names = [spec.name or str(i) for i, (spec, _) in enumerate(items)]
        children, y = inference.sequence(items, x, site, names)
        return inference.node(site, self.type, "sequence", x, y, children)
