"""Checkpoints: weights as safetensors, resume state with torch.save, both written atomically.

A checkpoint is a pair of files named by the global step, ``step-00000120.safetensors``
(weights) and ``step-00000120.state.pt`` (optimizer, scheduler, position, RNG states,
loadable with ``torch.load(weights_only=True)``), plus ``latest.json`` naming the newest
complete pair. Every file is written to a temporary file in the same directory, flushed,
fsynced and renamed over its target, then the directory is fsynced; ``latest.json`` moves
only after both files of a pair are on disk. A kill or a full disk at any moment therefore
leaves the previous checkpoint intact and ``latest.json`` pointing at it.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import safetensors
import safetensors.torch
import torch
from torch import Tensor, nn

from runtime.errors import CheckpointError

__all__ = [
    "Checkpoint",
    "CheckpointManager",
    "atomic_write",
    "capture_rng",
    "find_checkpoint",
    "load_weights",
    "restore_rng",
    "save_weights",
    "unwrap_model",
]

_ALIASES = "cnnc.aliases"  # metadata key: tied tensors stored once, {alias: stored name}


def unwrap_model(model: nn.Module) -> nn.Module:
    """The user's module inside DistributedDataParallel and/or torch.compile wrappers."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):  # some filesystems cannot fsync a directory
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Writes ``data`` to ``path`` so that readers see the old file or the new one, never a mix.

    Raises:
        CheckpointError: The write failed (e.g. the disk is full); ``path`` is unchanged.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as error:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise CheckpointError(
            f"Writing {path} failed: {error.strerror or error}. A complete write was expected. "
            f"Received: OSError errno={error.errno}.",
            hint="free disk space or choose another run directory; the previous checkpoint "
            "is intact",
        ) from error
    _fsync_dir(path.parent)


def save_weights(model: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Saves the model's state_dict (parameters and buffers) as a safetensors file."""
    tensors: dict[str, Tensor] = {}
    aliases: dict[str, str] = {}
    seen: dict[tuple[int, tuple[int, ...], tuple[int, ...], torch.dtype], str] = {}
    for name, tensor in unwrap_model(model).state_dict().items():
        key = (tensor.data_ptr(), tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype)
        if tensor.numel() and key in seen:  # a tied weight: safetensors refuses shared memory
            aliases[name] = seen[key]
            continue
        seen[key] = name
        tensors[name] = tensor.detach().cpu().contiguous()
    meta = {"format": "pt", **(metadata or {})}
    if aliases:
        meta[_ALIASES] = json.dumps(aliases)
    atomic_write(path, safetensors.torch.save(tensors, metadata=meta))


def read_weights(path: Path) -> dict[str, Tensor]:
    """Reads a safetensors file into CPU tensors; tied tensors come back under every name."""
    data = b""
    try:
        data = path.read_bytes()
        tensors = safetensors.torch.load(data)
        with safetensors.safe_open(str(path), framework="pt") as handle:
            meta = handle.metadata() or {}
    except FileNotFoundError as error:
        raise CheckpointError(
            f"No weights file at {path}. An existing .safetensors file was expected. "
            f"Received: path={path}.",
        ) from error
    except Exception as error:
        raise CheckpointError(
            f"{path} is not a readable safetensors file; it is truncated or corrupt. A "
            f"complete checkpoint was expected. Received: {len(data)} bytes, error: {error}.",
            hint="use an earlier checkpoint, or retrain",
        ) from error
    for alias, name in json.loads(meta.get(_ALIASES, "{}")).items():
        tensors[alias] = tensors[name]
    return tensors


def weights_diff(model: nn.Module, tensors: dict[str, Tensor]) -> list[str]:
    """Human-readable differences between the model's state_dict and ``tensors``."""
    expected = unwrap_model(model).state_dict()
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    shapes = [
        f"{name} is {tuple(tensors[name].shape)} in the checkpoint but "
        f"{tuple(expected[name].shape)} in the model"
        for name in expected
        if name in tensors and tensors[name].shape != expected[name].shape
    ]
    lines = [f"missing: {', '.join(missing)}"] if missing else []
    lines += [f"unexpected: {', '.join(unexpected)}"] if unexpected else []
    return lines + shapes


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Loads a safetensors file written by ``save_weights`` into ``model``, in place.

    Raises:
        CheckpointError: The file is missing, corrupt, or was written by another model
            (the message lists missing, unexpected and differently-shaped tensors).
    """
    path = Path(path)
    tensors = read_weights(path)
    differences = weights_diff(model, tensors)
    if differences:
        raise CheckpointError(
            f"The checkpoint {path} does not fit the model. The model's tensor names and "
            f"shapes were expected. Received: {'; '.join(differences)}.",
            hint="load the checkpoint into the model that wrote it, or train without resume",
        )
    unwrap_model(model).load_state_dict(tensors)


def capture_rng() -> dict[str, Any]:
    """The torch (CPU and CUDA), numpy and Python RNG states, as tensors, lists and numbers."""
    numpy_state: tuple[Any, ...] = tuple(np.random.get_state(legacy=True))
    _, keys, pos, has_gauss, cached = numpy_state  # ("MT19937", uint32 (624,), int, int, float)
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)],
        "python": [version, list(internal), gauss_next],
    }


def restore_rng(state: dict[str, Any]) -> None:
    """Inverse of ``capture_rng``."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    version, internal, gauss_next = state["python"]
    random.setstate((version, tuple(internal), gauss_next))


@dataclass(frozen=True)
class Checkpoint:
    """One complete checkpoint: its weights and resume-state files and its global step."""

    weights: Path
    state: Path
    step: int

    def load_state(self) -> dict[str, Any]:
        """The resume state, loaded with ``weights_only=True`` (no arbitrary unpickling)."""
        try:
            data = self.state.read_bytes()
            state: dict[str, Any] = torch.load(
                io.BytesIO(data), map_location="cpu", weights_only=True
            )
        except Exception as error:
            raise CheckpointError(
                f"{self.state} is not a readable resume state; it is truncated or corrupt. A "
                f"file written by torch.save was expected. Received: error: {error}.",
                hint="use an earlier checkpoint, or retrain",
            ) from error
        return state


def find_checkpoint(path: str | Path) -> Checkpoint:
    """The checkpoint named by a run directory, its ``checkpoints/`` folder or ``latest.json``."""
    path = Path(path)
    pointer = path
    for candidate in (path / "checkpoints" / "latest.json", path / "latest.json"):
        if candidate.is_file():
            pointer = candidate
    try:
        entry = json.loads(pointer.read_text())
        checkpoint = Checkpoint(
            pointer.parent / entry["weights"], pointer.parent / entry["state"], int(entry["step"])
        )
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise CheckpointError(
            f"No checkpoint was found at {path}. A run directory holding "
            "checkpoints/latest.json was expected. "
            f"Received: {path} ({'exists' if path.exists() else 'does not exist'}).",
            hint="pass the run directory printed when the run started, e.g. runs/digits/1",
            field="resume",
        ) from error
    return checkpoint


class CheckpointManager:
    """Writes checkpoint pairs into one directory and keeps the newest ``keep`` of them."""

    def __init__(self, directory: Path, keep: int = 1) -> None:
        self.directory = directory
        self.keep = keep

    def save(self, model: nn.Module, state: dict[str, Any], step: int) -> Checkpoint:
        """Writes weights, then state, then moves ``latest.json`` to them; prunes older pairs."""
        self.directory.mkdir(parents=True, exist_ok=True)
        stem = f"step-{step:08d}"
        checkpoint = Checkpoint(
            self.directory / f"{stem}.safetensors", self.directory / f"{stem}.state.pt", step
        )
        save_weights(model, checkpoint.weights, {"step": str(step)})
        buffer = io.BytesIO()
        torch.save(state, buffer)
        atomic_write(checkpoint.state, buffer.getvalue())
        entry = {"step": step, "weights": checkpoint.weights.name, "state": checkpoint.state.name}
        atomic_write(self.directory / "latest.json", json.dumps(entry).encode())
        self._prune(step)
        return checkpoint

    def _prune(self, newest: int) -> None:
        names = (
            p.name.removesuffix(".safetensors") for p in self.directory.glob("step-*.safetensors")
        )
        steps = sorted({int(n[5:]) for n in names if n[5:].isdigit()}, reverse=True)
        for step in steps[self.keep :]:
            if step != newest:
                for suffix in (".safetensors", ".state.pt"):
                    with contextlib.suppress(OSError):
                        (self.directory / f"step-{step:08d}{suffix}").unlink()
