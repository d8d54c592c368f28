"""cnnc: a declarative CNN model-spec compiler.

Write a network as YAML or JSON; cnnc validates it, infers every shape statically, and gives
a plain ``nn.Module`` or a readable generated PyTorch module::

    import cnnc
    model = cnnc.build("specs/lenet.yaml")
    cnnc.export("specs/lenet.yaml", Path("lenet.pt2"), weights=Path("runs/lenet/1"))
    predict = cnnc.load("lenet.pt2")   # or .onnx, .py, an aoti .pt2, a spec + weights
"""

from cnnc.analysis import Summary, summarize
from cnnc.artifacts import ArtifactFailure, export, load
from cnnc.compiler import Compiled, build, compile_spec, generate_code, parse
from cnnc.errors import CnncError, ResourceError, ShapeError, SourceError, SpecError
from cnnc.graph import Graph, Node

__version__ = "0.1.0"

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
