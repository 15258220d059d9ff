"""kernel-core-emulation: Reference (emulation) kernels for every kernel-core family, CPU and GPU."""

__version__ = "0.1.0"
