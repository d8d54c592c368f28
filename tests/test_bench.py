"""`cnnc bench` and `cnnc tune` on a small spec, and a smoke run of the bench/ suite.

Also: bf16 variants left out where the CPU only emulates bf16 (and ``--bf16`` forcing
them back), and ``bench --isa``: its check, its decision to re-run in a new process, and
one real run at the scalar level.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
import torch
from typer.testing import CliRunner

from cnnc.cli import app
from cnnc.cli.isa_opts import child_environment, needs_new_process
from cnnc.cli.perf_cmds import variants
from cnnc.compiler import compile_spec
from runtime import autotune, benchmark
from runtime.autotune import TuneResult
from runtime.benchmark import Measurement, Schedule, Variant, Workload
from runtime.kernels.cpu import isa
from runtime.kernels.cpu.isa import ATEN_ENV, CAP_VARIABLES, ONEDNN_ENV
from runtime.optimize.config import EAGER
from tests.helpers import ROOT

runner = CliRunner()
SEED003 = str(ROOT / "specs" / "seed003_mlp.yaml")
CPU = torch.device("cpu")


def test_bench_json_has_every_variant_side_by_side() -> None:
    result = runner.invoke(
        app,
        [
            "bench",
            SEED003,
            "--batch",
            "16",
            "--rounds",
            "3",
            "--steps",
            "2",
            "--device",
            "cpu",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["device"] and doc["peak_gflops"] > 0
    names = [v["name"] for v in doc["variants"]]
    skipped = {s["name"]: s["reason"] for s in doc["skipped"]}
    assert names[0] == "eager" and "auto" in names and "handwritten" in names
    assert {"channels_last", "channels_last+bf16", "compile"} <= set(names) | set(skipped)
    assert all("bf16" in name and reason for name, reason in skipped.items())
    assert doc["isa"] == isa.level() and doc["aten_cpu_capability"]
    for row in doc["variants"]:
        assert {"name", "step_ms", "images_per_s", "ratio_vs_eager", "gflops", "compile_s"} <= set(
            row
        )
        assert row["step_ms"] > 0 and row["images_per_s"] > 0
    eager = doc["variants"][0]
    assert eager["ratio_vs_eager"] == 1.0
    assert [v["name"] for v in doc["inference"]][-1] == "auto"


def test_tune_reports_its_choice() -> None:
    result = runner.invoke(app, ["tune", SEED003, "--batch", "16", "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["name"] and doc["reason"] and "config" in doc


def test_bench_suite_smoke_runs() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "bench",
            "-m",
            "smoke",
            "-q",
            "-p",
            "no:cacheprovider",
            "--benchmark-disable",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert "1 passed" in done.stdout


@pytest.fixture
def emulated_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CPU without native bf16, whatever this one has."""
    monkeypatch.setattr(isa, "native_bf16", lambda: False)


def test_bf16_variants_are_skipped_where_bf16_is_emulated(emulated_bf16: None) -> None:
    compiled = compile_spec(SEED003)
    for timed, skipped in (variants(compiled, CPU, EAGER), variants(None, CPU, EAGER)):
        assert all(v.config.amp == "off" for v in timed)
        assert timed[-1].name == "auto"
        assert skipped and all("bf16" in s.name for s in skipped)
        assert all("no native bf16" in s.reason for s in skipped)


def test_bf16_variants_come_back_when_forced(emulated_bf16: None) -> None:
    compiled = compile_spec(SEED003)
    _, skipped = variants(compiled, CPU, EAGER)
    forced, none_skipped = variants(compiled, CPU, EAGER, force_precision=True)
    assert not none_skipped
    assert [v.name for v in forced if v.config.amp == "bf16"] == [s.name for s in skipped]
    assert not variants(None, CPU, EAGER, force_precision=True)[1]


@pytest.fixture
def no_timing(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, object]]:
    """bench and tune with every timing stubbed out; the list collects tune's arguments."""
    tunes: list[dict[str, object]] = []

    def fake_tune(work: Workload, **kwargs: object) -> TuneResult:
        tunes.append(kwargs)
        return TuneResult(EAGER, "eager: stubbed", str(kwargs["key"]), [])

    def fake_measure(
        work: Workload, variants: list[Variant], schedule: Schedule
    ) -> list[Measurement]:
        return [Measurement(v.name, v.config, 1.0, [1.0], 0.0, 0.0, work.batch) for v in variants]

    # at their source: perf_cmds imports them when a command runs
    monkeypatch.setattr(autotune, "tune", fake_tune)
    monkeypatch.setattr(benchmark, "measure", fake_measure)
    monkeypatch.setattr(benchmark, "matmul_peak", lambda *args: 100.0)
    return tunes


def test_bench_reports_skipped_variants_and_the_isa(
    emulated_bf16: None, no_timing: list[dict[str, object]]
) -> None:
    result = runner.invoke(app, ["bench", SEED003, "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["isa"] == isa.level() and doc["aten_cpu_capability"]
    for rows, skipped in (("variants", "skipped"), ("inference", "skipped_inference")):
        assert doc[skipped] and all("no native bf16" in s["reason"] for s in doc[skipped])
        assert not {s["name"] for s in doc[skipped]} & {v["name"] for v in doc[rows]}
    text = runner.invoke(app, ["bench", SEED003, "--device", "cpu"]).stdout
    assert f"skipped {doc['skipped'][0]['name']}: this CPU has no native bf16" in text
    assert f"CPU ISA: cnnc's kernels at {isa.describe()}; ATen at" in text


def test_bf16_flag_forces_bf16_in_bench_and_tune(
    emulated_bf16: None, no_timing: list[dict[str, object]]
) -> None:
    result = runner.invoke(app, ["bench", SEED003, "--device", "cpu", "--json", "--bf16"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["skipped"] == [] and doc["skipped_inference"] == []
    assert "channels_last+bf16" in [v["name"] for v in doc["variants"]]
    assert all(kwargs["force_precision"] is True for kwargs in no_timing)
    result = runner.invoke(app, ["tune", SEED003, "--device", "cpu", "--json", "--bf16"])
    assert result.exit_code == 0, result.stderr
    assert no_timing[-1]["force_precision"] is True
    assert json.loads(result.stdout)["isa"] == isa.level()
    runner.invoke(app, ["tune", SEED003, "--device", "cpu", "--json"])
    assert no_timing[-1]["force_precision"] is False
    assert no_timing[-1]["key"] == compile_spec(SEED003).key


@pytest.fixture
def every_level(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, ...]]:
    """A CPU with every level of this architecture, so each level can be asked for."""
    monkeypatch.setattr(isa, "cpu_levels", isa.all_levels)
    yield isa.all_levels()


def test_no_new_process_when_the_variables_are_already_set(every_level: tuple[str, ...]) -> None:
    for level in every_level:
        changes = needs_new_process(level, {})
        assert changes is not None and changes[isa.ENV] == level
        child = child_environment(changes, {"PATH": "/bin"})
        assert child["PATH"] == "/bin" and needs_new_process(level, child) is None


def test_a_lower_level_caps_aten_and_onednn_too(every_level: tuple[str, ...]) -> None:
    if len(every_level) < 2:
        pytest.skip(f"{isa.arch()} has a single level")
    changes = needs_new_process(every_level[0], {isa.ENV: every_level[0]})
    assert changes == {k: v for k, v in isa.measuring_env(every_level[0]).items() if k != isa.ENV}
    if isa.arch() == "x86_64":
        assert changes is not None
        assert changes[ATEN_ENV] == "default" and changes[ONEDNN_ENV] == "SSE41"
        assert str(changes["TORCHINDUCTOR_CACHE_DIR"]).endswith("isa-scalar")


def test_the_best_level_clears_caps_left_in_the_environment(every_level: tuple[str, ...]) -> None:
    best = every_level[-1]
    environ = {name: "avx2" for name in CAP_VARIABLES} | {isa.ENV: best}
    changes = needs_new_process(best, environ)
    assert changes == {ATEN_ENV: None, ONEDNN_ENV: None}
    assert set(child_environment(changes, environ)) & set(CAP_VARIABLES) == {isa.ENV}


def test_bench_isa_bogus_is_a_usage_error() -> None:
    result = runner.invoke(app, ["bench", SEED003, "--isa", "bogus"])
    assert result.exit_code == 2
    assert "--isa must be one of" in result.stderr
    assert f"use one of {', '.join(isa.cpu_levels())}" in result.stderr


def test_bench_isa_above_this_cpu_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    if len(isa.all_levels()) < 2:
        pytest.skip(f"{isa.arch()} has a single level")
    lowest, highest = isa.all_levels()[0], isa.all_levels()[-1]
    monkeypatch.setattr(isa, "cpu_levels", lambda: (lowest,))
    result = runner.invoke(app, ["bench", SEED003, "--isa", highest])
    assert result.exit_code == 2
    assert f"--isa asks for {highest}, which this CPU" in result.stderr


def test_bench_isa_above_this_real_cpu_is_a_usage_error() -> None:
    above = [level for level in isa.all_levels() if level not in isa.cpu_levels()]
    if not above:
        pytest.skip(f"this CPU has every {isa.arch()} level (the monkeypatched test covers it)")
    result = runner.invoke(app, ["bench", SEED003, "--isa", above[-1]])
    assert result.exit_code == 2 and "which this CPU" in result.stderr


def _cnnc(*args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in CAP_VARIABLES}
    return subprocess.run(
        [sys.executable, "-m", "cnnc", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env=env,
    )


def test_bench_isa_reruns_in_a_new_process_and_passes_its_status_on() -> None:
    level = isa.cpu_levels()[0]
    done = _cnnc("bench", "missing.yaml", "--isa", level, timeout=120)
    assert done.returncode == 1, done.stderr
    assert f"measuring as on a CPU of level {level}, in a new process" in done.stderr
    assert f"{isa.ENV}={level}" in done.stderr
    assert done.stderr.count("spec file not found") == 1  # the child's error, once


@pytest.mark.slow
def test_bench_isa_scalar_measures_at_scalar() -> None:
    done = _cnnc(
        "bench", SEED003, "--isa", "scalar", "--json", "--device", "cpu", "--batch", "8",
        "--rounds", "3", "--steps", "1", "--no-inference", timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    doc = json.loads(done.stdout)
    assert doc["isa"] == "scalar" and doc["aten_cpu_capability"].lower() == "default"
    assert "measuring as on a CPU of level scalar" in done.stderr


def test_the_per_layer_table_names_the_fastest_of_cnnc_algorithms() -> None:
    from bench.conv_fp32 import _cells

    times = {
        "onednn_warm": 2.0,
        "direct_warm": 1.5,
        "direct_rows_warm": 1.0,
        "winograd_4x4_warm": 1.25,
        "winograd_4x4_cold": 0.5,
    }
    assert _cells(times, "warm", 4.0) == "2.000 | 1.000 direct_rows | 2 / 4 | 2.00x"
