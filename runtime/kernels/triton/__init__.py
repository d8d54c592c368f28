"""The fused conv2d + bias + ReLU: the custom op (``op``), its Triton kernels (``forward``,
``backward``) and the fx pass that fuses a model's conv+ReLU pairs into it (``fuse``)."""
