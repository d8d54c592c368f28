"""Test-session set-up shared by every test module.

Environment variables that must exist before torch or Triton kernels are imported live here:
- Triton kernels run under Triton's interpreter when no CUDA device is present, so their
  correctness is tested on CPU.
- A persistent inductor cache keeps tests that call ``torch.compile`` fast after the first run.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(ROOT / ".cache" / "inductor"))

import torch  # noqa: E402  (the environment above must be set first)

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
