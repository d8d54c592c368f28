"""The codes of cnnc's lint warnings and the ``lint:`` setting that silences them.

A spec silences a warning everywhere with ``lint: {ignore: [CODE, ...]}`` at its top level,
or at one layer with the same key on that layer (in a block body: every copy of it). The
rules themselves live in ``cnnc.lint``; this module holds only what the spec classes need to
validate the setting, so they do not import the rules.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

CODES: dict[str, str] = {
    "softmax-before-loss": "the network ends with softmax before a loss that applies "
    "log_softmax itself",
    "log-softmax-twice": "the network ends with log_softmax and the loss is cross_entropy",
    "conv-bias-before-batchnorm": "a conv2d bias right before batchnorm2d, which cancels it",
    "resolution-tied": "a flatten before linear ties the network to one input size",
}

Code = Literal[
    "softmax-before-loss", "log-softmax-twice", "conv-bias-before-batchnorm", "resolution-tied"
]


class LintSettings(BaseModel):
    """``lint: {ignore: [...]}``: the warnings not to report (at a spec's top level: all of
    them of those codes; on a layer: that layer's)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ignore: list[Code] = Field(default_factory=list)
