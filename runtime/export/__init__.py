"""Exported artifacts: pt2, AOTInductor, ONNX and generated Python, each with a manifest.

``export_model(model, input_shape, path, fmt)`` writes one; ``load_artifact(path)`` checks
its manifest and loads it. Works on any nn.Module (the ``py`` format takes the module's
source from the caller).

The manifest's names (formats, suffixes, manifest paths) load neither torch.export nor
dynamo; the artifact's are imported on first use (PEP 562).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runtime.export.manifest import FORMATS, Manifest, Target, manifest_path, read_manifest
from runtime.lazy import lazy_exports

if TYPE_CHECKING:
    from runtime.export.artifact import (
        Artifact as Artifact,
        ExportResult as ExportResult,
        export_model as export_model,
        load_artifact as load_artifact,
    )

# Imported when first read: the artifact formats need torch.export and dynamo.
_EXPORTS = {
    "runtime.export.artifact": ("Artifact", "ExportResult", "export_model", "load_artifact")
}

__getattr__, __dir__, _LAZY_NAMES = lazy_exports(__name__, _EXPORTS)
__all__ = ["FORMATS", "Manifest", "Target", "manifest_path", "read_manifest", *_LAZY_NAMES]
