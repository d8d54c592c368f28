"""The published JSON Schema of specs (``cnnc schema``), derived from the pydantic models.

Pydantic describes the layer union as ``oneOf`` its members; editors also need to accept the
bare-string shorthand (``- relu``) and block uses (any other ``type``), so the union is
rewritten as ``anyOf`` those three.
"""

from __future__ import annotations

from typing import Any

from cnnc.layers.base import REGISTRY
from cnnc.spec import ModelSpec

SCHEMA_ID = "https://cnnc.dev/schema/spec.json"


def json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) every spec file must satisfy."""
    schema: dict[str, Any] = _rewrite_unions(ModelSpec.model_json_schema())
    block_use = schema["$defs"]["BlockUse"]
    block_use["properties"]["type"] = {
        "type": "string",
        "not": {"enum": sorted(REGISTRY)},
        "description": "the name of a block defined under blocks:",
    }
    optimize = schema["properties"]["optimize"]
    optimize["anyOf"].append({"enum": ["auto", "eager", "off"]})
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = SCHEMA_ID
    schema["title"] = "cnnc model spec"
    return schema


def _rewrite_unions(node: Any) -> Any:
    """Tagged unions also accept their bare tag (``- relu``, ``loss: cross_entropy``)."""
    if isinstance(node, dict):
        node = {key: _rewrite_unions(value) for key, value in node.items()}
        members = node.get("oneOf")
        if isinstance(members, list) and {"$ref": "#/$defs/BlockUse"} in members:
            del node["oneOf"]
            node["anyOf"] = [*members, {"enum": sorted(REGISTRY)}]
        elif isinstance(members, list) and "discriminator" in node:
            tags = sorted(node.pop("discriminator")["mapping"])
            del node["oneOf"]
            node["anyOf"] = [*members, {"enum": tags}]
        return node
    if isinstance(node, list):
        return [_rewrite_unions(value) for value in node]
    return node
