"""kernel-core-example: a minimal kernel-core plugin (see docs/plugin-authors.md)."""

__version__ = "0.1.0"
