"""Custom kernels for any ``nn.Module``, in two families, and the gate that trusts them.

- ``runtime.kernels.triton``: the fused conv2d + bias + ReLU custom op
  (``torch.ops.cnnc_runtime.conv2d_relu`` and its backward op), Triton kernels on CUDA
  (under ``TRITON_INTERPRET=1`` they also run on CPU tensors), and the pass that fuses
  conv+ReLU pairs of a model into it (``fuse_conv_relu``).
- ``runtime.kernels.cpu``: cnnc's C++ CPU kernels (2x2 max-pooling, batch norm, dropout
  masks, bf16 3x3 convolutions), built on the user's machine by ``cpu.extension`` and run
  at the ISA level ``cpu.isa`` picks, each wrapped as a custom op or module.

Both families share ``conv_args`` (a conv's hyper-parameters as a kernel sees them) and
``parity`` (a kernel runs only where it matched ATen on this machine). Importing
``triton.op`` registers the conv+ReLU ops (the Triton kernels are imported on the first
CUDA call); the C++ kernels are built on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from runtime.lazy import lazy_exports

if TYPE_CHECKING:
    from runtime.kernels.conv_args import (
        ConvArgs as ConvArgs,
        conv_args_from_module as conv_args_from_module,
    )
    from runtime.kernels.parity import (
        CONV_RELU as CONV_RELU,
        mismatch as mismatch,
        trusted as trusted,
    )
    from runtime.kernels.triton.fuse import (
        FusedConv2dReLU as FusedConv2dReLU,
        FusionRecord as FusionRecord,
        fuse_conv_relu as fuse_conv_relu,
    )
    from runtime.kernels.triton.op import conv2d_relu as conv2d_relu

# Each module → its public names, imported when first read: the ISA levels
# (``runtime.kernels.cpu.isa``) are read without loading torch.
_EXPORTS = {
    "runtime.kernels.conv_args": ("ConvArgs", "conv_args_from_module"),
    "runtime.kernels.parity": ("CONV_RELU", "mismatch", "trusted"),
    "runtime.kernels.triton.fuse": ("FusedConv2dReLU", "FusionRecord", "fuse_conv_relu"),
    "runtime.kernels.triton.op": ("conv2d_relu",),
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _EXPORTS)
