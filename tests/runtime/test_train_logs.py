"""The run directory (jsonl, csv, png, TensorBoard) and console output."""

from __future__ import annotations

import builtins
import csv
import io
import json
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from runtime.errors import ConfigError
from runtime.train import ConsoleReporter, fit, new_run_dir
from tests.runtime.train_helpers import DIGITS, InterruptAt, digits_config, tiny_cnn


def test_run_directory_contents(tmp_path: Path) -> None:
    result = fit(
        tiny_cnn(), digits_config(), DIGITS, run_name="digits", runs_root=tmp_path,
        run_files={"spec.yaml": "name: tiny\n"}, log_grads=True,
    )  # fmt: skip
    run = tmp_path / "digits" / "1"
    assert result.run_dir == run
    assert (run / "spec.yaml").read_text() == "name: tiny\n"
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert result.weights == run / "model.safetensors" and result.weights.exists()

    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    epochs = [r for r in records if r["kind"] == "epoch"]
    steps = [r for r in records if r["kind"] == "step"]
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert [r["step"] for r in steps] == [5, 10, 15, 20, 25, 30, 35, 40]
    assert {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"} <= set(epochs[0])
    assert "0.bias" in steps[0]["grad_norm"]

    with (run / "metrics.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["epoch"]) for row in rows] == [1, 2]
    assert float(rows[1]["val_accuracy"]) == pytest.approx(epochs[1]["val_accuracy"])


def test_run_numbers_increment(tmp_path: Path) -> None:
    assert new_run_dir("x", tmp_path) == tmp_path / "x" / "1"
    assert new_run_dir("x", tmp_path) == tmp_path / "x" / "2"
    (tmp_path / "x" / "7").mkdir()
    assert new_run_dir("x", tmp_path) == tmp_path / "x" / "8"


def test_resume_does_not_duplicate_log_records(tmp_path: Path) -> None:
    config = digits_config(epochs=3)
    fit(tiny_cnn(), config, DIGITS, run_dir=tmp_path, callbacks=[InterruptAt(33)])
    fit(tiny_cnn(), config, DIGITS, resume=tmp_path)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if r["kind"] == "step"] == list(range(5, 64, 5))
    assert [r["epoch"] for r in records if r["kind"] == "epoch"] == [1, 2, 3]
    with (tmp_path / "metrics.csv").open() as handle:
        assert [int(row["epoch"]) for row in csv.DictReader(handle)] == [1, 2, 3]


def test_piped_output_is_one_clean_line_per_epoch() -> None:
    buffer = io.StringIO()
    reporter = ConsoleReporter(Console(file=buffer, width=60))
    fit(tiny_cnn(), digits_config(), DIGITS, callbacks=[reporter])
    lines = buffer.getvalue().splitlines()
    assert lines[0].startswith("Training on cpu: 1294 train / 144 validation images")
    assert lines[1].startswith("Epoch 1/2 - ") and lines[2].startswith("Epoch 2/2 - ")
    assert " - loss: " in lines[1] and " - val_accuracy: " in lines[1] and "img/s" in lines[1]
    assert lines[3].startswith("Done in ") and len(lines) == 4
    assert "\r" not in buffer.getvalue() and "\x1b" not in buffer.getvalue()


def test_piped_output_of_long_epochs_has_progress_lines() -> None:
    buffer = io.StringIO()
    reporter = ConsoleReporter(Console(file=buffer), every=0.0)
    fit(tiny_cnn(), digits_config(epochs=1), DIGITS, callbacks=[reporter])
    lines = buffer.getvalue().splitlines()
    assert lines[1].startswith("Epoch 1/1 - step 1/21 - loss: ")
    assert len(lines) == 1 + 20 + 2  # header, steps 1..20, epoch line, done


def test_terminal_output_draws_a_progress_bar_and_keeps_epoch_lines() -> None:
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=120)
    fit(tiny_cnn(), digits_config(), DIGITS, callbacks=[ConsoleReporter(console)])
    text = buffer.getvalue()
    assert ConsoleReporter(console).live
    assert "Epoch 1/2 - " in text and "Epoch 2/2 - " in text
    assert "━" in text  # the bar was drawn


def test_interrupted_run_says_how_to_resume(tmp_path: Path) -> None:
    buffer = io.StringIO()
    fit(tiny_cnn(), digits_config(), DIGITS, run_dir=tmp_path,
        callbacks=[ConsoleReporter(Console(file=buffer)), InterruptAt(3)])  # fmt: skip
    assert f"Interrupted at step 3: checkpoint saved in {tmp_path}" in buffer.getvalue()


def test_tensorboard_writes_event_files(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    fit(tiny_cnn(), digits_config(epochs=1), DIGITS, run_dir=tmp_path, tensorboard=True)
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_tensorboard_missing_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_import = builtins.__import__

    def no_tensorboard(name: str, *args: Any, **kwargs: Any) -> Any:
        if name.startswith(("torch.utils.tensorboard", "tensorboard")):
            raise ImportError("No module named 'tensorboard'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    with pytest.raises(ConfigError) as caught:
        fit(tiny_cnn(), digits_config(), DIGITS, run_dir=tmp_path, tensorboard=True)
    assert caught.value.field == "tensorboard"
    assert caught.value.hint is not None and "pip install 'cnnc[tensorboard]'" in caught.value.hint
