"""The benchmark suite: pytest-benchmark over specs x variants x devices.

Run it with ``.venv/bin/python -m pytest bench --benchmark-only`` (see README). Each case
times one full training step (zero_grad, forward, loss, backward, optimizer step) of a spec
under one optimization configuration. pytest-benchmark reports each case on its own; for
ratios measured side by side in one process, use ``cnnc bench``.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(ROOT / ".cache" / "inductor"))
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))
os.environ.setdefault("CNNC_CACHE_DIR", str(ROOT / ".cache" / "cnnc"))
