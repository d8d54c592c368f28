"""Test-session set-up shared by every test module.

Environment variables that must exist before torch or Triton kernels are imported live here:
- Triton kernels run under Triton's interpreter when no CUDA device is present, so their
  correctness is tested on CPU.
- A persistent inductor cache keeps tests that call ``torch.compile`` fast after the first run,
  and a persistent extension directory does the same for cnnc's C++ CPU kernels.
- The autotune cache lives in the repository's .cache, never in the user's home.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# inductor's cache does not tell code compiled under another ATen capability apart
_ATEN_CAP = os.environ.get("ATEN_CPU_CAPABILITY", "").lower()
_INDUCTOR = "inductor" + (f"-{_ATEN_CAP}" if _ATEN_CAP else "")
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(ROOT / ".cache" / _INDUCTOR))
os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(ROOT / ".cache" / "torch_extensions"))
os.environ.setdefault("CNNC_CACHE_DIR", str(ROOT / ".cache" / "cnnc"))

import torch  # noqa: E402  (the environment above must be set first)

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
