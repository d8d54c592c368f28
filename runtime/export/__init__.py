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
    from runtime.export.artifact import (
        Artifact as Artifact,
        ExportResult as ExportResult,
        export_model as export_model,
        load_artifact as load_artifact,
    )
    from runtime.export.manifest import (
        FORMATS as FORMATS,
        Manifest as Manifest,
        Target as Target,
        manifest_path as manifest_path,
        read_manifest as read_manifest,
    )

# Each submodule → the public names it defines, imported when first read.
_EXPORTS = {
    "runtime.export.artifact": ("Artifact", "ExportResult", "export_model", "load_artifact"),
    "runtime.export.manifest": ("FORMATS", "Manifest", "Target", "manifest_path", "read_manifest"),
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
