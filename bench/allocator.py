"""What ``cnnc train``'s allocator policy is worth: fresh processes, alternated.

The policy (``runtime.optimize.allocator``) is process-wide and cannot be undone, so it
cannot be interleaved inside one process like ``cnnc bench``'s variants. Instead each
measurement is a fresh process that times training steps of one spec and configuration,
with the policy on or off (``CNNC_ALLOCATOR=default``); processes alternate on/off so drift
hits both alike, and the table gives medians over processes and minor page faults per step.

    .venv/bin/python bench/allocator.py [--processes 5] [--steps 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASES = [("lenet", 128), ("resnet20", 64)]
CONFIGS = {
    "eager": {},
    "cnnc (rewrites+cpu_kernels+channels_last+bf16)": {
        "rewrites": True,
        "cpu_kernels": True,
        "channels_last": True,
        "amp": "bf16",
    },
}

CHILD = """
import json, resource, statistics, sys, time
import torch, torch.nn.functional as F
import cnnc
from runtime.optimize.allocator import keep_freed_memory
from runtime.optimize.config import OptimizeConfig
from runtime.optimize.step import TrainStep, prepare

spec, batch, steps, options = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), json.loads(sys.argv[4])
keep_freed_memory()
compiled = cnnc.compile_spec(spec)
torch.manual_seed(0)
prepared = prepare(cnnc.build(compiled), OptimizeConfig(**options), torch.device("cpu"))
optimizer = torch.optim.SGD(prepared.eager_model.parameters(), lr=0.01, momentum=0.9)
step = TrainStep(prepared, optimizer, F.cross_entropy)
x = torch.randn(batch, *compiled.graph.input_shape)
y = torch.randint(0, compiled.graph.output_shape[0], (batch,))
for _ in range(3):
    step(x, y)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
times = []
for _ in range(steps):
    start = time.perf_counter()
    step(x, y)
    times.append((time.perf_counter() - start) * 1000)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults
print(json.dumps({"ms": statistics.median(times), "faults": faults / steps}))
"""


def run_child(
    spec: str, batch: int, steps: int, options: dict[str, object], keep: bool
) -> dict[str, float]:
    env = {**os.environ, "CNNC_ALLOCATOR": "keep" if keep else "default"}
    args = [sys.executable, "-c", CHILD, str(ROOT / "specs" / f"{spec}.yaml"), str(batch)]
    out = subprocess.run(
        [*args, str(steps), json.dumps(options)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10)
    args = parser.parse_args()
    print(
        "| spec, batch | configuration | glibc default ms | kept ms | speed-up | faults/step default | kept |"
    )
    print("|---|---|---:|---:|---:|---:|---:|")
    for spec, batch in CASES:
        for name, options in CONFIGS.items():
            runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
            for index in range(args.processes):
                for keep in (index % 2 == 0, index % 2 != 0):  # alternate which goes first
                    runs[keep].append(run_child(spec, batch, args.steps, options, keep))
            default = statistics.median(r["ms"] for r in runs[False])
            kept = statistics.median(r["ms"] for r in runs[True])
            faults = [statistics.median(r["faults"] for r in runs[k]) for k in (False, True)]
            print(
                f"| {spec}, {batch} | {name} | {default:.1f} | {kept:.1f} | {default / kept:.2f}x "
                f"| {faults[0]:.0f} | {faults[1]:.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
