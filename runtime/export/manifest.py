"""The provenance manifest written beside every exported artifact, and its checks.

``model.pt2`` gets ``model.pt2.manifest.json``: the format, the SHA-256 of every file the
artifact consists of, the model's input and output shapes, the versions that wrote it, the
device and architecture it was compiled for, the optimizations applied, and whatever the
producer adds (cnnc records the spec's hash, its source and the resolved spec). Loading
reads the manifest first and refuses, before touching the artifact, when the files do not
match their hashes or when this machine cannot run what was compiled (see ``check``).

Importing this module loads no torch (``cnnc check`` reads ``FORMATS`` and ``SUFFIXES``);
the functions that ask torch import it.
"""

from __future__ import annotations

import hashlib
import json
import platform
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from runtime.errors import ArtifactError

if TYPE_CHECKING:
    import torch

MANIFEST_VERSION = 1
SUFFIX = ".manifest.json"
FORMATS = ("pt2", "aoti", "onnx", "py")
SUFFIXES = {"pt2": ".pt2", "aoti": ".pt2", "onnx": ".onnx", "py": ".py"}  # of each format's file
# CPU vector ISAs in increasing order; code compiled for one runs on it and those after it.
_CPU_ISAS = ("DEFAULT", "AVX2", "AVX512")


def manifest_path(artifact: Path) -> Path:
    """``model.pt2`` → ``model.pt2.manifest.json`` (one manifest per artifact file)."""
    return artifact.with_name(artifact.name + SUFFIX)


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _triton_version() -> str | None:
    try:
        import triton
    except ImportError:
        return None
    return str(triton.__version__)


@dataclass(frozen=True)
class Target:
    """Where an artifact was compiled for: device type, its name and its architecture.

    ``arch`` is the CUDA compute capability (``sm_90``) or the CPU's vector ISA (``AVX512``).
    """

    type: str
    name: str
    arch: str

    @classmethod
    def of(cls, device: torch.device) -> Target:
        import torch

        if device.type == "cuda":
            major, minor = torch.cuda.get_device_capability(device)
            return cls("cuda", torch.cuda.get_device_name(device), f"sm_{major}{minor}")
        capability = torch.backends.cpu.get_cpu_capability()
        return cls("cpu", platform.processor() or platform.machine(), capability)


def versions() -> dict[str, str | None]:
    """Versions of what reads and runs artifacts here."""
    import torch

    return {
        "torch": torch.__version__,
        "triton": _triton_version(),
        "python": platform.python_version(),
    }


@dataclass
class Manifest:
    """What an artifact is, what wrote it and what it needs (see the module docstring).

    Attributes:
        format: ``pt2``, ``aoti``, ``onnx`` or ``py``.
        files: File name (relative to the manifest's folder) → SHA-256; the first is the
            artifact itself.
        input_shape: One sample's shape; the batch dimension is dynamic.
        output_shape: One sample's output shape.
        target: The device it was compiled for.
        versions: torch, triton and python versions (and the producer's, e.g. cnnc's).
        optimizations: What was applied (rewrites, fused ops), for the record.
        producer: Free-form provenance from the caller (spec hash, resolved spec, ...).
        preprocess: How stored images become model input, when known (``cnnc predict``).
        class_names: Names of the output classes, when known.
        entry: For ``py``: the class the generated module defines.
    """

    format: str
    files: dict[str, str]
    input_shape: list[int]
    output_shape: list[int]
    target: Target
    versions: dict[str, str | None]
    optimizations: dict[str, Any] = field(default_factory=dict)
    producer: dict[str, Any] = field(default_factory=dict)
    preprocess: dict[str, Any] | None = None
    class_names: list[str] | None = None
    entry: str | None = None
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    manifest_version: int = MANIFEST_VERSION

    @property
    def artifact(self) -> str:
        return next(iter(self.files))

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2) + "\n"

    def write(self, artifact: Path) -> Path:
        """Writes the manifest beside ``artifact`` (atomically) and returns its path."""
        from runtime.train.checkpoint import atomic_write

        path = manifest_path(artifact)
        atomic_write(path, self.to_json().encode())
        return path


def read_manifest(artifact: Path) -> Manifest:
    """The manifest beside ``artifact``.

    Raises:
        ArtifactError: no manifest, unreadable JSON, or a manifest version this runtime does
            not read.
    """
    path = manifest_path(artifact)
    if not artifact.exists():
        raise ArtifactError(
            f"No artifact at {artifact}. An exported model (.pt2, .onnx, .py) was expected.",
            hint="check the path, or export one with `cnnc export SPEC -o PATH`",
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ArtifactError(
            f"{artifact} has no manifest beside it ({path.name}). Every artifact cnnc loads "
            "carries one: it records what the artifact was built from and what it needs.",
            hint="export the model again with `cnnc export`, which writes both files",
        ) from None
    except (OSError, ValueError) as error:
        raise ArtifactError(
            f"The manifest {path} is not readable JSON; it is truncated or corrupt. "
            f"Received: error: {error}.",
            hint="export the model again with `cnnc export`",
        ) from None
    return _parse(data, path)


def _parse(data: Any, path: Path) -> Manifest:
    version = data.get("manifest_version") if isinstance(data, dict) else None
    if version != MANIFEST_VERSION:
        writer = data.get("versions", {}).get("cnnc") if isinstance(data, dict) else None
        raise ArtifactError(
            f"The manifest {path} has manifest_version {version!r} (written by cnnc "
            f"{writer or 'unknown'}); this runtime reads version {MANIFEST_VERSION}.",
            hint="export the model again with this version of cnnc",
        )
    try:
        return Manifest(**{**data, "target": Target(**data["target"])})
    except (KeyError, TypeError) as error:
        raise ArtifactError(
            f"The manifest {path} lacks fields or has unknown ones ({error}). A manifest "
            "written by `cnnc export` was expected.",
            hint="export the model again with `cnnc export`",
        ) from None


def verify_files(manifest: Manifest, folder: Path) -> None:
    """Every file of the artifact exists and matches its recorded SHA-256."""
    for name, expected in manifest.files.items():
        path = folder / name
        if not path.is_file():
            raise ArtifactError(
                f"{path} is missing; the manifest lists it as part of the {manifest.format} "
                "artifact.",
                hint="copy every file the manifest lists together",
            )
        actual = sha256(path)
        if actual != expected:
            raise ArtifactError(
                f"{path} does not match its manifest: it is truncated or corrupt, or was "
                f"changed after export ({path.stat().st_size} bytes, SHA-256 "
                f"{actual[:12]}... where {expected[:12]}... was recorded).",
                hint="copy the artifact again, or export it again with `cnnc export`",
            )


def check(manifest: Manifest, device: torch.device) -> None:
    """Refuses an artifact this machine cannot run, saying what differs.

    pt2 needs the torch minor release that wrote it (the serialized graph's schema moves
    between releases); aoti needs that too plus the device type and architecture it was
    compiled for; onnx needs onnxruntime; the generated Python module runs anywhere torch
    does. Every compiled format needs the device type it was exported for.
    """
    target = manifest.target
    if manifest.format in ("pt2", "aoti"):
        _check_torch(manifest)
    if manifest.format in ("pt2", "aoti") and device.type != target.type:
        raise ArtifactError(
            f"This {manifest.format} artifact was compiled for {target.type} ({target.name}); "
            f"it cannot run on {device.type}.",
            hint=f"load it with device={target.type!r}, or export again on this device",
        )
    if manifest.format == "aoti":
        _check_arch(target, device)


def _minor(version: str) -> str:
    return ".".join(version.split("+")[0].split(".")[:2])


def _check_torch(manifest: Manifest) -> None:
    import torch

    wrote = manifest.versions.get("torch") or "unknown"
    if _minor(wrote) != _minor(torch.__version__):
        raise ArtifactError(
            f"This {manifest.format} artifact was written by torch {wrote}; this is torch "
            f"{torch.__version__}. A {manifest.format} artifact only loads with the torch "
            "release that wrote it.",
            hint=f"install torch {_minor(wrote)}.*, export again with this torch, or export "
            "with --format onnx or py, which do not depend on the torch release",
        )


def _check_arch(target: Target, device: torch.device) -> None:
    here = Target.of(device)
    if target.type == "cuda" and here.arch != target.arch:
        raise ArtifactError(
            f"This aoti artifact holds GPU code for {target.arch} ({target.name}); this GPU is "
            f"{here.arch} ({here.name}).",
            hint="export again on this GPU, or export with --format pt2 or onnx",
        )
    unknown = -1 in (_isa_rank(here.arch), _isa_rank(target.arch))
    if target.type == "cpu" and (
        here.arch != target.arch if unknown else _isa_rank(here.arch) < _isa_rank(target.arch)
    ):
        raise ArtifactError(
            f"This aoti artifact holds CPU code for {target.arch} ({target.name}); this CPU "
            f"supports only {here.arch} ({here.name}).",
            hint="export again on this machine, or export with --format pt2 or onnx",
        )


def _isa_rank(isa: str) -> int:
    """Position among the x86 ISAs; an ISA outside that list (VSX, SVE, ...) ranks only
    with itself, so it is compatible with nothing but an equal one."""
    name = isa.upper()
    return next((i for i, known in enumerate(_CPU_ISAS) if name.startswith(known)), -1)
