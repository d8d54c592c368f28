"""The allocator policy of ``cnnc train``: measured by page faults in fresh processes (a
count, not a timing, so the test is not at the mercy of a noisy machine)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench.allocator import CHILD
from tests.helpers import ROOT


def faults_per_step(policy: str) -> float:
    env = {**os.environ, "CNNC_ALLOCATOR": policy}
    spec = str(ROOT / "specs" / "lenet.yaml")
    out = subprocess.run(
        [sys.executable, "-c", CHILD, spec, "128", "5", "{}"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=ROOT,
    )
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result["faults"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="a glibc policy")
def test_kept_memory_removes_the_page_faults_of_each_step() -> None:
    kept = faults_per_step("keep")
    assert kept < 100, f"{kept} minor page faults per LeNet step with the policy on"


def test_opting_out_leaves_glibc_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    from runtime.optimize import allocator

    monkeypatch.setenv(allocator.ENV, "default")
    allocator.keep_freed_memory.cache_clear()
    try:
        assert allocator.keep_freed_memory() == "allocator: glibc defaults (CNNC_ALLOCATOR=default)"
    finally:
        allocator.keep_freed_memory.cache_clear()
