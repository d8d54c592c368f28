"""Exact graph rewrites on any nn.Module, through torch.fx.

Each rewrite keeps the model's outputs equal, and the training ones its gradients too
(tests check both):

- ``relu_after_maxpool`` (training and inference): ``maxpool(relu(x)) == relu(maxpool(x))``
  because ReLU is monotonic, and pooling first does the ReLU on 4x less data for 2x2 pools.
- ``fold_conv_bn`` (inference and export only): an eval-mode BatchNorm after a convolution
  is an affine map per channel, folded into the convolution's weight and bias (the folded
  model's state_dict has no BatchNorm entries; the others keep every key).
- ``drop_dropout`` (inference only): dropout is the identity in eval mode.

A model that torch.fx cannot trace is returned unchanged, with the reason in the report.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from runtime.kernels.triton.fuse import fuse_conv_relu_nodes

if TYPE_CHECKING:
    from runtime.kernels.cpu.conv_module import SharedConv2d

log = logging.getLogger("runtime.optimize")

_RELU_FUNCTIONS: tuple[Callable[..., Any], ...] = (F.relu, torch.relu, torch.relu_)
Pass = tuple[str, Callable[[fx.GraphModule], int]]  # a report name, and the rewrite it counts
_DROPOUT_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)


@dataclass
class RewriteReport:
    """What the rewrites changed (by rewrite name) and why anything was declined."""

    applied: dict[str, int] = field(default_factory=dict)
    declined: list[str] = field(default_factory=list)

    def add(self, name: str, count: int) -> None:
        if count:
            self.applied[name] = self.applied.get(name, 0) + count

    def __str__(self) -> str:
        done = ", ".join(f"{k} x{v}" for k, v in self.applied.items()) or "nothing"
        return f"rewrites: {done}" + "".join(f"; declined: {d}" for d in self.declined)


def trace(model: nn.Module, report: RewriteReport) -> fx.GraphModule | None:
    """``model`` as a GraphModule sharing its submodules and parameters, or None (reported)."""
    if isinstance(model, fx.GraphModule):
        return model
    try:
        return fx.symbolic_trace(model)
    except Exception as exc:  # fx raises many types for untraceable Python
        reason = f"torch.fx cannot trace {type(model).__name__}: {exc}".splitlines()[0]
        report.declined.append(reason)
        log.info("rewrites declined: %s", reason)
        return None


def for_training(
    model: nn.Module, *, exact: bool = True, cpu_kernels: bool = False, bf16: bool = False
) -> tuple[nn.Module, RewriteReport]:
    """The rewrites for training mode.

    Args:
        model: any module; it is traced, not changed.
        exact: ReLU after max-pooling (exact in outputs and gradients).
        cpu_kernels: [ReLU +] 2x2 max-pooling (exact) and BatchNorm2d [+ ReLU] (equal within
            floating-point tolerance) through cnnc's fused CPU kernels; dropout through
            cnnc's vectorized mask (same distribution, another random stream); and with
            ``bf16`` (the step runs under bf16 autocast) the forward and gradients of 3x3
            convolutions and 1x1 stride-2 projections through cnnc's convolution kernels
            (within bf16 rounding), where they pay (AVX512-BF16 without AMX); without it
            (fp32) small convolutions through cnnc's direct fp32 convolution, pass by pass
            where it measured faster than oneDNN (within fp32 rounding).
    """
    passes: list[Pass] = []
    if cpu_kernels:
        passes += [_CPU_BATCHNORM, _CPU_POOL]
        passes += [("conv_kernels", conv_kernels)] if bf16 else [_CPU_CONV_FP32, _CONV_SUMS]
        passes.append(("fast_dropout", fast_dropout))
    if exact:
        passes.append(_RELU_AFTER_MAXPOOL)
    return _run(model, passes, RewriteReport())


def for_inference(
    model: nn.Module,
    *,
    exact: bool = True,
    cpu_kernels: bool = False,
    fused_conv_relu: bool = False,
) -> tuple[nn.Module, RewriteReport]:
    """All rewrites, for an eval-mode model (inference and export).

    ``fused_conv_relu`` puts every Conv2d whose only user is a ReLU into one
    ``cnnc_runtime::conv2d_relu`` call (after BatchNorm folding, so conv-bn-relu fuses too).
    ``cpu_kernels`` also runs small convolutions' forward through cnnc's direct fp32
    convolution where it measured faster than oneDNN.
    """
    report = RewriteReport()
    if model.training:
        report.declined.append("the model is in training mode; call model.eval() first")
        return model, report
    passes: list[Pass] = []
    if exact:
        passes += [("drop_dropout", drop_dropout), ("fold_conv_bn", fold_conv_bn)]
    if fused_conv_relu:
        passes.append(("fused_conv_relu", fuse_conv_relu_nodes))
    if cpu_kernels:
        passes += [_CPU_BATCHNORM, _CPU_POOL, _CPU_CONV_FP32]
    if exact:
        passes.append(_RELU_AFTER_MAXPOOL)
    return _run(model, passes, report)


def _run(
    model: nn.Module, passes: list[Pass], report: RewriteReport
) -> tuple[nn.Module, RewriteReport]:
    """Trace ``model`` once and apply ``passes`` in order, counting what each changed."""
    graph_module = trace(model, report)
    if graph_module is None:
        return model, report
    for name, rewrite in passes:
        report.add(name, rewrite(graph_module))
    return _finish(graph_module), report


def _finish(graph_module: fx.GraphModule) -> fx.GraphModule:
    graph_module.graph.lint()
    graph_module.delete_all_unused_submodules()
    graph_module.recompile()
    return graph_module


def _module(graph_module: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    if node.op != "call_module":
        return None
    return graph_module.get_submodule(str(node.target))


def _is_relu(graph_module: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_function":
        return node.target in _RELU_FUNCTIONS and len(node.args) == 1
    return isinstance(_module(graph_module, node), nn.ReLU)


def _is_maxpool(graph_module: fx.GraphModule, node: fx.Node) -> bool:
    if node.op == "call_function":
        return node.target is F.max_pool2d and not node.kwargs.get("return_indices", False)
    module = _module(graph_module, node)
    return isinstance(module, nn.MaxPool2d) and not module.return_indices


def relu_after_maxpool(graph_module: fx.GraphModule) -> int:
    """Rewrite ``maxpool(relu(x))`` into ``relu(maxpool(x))``; returns how many."""
    graph = graph_module.graph
    count = 0
    for pool in list(graph.nodes):
        if not _is_maxpool(graph_module, pool) or not isinstance(pool.args[0], fx.Node):
            continue
        relu = pool.args[0]
        if not _is_relu(graph_module, relu) or len(relu.users) != 1:
            continue
        pool.args = (relu.args[0], *pool.args[1:])
        with graph.inserting_after(pool):
            moved = graph.call_function(torch.relu, (pool,))
        pool.replace_all_uses_with(moved, delete_user_cb=lambda user, new=moved: user is not new)
        graph.erase_node(relu)
        count += 1
    return count


def _is_pool2x2(graph_module: fx.GraphModule, node: fx.Node) -> bool:
    """A 2x2, stride-2, unpadded, floor-mode max-pooling without indices."""
    if node.op == "call_function" and node.target is F.max_pool2d:
        names = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")
        given = dict(zip(names, node.args[1:], strict=False)) | dict(node.kwargs)
        settings = (
            given.get("kernel_size"),
            given.get("stride"),
            given.get("padding", 0),
            given.get("dilation", 1),
            given.get("ceil_mode", False),
            given.get("return_indices", False),
        )
    else:
        module = _module(graph_module, node)
        if not isinstance(module, nn.MaxPool2d):
            return False
        settings = (
            module.kernel_size,
            module.stride,
            module.padding,
            module.dilation,
            module.ceil_mode,
            module.return_indices,
        )
    kernel, stride, padding, dilation, ceil_mode, indices = settings
    return (
        kernel in (2, (2, 2), [2, 2])
        and stride in (None, 2, (2, 2), [2, 2], ())
        and padding in (0, (0, 0), [0, 0])
        and dilation in (1, (1, 1), [1, 1])
        and not ceil_mode
        and not indices
    )


def fuse_relu_maxpool(graph_module: fx.GraphModule) -> int:
    """Replace 2x2 max-pooling, and a ReLU right before or after it, by the fused kernel."""
    from runtime.kernels.cpu.pool import fused_maxpool2x2

    graph = graph_module.graph
    count = 0
    for pool in list(graph.nodes):
        if not _is_pool2x2(graph_module, pool) or not isinstance(pool.args[0], fx.Node):
            continue
        relu_before: fx.Node = pool.args[0]
        before = _is_relu(graph_module, relu_before) and len(relu_before.users) == 1
        users = list(pool.users)
        after = not before and len(users) == 1 and _is_relu(graph_module, users[0])
        source = relu_before.args[0] if before else relu_before
        with graph.inserting_after(pool):
            fused = graph.call_function(fused_maxpool2x2, (source, before or after))
        if after:  # pool -> relu: the relu's users take the fused result
            users[0].replace_all_uses_with(fused)
            graph.erase_node(users[0])
        else:
            pool.replace_all_uses_with(fused)
        graph.erase_node(pool)
        if before:
            graph.erase_node(relu_before)
        count += 1
    return count


def fuse_batchnorm(graph_module: fx.GraphModule) -> int:
    """Run every BatchNorm2d, and a ReLU right after it, through the fused kernel module.

    ``relu(bn(x) + r)``, the end of a residual block, becomes one call of the fused module
    with the residual as its second input. The fused module takes the BatchNorm's place
    under the same name and shares its Parameters and buffers, so the state_dict keeps its
    keys and values.
    """
    from runtime.kernels.cpu.batchnorm import FusedBatchNorm2d

    graph = graph_module.graph
    count = 0
    for node in list(graph.nodes):
        module = _module(graph_module, node)
        if type(module) is not nn.BatchNorm2d or module._forward_hooks:
            continue
        users = list(node.users)
        relu = len(users) == 1 and _is_relu(graph_module, users[0])
        add = _residual_relu(graph_module, node) if not relu else None
        fused = FusedBatchNorm2d.from_module(module, relu or add is not None)
        graph_module.add_submodule(str(node.target), fused)
        if relu:
            users[0].replace_all_uses_with(node)
            graph.erase_node(users[0])
        elif add is not None:
            _fold_residual(graph, node, add)
        count += 1
    return count


def conv_kernels(graph_module: fx.GraphModule) -> int:
    """Run every convolution the kernels cover (``conv3x3.eligible``) on cnnc's kernels.

    The ``KernelConv2d`` takes the Conv2d's place under the same name and shares its
    Parameters; it uses the kernels only for bf16 CPU training steps, so nothing changes
    elsewhere. None is swapped where they do not pay (``conv3x3.pays_here``).
    """
    from runtime.kernels.cpu.conv3x3 import KernelConv2d, eligible, kernel_available

    return _swap_convs(graph_module, KernelConv2d, eligible) if kernel_available() else 0


def conv_fp32(graph_module: fx.GraphModule) -> int:
    """Run every convolution the direct fp32 kernel covers (``conv_fp32.eligible``) through
    ``Fp32Conv2d``, which times it against oneDNN per layer geometry and pass on first use
    and keeps the faster (fp32 only; under autocast, compiled or elsewhere it is the plain
    Conv2d). It takes the Conv2d's place under the same name and shares its Parameters.
    None is swapped when the kernel has no vector build at this ISA level."""
    from runtime.kernels.cpu.conv_fp32 import Fp32Conv2d, eligible, kernel_available

    return _swap_convs(graph_module, Fp32Conv2d, eligible) if kernel_available() else 0


def conv_output_sums(graph_module: fx.GraphModule) -> int:
    """Give each fused batch norm whose input is an ``Fp32Conv2d``'s output (its only use)
    the per-channel sums the convolution takes as it writes each image (``conv_with_sums``),
    so the batch norm's statistics need no pass over the output of its own."""
    from runtime.kernels.cpu.batchnorm import FusedBatchNorm2d
    from runtime.kernels.cpu.conv_fp32 import Fp32Conv2d, conv_with_sums

    graph = graph_module.graph
    count = 0
    for bn in list(graph.nodes):
        if not isinstance(_module(graph_module, bn), FusedBatchNorm2d) or "sums" in bn.kwargs:
            continue
        conv = bn.args[0]
        if not isinstance(conv, fx.Node) or len(conv.users) != 1 or len(conv.args) != 1:
            continue
        if type(_module(graph_module, conv)) is not Fp32Conv2d or conv.kwargs:
            continue
        with graph.inserting_before(conv):
            module = graph.get_attr(str(conv.target))
            pair = graph.call_function(conv_with_sums, (module, conv.args[0]))
            output = graph.call_function(operator.getitem, (pair, 0))
            sums = graph.call_function(operator.getitem, (pair, 1))
        conv.replace_all_uses_with(output)
        graph.erase_node(conv)
        bn.kwargs = {**bn.kwargs, "sums": sums}
        count += 1
    return count


def _swap_convs(
    graph_module: fx.GraphModule,
    kind: type[SharedConv2d],
    eligible: Callable[[nn.Conv2d], bool],
) -> int:
    """Put ``kind`` over every plain, hook-free, ``eligible`` Conv2d (same name, same
    Parameters); how many were swapped."""
    count = 0
    for node in graph_module.graph.nodes:
        module = _module(graph_module, node)
        if type(module) is nn.Conv2d and not module._forward_hooks and eligible(module):
            graph_module.add_submodule(str(node.target), kind.from_module(module))
            count += 1
    return count


def fast_dropout(graph_module: fx.GraphModule) -> int:
    """Draw every (not in-place) nn.Dropout's training mask with cnnc's CPU kernel.

    ``FastDropout`` takes the module's place under the same name (it has no state); None is
    swapped when the kernel is not built.
    """
    from runtime.kernels.cpu.dropout import FastDropout, kernel_available

    if not kernel_available():
        return 0
    count = 0
    for node in graph_module.graph.nodes:
        module = _module(graph_module, node)
        if type(module) is nn.Dropout and not module.inplace and not module._forward_hooks:
            graph_module.add_submodule(str(node.target), FastDropout.from_module(module))
            count += 1
    return count


def _residual_relu(graph_module: fx.GraphModule, bn: fx.Node) -> fx.Node | None:
    """The ``bn + r`` node whose only user is a ReLU, when ``bn``'s only user is it."""
    users = list(bn.users)
    if len(users) != 1:
        return None
    add = users[0]
    is_add = add.op == "call_function" and add.target in (operator.add, torch.add)
    if not is_add or add.kwargs or len(add.args) != 2 or len(add.users) != 1:
        return None
    other = add.args[1] if add.args[0] is bn else add.args[0]
    if not isinstance(other, fx.Node) or other is bn:
        return None
    return add if _is_relu(graph_module, next(iter(add.users))) else None


def _fold_residual(graph: fx.Graph, bn: fx.Node, add: fx.Node) -> None:
    """``relu(bn(x) + r)`` → ``bn(x, r)``, placed where the add was (r is ready there)."""
    relu = next(iter(add.users))
    residual = add.args[1] if add.args[0] is bn else add.args[0]
    with graph.inserting_before(add):
        fused = graph.call_module(str(bn.target), (bn.args[0], residual))
    relu.replace_all_uses_with(fused)
    graph.erase_node(relu)
    graph.erase_node(add)
    graph.erase_node(bn)


def drop_dropout(graph_module: fx.GraphModule) -> int:
    """Remove dropout modules (identity in eval mode); returns how many."""
    graph = graph_module.graph
    count = 0
    for node in list(graph.nodes):
        module = _module(graph_module, node)
        if isinstance(module, _DROPOUT_MODULES) and not module.training:
            node.replace_all_uses_with(node.args[0])
            graph.erase_node(node)
            count += 1
    return count


def fold_conv_bn(graph_module: fx.GraphModule) -> int:
    """Fold eval-mode BatchNorm2d into the preceding Conv2d; returns how many."""
    graph = graph_module.graph
    count = 0
    for bn_node in list(graph.nodes):
        bn = _module(graph_module, bn_node)
        if not isinstance(bn, nn.BatchNorm2d) or bn.training or not bn.track_running_stats:
            continue
        conv_node = bn_node.args[0]
        if not isinstance(conv_node, fx.Node) or len(conv_node.users) != 1:
            continue
        conv = _module(graph_module, conv_node)
        if type(conv) is not nn.Conv2d or conv.training:
            continue
        graph_module.add_submodule(str(conv_node.target), fuse_conv_bn_eval(conv, bn))
        bn_node.replace_all_uses_with(conv_node)
        graph.erase_node(bn_node)
        count += 1
    return count


__all__ = [
    "RewriteReport",
    "drop_dropout",
    "fold_conv_bn",
    "for_inference",
    "for_training",
    "fuse_conv_relu_nodes",
    "relu_after_maxpool",
    "trace",
]


# the passes both modes share, named as the report names them
_CPU_BATCHNORM: Pass = ("fused_batchnorm", fuse_batchnorm)
_CPU_POOL: Pass = ("fused_relu_maxpool", fuse_relu_maxpool)
_CPU_CONV_FP32: Pass = ("conv_fp32", conv_fp32)
_CONV_SUMS: Pass = ("conv_output_sums", conv_output_sums)
_RELU_AFTER_MAXPOOL: Pass = ("relu_after_maxpool", relu_after_maxpool)
