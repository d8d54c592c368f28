"""The spec's ``train:`` section: the runtime's ``TrainConfig``, validated where it is written.

There is one definition of every training setting, in ``runtime.train.config``; the section
is that class, so a spec accepts exactly what ``fit`` accepts, with the same defaults::

    train:
      dataset: {type: cifar10, root: data/cifar10}
      batch_size: 4
      epochs: 2
      loss: cross_entropy
      optimizer: {type: sgd, lr: 0.001, momentum: 0.9}

Errors keep their place in the file: ``cnnc.validation`` maps each pydantic error location
(``('train', 'optimizer', 'sgd', 'lr')``, tags included) back to the key the user wrote and
its line and column. Checks that need the data happen in the runtime, whose ``ConfigError``
and ``DataError`` carry the same dotted ``field`` for the CLI to locate. This module imports
only ``runtime.train.config`` (pydantic, no torch).
"""

from __future__ import annotations

from runtime.train.config import TrainConfig

__all__ = ["TrainSection"]

TrainSection = TrainConfig
