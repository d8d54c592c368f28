"""Classic networks written as specs reproduce torchvision's models exactly.

torchvision's state_dict is loaded into the built model by name (``strict=True``) where the
spec names its modules as torchvision does, else copied tensor by tensor in order; the
outputs must then match in eval mode.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torchvision
from torch import nn

import cnnc
from tests.helpers import ROOT

REFERENCES: dict[str, Callable[[], nn.Module]] = {
    "resnet18": lambda: torchvision.models.resnet18(),
    "vgg11": lambda: torchvision.models.vgg11(),
    "squeezenet": lambda: torchvision.models.squeezenet1_1(),
    "mobilenet_v2": lambda: torchvision.models.mobilenet_v2(),
    "googlenet": lambda: torchvision.models.googlenet(aux_logits=False, init_weights=False),
}


# The specs whose state_dict keys are torchvision's (issue 15 brings the others here).
BY_NAME = {"resnet18", "vgg11"}


def copy_in_order(source: nn.Module, target: nn.Module) -> None:
    """Copy every tensor of ``source``'s state_dict into ``target``'s, position by position."""
    src, dst = source.state_dict(), target.state_dict()
    assert len(src) == len(dst)
    for (src_key, src_value), (dst_key, dst_value) in zip(src.items(), dst.items(), strict=True):
        assert src_value.shape == dst_value.shape, (src_key, dst_key)
        dst_value.copy_(src_value)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_matches_torchvision(name: str) -> None:
    torch.manual_seed(0)
    reference = REFERENCES[name]().eval()
    model = cnnc.build(ROOT / "specs" / f"{name}.yaml").eval()
    assert sum(p.numel() for p in model.parameters()) == sum(
        p.numel() for p in reference.parameters()
    )
    if name in BY_NAME:
        model.load_state_dict(reference.state_dict(), strict=True)
    else:
        copy_in_order(reference, model)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=1e-5, rtol=1e-5)


CONVNEXT_BLOCK = """
name: convnext_block
input: [16, 8, 8]
blocks:
  cnblock:                                   # torchvision's CNBlock
    args: {p: 0.0}
    layers:
      - type: residual
        body:
          - {type: conv2d, kernel_size: 7, padding: 3, groups: depthwise}
          - {type: permute, dims: [0, 2, 3, 1]}
          - {type: layernorm, normalized_shape: $channels, eps: 0.000001}
          - {type: linear, out_features: $channels * 4, last_axis: true}
          - gelu
          - {type: linear, out_features: $channels, last_axis: true}
          - {type: permute, dims: [0, 3, 1, 2]}
          - {type: layer_scale, init: 0.000001}
          - {type: stochastic_depth, p: $p}
        shortcut: identity
layers:
  - {type: layernorm2d, eps: 0.000001}
  - {type: cnblock, p: 0.1}
"""


def test_convnext_pieces_match_torchvision() -> None:
    """layernorm2d, permute, linear over the last axis, layer_scale and stochastic_depth
    against torchvision's LayerNorm2d and CNBlock (the layer scale's tensor moved last: the
    block registers it before its layers)."""
    from torchvision.models.convnext import CNBlock, LayerNorm2d

    from cnnc import modules

    torch.manual_seed(0)
    reference = nn.Sequential(LayerNorm2d(16, eps=1e-6), CNBlock(16, 1e-6, 0.1)).eval()
    with torch.no_grad():
        for p in reference.parameters():
            p.copy_(torch.randn_like(p))
    model = cnnc.build(CONVNEXT_BLOCK).eval()
    items = sorted(reference.state_dict().items(), key=lambda kv: kv[0].endswith("layer_scale"))
    for (key, value), target in zip(items, model.state_dict().values(), strict=True):
        assert target.shape == value.shape, key
        target.copy_(value)
    x = torch.randn(2, 16, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))
        channels_last = x.contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(model(channels_last), reference(x))
    model.train()
    reference.train()
    for mode in ("row", "batch"):  # the same draws from the same generator state
        ours = modules.StochasticDepth(0.5, mode).train()
        theirs = torchvision.ops.StochasticDepth(0.5, mode).train()
        torch.manual_seed(1)
        got = ours(x)
        torch.manual_seed(1)
        torch.testing.assert_close(got, theirs(x))
