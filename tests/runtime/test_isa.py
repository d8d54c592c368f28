"""ISA levels: what a CPU's flags give, the $CNNC_CPU_ISA cap and its errors, which code
path a kernel runs at each level, and the variables that cap ATen and oneDNN too."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from runtime.errors import ConfigError
from runtime.kernels.cpu import isa

AVX2_ONLY = frozenset({"sse4_2", "avx", "avx2", "fma", "f16c"})
ZEN4 = AVX2_ONLY | {"avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512_bf16"}
SAPPHIRE = ZEN4 | {"amx_bf16", "amx_tile"}


@pytest.fixture
def x86(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setattr(isa, "arch", lambda: "x86_64")
    isa.cap.cache_clear()
    yield
    isa.cap.cache_clear()


@pytest.mark.parametrize(
    ("flags", "levels"),
    [
        (frozenset(), ("scalar",)),
        (frozenset({"avx2"}), ("scalar",)),  # AVX2 without FMA is not the avx2 level
        (AVX2_ONLY, ("scalar", "avx2")),
        (AVX2_ONLY | {"avx512f", "avx512bw"}, ("scalar", "avx2")),  # no VL
        (AVX2_ONLY | {"avx512f", "avx512bw", "avx512vl"}, ("scalar", "avx2")),  # no DQ
        (
            AVX2_ONLY | {"avx512f", "avx512bw", "avx512vl", "avx512dq"},
            ("scalar", "avx2", "avx512"),
        ),
        (ZEN4, ("scalar", "avx2", "avx512", "avx512_bf16")),
        (ZEN4 | {"amx_tile"}, ("scalar", "avx2", "avx512", "avx512_bf16")),  # no AMX-BF16
        (SAPPHIRE, ("scalar", "avx2", "avx512", "avx512_bf16", "amx")),
    ],
)
def test_levels_follow_the_cpu_flags(
    x86: None, monkeypatch: pytest.MonkeyPatch, flags: frozenset[str], levels: tuple[str, ...]
) -> None:
    monkeypatch.setattr(isa, "cpu_flags", lambda: flags)
    assert isa.cpu_levels() == levels
    assert isa.best() == levels[-1]


def test_aarch64_levels(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isa, "arch", lambda: "aarch64")
    monkeypatch.setattr(isa, "cpu_flags", lambda: frozenset({"fp", "asimd", "bf16"}))
    assert isa.cpu_levels() == ("scalar", "neon", "neon_bf16")
    monkeypatch.setattr(isa, "cpu_flags", lambda: frozenset({"fp", "asimd"}))
    assert isa.cpu_levels() == ("scalar", "neon")


def test_this_machine_has_scalar_and_its_best_in_use() -> None:
    assert isa.cpu_levels()[0] == "scalar"
    assert isa.level() == (isa.cap() or isa.best())


def test_the_cap_lowers_the_level(x86: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(isa, "cpu_flags", lambda: SAPPHIRE)
    monkeypatch.setenv(isa.ENV, "AVX2")
    assert isa.level() == "avx2"
    assert not isa.native_bf16()
    assert "capped by CNNC_CPU_ISA=avx2" in isa.describe()
    monkeypatch.delenv(isa.ENV)
    isa.cap.cache_clear()
    assert isa.level() == "amx" and isa.native_bf16()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("avx3", "must be one of this CPU's instruction-set levels. Received: 'avx3'"),
        ("avx512_bf16", "asks for avx512_bf16, which this CPU"),
    ],
)
def test_a_bad_cap_lists_the_levels_this_cpu_has(
    x86: None, monkeypatch: pytest.MonkeyPatch, value: str, message: str
) -> None:
    monkeypatch.setattr(isa, "cpu_flags", lambda: AVX2_ONLY)
    monkeypatch.setenv(isa.ENV, value)
    with pytest.raises(ConfigError, match=message) as caught:
        isa.level()
    assert caught.value.hint == "use one of scalar, avx2 (this CPU supports these)"


def test_use_sets_the_level_for_a_block_only() -> None:
    before = isa.level()
    with isa.use("scalar"):
        assert isa.level() == "scalar"
        assert "set for this block" in isa.describe()
    assert isa.level() == before


@pytest.mark.parametrize(
    ("paths", "level", "path"),
    [
        (("scalar", "avx512"), "avx512_bf16", "avx512"),
        (("scalar", "avx512"), "avx512", "avx512"),
        (("scalar", "avx512"), "avx2", "scalar"),
        (("scalar", "avx512_bf16"), "avx512", "scalar"),
        (("scalar", "avx2", "avx512"), "avx2", "avx2"),
        (("scalar",), "avx512_bf16", "scalar"),
        (("scalar", "avx512_bf16"), "amx", "avx512_bf16"),
        (("scalar", "neon"), "avx512", "scalar"),  # another architecture's path
        (("avx2", "avx512"), "scalar", "avx2"),  # none at or below: the lowest (a baseline)
    ],
)
def test_a_kernel_runs_its_best_path_not_above_the_level(
    x86: None, paths: tuple[str, ...], level: str, path: str
) -> None:
    assert isa.path_for(paths, level) == path


def test_measuring_env_caps_aten_and_onednn_below_the_best(
    x86: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(isa, "cpu_flags", lambda: SAPPHIRE)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/tmp/inductor")
    assert isa.measuring_env("avx2") == {
        "CNNC_CPU_ISA": "avx2",
        "ATEN_CPU_CAPABILITY": "avx2",
        "ONEDNN_MAX_CPU_ISA": "AVX2",
        "TORCHINDUCTOR_CACHE_DIR": "/tmp/inductor/isa-avx2",  # its cache mixes levels up
    }
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/tmp/inductor/isa-avx2")  # in the child
    assert isa.measuring_env("avx2")["TORCHINDUCTOR_CACHE_DIR"] == "/tmp/inductor/isa-avx2"
    assert isa.measuring_env("scalar")["ATEN_CPU_CAPABILITY"] == "default"
    assert isa.measuring_env("avx512_bf16")["ONEDNN_MAX_CPU_ISA"] == "AVX512_CORE_BF16"  # no AMX
    assert isa.measuring_env("amx") == {"CNNC_CPU_ISA": "amx"}  # this CPU as it is
    with pytest.raises(ConfigError, match="--isa must be one of"):
        isa.measuring_env("sse")
