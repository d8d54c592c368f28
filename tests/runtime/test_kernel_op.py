"""The ``cnnc_runtime::conv2d_relu`` custom op on CPU: registration, compile, export, math.

Checks torch.library's own ``opcheck`` (schema, autograd registration, fake tensor,
AOT dispatch), a ``fullgraph=True`` torch.compile without graph breaks, torch.export keeping
the op, and the CPU implementation (oneDNN fused or aten) against ``F.relu(F.conv2d(...))``.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch._dynamo.testing import CompileCounterWithBackend

from runtime.kernels import FusedConv2dReLU, conv2d_relu
from runtime.kernels.conv_args import conv2d_output_shape
from runtime.kernels.parity import TOLERANCES, max_relative_error

OP = torch.ops.cnnc_runtime.conv2d_relu.default
BACKWARD_OP = torch.ops.cnnc_runtime.conv2d_relu_backward.default
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# (stride, padding, dilation) per axis
GEOMETRIES = [
    ([1, 1], [0, 0], [1, 1]),
    ([2, 1], [1, 0], [1, 2]),
]


def _inputs(
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
    bias: bool = True,
    weight_channels_last: bool = False,
) -> tuple[Tensor, Tensor, Tensor | None]:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 11, 9, generator=generator).to(dtype)
    w = (torch.randn(5, 3, 3, 3, generator=generator) / 5).to(dtype)
    b = torch.randn(5, generator=generator).to(dtype).requires_grad_() if bias else None
    if channels_last:
        x = x.to(memory_format=torch.channels_last)
    if weight_channels_last:
        w = w.to(memory_format=torch.channels_last)
    return x.requires_grad_(), w.requires_grad_(), b


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=["plain", "strided"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize(
    ("channels_last", "weight_channels_last"),
    [(False, False), (True, False), (True, True)],
    ids=["nchw", "channels_last", "channels_last_weight"],
)
def test_opcheck_passes(
    geometry: tuple[list[int], list[int], list[int]],
    bias: bool,
    channels_last: bool,
    weight_channels_last: bool,
) -> None:
    x, w, b = _inputs(
        channels_last=channels_last, bias=bias, weight_channels_last=weight_channels_last
    )
    torch.library.opcheck(OP, (x, w, b, *geometry))


def test_opcheck_passes_on_backward_op() -> None:
    x, w, _ = _inputs()
    y = conv2d_relu(x, w, None, *GEOMETRIES[1]).detach()
    for mask in ([True, True, True], [False, True, False]):
        args = (torch.randn_like(y), y, x.detach(), w.detach(), *GEOMETRIES[1], mask)
        torch.library.opcheck(BACKWARD_OP, args)


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "channels_last"])
def test_cpu_implementation_matches_aten(dtype: torch.dtype, channels_last: bool) -> None:
    x, w, b = _inputs(dtype, channels_last)
    assert b is not None
    x_ref, w_ref, b_ref = (t.detach().clone().requires_grad_() for t in (x, w, b))
    stride, padding, dilation = GEOMETRIES[1]

    y = conv2d_relu(x, w, b, stride, padding, dilation)
    y_ref = F.relu(F.conv2d(x_ref, w_ref, b_ref, stride, padding, dilation))
    grad_y = torch.randn_like(y_ref)
    torch.autograd.backward([y, y_ref], [grad_y, grad_y])

    assert y.is_contiguous(memory_format=torch.channels_last) == channels_last
    for got, want in [(y, y_ref), (x.grad, x_ref.grad), (w.grad, w_ref.grad), (b.grad, b_ref.grad)]:
        assert got is not None and want is not None
        assert max_relative_error(got, want) <= TOLERANCES[dtype]


def test_output_shape_matches_aten_on_meta() -> None:
    x = torch.empty(3, 4, 17, 10, device="meta")
    w = torch.empty(6, 4, 3, 5, device="meta")
    for stride, padding, dilation in [*GEOMETRIES, ([3, 2], [2, 1], [2, 1])]:
        want = F.conv2d(x, w, None, stride, padding, dilation).shape
        assert conv2d_output_shape(x.shape, w.shape, stride, padding, dilation) == tuple(want)
        assert OP(x, w, None, stride, padding, dilation).shape == want


def _lenet_features() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        FusedConv2dReLU(nn.Conv2d(3, 6, 5)),
        nn.MaxPool2d(2),
        FusedConv2dReLU(nn.Conv2d(6, 16, 5, padding=1, stride=2)),
        nn.Flatten(),
    )


def test_fullgraph_compile_traces_the_op_and_its_backward() -> None:
    model = _lenet_features()
    x = torch.randn(2, 3, 32, 32)
    eager = model(x)
    backend = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(model, backend=backend, fullgraph=True)

    out = compiled(x)
    out.sum().backward()

    assert backend.frame_count == 1
    targets = [str(node.target) for graph in backend.graphs for node in graph.graph.nodes]
    assert targets.count("cnnc_runtime.conv2d_relu") == 2
    torch.testing.assert_close(out, eager)
    assert all(p.grad is not None for p in model.parameters())


def test_inductor_fullgraph_compile_matches_eager() -> None:
    model = _lenet_features()
    x = torch.randn(2, 3, 32, 32)
    reference = copy.deepcopy(model)
    eager = reference(x)
    eager.sum().backward()

    out = torch.compile(model, fullgraph=True)(x)
    out.sum().backward()

    torch.testing.assert_close(out, eager)
    ref_grads = dict(reference.named_parameters())
    for name, param in model.named_parameters():
        torch.testing.assert_close(param.grad, ref_grads[name].grad, msg=name)


def test_torch_export_keeps_the_op() -> None:
    model = _lenet_features()
    x = torch.randn(2, 3, 32, 32)

    exported = torch.export.export(model, (x,))

    targets = [node.target for node in exported.graph.nodes]
    assert targets.count(OP) == 2
    torch.testing.assert_close(exported.module()(x), model(x))
