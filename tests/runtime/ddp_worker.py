"""Trains the DDP tests' tiny model under torchrun; each process saves what it ended with.

Usage (from the repository root, with it on PYTHONPATH):
    python -m torch.distributed.run --nproc-per-node=2 tests/runtime/ddp_worker.py OUT MODE
MODE is ``full`` (train to the end), ``interrupt`` (rank 0's callback stops the run after
step 5, as Ctrl-C would) or ``resume`` (continue OUT/run from its checkpoint). Writes
OUT/<mode>-rank<r>.pt with the final state_dict, the per-step losses and the epoch records;
rank 0 alone writes the run directory OUT/run.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch

from runtime.train import fit
from tests.runtime.train_helpers import DIGITS, InterruptAt, synthetic_config, tiny_cnn


def main(out: Path, mode: str) -> None:
    model = tiny_cnn(classes=4)
    run = out / "run"
    if mode == "resume":
        result = fit(model, synthetic_config(), DIGITS, device="cpu", resume=run)
    else:
        callbacks = [InterruptAt(5)] if mode == "interrupt" else []
        result = fit(
            model, synthetic_config(), DIGITS, device="cpu", run_dir=run, callbacks=callbacks
        )
    rank = int(os.environ["RANK"])
    torch.save(
        {
            "state": model.state_dict(),
            "losses": result.step_losses,
            "history": [record.flat() for record in result.history],
            "interrupted": result.interrupted,
        },
        out / f"{mode}-rank{rank}.pt",
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2])
