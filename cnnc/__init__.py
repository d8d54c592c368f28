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
    from cnnc.analysis import Summary, summarize
    from cnnc.artifacts import ArtifactFailure, export, load
    from cnnc.compiler import Compiled, build, compile_spec, generate_code, parse
    from cnnc.graph import Graph, Node

__version__ = "0.1.0"

# Public name → the module that defines it, imported when the name is first read.
_LAZY = {
    "Summary": "cnnc.analysis",
    "summarize": "cnnc.analysis",
    "ArtifactFailure": "cnnc.artifacts",
    "export": "cnnc.artifacts",
    "load": "cnnc.artifacts",
    "Compiled": "cnnc.compiler",
    "build": "cnnc.compiler",
    "compile_spec": "cnnc.compiler",
    "generate_code": "cnnc.compiler",
    "parse": "cnnc.compiler",
    "Graph": "cnnc.graph",
    "Node": "cnnc.graph",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY)


__all__ = [
    "ArtifactFailure",
    "CnncError",
    "Compiled",
    "Graph",
    "Node",
    "ResourceError",
    "ShapeError",
    "SourceError",
    "SpecError",
    "Summary",
    "__version__",
    "build",
    "compile_spec",
    "export",
    "generate_code",
    "load",
    "parse",
    "summarize",
]
