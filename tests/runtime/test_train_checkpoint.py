"""Checkpoints: atomic writes, a full disk, corrupt files, weights from another model."""

from __future__ import annotations

import errno
import json
import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from runtime.errors import CheckpointError
from runtime.train import (
    checkpoint as checkpoint_module,
    find_checkpoint,
    fit,
    load_weights,
    save_weights,
)
from runtime.train.checkpoint import CheckpointManager, atomic_write, capture_rng, restore_rng
from tests.runtime.train_helpers import (
    DIGITS,
    Recorder,
    assert_same_parameters,
    digits_config,
    tiny_cnn,
)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished 1-epoch digits run (checkpoint at step 21)."""
    run = tmp_path_factory.mktemp("run")
    fit(tiny_cnn(), digits_config(epochs=1), DIGITS, run_dir=run)
    return run


def _disk_full_after(monkeypatch: pytest.MonkeyPatch, allowed_bytes: int) -> None:
    """os.write accepts ``allowed_bytes`` in total, then fails like a full disk."""
    real_write = os.write
    budget = [allowed_bytes]

    def write(fd: int, data: bytes | memoryview) -> int:
        if budget[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        written = real_write(fd, bytes(data[: budget[0]]))
        budget[0] -= written
        return written

    monkeypatch.setattr(checkpoint_module.os, "write", write)


def test_weights_round_trip_including_tied_tensors(tmp_path: Path) -> None:
    class Tied(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = nn.Linear(4, 4)
            self.decoder = nn.Linear(4, 4)
            self.decoder.weight = self.encoder.weight
            self.norm = nn.BatchNorm1d(4)

    model, other = Tied(), Tied()
    save_weights(model, tmp_path / "tied.safetensors")
    load_weights(other, tmp_path / "tied.safetensors")
    assert_same_parameters(model, other)
    assert other.decoder.weight is other.encoder.weight


def test_atomic_write_replaces_whole_files(tmp_path: Path) -> None:
    target = tmp_path / "file.bin"
    atomic_write(target, b"old")
    atomic_write(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    assert [p.name for p in tmp_path.iterdir()] == ["file.bin"]


def test_disk_full_leaves_the_previous_checkpoint_intact(
    trained_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = find_checkpoint(trained_run)
    files = {p.name: p.read_bytes() for p in (trained_run / "checkpoints").iterdir()}
    _disk_full_after(monkeypatch, allowed_bytes=1000)  # dies inside the weights file
    manager = CheckpointManager(trained_run / "checkpoints")
    with pytest.raises(CheckpointError) as caught:
        manager.save(tiny_cnn(seed=3), {"step": 99}, step=99)
    monkeypatch.undo()
    assert "No space left on device" in caught.value.message
    assert caught.value.hint is not None and "previous checkpoint is intact" in caught.value.hint
    assert {p.name: p.read_bytes() for p in (trained_run / "checkpoints").iterdir()} == files
    assert find_checkpoint(trained_run) == before
    load_weights(tiny_cnn(), before.weights)


def test_disk_full_during_training_stops_and_the_run_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = Recorder()

    class FillDiskAfterFirstCheckpoint(Recorder):
        def on_checkpoint(self, checkpoint: checkpoint_module.Checkpoint) -> None:
            _disk_full_after(monkeypatch, allowed_bytes=0)

    with pytest.raises(CheckpointError):
        fit(tiny_cnn(), digits_config(), DIGITS, run_dir=tmp_path,
            callbacks=[recorder, FillDiskAfterFirstCheckpoint()])  # fmt: skip
    monkeypatch.undo()
    assert recorder.hooks[-1] == "exception"
    assert find_checkpoint(tmp_path).step == 21
    resumed = fit(tiny_cnn(), digits_config(), DIGITS, resume=tmp_path)
    assert resumed.steps == 42 and len(resumed.step_losses) == 21


def test_truncated_weights_are_a_checkpoint_error(tmp_path: Path, trained_run: Path) -> None:
    weights = find_checkpoint(trained_run).weights
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_weights(tiny_cnn(), broken)
    broken.write_bytes(b"\x00" * 64)
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_weights(tiny_cnn(), broken)


def test_corrupt_resume_state_is_a_checkpoint_error(tmp_path: Path, trained_run: Path) -> None:
    run = tmp_path / "copy"
    (run / "checkpoints").mkdir(parents=True)
    for path in (trained_run / "checkpoints").iterdir():
        (run / "checkpoints" / path.name).write_bytes(path.read_bytes())
    state = find_checkpoint(run).state
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a readable resume state"):
        fit(tiny_cnn(), digits_config(), DIGITS, resume=run)


def test_weights_of_another_model_list_every_difference(trained_run: Path) -> None:
    other = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(512, 10)
    )
    with pytest.raises(CheckpointError) as caught:
        fit(other, digits_config(), DIGITS, resume=trained_run)
    message = caught.value.message
    assert "does not fit the model" in message
    assert "missing: 3.bias, 3.weight" in message
    assert "unexpected: 5.bias, 5.weight" in message
    assert "0.weight is (4, 1, 3, 3) in the checkpoint but (8, 1, 3, 3) in the model" in message


def test_missing_checkpoint_names_the_resume_field(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError) as caught:
        fit(tiny_cnn(), digits_config(), DIGITS, resume=tmp_path / "nothing")
    assert caught.value.field == "resume"
    assert "does not exist" in caught.value.message


def test_old_checkpoints_are_pruned_and_latest_moves_last(tmp_path: Path) -> None:
    recorder = Recorder()
    fit(tiny_cnn(), digits_config(epochs=3), DIGITS, run_dir=tmp_path, callbacks=[recorder])
    assert [c.step for c in recorder.checkpoints] == [21, 42, 63]
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["latest.json", "step-00000063.safetensors", "step-00000063.state.pt"]
    latest = json.loads((tmp_path / "checkpoints" / "latest.json").read_text())
    assert latest == {"step": 63, "weights": names[1], "state": names[2]}


def test_resume_state_loads_with_weights_only(trained_run: Path) -> None:
    state = torch.load(find_checkpoint(trained_run).state, weights_only=True)
    assert (state["epoch"], state["batch"], state["step"]) == (1, 0, 21)
    assert {"optimizer", "scheduler", "rng", "data", "history"} <= set(state)


def test_rng_states_round_trip() -> None:
    saved = capture_rng()
    expected = (torch.rand(3), np.random.rand(3), random.random())
    restore_rng(saved)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0])
    assert np.array_equal(expected[1], again[1]) and expected[2] == again[2]
