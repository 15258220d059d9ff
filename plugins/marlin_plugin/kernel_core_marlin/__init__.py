"""kernel-core-marlin: Weight-only mixed-precision GEMMs (W4A16, W8A16) for kernel-core, SM80+."""

__version__ = "0.1.0"
