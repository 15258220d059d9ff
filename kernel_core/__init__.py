"""kernel-core: a registry of quantized linear (GEMM) kernels for LLM inference engines."""

from kernel_core.hookspecs import hookimpl, hookspec

__all__ = ["hookimpl", "hookspec"]
__version__ = "0.1.0"
