"""Applying an ``OptimizeConfig``: a prepared model and the training step that drives it.

``prepare`` returns the model to run (rewritten, fused, channels-last, compiled) sharing the
original's parameters, so an optimizer built on either updates both. ``TrainStep`` runs
zero_grad → forward → loss → backward → step under the configuration's autocast and
GradScaler. What cannot apply on this device is declined with a logged reason, and a
torch.compile failure (which surfaces at the first call) falls back to eager and keeps the
error for the report. Nothing here changes the numerical meaning of the model except
reduced precision, which the caller chose.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from runtime.errors import ConfigError
from runtime.optimize import rewrites
from runtime.optimize.config import OptimizeConfig

log = logging.getLogger("runtime.optimize")

LossFn = Callable[[Tensor, Tensor], Tensor]


@dataclass
class Prepared:
    """A model ready to run under a configuration, with what was applied and declined."""

    model: nn.Module
    eager_model: nn.Module
    config: OptimizeConfig
    device: torch.device
    notes: list[str] = field(default_factory=list)
    compile_error: str | None = None
    cache_memory: bool = False

    def input(self, x: Tensor) -> Tensor:
        """Move a batch to the device and memory format the model expects."""
        x = x.to(self.device, non_blocking=True)
        if self.config.channels_last and x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        """The configuration's autocast region (a no-op for fp32)."""
        if self.config.amp == "off":
            yield
            return
        dtype = torch.bfloat16 if self.config.amp == "bf16" else torch.float16
        with torch.autocast(self.device.type, dtype=dtype):
            yield

    @contextlib.contextmanager
    def memory(self) -> Iterator[None]:
        """The configuration's allocator: CPU buffers cached across steps, or torch's own."""
        if not self.cache_memory:
            yield
            return
        from runtime.memory import caching_allocator

        with caching_allocator():
            yield

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
    if config.amp == "fp16" and device.type == "cpu":
        raise ConfigError(
            "fp16 autocast is not available for training on CPU",
            hint="use amp: bf16 on CPU (this machine's bf16 units), or fp16 on a CUDA device",
            field="optimize.amp",
        )


def prepare(
    model: nn.Module,
    config: OptimizeConfig,
    device: torch.device,
    *,
    training: bool = True,
    wrap: Callable[[nn.Module], nn.Module] | None = None,
) -> Prepared:
    """Apply ``config`` to ``model`` for ``device``; the result shares its parameters.

    ``wrap`` (e.g. DistributedDataParallel) is applied after the graph-level changes and
    before torch.compile, which is the order torch recommends.
    """
    check(config, device)
    notes: list[str] = []
    model = model.to(device)
    kernels = kernels_needed(config, device, training)
    if kernels:  # the kernels this configuration runs, built at once (in parallel) if new
        from runtime.kernels.cpu import extension as cpu_ext

        cpu_ext.build(kernels, why=f"used by the {config.name} configuration")
    if config.fused_conv_relu:
        model = _fuse(model, notes)
    cpu_kernels = config.cpu_kernels and _cpu_kernels_ready(device, kernels, notes)
    if config.rewrites or cpu_kernels:
        if training:
            bf16 = config.amp == "bf16"
            model, report = rewrites.for_training(
                model, exact=config.rewrites, cpu_kernels=cpu_kernels, bf16=bf16
            )
        else:
            model, report = rewrites.for_inference(
                model, exact=config.rewrites, cpu_kernels=cpu_kernels
            )
        notes.append(str(report))
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if wrap is not None:
        model = wrap(model)
    eager = model
    if config.cuda_graphs and device.type != "cuda":
        notes.append("cuda_graphs declined: needs a CUDA device")
    cache_memory = config.cache_memory and _cache_memory_ready(device, notes)
    if config.compile != "off":
        mode = config.compile
        if config.cuda_graphs and device.type == "cuda" and mode == "default":
            mode = "reduce-overhead"  # inductor's CUDA-graph mode
        model = torch.compile(model, mode=mode)  # type: ignore[assignment]
    return Prepared(model, eager, config, device, notes, cache_memory=cache_memory)


def kernels_needed(config: OptimizeConfig, device: torch.device, training: bool) -> list[str]:
    """The C++ CPU kernels a configuration runs (built before the model is prepared)."""
    if device.type != "cpu":
        return []
    from runtime.kernels.cpu import conv3x3

    names = []
    if config.cpu_kernels:
        names += ["pool2x2", "batchnorm"] + (["dropout"] if training else [])
        if training and config.amp == "bf16" and conv3x3.pays_here():
            names += ["conv3x3", "conv_wgrad"]
    if config.cache_memory:
        names.append("allocator")
    return names


def _cache_memory_ready(device: torch.device, notes: list[str]) -> bool:
    if device.type != "cpu":
        notes.append("cache_memory declined: the caching allocator is for CPU memory")
        return False
    from runtime import memory

    if not memory.available():
        notes.append(
            "cache_memory declined: the allocator extension is not available (see the log)"
        )
        return False
    memory.limit()  # a bad $CNNC_CPU_CACHE_BYTES is reported here, before training starts
    return True


def _cpu_kernels_ready(device: torch.device, kernels: list[str], notes: list[str]) -> bool:
    if device.type != "cpu":
        notes.append("cpu_kernels declined: cnnc's fused kernels are for CPU")
        return False
    from runtime.kernels.cpu import extension as cpu_ext
    from runtime.kernels.cpu import isa
    from runtime.kernels.parity import trusted

    core = ("pool2x2", "batchnorm")
    if any(cpu_ext.load(name) is None for name in core):
        notes.append("cpu_kernels declined: the C++ kernels are not available (see the log)")
        return False
    if not all(cpu_ext.vectorized(name) for name in core):
        reason = (
            f"cnnc's kernels have no vector path at ISA level {isa.describe()}, and their "
            "scalar path is slower than ATen's kernels"
        )
        log.info("cpu_kernels declined: %s", reason)
        notes.append(f"cpu_kernels declined: {reason}")
        return False
    if not trusted(kernels):
        notes.append(
            f"cpu_kernels declined: the parity check against ATen failed at ISA level "
            f"{isa.level()} (see the log)"
        )
        return False
    paths = ", ".join(f"{name} {cpu_ext.path(name)}" for name in kernels if name != "allocator")
    notes.append(f"cpu_kernels at ISA level {isa.level()}: {paths}")
    return True


def _fuse(model: nn.Module, notes: list[str]) -> nn.Module:
    """Swap conv+ReLU pairs for the fused op (in place: the modules share the parameters)."""
    from runtime.kernels import fuse_conv_relu

    fused, records = fuse_conv_relu(model)
    done = sum(record.fused for record in records)
    declined = [f"{record.conv} ({record.reason})" for record in records if not record.fused]
    notes.append(
        f"fused_conv_relu: {done} fused"
        + (f"; declined: {', '.join(declined)}" if declined else "")
    )
    return fused


def make_scaler(prepared: Prepared) -> torch.amp.GradScaler | None:
    """A GradScaler when the configuration trains in fp16 (bf16 needs none)."""
    if prepared.config.amp != "fp16":
        return None
    return torch.amp.GradScaler(prepared.device.type)


class TrainStep:
    """zero_grad → forward → loss → backward → step, under one prepared configuration."""

    def __init__(self, prepared: Prepared, optimizer: torch.optim.Optimizer, loss_fn: LossFn):
        self.prepared = prepared
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.scaler = make_scaler(prepared)

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        """One optimizer step on batch (x, y); returns the loss, detached."""
        prepared = self.prepared
        with prepared.memory():
            x = prepared.input(x)
            y = y.to(prepared.device, non_blocking=True)
            self.optimizer.zero_grad(set_to_none=True)
            with prepared.autocast():
                loss = self.loss_fn(prepared.run(x), y)
            if self.scaler is not None:
                torch.autograd.backward(self.scaler.scale(loss))
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                torch.autograd.backward(loss)
                self.optimizer.step()
            return loss.detach()
