"""Writing and reading each artifact format; every format has a dynamic batch dimension.

======  =================================================  ==================================
format  what is written                                    what loading needs
======  =================================================  ==================================
pt2     ``torch.export`` program (``torch.export.save``)   the same torch minor release
aoti    AOTInductor package: compiled C++/CUDA + weights   same torch, device type and arch
onnx    one ONNX file (dynamo exporter), checked against   onnxruntime (``cnnc[onnx]``)
        onnxruntime at export time
py      generated PyTorch source + ``.safetensors``        torch
======  =================================================  ==================================

Loading never unpickles arbitrary objects: pt2 archives that hold pickled weights or custom
objects are refused, and their tensors load with torch's weights-only unpickler; aoti
weights are raw buffers; ONNX is protobuf; the ``py`` weights are safetensors (the source,
imported as Python, is verified against the manifest's SHA-256 first).
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import logging
import os
import sys
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.export.pt2_archive.constants import (
    TENSOR_CONSTANT_FILENAME_PREFIX,
    WEIGHT_FILENAME_PREFIX,
)

from runtime.errors import ArtifactError
from runtime.train.checkpoint import atomic_write, load_weights, save_weights

Runner = Callable[[Tensor], Tensor]
MAX_BATCH = 1 << 16


def _dynamic_batch() -> tuple[dict[int, Any]]:
    return ({0: torch.export.Dim("batch", min=1, max=MAX_BATCH)},)


def export_program(model: nn.Module, example: Tensor) -> torch.export.ExportedProgram:
    """``torch.export`` of an eval-mode model with the batch dimension dynamic."""
    try:
        return torch.export.export(model, (example,), dynamic_shapes=_dynamic_batch())
    except Exception as error:
        raise ArtifactError(
            f"torch.export could not capture the model: {type(error).__name__}: "
            f"{str(error).strip().splitlines()[0] if str(error).strip() else ''}",
            hint="export with --format py, which needs no graph capture",
        ) from error


def _write_via_temp(path: Path, write: Callable[[Path], object]) -> None:
    """Lets a library write ``path``'s bytes to a temporary name, then moves them atomically."""
    temp = path.with_name(f".{path.stem}.writing{path.suffix}")
    try:
        write(temp)
        atomic_write(path, temp.read_bytes())
    finally:
        temp.unlink(missing_ok=True)


def save_pt2(program: torch.export.ExportedProgram, path: Path) -> list[Path]:
    _write_via_temp(path, lambda temp: torch.export.save(program, str(temp)))
    return [path]


def save_aoti(program: torch.export.ExportedProgram, path: Path) -> list[Path]:
    """AOTInductor package; ``freezing`` folds the weights into the compiled code."""
    try:
        with _quiet_cpp_extension():
            _write_via_temp(
                path,
                lambda temp: torch._inductor.aoti_compile_and_package(
                    program, package_path=str(temp), inductor_configs={"freezing": True}
                ),
            )
    except ArtifactError:
        raise
    except Exception as error:
        raise ArtifactError(
            f"AOTInductor could not compile the model: {type(error).__name__}: {error}",
            hint="export with --format pt2, which needs no C++ compiler",
        ) from error
    return [path]


def save_onnx(model: nn.Module, example: Tensor, path: Path) -> list[Path]:
    """One self-contained ONNX file, then checked against onnxruntime on ``example``."""
    try:
        import onnx  # noqa: F401  (the exporter needs onnx and onnxscript)
        import onnxscript  # noqa: F401
    except ImportError as error:
        raise ArtifactError(
            f"ONNX export needs the onnx and onnxscript packages ({error}).",
            hint="pip install 'cnnc[onnx]'",
        ) from None

    def write(temp: Path) -> None:
        with contextlib.redirect_stdout(io.StringIO()):  # the exporter prints progress
            torch.onnx.export(
                model,
                (example,),
                str(temp),
                dynamo=True,
                dynamic_shapes=_dynamic_batch(),
                input_names=["input"],
                output_names=["output"],
                external_data=False,
            )

    try:
        _write_via_temp(path, write)
    except Exception as error:
        raise ArtifactError(
            f"The ONNX exporter failed: {type(error).__name__}: {error}",
            hint="export with --format pt2 or py",
        ) from error
    check_onnx(model, example, path)
    return [path]


def check_onnx(model: nn.Module, example: Tensor, path: Path) -> None:
    """onnxruntime's output on ``example`` (and on a batch of another size) equals torch's."""
    session = _onnx_session(path)
    for batch in (example, torch.cat([example, example[:1]])):
        with torch.inference_mode():
            expected = model(batch).float().cpu()
        actual = torch.from_numpy(session.run(None, {"input": batch.cpu().numpy()})[0])
        if actual.shape != expected.shape or not torch.allclose(
            actual, expected, rtol=1e-3, atol=1e-4
        ):
            difference = (
                (actual - expected).abs().max().item() if actual.shape == expected.shape else None
            )
            raise ArtifactError(
                f"onnxruntime's output differs from torch's on the exported model "
                f"(batch {len(batch)}: shape {tuple(actual.shape)} vs {tuple(expected.shape)}, "
                f"max difference {difference}).",
                hint="export with --format pt2 or py, and report the model",
            )


def _onnx_session(path: Path) -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise ArtifactError(
            "ONNX artifacts run with onnxruntime, which is not installed.",
            hint="pip install 'cnnc[onnx]'",
        ) from None
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3
    # idle onnxruntime threads must not spin on the cores torch (or the caller) works on
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:
        raise ArtifactError(
            f"onnxruntime cannot read {path}: {error}",
            hint="export the model again with `cnnc export --format onnx`",
        ) from None


def save_py(model: nn.Module, path: Path, source: str) -> list[Path]:
    """The generated module's source and, beside it, the weights as safetensors."""
    weights = path.with_suffix(".safetensors")
    atomic_write(path, source.encode())
    save_weights(model, weights)
    return [path, weights]


# Loading ----------------------------------------------------------------------------------


@contextlib.contextmanager
def _weights_only() -> Iterator[None]:
    """Every ``torch.load`` inside uses the weights-only unpickler, whatever it asks for."""
    name = "TORCH_FORCE_WEIGHTS_ONLY_LOAD"
    before = os.environ.get(name)
    os.environ[name] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _refuse_pickles(path: Path) -> None:
    """A pt2 archive whose weights or constants are pickles (or custom objects) is refused."""
    try:
        with zipfile.ZipFile(path) as archive:
            for name in archive.namelist():
                if not name.endswith("_config.json"):
                    continue
                config = json.loads(archive.read(name)).get("config", {})
                for fqn, entry in config.items():
                    if entry.get("use_pickle") or not str(entry.get("path_name", "")).startswith(
                        (WEIGHT_FILENAME_PREFIX, TENSOR_CONSTANT_FILENAME_PREFIX)
                    ):
                        raise ArtifactError(
                            f"{path} stores '{fqn}' as a pickled object; cnnc loads only "
                            "plain tensors, so that nothing in a file can run code.",
                            hint="export the model again with `cnnc export`",
                        )
    except (zipfile.BadZipFile, ValueError, KeyError, OSError) as error:
        raise ArtifactError(
            f"{path} is not a readable pt2 archive; it is truncated or corrupt ({error}).",
            hint="export the model again with `cnnc export`",
        ) from None


def load_pt2(path: Path, device: torch.device) -> Runner:
    _refuse_pickles(path)
    try:
        with _weights_only():
            program = torch.export.load(str(path))
    except Exception as error:
        raise ArtifactError(
            f"torch.export cannot load {path}: {type(error).__name__}: {error}",
            hint="export the model again with this version of torch",
        ) from None
    module: Runner = program.module().to(device)
    return module


@contextlib.contextmanager
def _quiet_cpp_extension() -> Iterator[None]:
    """torch warns on every AOTInductor load that a CPU-only machine has no CUDA runtime."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def load_aoti(path: Path, device: torch.device) -> Runner:
    try:
        with _quiet_cpp_extension():
            compiled: Runner = torch._inductor.aoti_load_package(
                str(path), device_index=device.index if device.index is not None else -1
            )
    except Exception as error:
        raise ArtifactError(
            f"AOTInductor cannot load {path}: {type(error).__name__}: {error}",
            hint="export the model again on this machine",
        ) from None
    return compiled


def load_onnx(path: Path, device: torch.device) -> Runner:
    session = _onnx_session(path)

    def run(x: Tensor) -> Tensor:
        array = x.detach().float().cpu().numpy()
        return torch.from_numpy(session.run(None, {"input": array})[0]).to(x.device)

    return run


def load_py(path: Path, device: torch.device, entry: str) -> Runner:
    """Imports the generated module, builds ``entry`` and loads the safetensors beside it."""
    name = f"cnnc_artifact_{path.stem}_{abs(hash(path.resolve()))}"
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ArtifactError(f"{path} is not an importable Python file.")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
        model: nn.Module = getattr(module, entry)()
    except Exception as error:
        sys.modules.pop(name, None)
        raise ArtifactError(
            f"The generated module {path} failed to build {entry}: {type(error).__name__}: {error}",
            hint="export the model again with `cnnc export --format py`",
        ) from None
    load_weights(model, path.with_suffix(".safetensors"))
    return model.eval().to(device)
