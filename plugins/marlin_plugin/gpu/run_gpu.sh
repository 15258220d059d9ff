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
# KCM_STREAM_K_PROBE=1 the stream-K tile variant against the bulk one (gpu/probe_stream_k.py, through
# the extension; KCM_STREAM_K_PROBE_TIMEOUT, 200 s) after the tests;
# KCM_STREAM_K_TRACE=1 the stream-K kernel's per-block timeline on the same cases
# (gpu/trace_stream_k.py through gpu/build/libkcm_tile_probe.so, built first unless a carried one
# matches; KCM_STREAM_K_TRACE_TIMEOUT, 150 s);
# KCM_STORE_PROBE=1 builds and runs gpu/probe_store.cu (how fast a block stores an output tile,
# three ways; standalone, needs nvcc only) into $OUT/store.json;
# KCM_TILE_PROBE=1 the tile kernel's probe (gpu/probe_tile.py, every launch variant 0,1,2, M from
# KCM_TILE_PROBE_M; KCM_TILE_PROBE_ARGS adds options, e.g. --stage-chunks --variants 2), building
# gpu/build/libkcm_tile_probe.so first unless a carried one matches.
# KCM_TILE_NCU=1 runs Nsight Compute on the tile kernel (same library): probe_tile.py --ncu-target
# (128x256 blocks at M=128, 64x256 at M=64, 28672x8192 int4; each variant of KCM_TILE_NCU_VARIANTS,
# default 0,1, profiled once after two warm-up rounds; --clock-control none as in probe run 3) with
# the sections that sample warp stalls per SASS instruction (KCM_NCU_SET=full: the full set;
# KCM_NCU_SAMPLING: --warp-sampling-interval), bounded by KCM_NCU_TIMEOUT (200 s); writes
# tile_ncu_stalls.json / .txt (gpu/summarize_ncu_stalls.py) and tile_ncu.tar.gz (ncu log, details /
# raw / source CSVs, details text, the .ncu-rep if under KCM_NCU_KEEP_MB, 12). Without ncu or
# when it fails the step says why and the script goes on. KCM_NCU names the ncu binary.
# KCM_STREAM_NCU=1 does the same for the stream kernel's bulk pipeline (gpu/profile_stream.py:
# five int4 g128 points at M = 1 and 16, pipelines 5 and 6): stream_ncu_stalls.json / .txt and
# stream_ncu.tar.gz. KCM_BULK_NCU=1 profiles the bulk probe's launches instead (gpu/probe_bulk.py
# --ncu-target through the carried gpu/libkcm_bulk.so: pipeline 6 and its consumers alone, M = 1 and
# 16): bulk_ncu_stalls.json / .txt and bulk_ncu.tar.gz. The knobs of all: KCM_NCU_SET,
# KCM_NCU_SAMPLING, KCM_NCU_TIMEOUT. KCM_EXTENSION=0 skips the extension's build (for steps that
# do not use it: KCM_BULK_NCU, KCM_TILE_NCU with KCM_TESTS=0 KCM_BENCH=0).
set -o pipefail
OUT=${OUT:-/tmp/kcm_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export KCM_GIT_REV=${KCM_GIT_REV:-$(cat .git_revision 2>/dev/null || echo unknown)}
export KERNEL_CORE_CACHE_DIR=${KERNEL_CORE_CACHE_DIR:-$PWD/.cache/kernel-core}
export MAX_JOBS=${MAX_JOBS:-16}
exec > >(tee -a "$OUT/log.txt") 2>&1
nvidia-smi --query-gpu=name,clocks.max.sm,memory.total --format=csv,noheader
# The device has no network: Python packages missing there (nvidia-cutlass, flashinfer) come
# as wheels carried in .whl/.
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
python3 -m pip install --no-deps --no-build-isolation -q -e . -e plugins/emulation_plugin \
  -e plugins/marlin_plugin 2>&1 | tail -3
if [ "${KCM_EXTENSION:-1}" = "1" ]; then
  start=$(date +%s)
  python3 -c "import torch; from kernel_core_marlin import ops; ops.extension(); print('extension ready')"
  echo "build: $(( $(date +%s) - start )) s"
fi
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
if [ "${KCM_STREAM_K_PROBE:-0}" = "1" ]; then
  start=$(date +%s)
  PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}.:plugins/marlin_plugin:benchmarks \
    timeout "${KCM_STREAM_K_PROBE_TIMEOUT:-200}" python3 plugins/marlin_plugin/gpu/probe_stream_k.py \
    --out "$OUT/probe_stream_k.json"
  echo "stream-K probe: $(( $(date +%s) - start )) s"
fi
# gpu/build/libkcm_tile_probe.so, built unless a carried one matches the sources.
tile_probe_library() {
  if [ "$(cat plugins/marlin_plugin/gpu/build/libkcm_tile_probe.sources 2>/dev/null)" != \
       "$(python3 plugins/marlin_plugin/gpu/probe_sources.py)" ]; then
    JOBS=8 bash plugins/marlin_plugin/gpu/build_tile_probe.sh
  fi
}
if [ "${KCM_STREAM_K_TRACE:-0}" = "1" ]; then
  start=$(date +%s)
  tile_probe_library
  PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}.:plugins/marlin_plugin:benchmarks \
    timeout "${KCM_STREAM_K_TRACE_TIMEOUT:-150}" python3 plugins/marlin_plugin/gpu/trace_stream_k.py \
    --out "$OUT/trace_stream_k.json"
  echo "stream-K trace: $(( $(date +%s) - start )) s"
fi
if [ "${KCM_STORE_PROBE:-0}" = "1" ]; then
  mkdir -p plugins/marlin_plugin/gpu/build
  nvcc -O3 -std=c++17 -gencode=arch=compute_90a,code=sm_90a \
    -I plugins/marlin_plugin/kernel_core_marlin/csrc \
    -o plugins/marlin_plugin/gpu/build/probe_store plugins/marlin_plugin/gpu/probe_store.cu &&
    plugins/marlin_plugin/gpu/build/probe_store > "$OUT/store.json"
  echo "store probe: exit $?"
fi
if [ "${KCM_TILE_PROBE:-0}" = "1" ]; then
  start=$(date +%s)
  tile_probe_library
  PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}.:plugins/marlin_plugin:benchmarks \
    timeout "${KCM_TILE_PROBE_TIMEOUT:-300}" python3 plugins/marlin_plugin/gpu/probe_tile.py \
    --m "${KCM_TILE_PROBE_M:-64,128,256}" --out "$OUT/probe_tile.json" ${KCM_TILE_PROBE_ARGS:-}
  echo "tile probe: $(( $(date +%s) - start )) s"
fi
# Nsight Compute over a target script: ncu_profile TAG KERNEL_REGEX PER_ROUND WARMUP CMD...
# runs CMD (python3 with its arguments, which launches WARMUP rounds of PER_ROUND kernels matching
# KERNEL_REGEX and then one more) under ncu, profiles the last round with the sections that sample
# warp stalls per SASS instruction (KCM_NCU_SET=full: the full set; KCM_NCU_SAMPLING:
# --warp-sampling-interval; KCM_NCU_TIMEOUT, 200 s), and writes $OUT/TAG_ncu_stalls.json / .txt
# (gpu/summarize_ncu_stalls.py) and $OUT/TAG_ncu.tar.gz (ncu log, details / raw / source CSVs,
# details text, the .ncu-rep if under KCM_NCU_KEEP_MB, 12). Every failure is logged and returns 0.
# The ncu binary (KCM_NCU, else PATH, /usr/local/cuda/bin, /opt/nvidia/nsight-compute), or nothing.
ncu_binary() {
  local candidate
  for candidate in "${KCM_NCU:-}" "$(command -v ncu)" /usr/local/cuda/bin/ncu \
      /opt/nvidia/nsight-compute/*/ncu; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then echo "$candidate"; return 0; fi
  done
}
ncu_profile() {
  local tag=$1 regex=$2 per_round=$3 warmup=$4
  shift 4
  local ncu
  ncu=$(ncu_binary)
  if [ -z "$ncu" ]; then
    echo "$tag ncu: skipped, no ncu (KCM_NCU, PATH, /usr/local/cuda/bin, /opt/nvidia/nsight-compute)"
    return 0
  fi
  echo "$tag ncu: $ncu, $("$ncu" --version 2>&1 | tail -n 1)"
  local dir=$OUT/${tag}_ncu sections=() section known rc i
  local rep=$dir/${tag}_ncu
  mkdir -p "$dir"
  if [ -n "${KCM_NCU_SET:-}" ]; then
    sections=(--set "$KCM_NCU_SET")
  else
    known=$("$ncu" --list-sections 2>/dev/null)
    for section in SpeedOfLight LaunchStats Occupancy ComputeWorkloadAnalysis \
        MemoryWorkloadAnalysis SchedulerStats WarpStateStats InstructionStats SourceCounters; do
      if [ -z "$known" ] || grep -qw "$section" <<< "$known"; then
        sections+=(--section "$section")
      else
        echo "$tag ncu: this ncu lists no section $section, left out"
      fi
    done
  fi
  PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}.:plugins/marlin_plugin:benchmarks \
    timeout -k 10 "${KCM_NCU_TIMEOUT:-200}" "$ncu" --kernel-name "regex:$regex" \
    --launch-skip $(( warmup * per_round )) --launch-count "$per_round" --clock-control none \
    "${sections[@]}" ${KCM_NCU_SAMPLING:+--warp-sampling-interval "$KCM_NCU_SAMPLING"} \
    -f -o "$rep" "$@" > "$dir/profile.log" 2>&1
  rc=$?
  tail -n 20 "$dir/profile.log"
  if [ ! -s "$rep.ncu-rep" ]; then
    echo "$tag ncu: no report (ncu exit $rc; 124: the timeout), its log is ${tag}_ncu/profile.log"
  else
    [ "$rc" -eq 0 ] || echo "$tag ncu: ncu exit $rc (124: the timeout), exporting what it wrote"
    # Imports take seconds; the bounds only keep a hung one from eating the device call.
    timeout 30 "$ncu" --import "$rep.ncu-rep" --page details > "$dir/details.txt" 2>&1
    timeout 30 "$ncu" --import "$rep.ncu-rep" --page details --csv > "$dir/details.csv" \
      2>> "$dir/export.err"
    timeout 30 "$ncu" --import "$rep.ncu-rep" --page raw --csv > "$dir/raw.csv" \
      2>> "$dir/export.err"
    timeout 60 "$ncu" --import "$rep.ncu-rep" --page source --csv --print-source sass \
      > "$dir/source.csv" 2>> "$dir/export.err"
    local sources=("$dir/source.csv")
    if [ -s "$dir/source.csv" ] && \
       [ "$(grep -c '^"Kernel Name"' "$dir/source.csv")" -lt "$per_round" ]; then
      echo "$tag ncu: the source page holds fewer than $per_round kernels, one export per result"
      for (( i = 0; i < per_round; i++ )); do
        timeout 30 "$ncu" --import "$rep.ncu-rep" --launch-skip "$i" --launch-count 1 \
          --page source --csv --print-source sass > "$dir/source_$i.csv" 2>> "$dir/export.err"
        sources+=("$dir/source_$i.csv")
      done
    fi
    tail -n 5 "$dir/export.err" 2>/dev/null
    if python3 plugins/marlin_plugin/gpu/summarize_ncu_stalls.py --source "${sources[@]}" \
        --details "$dir/details.csv" --raw "$dir/raw.csv" --json "$OUT/${tag}_ncu_stalls.json" \
        --txt "$OUT/${tag}_ncu_stalls.txt"; then
      cat "$OUT/${tag}_ncu_stalls.txt"
    else
      echo "$tag ncu: no per-instruction samples read (the exports are in ${tag}_ncu.tar.gz)"
    fi
    if [ "$(stat -c %s "$rep.ncu-rep")" -ge $(( ${KCM_NCU_KEEP_MB:-12} << 20 )) ]; then
      echo "$tag ncu: $(( $(stat -c %s "$rep.ncu-rep") >> 20 )) MB report not kept (exports are)"
      rm -f "$rep.ncu-rep"
    fi
  fi
  # One archive: the device tool brings back at most 8 files of at most 16 MiB each.
  tar -czf "$OUT/${tag}_ncu.tar.gz" -C "$OUT" "${tag}_ncu"
  if [ "$(stat -c %s "$OUT/${tag}_ncu.tar.gz" 2>/dev/null || echo 0)" -ge $(( 16 << 20 )) ]; then
    echo "$tag ncu: ${tag}_ncu.tar.gz over 16 MiB, archived again without the report"
    tar -czf "$OUT/${tag}_ncu.tar.gz" -C "$OUT" --exclude '*.ncu-rep' "${tag}_ncu"
  fi
  rm -rf "$dir"
  return 0
}
# The KCM_TILE_NCU step (see the header): probe_tile.py --ncu-target launches round after round one
# of each (shape, variant); the kernel-name filter counts only the tile kernels.
tile_ncu() {
  if [ -z "$(ncu_binary)" ]; then
    echo "tile ncu: skipped, no ncu (KCM_NCU, PATH, /usr/local/cuda/bin, /opt/nvidia/nsight-compute)"
    return 0
  fi
  if ! tile_probe_library; then
    echo "tile ncu: skipped, gpu/build/libkcm_tile_probe.so did not build"
    return 0
  fi
  local variants=${KCM_TILE_NCU_VARIANTS:-0,1}
  local per_round=$(( 2 * $(tr ',' '\n' <<< "$variants" | grep -c .) ))
  ncu_profile tile tile_gemm "$per_round" 2 python3 plugins/marlin_plugin/gpu/probe_tile.py \
    --ncu-target --variants "$variants" --ncu-warmup 2
}
if [ "${KCM_TILE_NCU:-0}" = "1" ]; then
  start=$(date +%s)
  tile_ncu
  echo "tile ncu: $(( $(date +%s) - start )) s"
fi
if [ "${KCM_STREAM_NCU:-0}" = "1" ]; then
  start=$(date +%s)
  targets=$(PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}.:plugins/marlin_plugin:benchmarks \
    python3 plugins/marlin_plugin/gpu/profile_stream.py --count)
  ncu_profile stream stream_gemm_bulk "$targets" 2 python3 plugins/marlin_plugin/gpu/profile_stream.py \
    --warmup 2
  echo "stream ncu: $(( $(date +%s) - start )) s"
fi
if [ "${KCM_BULK_NCU:-0}" = "1" ]; then
  start=$(date +%s)
  targets=$(PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}.:plugins/marlin_plugin:benchmarks \
    python3 plugins/marlin_plugin/gpu/probe_bulk.py --ncu-count)
  ncu_profile bulk stream_gemm_bulk "$targets" 2 python3 plugins/marlin_plugin/gpu/probe_bulk.py \
    --ncu-target
  echo "bulk ncu: $(( $(date +%s) - start )) s"
fi
if [ "${KCM_BENCH:-1}" = "1" ]; then
  start=$(date +%s)
  timeout "${KCM_BENCH_TIMEOUT:-600}" python3 benchmarks/bench_marlin.py --out "$OUT/bench.json" \
    --plot "$OUT/bench.png" ${KCM_BENCH_ARGS:-}
  echo "bench: $(( $(date +%s) - start )) s"
fi
