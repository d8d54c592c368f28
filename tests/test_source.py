"""Spec loading is safe (no tags, no duplicates, YAML 1.2 scalars) and keeps positions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import cnnc
from cnnc.errors import SourceError
from cnnc.source import load, load_text

LENET = Path(__file__).resolve().parent.parent / "specs" / "lenet.yaml"


def test_yaml_12_scalars() -> None:
    data = load_text("a: 1e-3\nb: on\nc: no\nd: 0o17\ne: .5\n", "x.yaml").data
    assert data == {"a": 0.001, "b": "on", "c": "no", "d": 15, "e": 0.5}
    assert type(data["a"]) is float and type(data["d"]) is int


@pytest.mark.parametrize(
    "text",
    [
        "a: !!python/object/apply:os.system [echo hacked]\n",
        "a: !!python/name:os.system\n",
        "a: !custom {x: 1}\n",
        "a: !!binary aGk=\n",
    ],
)
def test_tags_are_refused(text: str) -> None:
    with pytest.raises(SourceError, match="YAML tags are not allowed"):
        load_text(text, "x.yaml")


def test_duplicate_keys_are_an_error() -> None:
    with pytest.raises(SourceError) as info:
        load_text("name: a\ninput: [3]\nname: b\n", "x.yaml")
    problem = info.value.problems[0]
    assert (problem.location.line, problem.location.column) == (3, 1)
    assert "duplicate key" in problem.message


def test_alias_bombs_are_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [
        f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]"
        for i in range(1, 9)
    ]
    with pytest.raises(SourceError, match="more than"):
        load_text("\n".join(lines) + "\n", "bomb.yaml")


def test_json_specs_are_accepted_with_positions(tmp_path: Path) -> None:
    data = load(LENET).data
    path = tmp_path / "lenet.json"
    text = json.dumps(data, indent=2)
    path.write_text(text)
    assert sum(p.numel() for p in cnnc.build(path).parameters()) == 62_006
    bad = text.replace('"kernel_size": 5', '"kernel_size": -5', 1)
    path.write_text(bad)
    with pytest.raises(cnnc.SpecError) as info:
        cnnc.build(path)
    location = info.value.problems[0].location
    line = bad.splitlines()[location.line - 1]
    assert line[location.column - 1 :].startswith("-5")


def test_string_and_dict_inputs() -> None:
    text = LENET.read_text()
    assert cnnc.compile_spec(text).graph.output_shape == (10,)
    assert cnnc.compile_spec(load(LENET).data).graph.output_shape == (10,)


@pytest.mark.parametrize(
    "text,message",
    [
        ("", "a spec must be a mapping"),
        ("- relu\n", "a spec must be a mapping"),
        ("layers: [relu\n", "malformed YAML/JSON"),
    ],
)
def test_malformed_documents(text: str, message: str) -> None:
    with pytest.raises(SourceError, match=message):
        load_text(text, "x.yaml")


def test_missing_file() -> None:
    with pytest.raises(SourceError, match="spec file not found"):
        cnnc.build("no/such/spec.yaml")
