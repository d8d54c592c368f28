"""The optimization registry is the one place an optimization is defined.

Parametrized over ``REGISTRY``: each entry is a field of ``OptimizeConfig``, a key of the
spec's ``optimize:`` section, a flag of ``cnnc train``, a row of the performance docs'
table, part of ``auto``'s lineup where it pays, and prepares a model on CPU (applied, or
declined with a reason). An optimization spelled anywhere else fails here.
"""

from __future__ import annotations

import re
import typing

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

from cnnc.cli import app
from cnnc.sections.optimize import OptimizeSection
from runtime.optimize import candidates, registry
from runtime.optimize.config import EAGER, OptimizeConfig
from runtime.optimize.prepare import prepare
from runtime.optimize.registry import REGISTRY, Optimization
from runtime.optimize.step import TrainStep
from tests.helpers import ROOT

ENTRIES = pytest.mark.parametrize("entry", REGISTRY, ids=lambda e: e.name)
CPU = torch.device("cpu")


def _on(entry: Optimization) -> object:
    return entry.choices[1] if entry.choices else True


def test_config_fields_are_the_registry_in_order() -> None:
    assert tuple(OptimizeConfig.model_fields) == registry.NAMES
    for entry in REGISTRY:
        field = OptimizeConfig.model_fields[entry.name]
        assert field.default == entry.default
        if entry.choices:
            assert typing.get_args(field.annotation) == entry.choices


def test_spec_section_adds_only_auto_and_precision() -> None:
    assert set(OptimizeSection.model_fields) - set(registry.NAMES) == {"auto", "precision"}


@ENTRIES
def test_schema_describes_each_entry(entry: Optimization) -> None:
    prop = OptimizeSection.model_json_schema()["properties"][entry.name]
    assert prop["description"] == entry.doc


@ENTRIES
def test_train_has_one_flag_per_entry(entry: Optimization) -> None:
    help_text = CliRunner().invoke(app, ["train", "--help"], env={"COLUMNS": "200"}).stdout
    assert entry.flag in help_text


def test_flags_are_spelled_only_in_the_registry() -> None:
    """No module but the registry names an optimization's flag (they are derived)."""
    flags = [entry.flag for entry in REGISTRY]
    for path in [*(ROOT / "cnnc").rglob("*.py"), *(ROOT / "runtime").rglob("*.py")]:
        if path.name == "registry.py":
            continue
        text = path.read_text(encoding="utf-8")
        spelled = [flag for flag in flags if re.search(rf"{flag}\b(?!-)", text)]
        assert not spelled, f"{path.relative_to(ROOT)} spells {spelled}"


def test_docs_table_is_the_registry() -> None:
    text = (ROOT / "docs" / "performance.md").read_text(encoding="utf-8")
    assert registry.markdown_table() in text


@ENTRIES
def test_names_are_derived(entry: Optimization) -> None:
    config = EAGER.with_(**{entry.name: _on(entry)})
    assert config.name == entry.part(_on(entry))
    assert config.exact == entry.exact


@ENTRIES
def test_each_entry_has_a_candidate_where_it_pays(entry: Optimization) -> None:
    for device in entry.pays_on or entry.devices:
        lineup = candidates.lineup(torch.device(device), ("off", "bf16"), force_precision=True)
        featured = [c for c in lineup.configs if entry in registry.enabled(c.to_dict())]
        assert featured, f"no {device} candidate features {entry.name}"


@ENTRIES
def test_each_entry_prepares_on_cpu_or_declines_with_a_reason(entry: Optimization) -> None:
    """A training step under the entry alone runs; off its devices it is declined."""
    value = "bf16" if entry.name == "amp" else "default" if entry.choices else True
    config = EAGER.with_(**{entry.name: value})
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
    model.append(nn.Sequential(nn.Flatten(), nn.Linear(8 * 4 * 4, 10)))
    prepared = prepare(model, config, CPU)
    if "cpu" not in entry.devices:
        assert f"{entry.name} declined: {entry.off_device}" in prepared.notes
        assert entry.name not in prepared.active
    step = TrainStep(prepared, torch.optim.SGD(model.parameters(), lr=0.1), F.cross_entropy)
    loss, outputs = step(torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,)))
    assert torch.isfinite(loss) and outputs.shape == (4, 10)


def test_the_lineup_is_eager_first_and_has_no_duplicates() -> None:
    configs = candidates.candidates(CPU, ("off", "bf16"), force_precision=True)
    assert configs[0] == EAGER
    assert len({c.name for c in configs}) == len(configs)
    assert all(registry.pays_on(c.to_dict(), "cpu") for c in configs)
