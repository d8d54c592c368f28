"""Lazy package exports (PEP 562): a package's public names, imported on first use.

A package ``__init__`` that re-exports names from heavy submodules (torch, dynamo) writes::

    __getattr__, __dir__, __all__ = lazy_exports(__name__, {"runtime.train.loop": ("fit",)})

and imports the same names under ``if TYPE_CHECKING:`` (as ``import fit as fit``: an
explicit re-export) for type checkers. Importing the
package, or a light submodule of it, then loads none of them; ``package.fit`` (or
``from package import fit``) imports ``runtime.train.loop`` and caches the name in the
package. Standard library only: cnnc's light command-line path goes through here.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_exports(
    package: str, modules: Mapping[str, tuple[str, ...]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """The module ``__getattr__``, ``__dir__`` and ``__all__`` of ``package``.

    Args:
        package: The package's ``__name__`` (it must be importing, i.e. in ``sys.modules``).
        modules: Each submodule → the public names it defines.
    """
    namespace = sys.modules[package].__dict__
    names = {name: module for module, exported in modules.items() for name in exported}

    def __getattr__(name: str) -> Any:
        if name not in names:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(names[name]), name)
        namespace[name] = value  # later reads skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *names})

    return __getattr__, __dir__, sorted(names)
