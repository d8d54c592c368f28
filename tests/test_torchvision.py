"""Classic networks written as specs reproduce torchvision's models exactly.

torchvision's state_dict is copied into the built model tensor by tensor, in order; the
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
    copy_in_order(reference, model)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x), atol=1e-5, rtol=1e-5)
