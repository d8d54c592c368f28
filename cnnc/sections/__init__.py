"""Optional top-level sections of a spec besides the network itself (e.g. ``train:``).

Each section is a pydantic model that validates its options field by field: ``train:`` is
the runtime's own ``TrainConfig``; sections import only pydantic and ``runtime``.
"""

from cnnc.sections.train import TrainSection

__all__ = ["TrainSection"]
