"""``auto``: time the candidate configurations on the actual device and keep the fastest.

The candidates (``runtime.optimize.candidates``: the registry's showcases that apply here)
are measured side by side with plain eager (interleaved rounds, medians, see
``runtime.benchmark``). A candidate wins only if it beats eager by a margin larger than the
measurement noise, so ``auto`` is never slower than eager; otherwise eager is the answer.
Reduced precision is a candidate only when the caller allows it and the device computes it
natively; ``force_precision`` times it anyway. The choice is cached per device name, ISA
level (and, on CPU, cnnc's kernel sources), torch version, model key and batch size, so a
second run reuses it. A run too short for tuning to pay for itself (``TUNE_WORTH_S``) keeps
eager, unless a choice is cached.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from runtime import cachefile
from runtime.benchmark import Measurement, Schedule, Variant, Workload, device_name, measure
from runtime.kernels.cpu import extension as cpu_ext, isa
from runtime.optimize.candidates import candidates, left_out
from runtime.optimize.config import EAGER, Amp, OptimizeConfig

log = logging.getLogger("runtime.optimize")

CACHE_ENV = "CNNC_CACHE_DIR"
MARGIN = 1.05  # a candidate must beat eager by 5 % to be chosen over it
TUNE_SCHEDULE = Schedule(warmup=2, rounds=7, steps=3)
# The fastest few of the first pass, and eager, are measured again, longer: near-equal
# candidates are where a short pass on a noisy machine picks the wrong one.
FINALISTS = 3
FINAL_SCHEDULE = Schedule(warmup=2, rounds=15, steps=3)
# A final round lasts at least this long: a few-millisecond step takes more steps per round,
# or one identical configuration measures 5 % apart from itself and the pick is noise.
FINAL_ROUND_MS = 50.0
# Tuning times a dozen candidates (and compiles some); below this many seconds of eager
# training a run cannot pay for it, so auto keeps eager.
TUNE_WORTH_S = 60.0
ESTIMATE_SCHEDULE = Schedule(warmup=2, rounds=3, steps=2)


@dataclass
class TuneResult:
    """The chosen configuration, why, and the measurements behind it."""

    config: OptimizeConfig
    reason: str
    key: str
    measurements: list[Measurement]
    cached: bool = False
    finals: list[Measurement] = field(default_factory=list)
    skipped: bool = False  # the run was too short for tuning to pay: eager, untuned


def cache_file() -> Path:
    """Where choices are remembered: $CNNC_CACHE_DIR/autotune.json or ~/.cache/cnnc/."""
    root = os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "cnnc"
    return Path(root) / "autotune.json"


def model_key(model: torch.nn.Module) -> str:
    """A fingerprint of a model's structure and parameter shapes."""
    text = repr(model) + repr([(n, tuple(p.shape)) for n, p in model.state_dict().items()])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _cpu_isa() -> str:
    """cnnc's level, ATen's capability and oneDNN's cap: what the kernels of a step use."""
    onednn = os.environ.get(isa.ONEDNN_ENV) or os.environ.get("DNNL_MAX_CPU_ISA") or "-"
    aten = torch.backends.cpu.get_cpu_capability()
    return f"{isa.level()}, ATen {aten}, oneDNN {onednn}"


def _cache_key(work: Workload, key: str, allowed_amp: tuple[Amp, ...], forced: bool) -> str:
    """Everything a choice depends on; a choice made with reduced precision forced in is
    kept apart, so a plain run never reuses a precision this device only emulates."""
    mode = "train" if work.training else "infer"
    level = ""
    if work.device.type == "cpu":  # and the kernels it timed: a changed kernel tunes again
        level = f" | isa {_cpu_isa()} | kernels {cpu_ext.all_sources_hash()}"
    amp = ",".join(amp for amp in allowed_amp if amp == "off" or not left_out(amp, work.device))
    if forced:
        amp = ",".join(allowed_amp) + " (forced)"
    return (
        f"{device_name(work.device)}{level} | torch {torch.__version__} | {key} | batch "
        f"{work.batch} | {mode} | amp {amp}"
    )


def choose(measurements: list[Measurement], margin: float = MARGIN) -> tuple[OptimizeConfig, str]:
    """The fastest measurement if it beats eager by ``margin``, else eager; and why."""
    eager = next(m for m in measurements if m.config == EAGER)
    ranked = sorted(measurements, key=lambda m: m.step_ms)
    best = ranked[0]
    table = ", ".join(f"{m.name} {m.step_ms:.2f} ms ({m.ratio_vs_eager:.2f}x)" for m in ranked)
    if best.config == EAGER or best.ratio_vs_eager < margin:
        return EAGER, (
            f"eager: no candidate beat eager by {margin:.2f}x or more on this "
            f"device; measured {table}"
        )
    return best.config, (
        f"{best.name}: {best.ratio_vs_eager:.2f}x eager "
        f"({best.step_ms:.2f} ms vs {eager.step_ms:.2f} ms); measured {table}"
    )


def tune(
    work: Workload,
    *,
    key: str | None = None,
    allowed_amp: tuple[Amp, ...] = ("off",),
    schedule: Schedule = TUNE_SCHEDULE,
    final_schedule: Schedule = FINAL_SCHEDULE,
    refresh: bool = False,
    cache: Path | None = None,
    force_precision: bool = False,
    run_steps: int | None = None,
) -> TuneResult:
    """Measure the candidates for ``work`` and return the fastest (cached by default).

    With ``run_steps`` (the length of the run being tuned for), a run whose eager steps
    take less than ``TUNE_WORTH_S`` in all keeps eager without tuning, unless a choice is
    cached or ``refresh`` asks to tune anyway.

    Every candidate is timed in a first pass; the ``FINALISTS`` fastest and eager are then
    timed again side by side with ``final_schedule`` (more steps per round when steps are
    short, see ``FINAL_ROUND_MS``), and the choice is made on that. A reduced precision in
    ``allowed_amp`` that the device does not compute natively is left out, and the reason
    says so (``force_precision`` times it anyway).
    """
    path = cache or cache_file()
    forced = force_precision and any(
        left_out(amp, work.device) != left_out(amp, work.device, True) for amp in allowed_amp
    )
    full_key = _cache_key(work, key or model_key(work.factory()), allowed_amp, forced)
    cached = cachefile.load(path).get(full_key)
    if cached is not None and not refresh:
        config = OptimizeConfig(**cached["config"])
        return TuneResult(config, f"{cached['reason']} (cached)", full_key, [], cached=True)
    if run_steps is not None and not refresh:
        (eager,) = measure(work, [Variant("eager", EAGER)], ESTIMATE_SCHEDULE)
        seconds = run_steps * eager.step_ms / 1000
        if seconds < TUNE_WORTH_S:
            reason = (
                f"the whole run takes about {seconds:.0f} s eager ({run_steps} steps), too "
                "short for tuning to pay off"
            )
            return TuneResult(EAGER, reason, full_key, [eager], skipped=True)
    configs = candidates(work.device, allowed_amp, force_precision=force_precision)
    measurements = measure(work, [Variant(config.name, config) for config in configs], schedule)
    finals = measure(work, _finalists(measurements), _lengthened(final_schedule, measurements))
    config, reason = choose(finals)
    for amp in allowed_amp:
        why = left_out(amp, work.device, force_precision)
        if why is not None:
            reason += f"; {amp} left out: {why}"
    reason += f"; first pass over all {len(measurements)} candidates: " + ", ".join(
        f"{m.name} {m.ratio_vs_eager:.2f}x" for m in sorted(measurements, key=lambda m: m.step_ms)
    )
    error = cachefile.store(path, full_key, {"config": config.to_dict(), "reason": reason})
    if error is not None:  # a cache that cannot be written only costs a re-tune
        log.warning("cannot write the autotune cache %s: %s", path, error)
    log.info("auto chose %s", reason)
    return TuneResult(config, reason, full_key, measurements, finals=finals)


def _lengthened(schedule: Schedule, measurements: list[Measurement]) -> Schedule:
    """``schedule`` with enough steps per round that the fastest candidate's round lasts
    ``FINAL_ROUND_MS``."""
    fastest = min(m.step_ms for m in measurements)
    steps = math.ceil(FINAL_ROUND_MS / fastest) if fastest > 0 else schedule.steps
    return replace(schedule, steps=max(schedule.steps, steps))


def _finalists(measurements: list[Measurement]) -> list[Variant]:
    """Eager and the ``FINALISTS`` fastest other candidates of a first pass."""
    ranked = [m for m in sorted(measurements, key=lambda m: m.step_ms) if m.config != EAGER]
    chosen = [EAGER, *(m.config for m in ranked[:FINALISTS])]
    return [Variant(config.name, config) for config in chosen]
