"""Building cnnc's C++ kernels: only the ones a configuration runs, announced with an
estimate and followed by progress lines, and one clear line (then ATen) without a compiler."""

from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from runtime.benchmark import Schedule, Variant, Workload, measure
from runtime.kernels.cpu import extension as cpu_ext, isa
from runtime.kernels.cpu.pool import fused_maxpool2x2
from runtime.optimize.config import OptimizeConfig
from runtime.optimize.prepare import kernels_needed, prepare
from tests.runtime.kernel_levels import BUILT

CPU = torch.device("cpu")
KERNELS = OptimizeConfig(rewrites=True, cpu_kernels=True)
# fp32 steps add the direct convolution where it has a vector build at this level
CONV = ["conv_fp32"] if cpu_ext.path_at("conv_fp32") != "scalar" else []


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch) -> None:
    """A process that has loaded no kernel yet (torch's on-disk cache stays)."""
    monkeypatch.setattr(cpu_ext, "_modules", {})
    monkeypatch.setattr(cpu_ext, "_reasons", {})


@pytest.mark.parametrize(
    ("config", "training", "expected"),
    [
        (KERNELS, True, ["pool2x2", "batchnorm", "dropout", *CONV]),
        (KERNELS, False, ["pool2x2", "batchnorm", *CONV]),
        (KERNELS.with_(amp="bf16"), False, ["pool2x2", "batchnorm"]),
        (
            KERNELS.with_(cache_memory=True),
            True,
            ["pool2x2", "batchnorm", "dropout", *CONV, "allocator"],
        ),
        (OptimizeConfig(cache_memory=True), True, ["allocator"]),
        (OptimizeConfig(channels_last=True, amp="bf16"), True, []),
    ],
)
def test_a_configuration_builds_only_the_kernels_it_runs(
    config: OptimizeConfig, training: bool, expected: list[str]
) -> None:
    assert kernels_needed(config, CPU, training) == expected
    assert kernels_needed(config, torch.device("meta"), training) == []


@pytest.mark.parametrize("level", ["avx512", "avx512_bf16", "amx"])
def test_bf16_training_adds_the_convolutions_where_they_pay(level: str) -> None:
    # AVX512-BF16 without AMX: with AMX, oneDNN's convolutions are faster
    if level not in isa.cpu_levels():
        pytest.skip(f"this CPU has no {level} level to set")
    with isa.use(level):
        names = kernels_needed(KERNELS.with_(amp="bf16"), CPU, training=True)
    assert ("conv3x3" in names) == (level == "avx512_bf16")


def test_prepare_builds_what_the_configuration_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[list[str]] = []
    real = cpu_ext.build
    monkeypatch.setattr(
        cpu_ext, "build", lambda names, why="": asked.append(list(names)) or real(names, why)
    )
    prepare(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.MaxPool2d(2)), KERNELS, CPU)
    assert asked == [["pool2x2", "batchnorm", "dropout", *CONV]]


def test_a_measurement_builds_every_variants_kernels_at_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[list[str]] = []
    real = cpu_ext.build
    monkeypatch.setattr(
        cpu_ext, "build", lambda names, why="": asked.append(list(names)) or real(names, why)
    )
    work = Workload(
        lambda: nn.Sequential(nn.Conv2d(3, 4, 3), nn.MaxPool2d(2), nn.Flatten()),
        (3, 8, 8),
        36,
        2,
        CPU,
    )
    variants = [
        Variant("eager"),
        Variant("k", KERNELS),
        Variant("m", OptimizeConfig(cache_memory=True)),
    ]
    measure(work, variants, Schedule(warmup=0, rounds=1, steps=1))
    assert asked[0] == sorted(["allocator", "batchnorm", "dropout", "pool2x2", *CONV])  # at once


@pytest.mark.skipif(not BUILT, reason="no C++ compiler: nothing is built")
def test_a_build_is_announced_with_an_estimate_then_progress(
    fresh: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(cpu_ext, "cached", lambda name: False)  # as on a new machine
    recorded: list[dict[str, float]] = []
    monkeypatch.setattr(cpu_ext, "_record_times", recorded.append)
    monkeypatch.setattr(cpu_ext, "_recorded_times", lambda: {"pool2x2": 100.0})
    with caplog.at_level(logging.INFO, logger="runtime.kernels.build"):
        cpu_ext.build(["pool2x2", "batchnorm"], why="for a test")
    lines = [r.getMessage() for r in caplog.records if r.name == "runtime.kernels.build"]
    assert lines[0].startswith(
        "compiling cnnc's CPU kernels pool2x2, batchnorm for this machine (for a test), once: "
        "about 2 min on"
    )  # (100 + 45 s) over at most two cores, or the longest alone
    assert sorted(line.split(" (")[0] for line in lines[1:]) == [
        "built cnnc's batchnorm kernel",
        "built cnnc's pool2x2 kernel",
    ]
    assert set(recorded[0]) == {"pool2x2", "batchnorm"}
    assert cpu_ext.path("pool2x2") is not None


@pytest.mark.skipif(not BUILT, reason="no C++ compiler: nothing is built")
def test_cached_kernels_load_without_a_word(fresh: None, caplog: pytest.LogCaptureFixture) -> None:
    cpu_ext.build(["pool2x2"])  # built by earlier tests or this call
    cpu_ext._modules.clear()
    with caplog.at_level(logging.INFO, logger="runtime.kernels.build"):
        cpu_ext.build(["pool2x2"])
    assert cpu_ext.state("pool2x2").state == "loaded"
    assert not [r for r in caplog.records if r.name == "runtime.kernels.build"]


def test_without_a_compiler_one_line_says_so_and_aten_computes(
    fresh: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CXX", "/nowhere/c++")
    assert cpu_ext.load("pool2x2") is None
    assert cpu_ext.load("batchnorm") is None
    warnings = [r for r in caplog.records if "need a C++ compiler" in r.getMessage()]
    assert len(warnings) == 1 and "'/nowhere/c++' was not found" in warnings[0].getMessage()
    state = cpu_ext.state("pool2x2")
    assert state.state == "unavailable" and "no C++ compiler" in state.reason
    x = torch.randn(2, 3, 6, 6)
    assert torch.equal(fused_maxpool2x2(x, True), F.max_pool2d(F.relu(x), 2))
    prepared = prepare(nn.Sequential(nn.MaxPool2d(2)), KERNELS, CPU)
    assert "cpu_kernels declined: the C++ kernels are not available (see the log)" in (
        prepared.notes
    )


def test_a_kernel_that_cannot_be_built_is_none_with_a_logged_reason(
    fresh: None, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from torch.utils import cpp_extension

    def broken(**kwargs: object) -> None:
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(cpp_extension, "load", broken)
    monkeypatch.setattr(cpu_ext, "compiler", lambda: "/usr/bin/c++")
    assert cpu_ext.load("pool2x2") is None
    assert "pool2x2 is unavailable, using ATen instead: RuntimeError: no compiler here" in (
        caplog.text
    )
    assert cpu_ext.state("pool2x2").reason == "the build failed: RuntimeError: no compiler here"


def test_an_unknown_kernel_name_is_refused() -> None:
    with pytest.raises(ValueError, match="no CPU kernel named pool3x3"):
        cpu_ext.build(["pool3x3"])
