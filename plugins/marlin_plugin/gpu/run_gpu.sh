#!/usr/bin/env bash
# The plugin's whole GPU job, for the device machine: install, build the CUDA extension (timed),
# run the GPU tests, run the benchmark. Everything lands in $OUT (log, pytest report, JSON, PNG).
# The conformance kit compares against the emulation plugin, so that is installed too.
# Usage (repo root): KCM_GIT_REV=$(git rev-parse HEAD) bash plugins/marlin_plugin/gpu/run_gpu.sh
# KCM_GIT_REV defaults to the carried .git_revision (the device copy's .git may be stale).
# Env: KCM_TESTS=0 skips the tests, KCM_TEST_SELECT narrows them (a pytest -k expression);
# KCM_BENCH=0 skips the benchmark, KCM_BENCH_ARGS adds options to it (e.g. --quick), KCM_BENCH_TIMEOUT
# bounds it (its JSON is rewritten after every shape);
# KCM_PROBE=1 runs the stream pipelines' timing probe (gpu/probe_stream.py) before the benchmark;
# KCM_TILE_PROBE=1 the tile kernel's probe (gpu/probe_tile.py, both launch variants, M from
# KCM_TILE_PROBE_M), building gpu/build/libkcm_tile_probe.so first unless a carried one matches.
set -o pipefail
OUT=${OUT:-/tmp/kcm_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export KCM_GIT_REV=${KCM_GIT_REV:-$(cat .git_revision 2>/dev/null || echo unknown)}
export KERNEL_CORE_CACHE_DIR=${KERNEL_CORE_CACHE_DIR:-$PWD/.cache/kernel-core}
export MAX_JOBS=${MAX_JOBS:-16}
exec > >(tee -a "$OUT/log.txt") 2>&1
nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv,noheader
# The device has no network: pure-python dependencies missing there (importlib_metadata) come
# as wheels carried in .whl/.
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -m pip install --no-deps --no-build-isolation -q -e . -e plugins/emulation_plugin \
  -e plugins/marlin_plugin 2>&1 | tail -3
start=$(date +%s)
python3 -c "import torch; from kernel_core_marlin import ops; ops.extension(); print('extension ready')"
echo "build: $(( $(date +%s) - start )) s"
if [ "${KCM_TESTS:-1}" = "1" ]; then
  start=$(date +%s)
  timeout "${KCM_TEST_TIMEOUT:-170}" python3 -m pytest -q -m gpu plugins/marlin_plugin/tests -p no:cacheprovider \
    -o addopts="" -ra --tb=short ${KCM_TEST_SELECT:+-k "$KCM_TEST_SELECT"} 2>&1 | tail -n 80 > "$OUT/pytest.txt"
  tail -n 30 "$OUT/pytest.txt"
  echo "tests: $(( $(date +%s) - start )) s"
fi
if [ "${KCM_PROBE:-0}" = "1" ]; then
  start=$(date +%s)
  timeout "${KCM_PROBE_TIMEOUT:-200}" python3 plugins/marlin_plugin/gpu/probe_stream.py --out "$OUT/probe_stream.json"
  echo "probe: $(( $(date +%s) - start )) s"
fi
if [ "${KCM_TILE_PROBE:-0}" = "1" ]; then
  start=$(date +%s)
  if [ "$(cat plugins/marlin_plugin/gpu/build/libkcm_tile_probe.sources 2>/dev/null)" != \
       "$(python3 plugins/marlin_plugin/gpu/probe_sources.py)" ]; then
    JOBS=8 bash plugins/marlin_plugin/gpu/build_tile_probe.sh
  fi
  PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}.:plugins/marlin_plugin:benchmarks \
    timeout "${KCM_TILE_PROBE_TIMEOUT:-300}" python3 plugins/marlin_plugin/gpu/probe_tile.py \
    --m "${KCM_TILE_PROBE_M:-64,128,256}" --out "$OUT/probe_tile.json"
  echo "tile probe: $(( $(date +%s) - start )) s"
fi
if [ "${KCM_BENCH:-1}" = "1" ]; then
  start=$(date +%s)
  timeout "${KCM_BENCH_TIMEOUT:-600}" python3 benchmarks/bench_marlin.py --out "$OUT/bench.json" \
    --plot "$OUT/bench.png" ${KCM_BENCH_ARGS:-}
  echo "bench: $(( $(date +%s) - start )) s"
fi
