"""`cnnc doctor`: the CPU's levels, each kernel's state, the tools' versions.

The doctor runs in-process: it loads kernels built earlier (milliseconds) and never builds
one; ``doctor --build`` (every kernel compiled, minutes on a fresh machine) is marked slow.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from typer.testing import CliRunner

from cnnc.cli import app, doctor_cmds
from runtime.kernels.cpu import extension as cpu_ext, isa

runner = CliRunner()
STATES = {"loaded", "cached", "not built", "unavailable"}


def test_doctor_reports_the_cpu_levels_and_every_kernel() -> None:
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert isa.cpu_model() in out and isa.describe() in out
    assert ", ".join(isa.cpu_levels()) in out
    for name in cpu_ext.KERNELS:
        assert name in out
    assert any(word in out for word in ("built:", "not built:", "unavailable:"))
    for tool in ("python", "torch", "C++ compiler", "ninja"):
        assert tool in out


def test_doctor_json_is_one_document() -> None:
    result = runner.invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.stderr
    doc = json.loads(result.stdout)
    cpu = doc["cpu"]
    assert cpu["level"] == isa.level() and cpu["levels"] == list(isa.cpu_levels())
    assert cpu["native_bf16"] is isa.native_bf16()
    assert cpu["all_flags"] == sorted(isa.cpu_flags())
    assert set(cpu["flags"]) <= isa.cpu_flags() and cpu["aten_cpu_capability"]
    assert [k["name"] for k in doc["kernels"]] == list(cpu_ext.KERNELS)
    for kernel in doc["kernels"]:
        assert kernel["state"] in STATES
        if kernel["state"] == "loaded":
            assert kernel["path"] in kernel["paths"] or kernel["path"] == "scalar"
    assert doc["versions"]["python"] and doc["versions"]["torch"]


def test_doctor_shows_the_flags_the_levels_need() -> None:
    needed = doctor_cmds.level_flags()
    assert len(set(needed)) == len(needed)
    for level in isa.cpu_levels():
        assert set(isa.requirements(level)) <= set(needed)


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (
            {"state": "loaded", "paths": ["scalar", "avx2"], "path": "avx2"},
            "built: code paths scalar, avx2; runs avx2",
        ),
        ({"state": "cached"}, "built: loads on first use"),
        ({"state": "not built"}, "not built: builds on first use"),
        ({"state": "unavailable", "reason": "no C++ compiler"}, "unavailable: no C++ compiler"),
    ],
)
def test_each_kernel_state_reads_as_words(row: dict[str, Any], expected: str) -> None:
    assert doctor_cmds.kernel_detail(row).startswith(expected)


def test_doctor_without_a_compiler_says_kernels_run_on_aten(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(doctor_cmds, "kernel_report", list)  # building would need a compiler
    monkeypatch.setattr(cpu_ext, "compiler", lambda: None)
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 0, result.stderr
    assert "none found" in result.stdout and "ATen" in result.stdout


@pytest.mark.slow
def test_doctor_build_builds_every_kernel() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "cnnc", "doctor", "--build", "--json"],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert done.returncode == 0, done.stderr
    states = {k["name"]: k["state"] for k in json.loads(done.stdout)["kernels"]}
    assert set(states) == set(cpu_ext.KERNELS)
    assert set(states.values()) <= {"loaded", "unavailable"}
    if "compiling cnnc's CPU kernel" in done.stderr:
        assert done.stderr.count("cnnc: compiling") == 1
