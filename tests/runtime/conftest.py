"""Fixtures of the runtime tests: ``level`` runs a test once per ISA level of this machine."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runtime.kernels.cpu import isa
from tests.runtime.kernel_levels import LEVELS


@pytest.fixture(params=LEVELS)
def level(request: pytest.FixtureRequest) -> Iterator[str]:
    """cnnc's kernels capped at each level this machine supports, in turn."""
    with isa.use(request.param):
        yield request.param
