"""Device choice and DistributedDataParallel set-up for ``fit``.

Launched under torchrun (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` in the environment),
``setup`` joins the process group (gloo on CPU, nccl on CUDA; a group the caller already
initialized is reused and left alone) and pins each process to ``cuda:LOCAL_RANK``.
Without those variables everything here degrades to a single process and no collective
is ever called.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from runtime.errors import ConfigError

__all__ = ["DistContext", "resolve_device", "setup", "teardown"]

T = TypeVar("T")


def resolve_device(device: str | torch.device, local_rank: int = 0) -> torch.device:
    """``"auto"`` -> ``cuda:<local_rank>`` when CUDA is available, else ``cpu``."""
    name = str(device)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name not in ("cpu", "cuda") and not name.startswith("cuda:"):
        raise ConfigError(
            f"Unknown device. 'auto', 'cpu' or 'cuda' was expected. Received: '{name}'.",
            field="device",
        )
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            "CUDA was requested but is not available. A CUDA build of torch and a visible "
            f"GPU were expected. Received: device='{name}', torch {torch.__version__}.",
            hint="use device: auto or cpu",
            field="device",
        )
    if name == "cuda":
        name = f"cuda:{local_rank}"
    return torch.device(name)


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job: rank, world size and device."""

    rank: int
    local_rank: int
    world_size: int
    device: torch.device
    owns_group: bool = False

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_reduce_sum(self, tensor: Tensor) -> Tensor:
        """Sums ``tensor`` over all processes, in place; a no-op in a single process."""
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value`` on every process (any picklable object)."""
        if not self.enabled:
            return value
        box: list[object] = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]  # type: ignore[return-value]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def wrap(self, model: nn.Module) -> nn.Module:
        """``model`` wrapped in DistributedDataParallel when there are several processes."""
        if not self.enabled:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=ids)


def setup(device: str | torch.device = "auto") -> DistContext:
    """Reads the torchrun environment, joins the process group and picks the device."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext(0, 0, 1, resolve_device(device))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    resolved = resolve_device(device, local_rank)
    if resolved.type == "cuda":
        torch.cuda.set_device(resolved)
    owns = not dist.is_initialized()
    if owns:
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size)
    return DistContext(rank, local_rank, world_size, resolved, owns)


def teardown(context: DistContext, *, clean: bool = True) -> None:
    """Leaves the process group if ``setup`` created it.

    After a normal end every process first meets at a barrier: a process that destroys the
    group while another still has gloo work in flight aborts ("terminate called without an
    active exception"). After an error the others may never arrive, so there is no barrier.
    """
    if context.owns_group and dist.is_initialized():
        if clean:
            dist.barrier()
        dist.destroy_process_group()
