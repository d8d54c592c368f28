"""Exported artifacts: pt2, AOTInductor, ONNX and generated Python, each with a manifest.

``export_model(model, input_shape, path, fmt)`` writes one; ``load_artifact(path)`` checks
its manifest and loads it. Works on any nn.Module (the ``py`` format takes the module's
source from the caller).

Names are imported on first use (PEP 562): ``runtime.export.manifest`` alone (formats,
suffixes, manifest paths) loads neither torch.export nor dynamo.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runtime.lazy import lazy_exports

if TYPE_CHECKING:
    from runtime.export.artifact import Artifact, ExportResult, export_model, load_artifact
    from runtime.export.manifest import (
        FORMATS,
        Manifest,
        Target,
        manifest_path,
        read_manifest,
    )

# Public name → the submodule that defines it.
_LAZY = {
    "Artifact": "runtime.export.artifact",
    "ExportResult": "runtime.export.artifact",
    "export_model": "runtime.export.artifact",
    "load_artifact": "runtime.export.artifact",
    "FORMATS": "runtime.export.manifest",
    "Manifest": "runtime.export.manifest",
    "Target": "runtime.export.manifest",
    "manifest_path": "runtime.export.manifest",
    "read_manifest": "runtime.export.manifest",
}

__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

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
