"""cnnc: a declarative CNN model-spec compiler.

Write a network as YAML or JSON; cnnc validates it, infers every shape statically, and gives
a plain ``nn.Module`` or a readable generated PyTorch module::

    import cnnc
    model = cnnc.build("specs/lenet.yaml")
    cnnc.export("specs/lenet.yaml", Path("lenet.pt2"), weights=Path("runs/lenet/1"))
    predict = cnnc.load("lenet.pt2")   # or .onnx, .py, an aoti .pt2, a spec + weights

``import cnnc`` loads only the error classes: every other name is imported on first use
(PEP 562), so the command line's ``check`` or ``--help`` never pays for torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cnnc.errors import CnncError, ResourceError, ShapeError, SourceError, SpecError
from runtime.lazy import lazy_exports

if TYPE_CHECKING:
    from cnnc.analysis import (
        Summary as Summary,
        summarize as summarize,
    )
    from cnnc.artifacts import (
        ArtifactFailure as ArtifactFailure,
        export as export,
        load as load,
    )
    from cnnc.compiler import (
        Compiled as Compiled,
        build as build,
        compile_spec as compile_spec,
        generate_code as generate_code,
        parse as parse,
    )
    from cnnc.graph import (
        Graph as Graph,
        Node as Node,
    )

# Each module → the public names it defines, imported when first read.
_EXPORTS = {
    "cnnc.analysis": ("Summary", "summarize"),
    "cnnc.artifacts": ("ArtifactFailure", "export", "load"),
    "cnnc.compiler": ("Compiled", "build", "compile_spec", "generate_code", "parse"),
    "cnnc.graph": ("Graph", "Node"),
}

__version__ = "0.1.0"

__getattr__, __dir__, _LAZY_NAMES = lazy_exports(__name__, _EXPORTS)
__all__ = [
    "CnncError",
    "ResourceError",
    "ShapeError",
    "SourceError",
    "SpecError",
    "__version__",
    *_LAZY_NAMES,
]
