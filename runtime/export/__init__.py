"""Exported artifacts: pt2, AOTInductor, ONNX and generated Python, each with a manifest.

``export_model(model, input_shape, path, fmt)`` writes one; ``load_artifact(path)`` checks
its manifest and loads it. Works on any nn.Module (the ``py`` format takes the module's
source from the caller).
"""

from runtime.export.artifact import Artifact, ExportResult, export_model, load_artifact
from runtime.export.manifest import FORMATS, Manifest, Target, manifest_path, read_manifest

__all__ = [
    "FORMATS",
    "Artifact",
    "ExportResult",
    "Manifest",
    "Target",
    "export_model",
    "load_artifact",
    "manifest_path",
    "read_manifest",
]
