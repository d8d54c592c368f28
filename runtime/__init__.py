"""cnnc's execution layer: kernels, optimization passes, training, data, checkpoints, benchmarks.

Everything here works on any ``torch.nn.Module``; this package never imports ``cnnc``.
"""
