"""kernel-core-emulation: reference (emulation) kernels for every kernel-core family, CPU and
GPU."""

__version__ = "0.1.0"
