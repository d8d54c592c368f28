"""Artifact commands: ``cnnc export``, and what ``predict`` and ``bench`` need of artifacts.

``cnnc predict model.pt2 IMAGE...`` and ``cnnc bench model.onnx`` take an exported artifact
where a spec would go; ``is_artifact`` tells them apart (a manifest beside the file, or an
artifact suffix). torch and the exporters load when a command runs, not at start-up.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from cnnc.artifacts import (
    SUFFIXES,
    artifact_errors,
    export,
    format_of,
    target_device,
)
from cnnc.cli.app import JsonOpt, SpecArg, app, print_json, stderr, stdout, user_errors
from cnnc.compiler import compile_spec
from runtime.export.manifest import FORMATS, manifest_path

if TYPE_CHECKING:
    import torch

    from runtime.export import Artifact


def is_artifact(path: Path) -> bool:
    """An exported model rather than a spec: a manifest beside it or an artifact suffix."""
    return manifest_path(path).exists() or path.suffix in (".pt2", ".onnx")


def open_artifact(path: Path, device: str) -> Artifact:
    """The artifact, on ``device`` (``auto``: the device it was exported for)."""
    from runtime.export import load_artifact

    if device == "auto":
        from runtime.export import read_manifest

        with artifact_errors(path):
            device = read_manifest(path).target.type
    target = target_device(device, path)
    with artifact_errors(path):
        return load_artifact(path, target)


@app.command("export")
@user_errors
def export_command(
    spec: SpecArg,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="The artifact file; default build/<name>.<ext>."),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option("--format", "-f", help="pt2, aoti, onnx or py; default: from -o's suffix."),
    ] = None,
    weights: Annotated[
        Path | None,
        typer.Option("--weights", "-w", help="A .safetensors file or a run directory."),
    ] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda: where the artifact runs.")] = "cpu",
    fuse: Annotated[
        bool | None,
        typer.Option(help="pt2: keep conv+ReLU as one fused op (default: on for cuda)."),
    ] = None,
    json_out: JsonOpt = False,
) -> None:
    """Export SPEC's network (with trained weights) to a pt2, aoti, onnx or py artifact."""
    if fmt is not None and fmt not in FORMATS:
        raise typer.BadParameter(
            f"{fmt!r} is not one of {', '.join(FORMATS)}", param_hint="--format"
        )
    compiled = compile_spec(spec)
    if output is None:
        chosen = fmt or "pt2"
        output = Path("build") / f"{compiled.spec.name}{SUFFIXES[chosen]}"
        fmt = chosen
    if weights is None:
        stderr.print(
            "[yellow]warning[/]: no --weights: the artifact holds freshly initialized weights"
        )
    if format_of(output, fmt) == "aoti":
        stderr.print("compiling with AOTInductor (a minute or so) ...", markup=False)
    result = export(compiled, output, fmt=fmt, weights=weights, device=device, fuse=fuse)
    if json_out:
        print_json(
            {
                "files": [str(f) for f in result.files],
                "format": result.manifest.format,
                "notes": result.notes,
                "manifest": str(result.files[-1]),
            }
        )
        return
    for note in result.notes:
        stderr.print(note, markup=False, style="dim")
    for path in result.files:
        stdout.print(f"wrote {path}", markup=False)


def predict_artifact(path: Path, images: list[Path], device: str) -> tuple[list[str], torch.Tensor]:
    """Class names and softmax probabilities of image files, from an artifact alone."""
    from cnnc.cli.images import read_images
    from runtime.train.transforms import Preprocess

    artifact = open_artifact(path, device)
    manifest = artifact.manifest
    facts: dict[str, Any] = dict(manifest.preprocess or {})
    stored = facts.pop("stored_shape", manifest.input_shape)
    size = facts.get("size")
    facts["size"] = tuple(size) if size else None
    for key in ("mean", "std"):
        facts[key] = tuple(facts[key]) if facts.get(key) else None
    preprocess = Preprocess(**facts)
    batch = preprocess(read_images(images, tuple(stored)))
    with artifact_errors(path):
        scores = artifact(batch.to(artifact_device(artifact)))
    names = manifest.class_names or [str(i) for i in range(scores.shape[1])]
    return names, scores.float().softmax(dim=1).cpu()


def artifact_device(artifact: Artifact) -> torch.device:
    import torch

    target = artifact.manifest.target.type
    return torch.device(target if target == "cuda" and torch.cuda.is_available() else "cpu")
