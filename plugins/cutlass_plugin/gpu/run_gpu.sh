#!/usr/bin/env bash
# On the GPU machine (repo root, $OUT set): install the carried CUTLASS wheel, build the extension
# (or reuse a carried build in .cache/), run the plugin's GPU tests and the benchmark.
# Usage: bash plugins/cutlass_plugin/gpu/run_gpu.sh <git-revision> [bench args...]
set -euo pipefail
export PYTHONUNBUFFERED=1
REV=${1:-unknown}
shift || true
OUT=${OUT:?set OUT}
LOG=$OUT/log.txt
exec > >(tee -a "$LOG") 2>&1

# No network there: the CUTLASS headers and the pure-python dependencies kernel-core needs
# (importlib_metadata and its own) come as wheels carried in .whl/.
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site \
    .whl/nvidia_cutlass*.whl .whl/importlib_metadata*.whl .whl/lazy_importer*.whl .whl/zipp*.whl
export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
python3 -m pip install -q --no-deps --no-build-isolation -e . -e plugins/cutlass_plugin
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
export MAX_JOBS=16
export KERNEL_CORE_CACHE_DIR=$PWD/.cache/kernel-core
# A carried build is older than the freshly copied sources and headers: mark it current so ninja
# reuses it (the cache key already covers sources, flags and torch version).
if [ -d "$KERNEL_CORE_CACHE_DIR" ]; then find "$KERNEL_CORE_CACHE_DIR" -type f -exec touch {} +; fi
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv

start=$(date +%s)
python3 -c "from kernel_core_cutlass import ops; ops.build()"
echo "extension ready in $(( $(date +%s) - start )) s"
# Bring the build back (objects + .so; small) so the next run can carry it.
tar -C "$KERNEL_CORE_CACHE_DIR" -cf "$OUT/jit_cache.tar" jit

timeout "${KCC_TEST_TIMEOUT:-110}" python3 -m pytest -q -m gpu plugins/cutlass_plugin/tests \
    -p kernel_core.testing.plugin -p no:cacheprovider -o addopts="" -ra --tb=short \
    --show-capture=no --junitxml="$OUT/pytest.xml" 2>&1 \
    | tail -n 150 > "$OUT/pytest.txt" || true
tail -n 40 "$OUT/pytest.txt"

DEVICE=$(python3 -c "import torch; print(torch.cuda.get_device_name().split()[1].lower())")
CMD="python3 benchmarks/bench_cutlass.py --out \$OUT/cutlass-$DEVICE.json --git-rev $REV $*"
# The whole script fits the call: the benchmark gets what is left of KCC_BUDGET_S.
timeout "$(( ${KCC_BUDGET_S:-425} - SECONDS > 30 ? ${KCC_BUDGET_S:-425} - SECONDS : 30 ))" python3 benchmarks/bench_cutlass.py \
    --out "$OUT/cutlass-$DEVICE.json" --git-rev "$REV" --command "$CMD" "$@"
