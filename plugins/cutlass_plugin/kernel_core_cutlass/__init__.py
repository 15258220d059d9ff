"""kernel-core-cutlass: CUTLASS W8A8 FP8/INT8 and FP8 block-scaled GEMMs for kernel-core, SM90."""

__version__ = "0.1.0"
