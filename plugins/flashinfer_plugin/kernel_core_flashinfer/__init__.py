"""kernel-core-flashinfer: kernel-core kernels backed by flashinfer-python."""

__version__ = "0.1.0"
