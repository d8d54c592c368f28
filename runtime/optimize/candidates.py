"""Which configurations are worth timing on a device: the registry's showcases, expanded.

Each registry entry names the configurations that feature it (``showcases``); the lineup is
eager plus all of them that apply to the device, each ``amp: REDUCED`` showcase once per
reduced precision the run allows. ``auto`` times the lineup and ``cnnc bench`` shows it, so
a new optimization is tuned and benchmarked by adding its entry. Reduced precision that the
device does not compute natively is left out with the reason (``precision_unavailable``:
bf16 autocast on a CPU without AVX512-BF16, AMX or ARM BF16 runs emulated, several times
slower than fp32); forcing brings bf16 back, fp16 stays CUDA's.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from runtime.kernels.cpu import isa
from runtime.optimize import registry
from runtime.optimize.config import EAGER, Amp, OptimizeConfig


def precision_unavailable(amp: Amp, device: torch.device) -> str | None:
    """Why autocast to ``amp`` cannot pay on ``device`` (None: it can, or ``amp`` is off)."""
    if amp == "fp16" and device.type != "cuda":
        return "fp16 autocast trains on CUDA only"
    if amp == "bf16" and device.type == "cpu" and not isa.native_bf16():
        return (
            f"this CPU has no native bf16 at level {isa.level()} (it needs AVX512-BF16, AMX "
            "or ARM BF16), so bf16 autocast runs emulated, several times slower than fp32"
        )
    return None


def left_out(amp: Amp, device: torch.device, force_precision: bool = False) -> str | None:
    """Why ``amp``'s candidates are not timed on ``device`` (None: they are). Forcing brings
    back bf16 on a CPU without native bf16; fp16 stays CUDA's."""
    why = precision_unavailable(amp, device)
    return None if force_precision and amp == "bf16" else why


@dataclass(frozen=True)
class Skipped:
    """A configuration left out of a lineup, and why."""

    name: str
    reason: str

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "reason": self.reason}


@dataclass
class Lineup:
    """The configurations to time, eager first, and the ones left out."""

    configs: list[OptimizeConfig] = field(default_factory=lambda: [EAGER])
    skipped: list[Skipped] = field(default_factory=list)


def _expanded(showcase: registry.Showcase, reduced: tuple[Amp, ...]) -> list[OptimizeConfig]:
    if showcase.get("amp") != registry.REDUCED:
        return [OptimizeConfig.model_validate(showcase)]
    return [OptimizeConfig.model_validate({**showcase, "amp": amp}) for amp in reduced]


def lineup(
    device: torch.device, allowed_amp: tuple[Amp, ...] = ("off",), *, force_precision: bool = False
) -> Lineup:
    """Eager and every registry showcase that applies to ``device``, in registry order.

    fp32 showcases always; those with reduced precision once per precision in
    ``allowed_amp``, where the device computes it natively (or with ``force_precision``);
    the others are listed in ``skipped`` with the reason.
    """
    reduced = tuple(amp for amp in allowed_amp if amp != "off")
    out = Lineup()
    for entry in registry.REGISTRY:
        for showcase in entry.showcases:
            for config in _expanded(showcase, reduced):
                if config in out.configs or not registry.pays_on(config.to_dict(), device.type):
                    continue
                why = left_out(config.amp, device, force_precision)
                if why is None:
                    out.configs.append(config)
                elif all(s.name != config.name for s in out.skipped):
                    out.skipped.append(Skipped(config.name, why))
    return out


def candidates(
    device: torch.device, allowed_amp: tuple[Amp, ...] = ("off",), *, force_precision: bool = False
) -> list[OptimizeConfig]:
    """The configurations ``auto`` times on ``device`` (eager first); see ``lineup``."""
    return lineup(device, allowed_amp, force_precision=force_precision).configs
