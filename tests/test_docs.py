"""The docs stay in step with the code: the catalog in docs/spec.md is generated."""

from __future__ import annotations

from cnnc.catalog import END, START, markdown
from tests.helpers import ROOT


def test_spec_docs_catalog_is_up_to_date() -> None:
    text = (ROOT / "docs" / "spec.md").read_text()
    generated = text.split(START, 1)[1].split(END, 1)[0]
    assert generated.strip() == markdown().strip(), (
        "docs/spec.md is stale: run `python -m cnnc.catalog docs/spec.md`"
    )


def test_readme_opens_with_the_two_commands() -> None:
    lines = [line for line in (ROOT / "README.md").read_text().splitlines() if line.strip()]
    commands = [line for line in lines[:12] if line.startswith(("python3 ", "./", "bash "))]
    assert len(commands) >= 2, "README.md must open with the run command and the test command"
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1] in ci, ".ci/run must run the README's test command"
