"""`cnnc bench` and `cnnc tune` on a small spec, and a smoke run of the bench/ suite."""

from __future__ import annotations

import json
import subprocess
import sys

from typer.testing import CliRunner

from cnnc.cli import app
from tests.helpers import ROOT

runner = CliRunner()
SEED003 = str(ROOT / "specs" / "seed003_mlp.yaml")


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
    assert names[0] == "eager" and "auto" in names and "handwritten" in names
    assert {"channels_last", "channels_last+bf16", "compile"} <= set(names)
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
