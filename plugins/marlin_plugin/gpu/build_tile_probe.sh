#!/usr/bin/env bash
# Builds gpu/build/libkcm_tile_probe.so for gpu/probe_tile.py: the tile and stream kernels (sm_90a)
# plus tile_probe_shim.cu, a torch-free C entry point, and records the sources' digest beside it
# (probe_tile.py refuses a library built from other sources). Needs nvcc only, no GPU: build it
# here and carry plugins/marlin_plugin/gpu/build to the device, or build it there.
# Usage (any directory): bash plugins/marlin_plugin/gpu/build_tile_probe.sh
# (JOBS=4: four units at once; the default 1 suits a shared 2-core machine).
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
JOBS=${JOBS:-1}
mkdir -p gpu/build
digest=$(python3 gpu/probe_sources.py)  # before compiling: an edit during the build shows later
FLAGS=(-D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__
       -D__CUDA_NO_BFLOAT16_CONVERSIONS__ -D__CUDA_NO_HALF2_OPERATORS__ --expt-relaxed-constexpr
       -std=c++17 -O3 -gencode=arch=compute_90a,code=sm_90a -Xcompiler -fPIC)
units=$(python3 -c "import sys; sys.path.insert(0, 'gpu'); import probe_sources as s
print(' '.join(s.TILE_PROBE_UNITS))")
objects=()
for unit in $units; do
  object=gpu/build/$(basename "${unit%.cu}").o
  objects+=("$object")
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do wait -n; done
  echo "nvcc $unit" >&2
  "$NVCC" "${FLAGS[@]}" -c "$unit" -o "$object" &
done
while [ "$(jobs -rp | wc -l)" -gt 0 ]; do wait -n; done
"$NVCC" -shared -cudart static -gencode=arch=compute_90a,code=sm_90a "${objects[@]}" \
  -o gpu/build/libkcm_tile_probe.so
rm -f "${objects[@]}"  # the library alone travels to the device (carry limit)
echo "$digest" > gpu/build/libkcm_tile_probe.sources
echo "built gpu/build/libkcm_tile_probe.so ($(cat gpu/build/libkcm_tile_probe.sources))" >&2
