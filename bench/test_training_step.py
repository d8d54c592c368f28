"""Training-step benchmarks of the specs under each optimization, on CPU and CUDA."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import cnnc
from runtime.optimize.candidates import left_out
from runtime.optimize.config import EAGER, OptimizeConfig
from runtime.optimize.prepare import prepare
from runtime.optimize.step import TrainStep

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent
SPECS = {"lenet": 128, "resnet20": 64, "digits": 64, "seed000_cnn": 128}
VARIANTS = {
    "eager": EAGER,
    "channels_last": OptimizeConfig(channels_last=True),
    "channels_last+bf16": OptimizeConfig(channels_last=True, amp="bf16"),
    "compile": OptimizeConfig(compile="default"),
    "rewrites+cpu_kernels": OptimizeConfig(rewrites=True, cpu_kernels=True),
    "rewrites+cpu_kernels+channels_last+bf16": OptimizeConfig(
        rewrites=True, cpu_kernels=True, channels_last=True, amp="bf16"
    ),
    "rewrites+cpu_kernels+channels_last+bf16+cache_memory": OptimizeConfig(
        rewrites=True, cpu_kernels=True, channels_last=True, amp="bf16", cache_memory=True
    ),
    "fused_conv_relu": OptimizeConfig(fused_conv_relu=True, channels_last=True),
}
GPU = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def _applies(config: OptimizeConfig, device: str) -> bool:
    """CPU kernels run on CPU; the fused Triton conv and CUDA graphs on CUDA."""
    if device == "cpu":
        return not (config.fused_conv_relu or config.cuda_graphs)
    return not (config.cpu_kernels or config.cache_memory)


def _marks(config: OptimizeConfig, device: str) -> list[Any]:
    """CUDA cases need a GPU; reduced precision is timed only where it is native (as in
    ``cnnc bench``: bf16 on a CPU without AVX512-BF16, AMX or ARM BF16 is emulated)."""
    if device == "cuda":
        return GPU
    why = left_out(config.amp, torch.device(device))
    return [pytest.mark.skip(reason=f"{config.amp} left out: {why}")] if why else []


CASES = [
    pytest.param(
        spec,
        variant,
        device,
        id=f"{spec}-{variant}-{device}",
        marks=_marks(config, device),
    )
    for spec in sorted(SPECS)
    for variant, config in sorted(VARIANTS.items())
    for device in ("cpu", "cuda")
    if _applies(config, device)
]


def make_step(spec: str, config: OptimizeConfig, device: str, batch: int) -> Callable[[], Any]:
    """A zero-argument training step of ``spec`` under ``config`` on a fixed batch."""
    compiled = cnnc.compile_spec(ROOT / "specs" / f"{spec}.yaml")
    torch.manual_seed(0)
    model = cnnc.build(compiled)
    prepared = prepare(model, config, torch.device(device))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    step = TrainStep(prepared, optimizer, F.cross_entropy)
    x = torch.randn(batch, *compiled.graph.input_shape)
    y = torch.randint(0, compiled.graph.output_shape[0], (batch,))
    for _ in range(3):  # warm-up, compile
        step(x, y)

    def run() -> Any:
        loss, _ = step(x, y)
        if device == "cuda":
            torch.cuda.synchronize()
        return loss

    return run


@pytest.mark.parametrize(("spec", "variant", "device"), CASES)
def test_training_step(benchmark: Any, spec: str, variant: str, device: str) -> None:
    benchmark.group = f"{spec}-{device}"
    run = make_step(spec, VARIANTS[variant], device, SPECS[spec])
    loss = benchmark(run)
    assert torch.isfinite(loss)


@pytest.mark.smoke
def test_smoke(benchmark: Any) -> None:
    """The quick case CI runs: one small spec, eager and cnnc's kernels, a few rounds."""
    kernels = VARIANTS["rewrites+cpu_kernels+channels_last+bf16+cache_memory"]
    if left_out("bf16", torch.device("cpu")):
        kernels = kernels.with_(amp="off")  # no native bf16 here: the fp32 kernels
    for config in (EAGER, kernels):
        run = make_step("digits", config, "cpu", 32)
        assert torch.isfinite(run())
    benchmark.pedantic(make_step("digits", EAGER, "cpu", 32), rounds=3, iterations=1)
