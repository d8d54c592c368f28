"""The caching CPU allocator: reuse within its scope, torch's own allocator outside, the cap,
and a training step that stops allocating once warm while computing exactly what it did."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import cnnc
from runtime import memory
from runtime.errors import ConfigError
from runtime.optimize import registry
from runtime.optimize.config import OptimizeConfig
from runtime.optimize.passes import Preparing
from runtime.optimize.prepare import _ready, prepare
from runtime.optimize.step import TrainStep
from runtime.train import fit
from tests.helpers import ROOT
from tests.runtime.train_helpers import DIGITS, digits_config, tiny_cnn

pytestmark = pytest.mark.skipif(not memory.available(), reason="needs a C++ compiler")
CPU = torch.device("cpu")
KERNELS = OptimizeConfig(rewrites=True, cpu_kernels=True, channels_last=True)


@pytest.fixture(autouse=True)
def _empty_cache() -> Iterator[None]:
    memory.empty_cache()
    yield
    memory.empty_cache()


def _delta(before: dict[str, int]) -> dict[str, int]:
    after = memory.stats()
    return {key: after[key] - before[key] for key in after}


def test_a_freed_buffer_is_handed_out_again_within_the_scope() -> None:
    with memory.caching_allocator() as installed:
        assert installed
        before = memory.stats()
        first = torch.empty(4096)
        address = first.data_ptr()
        del first
        second = torch.empty(4096)
        assert second.data_ptr() == address
        assert _delta(before)["hits"] == 1
        assert _delta(before)["misses"] == 1


def test_outside_the_scope_torch_allocates_as_usual() -> None:
    before = memory.stats()
    tensors = [torch.empty(4096) for _ in range(3)]
    del tensors
    assert _delta(before) == dict.fromkeys(before, 0)


def test_a_buffer_from_the_scope_returns_to_the_cache_when_freed_outside() -> None:
    with memory.caching_allocator():
        kept = torch.ones(1000)
    before = memory.stats()
    assert float(kept.sum()) == 1000.0
    del kept
    assert _delta(before)["cached_bytes"] == 4000
    assert _delta(before)["live_bytes"] == -4000


def test_nested_scopes_keep_the_cache_until_the_outermost_ends() -> None:
    with memory.caching_allocator():
        with memory.caching_allocator():
            pass
        before = memory.stats()
        torch.empty(512)
        assert _delta(before)["misses"] + _delta(before)["hits"] == 1
    before = memory.stats()
    torch.empty(512)
    assert _delta(before) == dict.fromkeys(before, 0)


def test_the_cap_hands_blocks_back_instead_of_keeping_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(memory.LIMIT_ENV, "0")
    with memory.caching_allocator():
        before = memory.stats()
        torch.empty(4096)
        torch.empty(4096)
        delta = _delta(before)
    assert delta["evictions"] == 2
    assert delta["hits"] == 0
    assert memory.stats()["cached_bytes"] == 0


def test_empty_cache_frees_every_free_block() -> None:
    with memory.caching_allocator():
        torch.empty(10_000)
    assert memory.stats()["cached_bytes"] >= 40_000
    memory.empty_cache()
    assert memory.stats()["cached_bytes"] == 0


@pytest.mark.parametrize("value", ["lots", "-1"])
def test_a_bad_cache_size_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(memory.LIMIT_ENV, value)
    with pytest.raises(ConfigError, match="CNNC_CPU_CACHE_BYTES must be a whole number"):
        prepare(nn.Sequential(nn.ReLU()), OptimizeConfig(cache_memory=True), CPU)


def test_declined_off_cpu_with_a_reason() -> None:
    config = OptimizeConfig(cache_memory=True)
    preparing = Preparing(config, torch.device("cuda"), training=True, kernels=[])
    assert not _ready(registry.entry("cache_memory"), preparing)
    assert preparing.notes == ["cache_memory declined: the caching allocator is for CPU memory"]


def _losses_and_weights(
    config: OptimizeConfig, steps: int
) -> tuple[list[float], dict[str, torch.Tensor], list[dict[str, int]]]:
    torch.manual_seed(0)
    model = cnnc.build(ROOT / "specs" / "resnet20.yaml")
    prepared = prepare(model, config, CPU)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    step = TrainStep(prepared, optimizer, F.cross_entropy)
    generator = torch.Generator().manual_seed(1)  # prepare's parity check draws from torch's
    x = torch.randn(8, 3, 32, 32, generator=generator)
    y = torch.randint(0, 10, (8,), generator=generator)
    losses, deltas = [], []
    for _ in range(steps):
        before = memory.stats()
        losses.append(float(step(x, y)[0]))
        deltas.append(_delta(before))
    return losses, {k: v.clone() for k, v in model.state_dict().items()}, deltas


def test_a_warm_step_allocates_nothing_new_and_trains_exactly_alike() -> None:
    plain_losses, plain_weights, plain_deltas = _losses_and_weights(KERNELS, 4)
    losses, weights, deltas = _losses_and_weights(KERNELS.with_(cache_memory=True), 4)
    assert all(delta["hits"] == 0 and delta["misses"] == 0 for delta in plain_deltas)
    # After the first steps (momentum buffers, the optimizer's state), every buffer a step
    # needs comes from the cache.
    assert deltas[-1]["misses"] == 0
    assert deltas[-1]["hits"] > 100
    assert losses == plain_losses
    for name, value in plain_weights.items():
        assert torch.equal(weights[name], value), name


def test_fit_with_the_cache_trains_alike_and_releases_it_at_the_end() -> None:
    config = digits_config(epochs=1)
    plain = fit(tiny_cnn(), config, DIGITS)
    cached = fit(tiny_cnn(), config, DIGITS, optimize=OptimizeConfig(cache_memory=True))
    assert cached.step_losses == plain.step_losses
    assert memory.stats()["cached_bytes"] == 0
