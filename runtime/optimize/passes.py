"""What each optimization does: the hooks its registry entry names.

``model``-scope hooks take ``(model, preparing)`` and return the model to run, sharing the
original's parameters; ``step``/``forward`` hooks take the prepared model and return a
context manager; gates return the reason an optimization is declined here, or None.
Kernel imports are local: a configuration that does not use them never loads them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from runtime.errors import ConfigError

if TYPE_CHECKING:
    from runtime.optimize.config import OptimizeConfig
    from runtime.optimize.prepare import Prepared

log = logging.getLogger("runtime.optimize")


@dataclass
class Preparing:
    """What the hooks see while a model is prepared, and where they leave notes."""

    config: OptimizeConfig
    device: torch.device
    training: bool
    kernels: list[str]
    notes: list[str] = field(default_factory=list)


def check_amp(config: OptimizeConfig, device: torch.device) -> None:
    """fp16 autocast does not train on CPU: refuse it with the fix."""
    if config.amp == "fp16" and device.type == "cpu":
        raise ConfigError(
            "fp16 autocast is not available for training on CPU",
            hint="use amp: bf16 on CPU (this machine's bf16 units), or fp16 on a CUDA device",
            field="optimize.amp",
        )


def fuse_conv_relu(model: nn.Module, preparing: Preparing) -> nn.Module:
    """Swap conv+ReLU pairs for the fused op (in place: the modules share the parameters)."""
    from runtime.kernels import fuse_conv_relu as fuse

    fused, records = fuse(model)
    done = sum(record.fused for record in records)
    declined = [f"{record.conv} ({record.reason})" for record in records if not record.fused]
    preparing.notes.append(
        f"fused_conv_relu: {done} fused"
        + (f"; declined: {', '.join(declined)}" if declined else "")
    )
    return fused


def graph_pass(model: nn.Module, preparing: Preparing, names: set[str]) -> nn.Module:
    """The one torch.fx pass for every ``graph_pass`` entry in ``names``."""
    from runtime.optimize import rewrites

    exact, kernels = "rewrites" in names, "cpu_kernels" in names
    if preparing.training:
        bf16 = preparing.config.amp == "bf16"
        model, report = rewrites.for_training(model, exact=exact, cpu_kernels=kernels, bf16=bf16)
    else:
        model, report = rewrites.for_inference(model, exact=exact, cpu_kernels=kernels)
    preparing.notes.append(str(report))
    return model


def to_channels_last(model: nn.Module, preparing: Preparing) -> nn.Module:
    return model.to(memory_format=torch.channels_last)


def compile_model(model: nn.Module, preparing: Preparing) -> nn.Module:
    """torch.compile; with ``cuda_graphs`` on CUDA, inductor's CUDA-graph mode."""
    config, mode = preparing.config, preparing.config.compile
    if config.cuda_graphs and preparing.device.type == "cuda" and mode == "default":
        mode = "reduce-overhead"
    compiled: nn.Module = torch.compile(model, mode=mode)  # type: ignore[assignment]
    return compiled


@contextlib.contextmanager
def autocast(prepared: Prepared) -> Iterator[None]:
    """The configuration's autocast region around forward and loss."""
    dtype = torch.bfloat16 if prepared.config.amp == "bf16" else torch.float16
    with torch.autocast(prepared.device.type, dtype=dtype):
        yield


@contextlib.contextmanager
def caching_memory(prepared: Prepared) -> Iterator[None]:
    """cnnc's caching CPU allocator around the whole step."""
    from runtime.memory import caching_allocator

    with caching_allocator():
        yield


def cpu_kernels_needed(config: OptimizeConfig, device: torch.device, training: bool) -> list[str]:
    """The C++ kernels ``cpu_kernels`` runs in this configuration."""
    from runtime.kernels.cpu import conv3x3, extension as cpu_ext

    names = ["pool2x2", "batchnorm"] + (["dropout"] if training else [])
    bf16 = training and config.amp == "bf16"
    if bf16 and conv3x3.pays_here():
        names += ["conv3x3", "conv_wgrad"]
    if config.amp == "off" and cpu_ext.path_at("conv_fp32") != "scalar":
        names.append("conv_fp32")
    return names


def cache_memory_needed(config: OptimizeConfig, device: torch.device, training: bool) -> list[str]:
    return ["allocator"]


def cache_memory_gate(preparing: Preparing) -> str | None:
    from runtime import memory

    if not memory.available():
        return "the allocator extension is not available (see the log)"
    memory.limit()  # a bad $CNNC_CPU_CACHE_BYTES is reported here, before training starts
    return None


def cpu_kernels_gate(preparing: Preparing) -> str | None:
    """Built, vectorized at this ISA level, and equal to ATen's results here."""
    from runtime.kernels.cpu import extension as cpu_ext, isa
    from runtime.kernels.parity import trusted

    core = ("pool2x2", "batchnorm")
    if any(cpu_ext.load(name) is None for name in core):
        return "the C++ kernels are not available (see the log)"
    if not all(cpu_ext.vectorized(name) for name in core):
        reason = (
            f"cnnc's kernels have no vector path at ISA level {isa.describe()}, and their "
            "scalar path is slower than ATen's kernels"
        )
        log.info("cpu_kernels declined: %s", reason)
        return reason
    kernels = [name for name in preparing.kernels if name != "allocator"]
    if not trusted(preparing.kernels):
        return f"the parity check against ATen failed at ISA level {isa.level()} (see the log)"
    paths = ", ".join(f"{name} {cpu_ext.path(name)}" for name in kernels)
    preparing.notes.append(f"cpu_kernels at ISA level {isa.level()}: {paths}")
    return None
