"""Exporting a spec's network to an artifact, and ``cnnc.load``, which brings any back.

``export`` builds the network, loads trained weights, and hands it to ``runtime.export``
with what only cnnc knows: the spec's hash, its source and the resolved spec with every
inferred size, the generated module (for ``py``), and the preprocessing and class names of
the spec's dataset (so ``cnnc predict`` works from the artifact alone). ``load`` takes an
artifact (``.pt2``, ``.onnx``, ``.py`` with its manifest) or a spec and its weights.
Runtime failures come back as located ``CnncError``s, like every other user mistake.
Importing this module loads no torch; exporting and loading do.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnc.analysis import summarize
from cnnc.codegen import class_name
from cnnc.compiler import Compiled, SpecInput, build, compile_spec, generate_code
from cnnc.errors import CnncError, Location, Problem
from runtime.errors import RuntimeFailure
from runtime.export.manifest import SUFFIXES, manifest_path

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from runtime.export import Artifact, ExportResult

_BY_SUFFIX = {".pt2": "pt2", ".onnx": "onnx", ".py": "py"}
_SPEC_SUFFIXES = (".yaml", ".yml", ".json")


class ArtifactFailure(CnncError):
    """An artifact or weights file cannot be written, read or run; located at that file."""


@contextmanager
def artifact_errors(path: Path | str, subject: str = "") -> Iterator[None]:
    """Re-raise runtime failures as a located cnnc error at ``path`` (exit 1 in the CLI)."""
    try:
        yield
    except RuntimeFailure as error:
        problem = Problem(error.message, Location(str(path)), subject, hint=error.hint)
        raise ArtifactFailure([problem]) from None


def target_device(device: str | torch.device, where: Path | str) -> torch.device:
    """``cpu``, ``cuda`` (checked to be present) or ``auto``; a located error otherwise."""
    from runtime.train.distributed import resolve_device

    with artifact_errors(where, "--device"):
        return resolve_device(device)


def format_of(path: Path, fmt: str | None) -> str:
    """The format named, or the one the suffix implies (``.pt2`` means pt2, not aoti)."""
    if fmt is not None:
        return fmt
    if path.suffix in _BY_SUFFIX:
        return _BY_SUFFIX[path.suffix]
    raise ArtifactFailure(
        [
            Problem(
                f"cannot tell the format from the suffix {path.suffix or '(none)'!r}",
                Location(str(path)),
                hint="pass --format pt2|aoti|onnx|py, or name the file .pt2, .onnx or .py",
            )
        ]
    )


def resolve_weights(path: Path) -> Path:
    """A .safetensors file, or the newest checkpoint of a run directory."""
    from runtime.train.checkpoint import find_checkpoint

    if path.is_dir():
        with artifact_errors(path):
            return find_checkpoint(path).weights
    return path


def export(
    spec: SpecInput | Compiled,
    output: Path,
    *,
    fmt: str | None = None,
    weights: Path | None = None,
    device: str = "cpu",
    fuse: bool | None = None,
) -> ExportResult:
    """Writes the spec's network (with ``weights`` if given) as an artifact and its manifest.

    Raises:
        SpecError, ShapeError: the spec is invalid.
        ArtifactFailure: weights that do not fit, an exporter failure, a wrong suffix.
    """
    from runtime.export import export_model

    compiled = spec if isinstance(spec, Compiled) else compile_spec(spec)
    fmt = format_of(output, fmt)
    target = target_device(device, compiled.file)
    model = build(compiled)
    if weights is not None:
        from runtime.train.checkpoint import load_weights

        weights = resolve_weights(weights)
        with artifact_errors(weights):
            load_weights(model, weights)
    preprocess, class_names, notes = _dataset_facts(compiled)
    with artifact_errors(output):
        result = export_model(
            model,
            tuple(compiled.graph.input_shape),
            output,
            fmt,
            device=target,
            source=generate_code(compiled) if fmt == "py" else None,
            entry=class_name(compiled.graph.name) if fmt == "py" else None,
            fuse=fuse,
            producer=_provenance(compiled, weights),
            preprocess=preprocess,
            class_names=class_names,
        )
    return dataclasses.replace(result, notes=[*result.notes, *notes])


def _provenance(compiled: Compiled, weights: Path | None) -> dict[str, Any]:
    from cnnc import __version__

    source = None if compiled.file.startswith("<") else Path(compiled.file)
    resolved = compiled.spec.model_dump(mode="json", exclude_none=True, serialize_as_any=True)
    return {
        "versions": {"cnnc": __version__},
        "spec": {
            "name": compiled.spec.name,
            "hash": compiled.key,
            "file": str(source) if source else None,
            # what rebuilds the network (``cnnc bench ARTIFACT``): the file's text as written
            "source": source.read_text(encoding="utf-8")
            if source
            else json.dumps(compiled.document.data),
            "resolved": resolved,
            "inferred": summarize(compiled.graph).to_dict(),
        },
        "weights": str(weights) if weights else None,
    }


def _dataset_facts(
    compiled: Compiled,
) -> tuple[dict[str, Any] | None, list[str] | None, list[str]]:
    """Preprocessing and class names of the spec's dataset, when it has one and it loads."""
    if compiled.spec.train is None:
        return None, None, []
    from runtime.train import prepare_data

    try:
        data = prepare_data(compiled.spec.train, compiled.graph.input_shape)
    except RuntimeFailure as error:
        note = f"no preprocessing recorded ({error.message.split('. ')[0]})"
        return None, None, [note]
    preprocess = dataclasses.asdict(data.preprocess)
    preprocess.pop("augment")
    preprocess["stored_shape"] = list(data.train[0][0].shape)
    return preprocess, list(data.class_names), []


def load(
    path: str | Path, *, weights: str | Path | None = None, device: str = "cpu"
) -> Callable[[Tensor], Tensor]:
    """Anything cnnc exports, or a spec with its weights, as a callable on a batch.

    ``cnnc.load("lenet.pt2")`` (or ``.onnx``, ``.py``, an aoti ``.pt2``) reads the manifest
    beside the artifact, refuses what this machine cannot run, and returns an ``Artifact``;
    ``cnnc.load("specs/lenet.yaml", weights="runs/lenet/1")`` returns the eval-mode module.

    Raises:
        ArtifactFailure: no manifest, a corrupt or truncated file, another torch release,
            device or architecture; weights that do not fit the spec.
        SpecError, ShapeError: an invalid spec.
    """
    from runtime.export import load_artifact

    path = Path(path)
    if path.suffix in _SPEC_SUFFIXES and not manifest_path(path).exists():
        return _load_spec(path, weights, device)
    target = target_device(device, path)
    with artifact_errors(path):
        artifact: Artifact = load_artifact(path, target)
    return artifact


def _load_spec(path: Path, weights: str | Path | None, device: str) -> nn.Module:
    model = build(path)
    if weights is not None:
        from runtime.train.checkpoint import load_weights

        resolved = resolve_weights(Path(weights))
        with artifact_errors(resolved):
            load_weights(model, resolved)
    return model.eval().to(target_device(device, path))


__all__ = [
    "SUFFIXES",
    "ArtifactFailure",
    "artifact_errors",
    "export",
    "format_of",
    "load",
    "resolve_weights",
    "target_device",
]
