"""Module names the way a person writes them: conv1, conv2, bn1, relu, fc1, layer1, ...

Names are assigned per scope (the model, a residual, a branch, a block instance). A name the
user gave is kept and must be unique in its scope; every other item gets its layer type's
prefix, numbered when the scope has more than one of that prefix or when the type is always
numbered (conv, fc, bn: the tutorials write ``conv1`` even for a single conv). Generated names
skip names already taken.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING

from cnnc.errors import Problem, SpecError, SpecPath, dotted
from cnnc.layers.base import LayerSpec

if TYPE_CHECKING:
    from cnnc.infer import Inference

Item = tuple[LayerSpec, SpecPath]


def prefix_of(spec: LayerSpec) -> tuple[str, bool]:
    """The name prefix of an item and whether it is always numbered."""
    if spec.repeat is not None:
        return "layer", True  # torchvision's stages: layer1, layer2, ...
    return spec.name_prefix()


def scope_names(
    inference: Inference, groups: Sequence[Sequence[Item]], reserved: Sequence[str] = ()
) -> list[list[str]]:
    """Names for every item of one scope (given as groups that share it), in order."""
    taken = _explicit(inference, groups, reserved)
    counts = Counter(prefix_of(spec)[0] for group in groups for spec, _ in group if not spec.name)
    next_index: Counter[str] = Counter()
    names: list[list[str]] = []
    for group in groups:
        names.append([])
        for spec, _ in group:
            if spec.name:
                names[-1].append(spec.name)
                continue
            prefix, numbered = prefix_of(spec)
            if counts[prefix] == 1 and not numbered and prefix not in taken:
                name = prefix
            else:
                next_index[prefix] += 1
                while f"{prefix}{next_index[prefix]}" in taken:
                    next_index[prefix] += 1
                name = f"{prefix}{next_index[prefix]}"
            taken.add(name)
            names[-1].append(name)
    return names


def _explicit(
    inference: Inference, groups: Sequence[Sequence[Item]], reserved: Sequence[str]
) -> set[str]:
    seen: dict[str, SpecPath] = {}
    problems = []
    for group in groups:
        for spec, path in group:
            if not spec.name:
                continue
            where = (*path, "name")
            if spec.name in seen or spec.name in reserved:
                first = seen.get(spec.name)
                other = (
                    f"also used at {inference.source.locate(first)} ({dotted(first)})"
                    if first is not None
                    else "it names the residual's shortcut"
                )
                problems.append(
                    Problem(
                        f"name '{spec.name}' collides in this scope: {other}",
                        inference.source.locate(where),
                        dotted(where),
                        hint="names must be unique among the layers of one scope; rename one",
                    )
                )
            seen.setdefault(spec.name, path)
    if problems:
        raise SpecError(problems)
    return set(seen) | set(reserved)
