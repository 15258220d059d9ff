"""The sources a torch-free probe library is built from, and their digest: build_tile_probe.sh
records it beside the library and probe_tile.py refuses a library built from other sources.

Standalone (no torch): ``python3 probe_sources.py`` prints the digest.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

PLUGIN = Path(__file__).resolve().parent.parent
CSRC = PLUGIN / "kernel_core_marlin" / "csrc"
#: Translation units of libkcm_tile_probe.so (relative to the plugin root).
TILE_PROBE_UNITS = ("kernel_core_marlin/csrc/tile_bf16.cu", "kernel_core_marlin/csrc/tile_fp16.cu",
                    "kernel_core_marlin/csrc/gemm_bf16.cu", "kernel_core_marlin/csrc/gemm_fp16.cu",
                    "gpu/tile_probe_shim.cu")


def tile_probe_digest() -> str:
    """sha256 over the path and bytes of every unit and header the library is built from."""
    files = sorted({PLUGIN / unit for unit in TILE_PROBE_UNITS}
                   | set(CSRC.glob("*.cuh")) | set(CSRC.glob("*.h"))
                   | {PLUGIN / "gpu" / "probe_params.h"})
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path.relative_to(PLUGIN)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


if __name__ == "__main__":
    print(tile_probe_digest())
