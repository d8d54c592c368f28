"""The registry of optimizations: one entry per way of making a step faster.

Everything else is derived from it: the fields of ``OptimizeConfig`` (a test holds them
equal), the spec's ``optimize:`` keys, the command line's flags, configuration names,
``prepare`` (what each one does to a model or a step, in registry order), the candidates
``auto`` times and the variants ``cnnc bench`` shows (``lineup``), the performance docs'
table (``markdown_table``) and the tests parametrized over ``REGISTRY``.

Adding an optimization is one ``Optimization`` here plus its own code (its hooks live in
``runtime.optimize.passes``, imported when a model is prepared, so this module stays free
of torch for the spec checker).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

REDUCED = "<reduced>"
"""In a showcase, ``amp: REDUCED`` stands for each reduced precision the run allows."""

Scope = Literal["model", "wrapped", "step", "forward"]
Showcase = Mapping[str, object]


def _hook(name: str) -> Callable[..., Any]:
    """``runtime.optimize.passes.<name>``, imported on first call (it needs torch)."""

    def call(*args: Any, **kwargs: Any) -> Any:
        passes = importlib.import_module("runtime.optimize.passes")
        return getattr(passes, name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    return call


@dataclass(frozen=True)
class Optimization:
    """One optimization: its switch, its documentation, where it applies, what it does.

    Attributes:
        name: The ``OptimizeConfig`` field, the spec's ``optimize:`` key and (dashed) the
            command-line flag.
        doc: What it does, in one line (``--help``, the schema, the docs' table).
        helps: Where it pays, in one line (the docs' table).
        label: Its part of a configuration's name (``rewrites+cpu_kernels``).
        choices: The values of a mode option, ``"off"`` first; empty for an on/off switch.
        devices: The device types it applies to; elsewhere it is declined, ``off_device`` says why.
        pays_on: The device types where its showcases are worth timing (default: ``devices``).
        exact: Whether the step keeps fp32 numerics (only reduced precision does not).
        scope: Where it acts: ``model`` (transforms the module, before a DDP wrap),
            ``wrapped`` (after it: torch.compile), ``step`` or ``forward`` (a context
            around the whole step, or around forward and loss).
        graph_pass: Applied inside the one torch.fx pass of ``runtime.optimize.rewrites``.
        apply: ``(model, preparing) -> model`` for ``model``/``wrapped`` scopes, or
            ``(prepared) -> context manager`` for ``step``/``forward``.
        gate: ``(preparing) -> reason or None``: availability and parity, checked on the
            device before it is applied (a reason declines it, logged in the notes).
        check: ``(config, device)``: raises ``ConfigError`` for a setting that cannot work.
        kernels: ``(config, device, training) -> names``: the C++ kernels it runs, built
            before the model is prepared.
        showcases: Configurations (partial settings) that feature it: ``auto``'s candidates
            and ``cnnc bench``'s variants.
    """

    name: str
    doc: str
    helps: str
    label: str = ""
    choices: tuple[str, ...] = ()
    devices: tuple[str, ...] = ("cpu", "cuda")
    off_device: str = ""
    pays_on: tuple[str, ...] = ()
    exact: bool = True
    scope: Scope = "model"
    graph_pass: bool = False
    apply: Callable[..., Any] | None = None
    gate: Callable[..., str | None] | None = None
    check: Callable[..., None] | None = None
    kernels: Callable[..., list[str]] | None = None
    showcases: tuple[Showcase, ...] = ()

    @property
    def flag(self) -> str:
        """The command-line flag: ``--channels-last``."""
        return "--" + self.name.replace("_", "-")

    @property
    def default(self) -> object:
        return self.choices[0] if self.choices else False

    def is_on(self, value: object) -> bool:
        return value not in (False, "off")

    def part(self, value: object) -> str:
        """This option's part of a configuration name: ``compile``, ``compile-max-autotune``,
        ``bf16`` (a precision names itself)."""
        label = self.label or self.name
        if not isinstance(value, str) or value == "default":
            return label
        return value if self.name == "amp" else f"{label}-{value}"


# ``cpu_kernels`` and ``cache_memory`` are timed together: the kernels' step allocates
# little else, so the allocator's gain shows with them.
_OURS: Showcase = {"rewrites": True, "cpu_kernels": True, "cache_memory": True}

REGISTRY: tuple[Optimization, ...] = (
    Optimization(
        "fused_conv_relu",
        doc="conv2d + bias + ReLU as one Triton implicit-GEMM op (forward and backward)",
        helps="CUDA; on CPU the op runs oneDNN's fused convolution and is not faster",
        label="fused",
        apply=_hook("fuse_conv_relu"),
        showcases=({"fused_conv_relu": True, "channels_last": True},),
        pays_on=("cuda",),
    ),
    Optimization(
        "rewrites",
        doc="exact graph rewrites: ReLU after max-pooling; for inference also dropout "
        "removed and conv+batchnorm folded",
        helps="any model torch.fx can trace; outputs and gradients are equal (tested)",
        graph_pass=True,
        showcases=({"rewrites": True, "channels_last": True},),
    ),
    Optimization(
        "cpu_kernels",
        doc="cnnc's C++ CPU kernels: ReLU + 2x2 max-pooling, BatchNorm2d [+ add] [+ ReLU], "
        "dropout masks, in bf16 on AVX512-BF16 CPUs 3x3 convolutions, and in fp32 small "
        "convolutions (direct or Winograd) per layer and pass where they measure faster "
        "than oneDNN",
        helps="CPUs with AVX2, AVX-512 or NEON (at the scalar level they are declined: slower "
        "than ATen's); pooling and batch norm are ATen's slowest CPU ops, small "
        "convolutions oneDNN's least efficient",
        devices=("cpu",),
        off_device="cnnc's fused kernels are for CPU",
        graph_pass=True,
        gate=_hook("cpu_kernels_gate"),
        kernels=_hook("cpu_kernels_needed"),
        showcases=(
            _OURS,
            {**_OURS, "channels_last": True},
            {**_OURS, "amp": REDUCED},
            {**_OURS, "channels_last": True, "amp": REDUCED},
        ),
    ),
    Optimization(
        "channels_last",
        doc="NHWC memory format for the model and every batch",
        helps="convolutions through oneDNN or cuDNN, which prefer NHWC",
        apply=_hook("to_channels_last"),
        showcases=({"channels_last": True},),
    ),
    Optimization(
        "amp",
        doc="autocast to bfloat16, or float16 with a GradScaler (CUDA only)",
        helps="CPUs with AVX512-BF16, AMX or ARM BF16, and recent GPUs; elsewhere bf16 is "
        "emulated and slower, so auto leaves it out",
        choices=("off", "bf16", "fp16"),
        exact=False,
        scope="forward",
        apply=_hook("autocast"),
        check=_hook("check_amp"),
        showcases=({"amp": REDUCED}, {"channels_last": True, "amp": REDUCED}),
    ),
    Optimization(
        "compile",
        doc="torch.compile in the mode given; a compile failure falls back to eager and is "
        "reported",
        helps="GPUs and CPU inference; on CPU training often slower than ATen for small nets",
        choices=("off", "default", "reduce-overhead", "max-autotune"),
        scope="wrapped",
        apply=_hook("compile_model"),
        showcases=(
            {"compile": "default"},
            {"compile": "default", "rewrites": True, "channels_last": True},
            {"compile": "default", "channels_last": True, "amp": REDUCED},
        ),
    ),
    Optimization(
        "cuda_graphs",
        doc="replay the compiled step as CUDA graphs (inductor's reduce-overhead)",
        helps="CUDA, when kernel launches dominate (small nets, small batches)",
        devices=("cuda",),
        off_device="needs a CUDA device",
        scope="wrapped",
        showcases=(
            {"compile": "default", "cuda_graphs": True, "channels_last": True},
            {"compile": "default", "cuda_graphs": True, "channels_last": True, "amp": REDUCED},
        ),
    ),
    Optimization(
        "cache_memory",
        doc="a caching CPU allocator during the step: freed buffers are reused, not "
        "returned to the kernel",
        helps="CPU training, where glibc hands the heap back and the next step faults it in",
        devices=("cpu",),
        off_device="the caching allocator is for CPU memory",
        scope="step",
        apply=_hook("caching_memory"),
        gate=_hook("cache_memory_gate"),
        kernels=_hook("cache_memory_needed"),
    ),
)

BY_NAME: dict[str, Optimization] = {entry.name: entry for entry in REGISTRY}
NAMES: tuple[str, ...] = tuple(BY_NAME)


def entry(name: str) -> Optimization:
    """The registry entry called ``name`` (a KeyError names the known ones)."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"no optimization {name!r}; known: {', '.join(NAMES)}") from None


def enabled(settings: Mapping[str, object]) -> list[Optimization]:
    """The entries switched on in ``settings``, in registry order."""
    return [e for e in REGISTRY if e.is_on(settings.get(e.name, e.default))]


def name_of(settings: Mapping[str, object]) -> str:
    """A configuration's short name: ``eager``, ``rewrites+cpu_kernels+cache_memory``, ..."""
    parts = [e.part(settings[e.name]) for e in enabled(settings)]
    return "+".join(parts) or "eager"


def pays_on(settings: Mapping[str, object], device: str) -> bool:
    """True when every option switched on in ``settings`` is worth timing on ``device``."""
    return all(device in (e.pays_on or e.devices) for e in enabled(settings))


def markdown_table() -> str:
    """The performance docs' table of optimizations (a test keeps the docs equal to it)."""
    rows = ["| option | what it does | where it helps |", "|---|---|---|"]
    for e in REGISTRY:
        values = f": {' / '.join(e.choices[1:])}" if e.choices else ""
        rows.append(f"| `{e.name}`{values} | {e.doc} | {e.helps} |")
    return "\n".join(rows)
