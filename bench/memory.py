"""The caching CPU allocator measured as ``cnnc train`` meets it: one configuration per process.

Inside one process the heap is shared, so what glibc gives back to the kernel (and faults
in again) depends on every variant run before; this script times each configuration alone in
a fresh process instead, alternating the two configurations, and reports medians of the
per-process medians: step time, minor page faults and kernel (system) time per step.

python bench/memory.py specs/resnet20.yaml --batch 64 --processes 5
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE = {"rewrites": True, "cpu_kernels": True, "channels_last": True, "amp": "bf16"}


def child(spec: str, batch: int, steps: int, config: dict[str, object]) -> dict[str, float]:
    """Time ``steps`` training steps of ``spec`` under ``config`` in this process."""
    import torch
    import torch.nn.functional as F

    import cnnc
    from runtime.optimize.config import OptimizeConfig
    from runtime.optimize.prepare import prepare
    from runtime.optimize.step import TrainStep

    compiled = cnnc.compile_spec(spec)
    torch.manual_seed(0)
    model = cnnc.build(compiled)
    prepared = prepare(model, OptimizeConfig(**config), torch.device("cpu"))  # type: ignore[arg-type]
    step = TrainStep(prepared, torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9),
                     F.cross_entropy)  # fmt: skip
    x = torch.randn(batch, *compiled.graph.input_shape)
    y = torch.randint(0, compiled.graph.output_shape[0], (batch,))
    for _ in range(5):
        step(x, y)
    times, faults = [], []
    cpu = os.times()
    for _ in range(steps):
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        start = time.perf_counter()
        step(x, y)
        times.append((time.perf_counter() - start) * 1000)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    system_ms = (os.times().system - cpu.system) / steps * 1000
    return {
        "step_ms": statistics.median(times),
        "faults": statistics.median(faults),
        "system_ms": system_ms,
    }


def run(spec: str, batch: int, steps: int, config: dict[str, object]) -> dict[str, float]:
    """``child`` in a fresh interpreter."""
    args = [sys.executable, __file__, spec, "--batch", str(batch), "--steps", str(steps),
            "--child", json.dumps(config)]  # fmt: skip
    out = subprocess.run(args, check=True, capture_output=True, text=True, cwd=ROOT).stdout
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("spec")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--processes", type=int, default=5, help="processes per configuration")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.spec, args.batch, args.steps, json.loads(args.child))))
        return
    configs = {"without": BASE, "cache_memory": {**BASE, "cache_memory": True}}
    results: dict[str, list[dict[str, float]]] = {name: [] for name in configs}
    for _ in range(args.processes):
        for name, config in configs.items():
            results[name].append(run(args.spec, args.batch, args.steps, config))
    print(f"{Path(args.spec).name}, batch {args.batch}: rewrites+cpu_kernels+channels_last+bf16,")
    print(f"median of {args.processes} fresh processes each (per process: median of "
          f"{args.steps} steps)\n")  # fmt: skip
    print("| allocator | ms/step | (range over processes) | minor faults/step | system ms/step |")
    print("|---|---:|---|---:|---:|")
    for name, rows in results.items():
        cells = [statistics.median(row[key] for row in rows)
                 for key in ("step_ms", "faults", "system_ms")]  # fmt: skip
        spread = (
            f"{min(row['step_ms'] for row in rows):.1f}-{max(row['step_ms'] for row in rows):.1f}"
        )
        label = "glibc (torch's default)" if name == "without" else "cnnc's cache"
        print(f"| {label} | {cells[0]:.1f} | {spread} | {cells[1]:.0f} | {cells[2]:.1f} |")


if __name__ == "__main__":
    main()
