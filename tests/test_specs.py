"""Every spec in specs/: inferred shapes equal real ones, generated code equals cnnc.build."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import torch

import cnnc
from cnnc import codegen
from cnnc.baselines import BASELINES
from cnnc.schema import json_schema
from cnnc.source import load
from tests.helpers import ROOT, SPECS, import_path, real_shapes, spec_ids

# Seeds and classic networks, with the parameter counts of their reference implementations.
EXPECTED_PARAMS = {
    "lenet": 62_006,
    "lenet_mnist": 61_706,
    "seed000_cnn": 136_874,
    "seed001_lenet": 61_706,
    "seed002_cifar": 145_578,
    "seed003_mlp": 22,
    "resnet18": 11_689_512,
    "vgg11": 132_863_336,
    "squeezenet": 1_235_496,
    "mobilenet_v2": 3_504_872,
    "googlenet": 6_624_904,
}


@pytest.mark.parametrize("path", SPECS, ids=spec_ids())
def test_inferred_shapes_equal_meta_device_shapes(path: Path) -> None:
    compiled = cnnc.compile_spec(path)
    with torch.device("meta"):
        model = cnnc.build(compiled)
    expected = {n.qualname: n.out_shape for n in compiled.graph.root.walk() if n.qualname}
    assert real_shapes(model, compiled.graph.input_shape) == expected


@pytest.mark.parametrize("name,params", sorted(EXPECTED_PARAMS.items()))
def test_parameter_counts(name: str, params: int) -> None:
    compiled = cnnc.compile_spec(ROOT / "specs" / f"{name}.yaml")
    assert cnnc.summarize(compiled.graph).params == params
    with torch.device("meta"):
        model = cnnc.build(compiled)
    assert sum(p.numel() for p in model.parameters()) == params


@pytest.mark.parametrize("path", SPECS, ids=spec_ids())
def test_generated_module_equals_build(path: Path, tmp_path: Path) -> None:
    compiled = cnnc.compile_spec(path)
    target = tmp_path / f"{codegen.module_name(compiled.spec.name)}.py"
    target.write_text(cnnc.generate_code(compiled))
    module = import_path(target, f"generated_{path.stem}")
    generated = getattr(module, codegen.class_name(compiled.spec.name))()
    built = cnnc.build(compiled)
    gen_state, built_state = generated.state_dict(), built.state_dict()
    assert list(gen_state) == list(built_state)
    assert {k: v.shape for k, v in gen_state.items()} == {
        k: v.shape for k, v in built_state.items()
    }
    generated.load_state_dict(built_state)
    generated.eval()
    built.eval()
    x = torch.randn(2, *compiled.graph.input_shape)
    with torch.no_grad():
        assert torch.equal(generated(x), built(x))


def test_generated_module_imports_as_a_module(tmp_path: Path) -> None:
    (tmp_path / "lenet5.py").write_text(cnnc.generate_code(ROOT / "specs" / "lenet.yaml"))
    sys.path.insert(0, str(tmp_path))
    try:
        module = importlib.import_module("lenet5")
        assert module.Lenet5()(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
        assert module.Lenet5.input_shape == (3, 32, 32)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("lenet5", None)


def test_generated_code_is_ruff_clean(tmp_path: Path) -> None:
    for path in SPECS:
        (tmp_path / f"{path.stem}.py").write_text(cnnc.generate_code(path))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "ruff",
            "check",
            "--isolated",
            "--select",
            "E,F,W,B,UP",
            "--ignore",
            "E501",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", SPECS, ids=spec_ids())
def test_specs_satisfy_the_published_schema(path: Path) -> None:
    jsonschema.validate(load(path).data, json_schema())


def test_schema_rejects_an_unknown_top_level_key() -> None:
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {"name": "x", "input": [3], "layers": ["relu"], "lyers": []}, json_schema()
        )


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_seed_baselines_are_the_same_networks(name: str) -> None:
    path = next(p for p in SPECS if cnnc.compile_spec(p).spec.name == name)
    built = cnnc.build(path)
    baseline = BASELINES[name]()
    assert [tuple(t.shape) for t in built.state_dict().values()] == [
        tuple(t.shape) for t in baseline.state_dict().values()
    ]
    for (_, a), (_, b) in zip(
        baseline.state_dict().items(), built.state_dict().items(), strict=True
    ):
        b.copy_(a)
    x = torch.randn(3, *cnnc.compile_spec(path).graph.input_shape)
    torch.testing.assert_close(built(x), baseline(x))
