"""The light path: validating, summarizing and listing never load torch.

``cnnc --help``, ``check``, ``summary``, ``schema`` and ``layers`` (and ``import cnnc``) run
in a fresh interpreter each, which must end without ``torch`` in ``sys.modules``. What the
light path writes out instead of asking torch (the names ``nn.Module`` reserves) is checked
here against the original.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from torch import nn

from cnnc.layers.types import MODULE_ATTRIBUTES
from tests.helpers import ROOT

# Modules the light path must not load: torch and what only torch's users need.
HEAVY = (
    "torch",
    "triton",
    "numpy",
    "runtime.kernels.triton",
    "runtime.kernels.cpu.extension",
    "runtime.benchmark",
)

# Runs the command line in-process and prints which of HEAVY it loaded, and its exit code.
_PROBE = """
import json, runpy, sys
sys.argv = ["cnnc", *sys.argv[1:]]
code = 0
try:
    runpy.run_module("cnnc", run_name="__main__")
except SystemExit as stop:
    code = stop.code or 0
loaded = sorted(name for name in {heavy} if name in sys.modules)
print(json.dumps({{"code": code, "loaded": loaded}}), file=sys.stderr)
"""

LIGHT_COMMANDS = [
    ["--help"],
    ["check", "specs/lenet.yaml"],
    ["check", "specs/resnet20.yaml", "--json"],
    ["summary", "specs/lenet.yaml"],
    ["summary", "specs/resnet20.yaml", "--json"],
    ["schema"],
    ["layers"],
    ["layers", "--json"],
    ["build", "--help"],
    ["bench", "--help"],
]


def _probe(code: str, *args: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    last = done.stderr.strip().splitlines()[-1]
    result: dict[str, object] = json.loads(last)
    return result


@pytest.mark.parametrize("args", LIGHT_COMMANDS, ids=" ".join)
def test_light_commands_do_not_import_torch(args: list[str]) -> None:
    result = _probe(_PROBE.format(heavy=HEAVY), *args)
    assert result == {"code": 0, "loaded": []}


def test_import_cnnc_is_light_and_build_loads_torch_when_called() -> None:
    code = f"""
import json, sys
import cnnc
names = {{name: callable(getattr(cnnc, name)) for name in cnnc.__all__}}
before = sorted(name for name in {HEAVY} if name in sys.modules)
model = cnnc.build("specs/lenet.yaml")
print(json.dumps({{"before": before, "after": "torch" in sys.modules,
                  "module": type(model).__name__}}), file=sys.stderr)
"""
    assert _probe(code) == {"before": [], "after": True, "module": "Network"}


def test_every_public_name_resolves() -> None:
    import cnnc
    import runtime.export
    import runtime.train

    for package in (cnnc, runtime.export, runtime.train):
        for name in package.__all__:
            assert getattr(package, name) is not None, f"{package.__name__}.{name}"
        assert set(package.__all__) <= set(dir(package))
        with pytest.raises(AttributeError, match="has no attribute 'nope'"):
            _ = package.nope


def test_reserved_layer_names_are_the_public_attributes_of_nn_module() -> None:
    public = {name for name in dir(nn.Module()) if not name.startswith("_")}
    missing, extra = sorted(public - MODULE_ATTRIBUTES), sorted(MODULE_ATTRIBUTES - public)
    assert not missing and not extra, f"add {missing}, remove {extra}"
