"""``cnnc_runtime::batch_norm_relu``: BatchNorm2d with an optional fused ReLU, a custom op.

On CPU it runs ``cpu/batchnorm.cpp``: one statistics pass and one normalize(+ReLU) pass
forward, one reduction pass and one write pass backward, over channels-last rows or NCHW
planes (at::vec vectors: AVX-512, AVX2 or NEON, per the ISA level). Elsewhere, or without
the built kernel, it computes through ATen's ``native_batch_norm``. Numerics match ATen within floating-point tolerance (statistics are
summed in another order); running statistics are updated like nn.BatchNorm2d's.

``FusedBatchNorm2d`` is an nn.BatchNorm2d that shares the original module's parameters and
buffers (so state_dict keys and values are unchanged) and runs the op.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from runtime.kernels.cpu.extension import load, vectorized

_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

# (output, batch mean, batch invstd, new running mean, new running var)
Outputs = tuple[Tensor, Tensor, Tensor, Tensor, Tensor]
Grads = tuple[Tensor, Tensor, Tensor]
# The ops' schemas, each written once in its factory below.
ReluSchema = Callable[
    [Tensor, Tensor | None, Tensor | None, Tensor | None, Tensor | None, bool, float, float, bool],
    Outputs,
]
AddReluSchema = Callable[
    [
        Tensor,
        Tensor,
        Tensor | None,
        Tensor | None,
        Tensor | None,
        Tensor | None,
        bool,
        float,
        float,
    ],
    Outputs,
]
BackwardSchema = Callable[
    [Tensor, Tensor, Tensor | None, Tensor | None, Tensor, Tensor, bool, bool], Grads
]


class Stats(NamedTuple):
    """The statistics arguments of a batch norm call, in the ops' schema order."""

    running_mean: Tensor | None
    running_var: Tensor | None
    training: bool
    momentum: float
    eps: float


def kernel_available() -> bool:
    """True when the C++ kernel is built and runs a vector path at the ISA level in use."""
    return vectorized("batchnorm")


def _module_for(x: Tensor) -> object | None:
    if x.device.type != "cpu" or x.dtype not in _DTYPES or x.dim() != 4:
        return None
    return load("batchnorm")


def _aten_forward(x: Tensor, weight: Tensor | None, bias: Tensor | None, stats: Stats) -> Outputs:
    """The ops' fallback through ATen (no ReLU): what the C++ kernel returns."""
    running_mean, running_var, training, momentum, eps = stats
    new_mean = running_mean.clone() if running_mean is not None else x.new_empty(0)
    new_var = running_var.clone() if running_var is not None else x.new_empty(0)
    kept = (new_mean, new_var) if running_mean is not None else (None, None)
    y, mean, invstd = torch.ops.aten.native_batch_norm(
        x, weight, bias, kept[0], kept[1], training, momentum, eps
    )
    if not training and running_mean is not None and running_var is not None:
        mean, invstd = (
            running_mean.to(torch.float32, copy=True),
            (running_var.float() + eps).rsqrt(),
        )
    return y, mean, invstd, new_mean, new_var


def _forward(
    x: Tensor,
    residual: Tensor | None,
    weight: Tensor | None,
    bias: Tensor | None,
    stats: Stats,
    relu: bool,
) -> Outputs:
    """Both forward ops: ``relu?(batch_norm(x) (+ residual))`` by the C++ kernel or ATen."""
    module = _module_for(x)
    fits = residual is None or (residual.dtype == x.dtype and residual.shape == x.shape)
    if module is not None and fits:
        y, mean, invstd, new_mean, new_var = module.forward(  # type: ignore[attr-defined]
            x, weight, bias, *stats, relu, residual
        )
        return y, mean, invstd, new_mean, new_var
    y, mean, invstd, new_mean, new_var = _aten_forward(x, weight, bias, stats)
    if residual is not None:
        y = y + residual
    return (F.relu(y) if relu else y), mean, invstd, new_mean, new_var


def _fake_outputs(x: Tensor, dtype: torch.dtype, stats: Stats) -> Outputs:
    """The shapes both forward ops return: y, batch mean, invstd, new running stats."""
    batch = x.new_empty((x.shape[1],), dtype=torch.float32)
    mean, var = stats.running_mean, stats.running_var
    new_mean = torch.empty_like(mean) if mean is not None else x.new_empty(0)
    new_var = torch.empty_like(var) if var is not None else x.new_empty(0)
    return torch.empty_like(x, dtype=dtype), batch, torch.empty_like(batch), new_mean, new_var


def _relu_op(fake: bool) -> ReluSchema:
    """``batch_norm_relu``'s body, or with ``fake`` its fake implementation."""

    def batch_norm_relu(
        x: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        running_mean: Tensor | None,
        running_var: Tensor | None,
        training: bool,
        momentum: float,
        eps: float,
        relu: bool,
    ) -> Outputs:
        """(output, batch mean, batch invstd, new running mean, new running var).

        The op is functional (autograd needs that): the new running statistics are returned
        (empty when there are none), and the caller stores them.
        """
        stats = Stats(running_mean, running_var, training, momentum, eps)
        if fake:
            return _fake_outputs(x, x.dtype, stats)
        return _forward(x, None, weight, bias, stats, relu)

    return batch_norm_relu


def _add_relu_op(fake: bool) -> AddReluSchema:
    """``batch_norm_add_relu``'s body, or with ``fake`` its fake implementation."""

    def batch_norm_add_relu(
        x: Tensor,
        residual: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        running_mean: Tensor | None,
        running_var: Tensor | None,
        training: bool,
        momentum: float,
        eps: float,
    ) -> Outputs:
        """``relu(batch_norm(x) + residual)``, the end of a residual block, in one pass.

        Returns what ``batch_norm_relu`` returns. The backward takes the ReLU mask from the
        output and reuses ``batch_norm_relu_backward``; the residual's gradient is the masked
        output gradient.
        """
        stats = Stats(running_mean, running_var, training, momentum, eps)
        if fake:
            return _fake_outputs(x, torch.promote_types(x.dtype, residual.dtype), stats)
        return _forward(x, residual, weight, bias, stats, True)

    return batch_norm_add_relu


batch_norm_relu = torch.library.custom_op(
    "cnnc_runtime::batch_norm_relu", _relu_op(fake=False), mutates_args=()
)
batch_norm_relu.register_fake(_relu_op(fake=True))
batch_norm_add_relu = torch.library.custom_op(
    "cnnc_runtime::batch_norm_add_relu", _add_relu_op(fake=False), mutates_args=()
)
batch_norm_add_relu.register_fake(_add_relu_op(fake=True))


def _param_grads(
    dw: Tensor, db: Tensor, weight: Tensor | None, has_bias: bool
) -> tuple[Tensor | None, Tensor | None]:
    """The kernels' fp32 weight and bias gradients in the parameters' dtype."""
    if weight is None:
        return None, None
    return dw.to(weight.dtype), db.to(weight.dtype) if has_bias else None


def _backward_op(fake: bool) -> BackwardSchema:
    """``batch_norm_relu_backward``'s body, or with ``fake`` its fake implementation."""

    def batch_norm_relu_backward(
        grad: Tensor,
        x: Tensor,
        weight: Tensor | None,
        bias: Tensor | None,
        mean: Tensor,
        invstd: Tensor,
        relu: bool,
        training: bool,
    ) -> Grads:
        """(grad_input, grad_weight, grad_bias) of ``batch_norm_relu``; the ReLU mask is
        recomputed from x, so the output need not be kept."""
        if fake:
            return torch.empty_like(x), torch.empty_like(mean), torch.empty_like(mean)
        module = _module_for(x)
        if module is not None:
            dx, dw, db = module.backward(  # type: ignore[attr-defined]
                grad, x, weight, bias, mean, invstd, relu, training
            )
            return dx, dw, db
        if relu:
            scale = invstd * (weight.float() if weight is not None else 1.0)
            shift = (bias.float() if bias is not None else 0.0) - mean * scale
            pre = x.float() * scale.view(1, -1, 1, 1) + shift.view(1, -1, 1, 1)
            grad = torch.where(pre > 0, grad, 0)
        # eval mode reads the running statistics: the ones whose 1/sqrt(var + 0) is invstd
        running = (None, None) if training else (mean, invstd.pow(-2))
        dx, dw, db = torch.ops.aten.native_batch_norm_backward(
            grad, x, weight, *running, mean, invstd, training, 0.0, [True, True, True]
        )
        if dw is None:
            dw = torch.zeros_like(mean)
            db = torch.zeros_like(mean)
        return dx, dw.float(), db.float()

    return batch_norm_relu_backward


batch_norm_relu_backward = torch.library.custom_op(
    "cnnc_runtime::batch_norm_relu_backward", _backward_op(fake=False), mutates_args=()
)
batch_norm_relu_backward.register_fake(_backward_op(fake=True))


def _setup(
    ctx: torch.autograd.function.FunctionCtx,
    inputs: tuple[object, ...],
    output: Outputs,
) -> None:
    x, weight, bias = inputs[0], inputs[1], inputs[2]
    ctx.save_for_backward(x, weight, bias, output[1], output[2])  # type: ignore[arg-type]
    ctx.flags = (inputs[8], inputs[5], bias is not None)  # type: ignore[attr-defined]
    ctx.mark_non_differentiable(*output[1:])


def _backward(
    ctx: torch.autograd.function.FunctionCtx, grad: Tensor, *_: object
) -> tuple[Tensor | None, ...]:
    x, weight, bias, mean, invstd = ctx.saved_tensors  # type: ignore[attr-defined]
    relu, training, has_bias = ctx.flags  # type: ignore[attr-defined]
    dx, dw, db = batch_norm_relu_backward(grad, x, weight, bias, mean, invstd, relu, training)
    return dx, *_param_grads(dw, db, weight, has_bias), None, None, None, None, None, None


batch_norm_relu.register_autograd(_backward, setup_context=_setup)


def _setup_add(
    ctx: torch.autograd.function.FunctionCtx,
    inputs: tuple[object, ...],
    output: Outputs,
) -> None:
    x, residual, weight, bias = inputs[0], inputs[1], inputs[2], inputs[3]
    ctx.save_for_backward(x, weight, bias, output[1], output[2], output[0])  # type: ignore[arg-type]
    ctx.flags = (inputs[6], bias is not None, residual.dtype)  # type: ignore[attr-defined]
    ctx.mark_non_differentiable(*output[1:])


def _backward_add(
    ctx: torch.autograd.function.FunctionCtx, grad: Tensor, *_: object
) -> tuple[Tensor | None, ...]:
    x, weight, bias, mean, invstd, y = ctx.saved_tensors  # type: ignore[attr-defined]
    training, has_bias, residual_dtype = ctx.flags  # type: ignore[attr-defined]
    masked = torch.ops.aten.threshold_backward(grad, y, 0)
    dx, dw, db = batch_norm_relu_backward(
        masked.to(x.dtype), x, weight, bias, mean, invstd, False, training
    )
    grads = _param_grads(dw, db, weight, has_bias)
    return dx, masked.to(residual_dtype), *grads, None, None, None, None, None


batch_norm_add_relu.register_autograd(_backward_add, setup_context=_setup_add)


def _eager_module(x: Tensor, residual: Tensor | None) -> object | None:
    """The C++ module when the call can skip the custom op: plain CPU tensors, not traced."""
    if type(x) is not Tensor or (residual is not None and type(residual) is not Tensor):
        return None
    if residual is not None and (residual.dtype != x.dtype or residual.shape != x.shape):
        return None
    return _module_for(x)


class _EagerBatchNorm(torch.autograd.Function):
    """The eager path: the custom ops' C++ kernels and autograd, minus the custom-op
    machinery's per-call Python cost (measured here: 376 µs for a forward and backward of
    a small batch norm through the op, 144 µs through this Function, 152 µs for ATen's).
    torch.compile and torch.export still see the custom ops (``_eager_module`` is None)."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        module: object,
        x: Tensor,
        residual: Tensor | None,
        weight: Tensor | None,
        bias: Tensor | None,
        stats: Stats,
        relu: bool,
        sums: Tensor | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        y, mean, invstd, new_mean, new_var = module.forward(  # type: ignore[attr-defined]
            x, weight, bias, *stats, relu, residual, sums
        )
        saved = (x, weight, bias, mean, invstd, y if residual is not None else None)
        ctx.save_for_backward(*saved)  # type: ignore[arg-type]
        ctx.flags = (module, relu, stats.training)  # type: ignore[attr-defined]
        ctx.mark_non_differentiable(new_mean, new_var)
        return y, new_mean, new_var

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: Tensor, *_: object
    ) -> tuple[Tensor | None, ...]:
        x, weight, bias, mean, invstd, y = ctx.saved_tensors  # type: ignore[attr-defined]
        module, relu, training = ctx.flags  # type: ignore[attr-defined]
        # At a residual block's end the kernel masks with y > 0 and also returns the masked
        # gradient, which is the residual's.
        dx, dw, db, *masked = module.backward(grad, x, weight, bias, mean, invstd,
                                              relu and y is None, training, y)  # fmt: skip
        grads = _param_grads(dw, db, weight, bias is not None)
        return None, dx, masked[0] if masked else None, *grads, None, None, None


class FusedBatchNorm2d(nn.BatchNorm2d):
    """A BatchNorm2d (+ ReLU) running the fused op; shares the wrapped module's tensors."""

    relu: bool

    @classmethod
    def from_module(cls, bn: nn.BatchNorm2d, relu: bool) -> FusedBatchNorm2d:
        """The fused module over ``bn``'s own Parameters and buffers (same state_dict).

        Called with a second tensor, it computes ``relu(bn(x) + residual)`` (needs relu).
        """
        fused = cls.__new__(cls)
        nn.Module.__init__(fused)
        fused.num_features, fused.eps, fused.momentum = bn.num_features, bn.eps, bn.momentum
        fused.affine, fused.track_running_stats = bn.affine, bn.track_running_stats
        fused.weight, fused.bias = bn.weight, bn.bias
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            fused.register_buffer(name, getattr(bn, name))
        fused.relu = relu
        fused.train(bn.training)
        return fused

    def forward(
        self, x: Tensor, residual: Tensor | None = None, sums: Tensor | None = None
    ) -> Tensor:
        """``relu?(bn(x) [+ residual])``. ``sums``, x's per-channel sum and sum of squares
        as (2, C) fp64 from the convolution that wrote x, spares the kernel reading x for
        its statistics (eager CPU training only; elsewhere they are not needed)."""
        if x.dim() != 4 or (residual is not None and residual.shape != x.shape):
            out = super().forward(x)
            out = out if residual is None else out + residual
            return F.relu(out) if self.relu else out
        use_batch_stats = self.training or not self.track_running_stats
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                momentum = 1.0 / float(self.num_batches_tracked)
        stats = Stats(self.running_mean, self.running_var, use_batch_stats, momentum, self.eps)
        # torch.compile and torch.export trace the custom ops
        module = None if torch.compiler.is_compiling() else _eager_module(x, residual)
        if module is not None:
            y, new_mean, new_var = _EagerBatchNorm.apply(
                module, x, residual, self.weight, self.bias, stats,
                self.relu or residual is not None, sums,
            )  # fmt: skip
        elif residual is not None:
            y, _, _, new_mean, new_var = batch_norm_add_relu(
                x, residual, self.weight, self.bias, *stats
            )
        else:
            y, _, _, new_mean, new_var = batch_norm_relu(
                x, self.weight, self.bias, *stats, self.relu
            )
        if self.training and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.running_mean.copy_(new_mean)
                self.running_var.copy_(new_var)
        result: Tensor = y
        return result

    def extra_repr(self) -> str:
        base: str = super().extra_repr()  # type: ignore[no-untyped-call]
        return f"{base}, relu={self.relu}"
