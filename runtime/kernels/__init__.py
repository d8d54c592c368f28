"""Custom kernels for any ``nn.Module``: the fused conv2d + bias + ReLU op and its module swap.

Importing this package registers ``torch.ops.cnnc_runtime.conv2d_relu`` (and its backward
op). The Triton kernels are imported lazily, on the first CUDA call, or directly from
``runtime.kernels.conv_relu_triton`` / ``conv_relu_triton_bwd`` (under ``TRITON_INTERPRET=1``
they also run on CPU tensors).
"""

from runtime.kernels.conv_args import ConvArgs, conv_args_from_module
from runtime.kernels.conv_relu_op import conv2d_relu
from runtime.kernels.fuse import FusedConv2dReLU, FusionRecord, fuse_conv_relu
from runtime.kernels.parity import ensure_trusted, parity_mismatch

__all__ = [
    "ConvArgs",
    "FusedConv2dReLU",
    "FusionRecord",
    "conv2d_relu",
    "conv_args_from_module",
    "ensure_trusted",
    "fuse_conv_relu",
    "parity_mismatch",
]
