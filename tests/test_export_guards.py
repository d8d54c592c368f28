"""What guards an artifact: its manifest (hashes, versions, device, architecture), the
refusal of pickled objects, weights that do not fit, and clear errors for each."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch

import cnnc
from cnnc.artifacts import ArtifactFailure
from runtime.export.manifest import manifest_path, sha256
from runtime.train.checkpoint import save_weights
from tests.helpers import ROOT

LENET = ROOT / "specs" / "lenet.yaml"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("artifacts")
    paths = {fmt: folder / f"lenet.{fmt}" for fmt in ("pt2", "onnx", "py")}
    for path in paths.values():
        cnnc.export(LENET, path)
    return paths


def copy_artifact(source: Path, folder: Path) -> Path:
    """A private copy of an artifact and every file its manifest lists."""
    manifest = json.loads(manifest_path(source).read_text())
    for name in manifest["files"]:
        (folder / name).write_bytes((source.parent / name).read_bytes())
    manifest_path(folder / source.name).write_text(json.dumps(manifest))
    return folder / source.name


def edit_manifest(path: Path, **changes: object) -> None:
    target = manifest_path(path)
    data = json.loads(target.read_text())
    for dotted, value in changes.items():
        *parents, key = dotted.split("__")
        node = data
        for parent in parents:
            node = node[parent]
        node[key] = value
    target.write_text(json.dumps(data))


def message(excinfo: pytest.ExceptionInfo[ArtifactFailure]) -> str:
    return "\n".join(p.render() for p in excinfo.value.problems)


@pytest.mark.parametrize("fmt", ["pt2", "onnx", "py"])
def test_a_truncated_artifact_is_refused_before_loading(
    exported: dict[str, Path], fmt: str, tmp_path: Path
) -> None:
    path = copy_artifact(exported[fmt], tmp_path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactFailure) as excinfo:
        cnnc.load(path)
    text = message(excinfo)
    assert str(path) in text and "truncated or corrupt" in text and "SHA-256" in text


def test_corrupt_weights_beside_a_py_artifact_are_refused(
    exported: dict[str, Path], tmp_path: Path
) -> None:
    path = copy_artifact(exported["py"], tmp_path)
    weights = tmp_path / "lenet.safetensors"
    weights.write_bytes(b"\0" * 64)
    with pytest.raises(ArtifactFailure, match=r"lenet\.safetensors.*does not match its manifest"):
        cnnc.load(path)


def test_a_missing_manifest_is_a_clear_error(exported: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "lenet.pt2"
    path.write_bytes(exported["pt2"].read_bytes())
    with pytest.raises(ArtifactFailure) as excinfo:
        cnnc.load(path)
    assert "no manifest beside it" in message(excinfo)
    assert "cnnc export" in message(excinfo)


def test_a_missing_artifact_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactFailure, match="No artifact at"):
        cnnc.load(tmp_path / "nothing.onnx")


def test_a_manifest_from_another_version_is_refused(
    exported: dict[str, Path], tmp_path: Path
) -> None:
    path = copy_artifact(exported["onnx"], tmp_path)
    edit_manifest(path, manifest_version=2, versions__cnnc="9.0.0")
    with pytest.raises(ArtifactFailure) as excinfo:
        cnnc.load(path)
    assert "manifest_version 2 (written by cnnc 9.0.0)" in message(excinfo)
    assert "reads version 1" in message(excinfo)


def test_an_unreadable_manifest_is_a_clear_error(exported: dict[str, Path], tmp_path: Path) -> None:
    path = copy_artifact(exported["onnx"], tmp_path)
    manifest_path(path).write_text('{"format": "onnx", ')
    with pytest.raises(ArtifactFailure, match="not readable JSON"):
        cnnc.load(path)


def test_pt2_from_another_torch_release_is_refused(
    exported: dict[str, Path], tmp_path: Path
) -> None:
    path = copy_artifact(exported["pt2"], tmp_path)
    edit_manifest(path, versions__torch="2.12.0")
    with pytest.raises(ArtifactFailure) as excinfo:
        cnnc.load(path)
    text = message(excinfo)
    assert "torch 2.12.0" in text and torch.__version__ in text
    assert "--format onnx or py" in text


@pytest.mark.parametrize("fmt", ["onnx", "py"])
def test_portable_formats_load_under_another_torch_release(
    exported: dict[str, Path], fmt: str, tmp_path: Path
) -> None:
    path = copy_artifact(exported[fmt], tmp_path)
    edit_manifest(path, versions__torch="2.12.0")
    assert cnnc.load(path)(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


def test_an_artifact_compiled_for_cuda_is_refused_on_the_cpu(
    exported: dict[str, Path], tmp_path: Path
) -> None:
    path = copy_artifact(exported["pt2"], tmp_path)
    edit_manifest(path, target__type="cuda", target__name="NVIDIA H100", target__arch="sm_90")
    with pytest.raises(ArtifactFailure) as excinfo:
        cnnc.load(path, device="cpu")
    text = message(excinfo)
    assert "compiled for cuda (NVIDIA H100)" in text and "cannot run on cpu" in text


def test_aoti_code_for_another_cpu_architecture_is_refused(tmp_path: Path) -> None:
    from runtime.errors import ArtifactError
    from runtime.export.manifest import Manifest, Target, check, versions

    here = Target.of(torch.device("cpu"))

    def manifest(arch: str) -> Manifest:
        target = Target("cpu", "some CPU", arch)
        return Manifest("aoti", {"m.pt2": ""}, [1], [1], target, versions())

    check(manifest(here.arch), torch.device("cpu"))  # the ISA it was compiled for: fine
    check(manifest("DEFAULT"), torch.device("cpu"))  # an older ISA runs on a newer CPU
    with pytest.raises(ArtifactError, match=r"CPU code for SVE256 .* supports only"):
        check(manifest("SVE256"), torch.device("cpu"))
    if here.arch != "AVX512":
        with pytest.raises(ArtifactError, match="CPU code for AVX512"):
            check(manifest("AVX512"), torch.device("cpu"))


def test_aoti_code_for_another_gpu_architecture_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    from runtime.errors import ArtifactError
    from runtime.export import manifest as module
    from runtime.export.manifest import Manifest, Target, check, versions

    monkeypatch.setattr(
        module.Target, "of", classmethod(lambda cls, device: cls("cuda", "NVIDIA A100", "sm_80"))
    )
    target = Target("cuda", "NVIDIA H100", "sm_90")
    manifest = Manifest("aoti", {"m.pt2": ""}, [1], [1], target, versions())
    with pytest.raises(
        ArtifactError, match=r"GPU code for sm_90 \(NVIDIA H100\); this GPU is sm_80"
    ):
        check(manifest, torch.device("cuda"))


def test_pt2_with_pickled_weights_is_refused(exported: dict[str, Path], tmp_path: Path) -> None:
    path = copy_artifact(exported["pt2"], tmp_path)
    rewritten = tmp_path / "rewritten.pt2"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(rewritten, "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            if item.filename.endswith("model_weights_config.json"):
                config = json.loads(data)
                first = next(iter(config["config"]))
                config["config"][first]["use_pickle"] = True
                data = json.dumps(config).encode()
            target.writestr(item, data)
    path.write_bytes(rewritten.read_bytes())
    edit_manifest(path, files={path.name: sha256(path)})
    with pytest.raises(ArtifactFailure, match="as a pickled object"):
        cnnc.load(path)


def test_weights_that_do_not_fit_the_spec_name_the_tensors(tmp_path: Path) -> None:
    other = cnnc.build(ROOT / "specs" / "digits.yaml")
    weights = tmp_path / "digits.safetensors"
    save_weights(other, weights)
    with pytest.raises(ArtifactFailure) as excinfo:
        cnnc.export(LENET, tmp_path / "lenet.pt2", weights=weights)
    text = message(excinfo)
    assert str(weights) in text and "does not fit the model" in text
    assert "conv1.weight is (16, 1, 3, 3) in the checkpoint but (6, 3, 5, 5) in the model" in text
    assert not (tmp_path / "lenet.pt2").exists()


def test_a_wrong_suffix_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactFailure, match=r"written to a \.onnx file"):
        cnnc.export(LENET, tmp_path / "lenet.pt2", fmt="onnx")
    with pytest.raises(ArtifactFailure, match="cannot tell the format"):
        cnnc.export(LENET, tmp_path / "lenet.bin")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a CPU-only machine")
def test_exporting_for_an_absent_gpu_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactFailure) as excinfo:
        cnnc.export(LENET, tmp_path / "lenet.pt2", device="cuda")
    text = message(excinfo)
    assert "lenet.yaml: --device: CUDA was requested but is not available" in text
    with pytest.raises(ArtifactFailure, match="Unknown device"):
        cnnc.export(LENET, tmp_path / "lenet.pt2", device="gpu")


def test_onnx_without_its_packages_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "onnxscript", None)  # makes `import onnxscript` fail
    with pytest.raises(ArtifactFailure) as excinfo:
        cnnc.export(LENET, tmp_path / "lenet.onnx")
    assert "pip install 'cnnc[onnx]'" in message(excinfo)
    assert not (tmp_path / "lenet.onnx").exists()


requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("fmt", ["pt2", "aoti"])
def test_cuda_artifacts_round_trip_with_their_architecture(fmt: str, tmp_path: Path) -> None:
    out = tmp_path / "digits.pt2"
    model = cnnc.build(ROOT / "specs" / "digits.yaml").eval().cuda()
    weights = tmp_path / "w.safetensors"
    save_weights(model, weights)
    result = cnnc.export(
        ROOT / "specs" / "digits.yaml", out, fmt=fmt, weights=weights, device="cuda"
    )
    major, minor = torch.cuda.get_device_capability()
    assert result.manifest.target.type == "cuda"
    assert result.manifest.target.arch == f"sm_{major}{minor}"
    if fmt == "pt2":  # the fused Triton conv+ReLU survives export
        assert result.manifest.optimizations["rewrites"]["fused_conv_relu"] == 3
    loaded = cnnc.load(out, device="cuda")
    x = torch.randn(5, 1, 8, 8, device="cuda")
    with torch.inference_mode():
        torch.testing.assert_close(loaded(x), model(x), rtol=1e-2, atol=1e-2)  # tf32
    with pytest.raises(ArtifactFailure, match="cannot run on cpu"):
        cnnc.load(out, device="cpu")
