"""`cnnc train`, `eval` and `predict` on the bundled digits: real data, real training."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cnnc.cli import app
from tests.helpers import ROOT

DIGITS = ROOT / "specs" / "digits.yaml"
runner = CliRunner()


def invoke(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    runs = tmp_path_factory.mktemp("runs")
    code, out, err = invoke(
        "train", str(DIGITS), "--optimize", "eager", "--runs", str(runs), "--json"
    )
    assert code == 0, err
    return json.loads(out)


def test_digits_reaches_the_accuracy_bar(trained: dict[str, object]) -> None:
    assert trained["test_accuracy"] >= 0.95  # type: ignore[operator]
    assert trained["epochs"] == 10 and trained["steps"] == 210
    assert trained["seconds"] < 60  # type: ignore[operator]
    run = Path(str(trained["run_dir"]))
    for name in (
        "metrics.jsonl",
        "metrics.csv",
        "curves.png",
        "spec.yaml",
        "spec.resolved.json",
        "model.safetensors",
    ):
        assert (run / name).exists(), name
    assert (run / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert Path(str(trained["checkpoint"])).exists()


def test_eval_reports_the_same_accuracy(trained: dict[str, object]) -> None:
    code, out, err = invoke("eval", str(DIGITS), "--weights", str(trained["weights"]), "--json")
    assert code == 0, err
    scores = json.loads(out)
    assert scores["accuracy"] == pytest.approx(trained["test_accuracy"])
    matrix = torch.tensor(scores["confusion_matrix"])
    assert matrix.shape == (10, 10) and int(matrix.sum()) == scores["num_samples"]
    code, out, _ = invoke("eval", str(DIGITS), "--weights", str(trained["weights"]))
    assert code == 0 and "confusion matrix" in out


def test_predict_classifies_image_files(trained: dict[str, object], tmp_path: Path) -> None:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    paths, labels = [], []
    for index in range(1500, 1510):  # images of the held-out part of the data set
        pixels = (digits.images[index] * 255 / 16).astype("uint8")
        path = tmp_path / f"digit{index}.png"
        Image.fromarray(pixels, mode="L").resize((32, 32)).save(path)  # any size is resized
        paths.append(str(path))
        labels.append(str(digits.target[index]))
    code, out, err = invoke(
        "predict", str(DIGITS), "--weights", str(trained["weights"]), *paths, "--json"
    )
    assert code == 0, err
    predicted = [row["label"] for row in json.loads(out)["predictions"]]
    assert sum(p == t for p, t in zip(predicted, labels, strict=True)) >= 8


def test_runtime_errors_point_at_the_spec(tmp_path: Path) -> None:
    spec = tmp_path / "big.yaml"
    spec.write_text(DIGITS.read_text().replace("batch_size: 64", "batch_size: 5000"))
    code, out, err = invoke("train", str(spec), "--optimize", "eager", "--runs", str(tmp_path))
    assert code == 1 and "Traceback" not in out + err
    assert f"{spec}:22:15: train.batch_size:" in err.replace("\n", " ")


def test_dataset_that_does_not_fit_the_input(tmp_path: Path) -> None:
    spec = tmp_path / "lenet.yaml"
    text = (ROOT / "specs" / "lenet.yaml").read_text()
    spec.write_text(text.split("train:")[0] + "train: {dataset: digits, epochs: 1}\n")
    code, _, err = invoke("train", str(spec), "--optimize", "eager", "--runs", str(tmp_path))
    assert code == 1
    assert "train.dataset" in err and "resize" in err


def test_missing_cifar_says_where_the_files_go(tmp_path: Path) -> None:
    code, _, err = invoke(
        "train", str(ROOT / "specs" / "lenet.yaml"), "--optimize", "eager", "--runs", str(tmp_path)
    )
    assert code == 1
    assert "train.dataset" in err and "cifar" in err.lower()


@pytest.mark.distributed
def test_torchrun_trains_the_spec_with_two_processes(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc-per-node=2",
        "--master-addr=127.0.0.1",
        f"--master-port={port}",
        "-m",
        "cnnc",
        "train",
        str(DIGITS),
        "--optimize",
        "eager",
        "--epochs",
        "2",
        "--runs",
        str(tmp_path),
        "--json",
    ]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads(result.stdout[result.stdout.index("{") :])
    assert document["epochs"] == 2 and document["test_accuracy"] > 0.8
    assert len(list((tmp_path / "digits").iterdir())) == 1  # rank 0 alone wrote a run


def test_weights_of_another_network_say_which_tensors_differ(
    trained: dict[str, object], tmp_path: Path
) -> None:
    spec = tmp_path / "wider.yaml"
    spec.write_text(DIGITS.read_text().replace("out_channels: 16", "out_channels: 24"))
    code, out, err = invoke("eval", str(spec), "--weights", str(trained["weights"]))
    assert code == 1 and "Traceback" not in out + err
    assert "conv1.weight" in err and "[24, 1, 3, 3]" in err.replace("(", "[").replace(")", "]")


def digit_images(folder: Path, count: int = 6) -> list[str]:
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    paths = []
    for index in range(1500, 1500 + count):
        pixels = (digits.images[index] * 255 / 16).astype("uint8")
        path = folder / f"digit{index}.png"
        Image.fromarray(pixels, mode="L").save(path)
        paths.append(str(path))
    return paths


@pytest.mark.parametrize("fmt", ["pt2", "onnx", "py"])
def test_predict_from_an_exported_artifact_matches_the_spec(
    trained: dict[str, object], fmt: str, tmp_path: Path
) -> None:
    run = str(trained["run_dir"])
    artifact = tmp_path / f"digits.{fmt}"
    code, out, err = invoke("export", str(DIGITS), "-w", run, "-o", str(artifact), "--json")
    assert code == 0, err
    written = json.loads(out)
    assert written["format"] == fmt and written["manifest"].endswith(".manifest.json")
    images = digit_images(tmp_path)
    code, out, err = invoke("predict", str(artifact), *images, "--json")
    assert code == 0, err
    from_artifact = json.loads(out)["predictions"]
    code, out, err = invoke("predict", str(DIGITS), "-w", run, *images, "--json")
    assert code == 0, err
    from_spec = json.loads(out)["predictions"]
    for a, s in zip(from_artifact, from_spec, strict=True):
        assert a["label"] == s["label"]
        assert a["top"][0]["probability"] == pytest.approx(s["top"][0]["probability"], abs=1e-4)


def test_export_defaults_to_build_and_says_what_it_wrote(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = invoke("export", str(DIGITS), "--format", "py")
    assert code == 0, err
    assert "wrote build/digits.py" in out and "wrote build/digits.safetensors" in out
    assert "no --weights" in err
    assert (tmp_path / "build" / "digits.py.manifest.json").exists()


def test_export_errors_exit_1_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "w.safetensors"
    bad.write_bytes(b"not safetensors")
    code, _, err = invoke("export", str(DIGITS), "-w", str(bad), "-o", str(tmp_path / "d.pt2"))
    assert code == 1 and "Traceback" not in err
    assert f"{bad}: " in err and "truncated or corrupt" in err
    code, _, err = invoke("export", str(DIGITS), "-o", str(tmp_path / "d.pt2"), "--format", "tf")
    assert code == 2 and "'tf' is not one of pt2, aoti, onnx, py" in err
    code, _, err = invoke("predict", str(tmp_path / "missing.onnx"), str(bad))
    assert code == 1 and "No artifact at" in err


def test_bench_times_an_artifact_against_eager(trained: dict[str, object], tmp_path: Path) -> None:
    artifact = tmp_path / "digits.onnx"
    code, _, err = invoke("export", str(DIGITS), "-w", str(trained["run_dir"]), "-o", str(artifact))
    assert code == 0, err
    code, out, err = invoke("bench", str(artifact), "--batch", "32", "--rounds", "3", "--json")
    assert code == 0, err
    document = json.loads(out)
    assert [v["name"] for v in document["variants"]] == ["eager", "artifact (onnx)"]
    assert all(v["step_ms"] > 0 for v in document["variants"])
    assert document["variants"][0]["ratio_vs_eager"] == 1.0


def test_cache_memory_flag_trains_and_a_bad_cache_size_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    args = ("train", str(DIGITS), "--cache-memory", "--epochs", "1", "--runs", str(tmp_path))
    code, out, err = invoke(*args, "--json")
    assert code == 0, err
    assert json.loads(out)["epochs"] == 1
    monkeypatch.setenv("CNNC_CPU_CACHE_BYTES", "lots")
    code, _, err = invoke(*args)
    assert code == 1
    assert "CNNC_CPU_CACHE_BYTES must be a whole number of bytes" in err
    assert "Traceback" not in err
