"""Every registered layer type, through its own examples, against torch as the oracle.

Parametrized over the registry: a new layer type is tested here as soon as it registers.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from pydantic import BaseModel

import cnnc
from cnnc import modules
from cnnc.builder import instantiate
from cnnc.codegen import _call
from cnnc.layers.base import REGISTRY, Composite, Example, Layer, register
from cnnc.spec import AnyLayer  # noqa: F401  (completes composite classes)
from tests.helpers import real_shapes

EXAMPLES = [(tag, i, ex) for tag, cls in REGISTRY.items() for i, ex in enumerate(cls.examples)]


def _spec(example: Example) -> dict[str, Any]:
    return {"name": "t", "input": list(example.input), "layers": [example.config]}


@pytest.mark.parametrize("tag", sorted(REGISTRY))
def test_every_type_has_examples_and_a_summary(tag: str) -> None:
    cls = REGISTRY[tag]
    assert cls.examples, f"{tag} has no examples"
    assert cls.summary
    assert all(ex.config["type"] == tag for ex in cls.examples)


@pytest.mark.parametrize("tag,index,example", EXAMPLES, ids=[f"{t}-{i}" for t, i, _ in EXAMPLES])
def test_example_shapes_and_params_match_torch(tag: str, index: int, example: Example) -> None:
    compiled = cnnc.compile_spec(_spec(example))
    model = cnnc.build(compiled)
    expected = {n.qualname: n.out_shape for n in compiled.graph.root.walk() if n.qualname}
    assert real_shapes(model, example.input, device="cpu") == expected
    summary = cnnc.summarize(compiled.graph)
    assert summary.params == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "tag,index,example",
    [e for e in EXAMPLES if issubclass(REGISTRY[e[0]], Layer)],
    ids=[f"{t}-{i}" for t, i, _ in EXAMPLES if issubclass(REGISTRY[t], Layer)],
)
def test_module_call_renders_to_the_same_module(tag: str, index: int, example: Example) -> None:
    layer = REGISTRY[tag].model_validate(example.config)
    assert isinstance(layer, Layer)
    call = layer.module_call(example.input)
    built = instantiate(call)
    namespace = {"nn": torch.nn, **vars(modules)}  # cnnc.modules' classes, as codegen copies
    rendered = eval(_call(call), namespace)  # our own rendering, never spec text
    assert repr(rendered) == repr(built)
    assert {k: v.shape for k, v in rendered.state_dict().items()} == {
        k: v.shape for k, v in built.state_dict().items()
    }


@pytest.mark.parametrize("tag", sorted(REGISTRY))
def test_unknown_keys_are_rejected(tag: str) -> None:
    example = REGISTRY[tag].examples[0]
    with pytest.raises(cnnc.SpecError, match="unknown key 'bogus'"):
        cnnc.compile_spec(_spec(Example({**example.config, "bogus": 1}, example.input)))


def test_composites_and_leaves_partition_the_registry() -> None:
    for cls in REGISTRY.values():
        assert issubclass(cls, Layer) != issubclass(cls, Composite)
        assert issubclass(cls, BaseModel)


def test_registering_a_tag_twice_raises() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        register("relu")(REGISTRY["relu"])
