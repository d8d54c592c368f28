"""Export any nn.Module to an artifact with its manifest, and load any artifact back.

``export_model`` makes the model fast for inference first (eval mode, dropout dropped,
batchnorm folded into the convolutions, ReLU after max-pooling, and for pt2 the fused
conv+ReLU custom op), exports it, writes the manifest last, and returns what it did.
``load_artifact`` reads the manifest, checks the files' hashes and that this machine can
run the artifact, then loads it into an ``Artifact``: call it on a batch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from runtime.errors import ArtifactError
from runtime.export import formats
from runtime.export.manifest import (
    FORMATS,
    SUFFIXES,
    Manifest,
    Target,
    check,
    manifest_path,
    read_manifest,
    sha256,
    verify_files,
    versions,
)
from runtime.optimize.rewrites import for_inference


@dataclass(frozen=True)
class ExportResult:
    """The files written (artifact first, manifest last) and the optimizations applied."""

    files: list[Path]
    manifest: Manifest
    notes: list[str] = field(default_factory=list)


def export_model(
    model: nn.Module,
    input_shape: tuple[int, ...],
    path: Path,
    fmt: str,
    *,
    device: torch.device | None = None,
    source: str | None = None,
    entry: str | None = None,
    fuse: bool | None = None,
    producer: dict[str, Any] | None = None,
    preprocess: dict[str, Any] | None = None,
    class_names: list[str] | None = None,
) -> ExportResult:
    """Writes ``model`` as a ``fmt`` artifact at ``path`` and its manifest beside it.

    Args:
        model: Any module taking (B, *input_shape); it is copied, not changed.
        input_shape: One sample's shape; the exported batch dimension is dynamic.
        path: The artifact file (``.pt2`` for pt2 and aoti, ``.onnx``, ``.py``).
        fmt: ``pt2``, ``aoti``, ``onnx`` or ``py``.
        device: Where the artifact runs (default CPU); aoti compiles for it.
        source: For ``py``: the module source that defines ``entry``.
        entry: For ``py``: the class to instantiate (no arguments) when loading.
        fuse: For ``pt2``: keep conv+ReLU as one ``cnnc_runtime::conv2d_relu`` call
            (default: on CUDA, where it is the Triton kernel; on the CPU the unfused graph
            measured as fast).
        producer, preprocess, class_names: Recorded in the manifest as given.

    Raises:
        ArtifactError: an unknown format, a wrong suffix, or an exporter failure (the
            message carries the exporter's error; nothing is left half-written).
    """
    if fmt not in FORMATS:
        raise ArtifactError(f"Unknown format {fmt!r}. One of {', '.join(FORMATS)} was expected.")
    expected = SUFFIXES[fmt]
    if path.suffix != expected:
        raise ArtifactError(
            f"A {fmt} artifact is written to a {expected} file. Received: {path}.",
            hint=f"name the output {path.with_suffix(expected).name}",
        )
    device = device or torch.device("cpu")
    path.parent.mkdir(parents=True, exist_ok=True)
    eval_model = copy.deepcopy(model).eval().to(device)
    example = torch.randn((2, *input_shape), generator=torch.Generator().manual_seed(0))
    example = example.to(device)
    optimizations: dict[str, Any] = {"dtype": "float32"}
    notes: list[str] = []
    if fmt == "py":
        if source is None or entry is None:
            raise ArtifactError("The py format needs the generated source and its class name.")
        files = formats.save_py(eval_model, path, source)
        notes.append("py: the generated module as written by `cnnc build`, not rewritten")
    else:
        fused = (device.type == "cuda" if fuse is None else fuse) and fmt == "pt2"
        fast, report = for_inference(eval_model, fused_conv_relu=fused)
        optimizations["rewrites"] = dict(report.applied)
        notes.append(str(report))
        files = _export_graph(fast, example, path, fmt)
        if fmt == "aoti":
            optimizations["inductor"] = {"freezing": True}
    manifest = Manifest(
        format=fmt,
        files={f.name: sha256(f) for f in files},
        input_shape=list(input_shape),
        output_shape=_output_shape(eval_model, example),
        target=Target.of(device),
        versions={**versions(), **(producer or {}).get("versions", {})},
        optimizations=optimizations,
        producer={k: v for k, v in (producer or {}).items() if k != "versions"},
        preprocess=preprocess,
        class_names=class_names,
        entry=entry,
    )
    return ExportResult([*files, manifest.write(path)], manifest, notes)


def _export_graph(model: nn.Module, example: Tensor, path: Path, fmt: str) -> list[Path]:
    if fmt == "onnx":
        return formats.save_onnx(model, example, path)
    program = formats.export_program(model, example)
    return formats.save_pt2(program, path) if fmt == "pt2" else formats.save_aoti(program, path)


def _output_shape(model: nn.Module, example: Tensor) -> list[int]:
    with torch.inference_mode():
        return list(model(example).shape[1:])


class Artifact:
    """A loaded artifact: call it on a (B, *input_shape) batch to get (B, *output_shape)."""

    def __init__(self, path: Path, manifest: Manifest, run: formats.Runner) -> None:
        self.path = path
        self.manifest = manifest
        self._run = run

    @property
    def format(self) -> str:
        return self.manifest.format

    def __call__(self, batch: Tensor) -> Tensor:
        expected = tuple(self.manifest.input_shape)
        if batch.dim() != len(expected) + 1 or tuple(batch.shape[1:]) != expected:
            raise ArtifactError(
                f"The artifact takes batches of shape (B, {', '.join(map(str, expected))}). "
                f"Received: {tuple(batch.shape)}.",
                hint="add the batch dimension with x.unsqueeze(0) for a single sample",
            )
        with torch.inference_mode():
            return self._run(batch)

    def as_module(self) -> nn.Module:
        """An nn.Module calling the artifact (for harnesses that take modules)."""
        return _ArtifactModule(self)

    def __repr__(self) -> str:
        return f"Artifact({str(self.path)!r}, format={self.format!r})"


class _ArtifactModule(nn.Module):
    def __init__(self, artifact: Artifact) -> None:
        super().__init__()
        self.artifact = artifact

    def forward(self, x: Tensor) -> Tensor:
        return self.artifact(x)


def load_artifact(path: str | Path, device: str | torch.device = "cpu") -> Artifact:
    """Loads an artifact written by ``export_model``, after checking its manifest.

    Raises:
        ArtifactError: no manifest, files that do not match it (truncated, corrupt or
            changed), or a torch release, device or architecture it cannot run on.
        CheckpointError: ``py`` weights that do not fit the generated module.
    """
    path = Path(path)
    device = torch.device(device)
    manifest = read_manifest(path)
    verify_files(manifest, path.parent)
    check(manifest, device)
    if manifest.format == "pt2":
        import runtime.kernels.triton.op  # noqa: F401  (registers the fused custom ops)

        run = formats.load_pt2(path, device)
    elif manifest.format == "aoti":
        run = formats.load_aoti(path, device)
    elif manifest.format == "onnx":
        run = formats.load_onnx(path, device)
    else:
        run = formats.load_py(path, device, manifest.entry or "")
    return Artifact(path, manifest, run)


__all__ = ["Artifact", "ExportResult", "export_model", "load_artifact", "manifest_path"]
