"""DDP: two CPU processes under torchrun train like one process with the same global batch."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from runtime.train import fit
from tests.runtime.train_helpers import DIGITS, synthetic_config, tiny_cnn

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("ddp_worker.py")

pytestmark = pytest.mark.distributed


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _torchrun(out: Path, mode: str) -> list[dict[str, Any]]:
    """Runs ddp_worker.py on 2 CPU processes; returns what each rank saved."""
    env = os.environ | {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc-per-node=2",
        "--master-addr=127.0.0.1", f"--master-port={_free_port()}", str(WORKER), str(out), mode,
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return [torch.load(out / f"{mode}-rank{r}.pt", weights_only=True) for r in range(2)]


def _assert_identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name, tensor in a.items():
        assert torch.equal(tensor, b[name]), name


def test_two_processes_match_one_process(tmp_path: Path) -> None:
    ranks = _torchrun(tmp_path, "full")
    _assert_identical(ranks[0]["state"], ranks[1]["state"])

    single = tiny_cnn(classes=4)
    reference = fit(single, synthetic_config(), DIGITS, device="cpu")
    for name, tensor in single.state_dict().items():
        torch.testing.assert_close(ranks[0]["state"][name], tensor, rtol=1e-4, atol=1e-5)
    assert ranks[0]["losses"] == pytest.approx(reference.step_losses, rel=1e-4, abs=1e-5)
    distributed, alone = ranks[0]["history"][-1], reference.history[-1].flat()
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy"):
        assert distributed[key] == pytest.approx(alone[key], rel=1e-4, abs=1e-5), key

    run = tmp_path / "run"  # written by rank 0 only
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert sum('"kind": "epoch"' in line for line in lines) == 2
    assert (run / "checkpoints" / "latest.json").exists() and (run / "model.safetensors").exists()


def test_interrupted_ddp_run_resumes_exactly(tmp_path: Path) -> None:
    full = _torchrun(tmp_path / "full", "full")
    interrupted = _torchrun(tmp_path / "split", "interrupt")
    assert all(rank["interrupted"] for rank in interrupted)
    # rank 0's callback asked to stop after step 5; every process stops after step 6.
    assert [len(rank["losses"]) for rank in interrupted] == [6, 6]
    resumed = _torchrun(tmp_path / "split", "resume")
    for rank in range(2):
        assert interrupted[rank]["losses"] + resumed[rank]["losses"] == full[rank]["losses"]
        _assert_identical(resumed[rank]["state"], full[rank]["state"])
