"""cnnc: a declarative CNN model-spec compiler.

Write a network as YAML or JSON; cnnc validates it, infers every shape statically, and gives
a plain ``nn.Module`` or a readable generated PyTorch module::

    import cnnc
    model = cnnc.build("specs/lenet.yaml")
"""

from cnnc.analysis import Summary, summarize
from cnnc.compiler import Compiled, build, compile_spec, generate_code, parse
from cnnc.errors import CnncError, ResourceError, ShapeError, SourceError, SpecError
from cnnc.graph import Graph, Node

__version__ = "0.1.0"

__all__ = [
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
    "generate_code",
    "parse",
    "summarize",
]
