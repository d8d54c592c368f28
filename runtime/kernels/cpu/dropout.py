"""``FastDropout``: an nn.Dropout whose CPU training mask comes from ``cpu/dropout.cpp``.

ATen's CPU dropout draws an mt19937 number per element in a scalar loop (18 ms for a
16x512x13x13 activation on this machine); the kernel hashes (element index, seed) with
AVX2 or AVX-512 (its scalar path, below AVX2, gives the same masks) and recomputes the
mask in the backward instead of storing it. Each element is kept with probability 1 - p and
scaled by 1 / (1 - p), as in torch, and ``torch.manual_seed`` makes runs repeat; the masks
themselves differ from torch's (another random stream).

The kernel runs in training on CPU for fp32/bf16/fp16 tensors contiguous in the default or channels-last format outside torch.compile
(which keeps its own dropout); anything else, and eval mode, is ``nn.Dropout.forward``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from runtime.kernels.cpu.extension import load, vectorized

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_SEED_BOUND = 2**63 - 1


def kernel_available() -> bool:
    """True when the C++ kernel is built and runs a vector path at the ISA level in use."""
    return vectorized("dropout")


def _seeds() -> tuple[int, int]:
    """Two 32-bit seeds from torch's default CPU generator (so manual_seed repeats runs)."""
    seed = int(torch.randint(_SEED_BOUND, (1,)).item())
    return seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF


def dropout(x: Tensor, p: float, seeds: tuple[int, int]) -> Tensor:
    """``x * keep / (1 - p)`` with the kernel's mask for ``seeds`` (x dense, on CPU)."""
    module = load("dropout")
    assert module is not None, "dropout needs kernel_available()"
    result: Tensor = module.apply(x, p, *seeds)
    return result


def _dense(x: Tensor) -> bool:
    """Contiguous in the default or the channels-last memory format."""
    return x.is_contiguous() or (
        x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
    )


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor, p: float) -> Tensor:
        seeds = _seeds()
        ctx.saved = (p, seeds, x.shape, x.stride())  # type: ignore[attr-defined]
        return dropout(x, p, seeds)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: Tensor) -> tuple[Tensor, None]:
        p, seeds, shape, stride = ctx.saved  # type: ignore[attr-defined]
        if grad.stride() != stride:  # the mask follows the forward input's memory order
            grad = torch.empty_strided(shape, stride, dtype=grad.dtype).copy_(grad)
        return dropout(grad, p, seeds), None


class FastDropout(nn.Dropout):
    """An nn.Dropout (same p and state) whose CPU training mask comes from cnnc's kernel."""

    @classmethod
    def from_module(cls, module: nn.Dropout) -> FastDropout:
        fast = cls(module.p, module.inplace)
        fast.train(module.training)
        return fast

    def forward(self, x: Tensor) -> Tensor:
        if (
            not self.training
            or self.inplace
            or not 0.0 < self.p < 1.0
            or torch.compiler.is_compiling()
            or x.device.type != "cpu"
            or x.dtype not in _DTYPES
            or not _dense(x)
            or not kernel_available()
        ):
            return super().forward(x)
        result: Tensor = _Dropout.apply(x, self.p)
        return result
