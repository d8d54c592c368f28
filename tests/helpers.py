"""Shared test utilities: spec discovery, meta-device shape capture, generated-code import."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
SPECS = sorted((ROOT / "specs").glob("*.yaml")) + sorted((ROOT / "specs").glob("*.json"))


def spec_ids() -> list[str]:
    return [path.stem for path in SPECS]


def real_shapes(
    model: nn.Module, input_shape: tuple[int, ...], batch: int = 2, device: str = "meta"
) -> dict[str, tuple[int, ...]]:
    """Per-sample output shape of every named submodule, from a real forward pass."""
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = []
    for name, module in model.named_modules():
        if not name:
            continue

        def record(_m: nn.Module, _i: object, out: torch.Tensor, name: str = name) -> None:
            shapes[name] = tuple(out.shape[1:])

        hooks.append(module.register_forward_hook(record))
    try:
        with torch.no_grad():
            model.to(device)(torch.zeros((batch, *input_shape), device=device))
    finally:
        for hook in hooks:
            hook.remove()
    return shapes


def import_path(path: Path, name: str) -> ModuleType:
    """Import a generated module from a file path."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
