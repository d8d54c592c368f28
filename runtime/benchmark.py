"""The benchmark harness: training and inference steps of several variants, side by side.

Rules that make the numbers worth quoting: every variant runs in this one process on the
same batch; rounds interleave the variants (rotating their order) so drift and neighbours'
load hit all of them alike; the first calls (warm-up, including torch.compile's compile
time) are timed apart from the steady state; the figure is the median of the per-round
means; and ratios are taken against the ``eager`` variant measured in the same rounds. A
matmul peak measured in the same run gives the achieved fraction of what the machine can do.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from runtime.optimize.config import EAGER, OptimizeConfig
from runtime.optimize.prepare import Prepared, kernels_needed, prepare
from runtime.optimize.step import StepOptions, TrainStep

ModelFactory = Callable[[], nn.Module]


@dataclass(frozen=True)
class Variant:
    """A named way to run the model: a configuration, optionally on another model (baseline)."""

    name: str
    config: OptimizeConfig = EAGER
    factory: ModelFactory | None = None


@dataclass
class Measurement:
    """Steady-state timing of one variant (milliseconds per step, medians of rounds)."""

    name: str
    config: OptimizeConfig
    step_ms: float
    rounds_ms: list[float]
    warmup_s: float
    compile_s: float
    batch: int
    flops_per_step: float | None = None
    ratio_vs_eager: float = 1.0
    notes: list[str] = field(default_factory=list)

    @property
    def images_per_s(self) -> float:
        return self.batch / (self.step_ms / 1000)

    @property
    def gflops(self) -> float | None:
        """Achieved GFLOP/s, when the FLOPs per step are known."""
        if self.flops_per_step is None:
            return None
        return self.flops_per_step / (self.step_ms / 1000) / 1e9

    def to_dict(self, peak: float | None = None) -> dict[str, object]:
        gflops = self.gflops
        return {
            "name": self.name,
            "config": self.config.to_dict(),
            "step_ms": round(self.step_ms, 4),
            "images_per_s": round(self.images_per_s, 1),
            "ratio_vs_eager": round(self.ratio_vs_eager, 3),
            "gflops": round(gflops, 2) if gflops is not None else None,
            "peak_percent": round(100 * gflops / peak, 1) if gflops and peak else None,
            "compile_s": round(self.compile_s, 3),
            "warmup_s": round(self.warmup_s, 3),
            "notes": self.notes,
        }


@dataclass(frozen=True)
class Workload:
    """What is timed: model, input shape, classes, batch size, device, FLOPs per image, and
    (training) what the run's step adds around forward and backward."""

    factory: ModelFactory
    input_shape: tuple[int, ...]
    num_classes: int
    batch: int
    device: torch.device
    training: bool = True
    flops_per_image: float | None = None
    seed: int = 0
    step: StepOptions = field(default_factory=StepOptions)


@dataclass(frozen=True)
class Schedule:
    """How long to measure: warm-up steps, interleaved rounds, steps per round."""

    warmup: int = 3
    rounds: int = 15
    steps: int = 5


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so wall time measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batch(work: Workload) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(work.seed)
    x = torch.randn((work.batch, *work.input_shape), generator=generator)
    y = torch.randint(0, work.num_classes, (work.batch,), generator=generator)
    return x.to(work.device), y.to(work.device)


def _runner(
    work: Workload, variant: Variant, x: Tensor, y: Tensor
) -> tuple[Callable[[], object], Prepared]:
    torch.manual_seed(work.seed)
    model = (variant.factory or work.factory)()
    model.train(work.training)
    prepared = prepare(model, variant.config, work.device, training=work.training)
    if work.training:
        step = TrainStep.of(prepared, work.step)  # the step fit runs, with the run's options
        return (lambda: step(x, y)), prepared

    def infer() -> Tensor:
        with torch.inference_mode(), prepared.memory(), prepared.autocast():
            return prepared.run(prepared.input(x))

    return infer, prepared


def measure(
    work: Workload, variants: Sequence[Variant], schedule: Schedule = Schedule()
) -> list[Measurement]:
    """Time every variant on the same batch, interleaved; ratios against ``eager``.

    Dynamo's in-memory caches are reset first, so each compiled variant's first call pays
    its own compile (inductor's on-disk cache, when set, still applies and is reported so).
    The C++ kernels the variants run are built first, together (once per machine).
    """
    torch._dynamo.reset()
    _build_kernels(work, variants)
    x, y = _batch(work)
    runners, warmups, firsts, preps = [], [], [], []
    for variant in variants:
        run, prepared = _runner(work, variant, x, y)
        synchronize(work.device)
        start = time.perf_counter()
        run()
        synchronize(work.device)
        firsts.append(time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(schedule.warmup):
            run()
        synchronize(work.device)
        warmups.append(time.perf_counter() - start)
        runners.append(run)
        preps.append(prepared)
    rounds: list[list[float]] = [[] for _ in variants]
    for r in range(schedule.rounds):
        order = list(range(len(variants)))
        order = order[r % len(order) :] + order[: r % len(order)]
        for i in order:
            synchronize(work.device)
            start = time.perf_counter()
            for _ in range(schedule.steps):
                runners[i]()
            synchronize(work.device)
            rounds[i].append((time.perf_counter() - start) / schedule.steps * 1000)
    return _results(work, variants, rounds, firsts, warmups, preps)


def _build_kernels(work: Workload, variants: Sequence[Variant]) -> None:
    """Build every C++ kernel the variants run at once (in parallel, one announcement)."""
    needed = {
        name
        for variant in variants
        for name in kernels_needed(variant.config, work.device, work.training)
    }
    if needed:
        from runtime.kernels.cpu import extension as cpu_ext

        cpu_ext.build(sorted(needed), why="used by the configurations measured")


def _results(
    work: Workload,
    variants: Sequence[Variant],
    rounds: list[list[float]],
    firsts: list[float],
    warmups: list[float],
    preps: list[Prepared],
) -> list[Measurement]:
    flops = work.flops_per_image * work.batch if work.flops_per_image else None
    if flops is not None and not work.training:
        flops /= 3  # the caller gives training FLOPs (3x forward)
    results = []
    for variant, times, first, warm, prepared in zip(
        variants, rounds, firsts, warmups, preps, strict=True
    ):
        median = statistics.median(times)
        compile_s = max(0.0, first - median / 1000)
        notes = [n for n in prepared.notes if n]
        results.append(
            Measurement(
                variant.name,
                variant.config,
                median,
                times,
                warm + first,
                compile_s,
                work.batch,
                flops,
                notes=notes,
            )
        )
    eager = next((m for m in results if m.name == "eager"), results[0])
    for m in results:
        m.ratio_vs_eager = eager.step_ms / m.step_ms
    return results


def matmul_peak(
    device: torch.device, dtype: torch.dtype = torch.float32, size: int = 1024, repeats: int = 10
) -> float:
    """GFLOP/s of a square matmul on ``device`` (median of ``repeats``), measured now."""
    a = torch.randn(size, size, device=device).to(dtype)
    b = torch.randn(size, size, device=device).to(dtype)
    a @ b  # warm-up
    times = []
    for _ in range(repeats):
        synchronize(device)
        start = time.perf_counter()
        a @ b
        synchronize(device)
        times.append(time.perf_counter() - start)
    return 2 * size**3 / statistics.median(times) / 1e9


def device_name(device: torch.device) -> str:
    """A human name for the device: the GPU's model, or the CPU's model and thread count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    model = "CPU"
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model} ({torch.get_num_threads()} threads)"
