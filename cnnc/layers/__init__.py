"""Every layer type of the spec language, one class each; importing this fills REGISTRY."""

from cnnc.layers import (  # noqa: F401  (imported for registration)
    activations,
    conv,
    dropout,
    linear,
    merge,
    norm,
    pooling,
    reshape,
    residual,
    sequential,
)
from cnnc.layers.base import REGISTRY, Composite, Example, Layer, LayerSpec, ModuleCall, register

__all__ = ["REGISTRY", "Composite", "Example", "Layer", "LayerSpec", "ModuleCall", "register"]
