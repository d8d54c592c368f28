"""Applying an ``OptimizeConfig`` to a model: the registry's entries, in registry order.

``prepare`` returns the model to run (fused, rewritten, channels-last, compiled) sharing the
original's parameters, so an optimizer built on either updates both. Each entry switched on
is checked (``check`` refuses what cannot work, with a ``ConfigError``), then gated on this
device (a reason declines it, kept in the notes), then applied: model transforms before a
DDP wrap, torch.compile after it, and the step's contexts (autocast, the caching allocator)
by ``Prepared``. A torch.compile failure, which surfaces at the first call, falls back to
eager and keeps the error for the report. Nothing here changes the numerical meaning of the
model except reduced precision, which the caller chose.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from runtime.optimize import passes, registry
from runtime.optimize.config import OptimizeConfig
from runtime.optimize.registry import Optimization

log = logging.getLogger("runtime.optimize")


@dataclass
class Prepared:
    """A model ready to run under a configuration, with what was applied and declined."""

    model: nn.Module
    eager_model: nn.Module
    config: OptimizeConfig
    device: torch.device
    notes: list[str] = field(default_factory=list)
    compile_error: str | None = None
    active: tuple[str, ...] = ()

    def input(self, x: Tensor) -> Tensor:
        """Move a batch to the device and memory format the model expects."""
        x = x.to(self.device, non_blocking=True)
        if self.config.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _scope(self, scope: registry.Scope) -> contextlib.AbstractContextManager[None]:
        """The contexts of the active entries acting in ``scope``; a null context when
        there are none (this runs on every step)."""
        entries = [registry.BY_NAME[name] for name in self.active]
        hooks = [e.apply for e in entries if e.scope == scope and e.apply is not None]
        return _entered(self, hooks) if hooks else contextlib.nullcontext()

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        """The contexts around forward and loss (autocast; nothing in fp32)."""
        return self._scope("forward")

    def memory(self) -> contextlib.AbstractContextManager[None]:
        """The contexts around a whole step (cnnc's caching allocator, when switched on)."""
        return self._scope("step")

    def run(self, x: Tensor) -> Tensor:
        """Forward through the prepared model; on a compile failure, fall back to eager."""
        try:
            out: Tensor = self.model(x)
            return out
        except Exception as exc:
            if self.model is self.eager_model or self.compile_error is not None:
                raise
            self.compile_error = _describe(exc)
            log.warning("torch.compile failed, running eager instead: %s", self.compile_error)
            self.notes.append(f"compile failed, fell back to eager: {self.compile_error}")
            self.model = self.eager_model
            fallback: Tensor = self.model(x)
            return fallback


@contextlib.contextmanager
def _entered(prepared: Prepared, hooks: list[Callable[..., Any]]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for hook in hooks:
            stack.enter_context(hook(prepared))
        yield


def _describe(exc: BaseException) -> str:
    """The error's type and its root cause (compile errors wrap the real one)."""
    root: BaseException = exc
    while True:
        inner = getattr(root, "inner_exception", None) or root.__cause__ or root.__context__
        if not isinstance(inner, BaseException) or inner is root:
            break
        root = inner
    text = str(root).strip().splitlines()
    detail = f"{type(root).__name__}: {text[0]}" if text else type(root).__name__
    return detail if root is exc else f"{type(exc).__name__} ({detail})"


def check(config: OptimizeConfig, device: torch.device) -> None:
    """Refuse configurations that cannot work on ``device`` with a clear error."""
    for entry in registry.enabled(config.to_dict()):
        if entry.check is not None:
            entry.check(config, device)


def kernels_needed(config: OptimizeConfig, device: torch.device, training: bool) -> list[str]:
    """The C++ CPU kernels a configuration runs (built before the model is prepared)."""
    if device.type != "cpu":
        return []
    return [
        name
        for entry in registry.enabled(config.to_dict())
        if entry.kernels is not None
        for name in entry.kernels(config, device, training)
    ]


def _ready(entry: Optimization, preparing: passes.Preparing) -> bool:
    """Whether ``entry`` applies here; a declined one leaves its reason in the notes."""
    if preparing.device.type not in entry.devices:
        reason: str | None = entry.off_device
    else:
        reason = entry.gate(preparing) if entry.gate is not None else None
    if reason is not None:
        preparing.notes.append(f"{entry.name} declined: {reason}")
    return reason is None


def prepare(
    model: nn.Module,
    config: OptimizeConfig,
    device: torch.device,
    *,
    training: bool = True,
    wrap: Callable[[nn.Module], nn.Module] | None = None,
) -> Prepared:
    """Apply ``config`` to ``model`` for ``device``; the result shares its parameters.

    ``wrap`` (e.g. DistributedDataParallel) is applied after the model's transforms and
    before torch.compile, which is the order torch recommends.
    """
    check(config, device)
    kernels = kernels_needed(config, device, training)
    if kernels:  # the kernels this configuration runs, built at once (in parallel) if new
        from runtime.kernels.cpu import extension as cpu_ext

        cpu_ext.build(kernels, why=f"used by the {config.name} configuration")
    preparing = passes.Preparing(config, device, training, kernels)
    active = [e for e in registry.enabled(config.to_dict()) if _ready(e, preparing)]
    model = _transform(model.to(device), [e for e in active if e.scope == "model"], preparing)
    if wrap is not None:
        model = wrap(model)
    eager = model
    model = _transform(model, [e for e in active if e.scope == "wrapped"], preparing)
    names = tuple(entry.name for entry in active)
    return Prepared(model, eager, config, device, preparing.notes, active=names)


def _transform(
    model: nn.Module, entries: list[Optimization], preparing: passes.Preparing
) -> nn.Module:
    """Apply ``entries`` in order; the graph-pass entries share one torch.fx pass."""
    in_pass = {entry.name for entry in entries if entry.graph_pass}
    for entry in entries:
        if entry.graph_pass and entry.name == min(in_pass, key=registry.NAMES.index):
            model = passes.graph_pass(model, preparing, in_pass)
        elif entry.apply is not None:
            model = entry.apply(model, preparing)
    return model
