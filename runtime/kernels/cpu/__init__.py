"""cnnc's C++ CPU kernels: the sources (``*.cpp``, ``*.h``) and their Python wrappers.

``extension`` builds and loads each kernel; ``isa`` picks the code path (scalar, AVX2,
AVX-512, ...) a kernel runs; ``pool``, ``batchnorm``, ``dropout`` and ``conv3x3`` wrap the
kernels as custom ops or modules, each falling back to ATen when its kernel is unavailable.
"""
