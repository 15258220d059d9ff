#!/usr/bin/env bash
# The CUTLASS plugin's GPU job, from the repository root on the GPU machine ($OUT set): install the
# carried wheels (.whl/), build the extension (or load a carried build from .jit_cache/) while
# FlashInfer's JIT modules and DeepGEMM kernels build for the comparison (or load from .fi_cache/),
# then the plugin's GPU tests (conformance kit included) and benchmarks/bench_cutlass.py.
# Usage: bash plugins/cutlass_plugin/gpu/run_gpu.sh [git-revision]   (default: the carried
# .git_revision, written by the caller: a .git on the device machine may be stale)
# Time limits: KCC_TEST_TIMEOUT (GPU tests), KCC_BUDGET_S (the whole script; the benchmark gets
# what is left; the optional Nsight Compute step after it, KCC_NCU=1, has its own KCC_NCU_TIMEOUT).
# KCC_BENCH_ARGS: extra arguments of bench_cutlass.py (e.g. --paired). $OUT receives at most 8 files: the benchmark JSON and PNG, jit_cache.tgz,
# fi_cache.tar.gz and results.tgz (logs, test reports).
set -uo pipefail
export PYTHONUNBUFFERED=1 MAX_JOBS=16
OUT=${OUT:?set OUT}
REV=${1:-$(cat .git_revision 2>/dev/null || git rev-parse --verify -q HEAD 2>/dev/null || echo unknown)}
LOGS=/tmp/kcc-logs  # packed into $OUT/results.tgz: $OUT returns at most 8 files
mkdir -p "$LOGS"
exec > >(tee -a "$LOGS/run.txt") 2>&1
export KERNEL_CORE_CACHE_DIR=$PWD/.cache/kernel-core
mkdir -p "$KERNEL_CORE_CACHE_DIR"
if [ -f .jit_cache/jit_cache.tgz ]; then
    tar -xzf .jit_cache/jit_cache.tgz -C "$KERNEL_CORE_CACHE_DIR" && echo "== unpacked the carried JIT cache"
fi

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
python3 -m pip install -q --no-deps --no-build-isolation -e . -e plugins/emulation_plugin \
    -e plugins/cutlass_plugin -e plugins/flashinfer_plugin || exit 1
export CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader

pack() {
    tar -czf /tmp/results.tgz -C "$(dirname "$LOGS")" "$(basename "$LOGS")" && mv /tmp/results.tgz "$OUT/results.tgz"
}

echo "== build (CUTLASS extension), FlashInfer setup in the background until the benchmark"
start=$SECONDS
STEPS=none OUT="$LOGS/flashinfer-setup" bash plugins/flashinfer_plugin/gpu/run_gpu.sh \
    > "$LOGS/flashinfer-setup.txt" 2>&1 &
fi_setup=$!
python3 -c "from kernel_core_cutlass import ops; ops.build()" || { pack; exit 1; }
echo "== CUTLASS extension ready after $((SECONDS - start)) s"
# The built library alone, for the next machine (copy to .jit_cache/ and carry it).
(cd "$KERNEL_CORE_CACHE_DIR" && find jit -name '*.so' -print0 | tar -czf "$OUT/jit_cache.tgz" --null -T -)
pack
# The FlashInfer setup reinstalls the repo's packages first; let that finish before pytest imports.
for _ in $(seq 60); do grep -q "installed:" "$LOGS/flashinfer-setup/log.txt" 2>/dev/null && break; sleep 1; done

echo "== GPU tests"
timeout "${KCC_TEST_TIMEOUT:-170}" python3 -m pytest -q -m gpu plugins/cutlass_plugin/tests \
    -p no:cacheprovider -o addopts="" -ra --tb=short --junitxml="$LOGS/junit.xml" \
    > "$LOGS/pytest.txt" 2>&1
echo "== GPU tests exit $? after $((SECONDS - start)) s"
tail -n 25 "$LOGS/pytest.txt"
pack

wait $fi_setup
echo "== FlashInfer setup done after $((SECONDS - start)) s (exit $?)"
mv "$LOGS/flashinfer-setup/fi_cache.tar.gz" "$OUT/" 2>/dev/null

DEVICE=$(python3 -c "import torch; print(torch.cuda.get_device_name().split()[1].lower())")
JSON=$OUT/cutlass-$DEVICE.json
BENCH_ARGS=${KCC_BENCH_ARGS:-}
CMD="bash plugins/cutlass_plugin/gpu/run_gpu.sh $REV (python3 benchmarks/bench_cutlass.py --out \$OUT/cutlass-$DEVICE.json --git-rev $REV $BENCH_ARGS)"
left=$(( ${KCC_BUDGET_S:-560} - SECONDS ))
echo "== benchmark (time limit ${left} s)"
# shellcheck disable=SC2086  # BENCH_ARGS is a list of words
timeout "$(( left > 30 ? left : 30 ))" python3 benchmarks/bench_cutlass.py --out "$JSON" \
    --git-rev "$REV" --command "$CMD" $BENCH_ARGS
echo "== benchmark exit $? after $((SECONDS - start)) s"
pack

# KCC_NCU=1: Nsight Compute over every GEMM launch of gpu/profile_gemm.py (KCC_NCU_ARGS: its
# arguments; ncu flushes the caches before each launch it profiles), clocks left as they run; details
# and raw metrics as CSV in the logs (results.tgz, ncu/). KCC_NCU_SOURCE=1 adds the sampled warp
# stalls per SASS instruction (SourceCounters, InstructionStats; ncu/source.csv).
if [ "${KCC_NCU:-0}" = "1" ]; then
    NCU=$(command -v ncu || ls /usr/local/cuda/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -n 1)
    mkdir -p "$LOGS/ncu"
    if [ -z "$NCU" ]; then
        echo "== ncu: skipped, no ncu on PATH, in /usr/local/cuda/bin or /opt/nvidia/nsight-compute"
    else
        echo "== ncu: $NCU ($("$NCU" --version | tail -n 1))"
        sections=(--section SpeedOfLight --section LaunchStats --section Occupancy
                  --section ComputeWorkloadAnalysis --section MemoryWorkloadAnalysis
                  --section SchedulerStats --section WarpStateStats)
        if [ "${KCC_NCU_SOURCE:-0}" = "1" ]; then
            sections+=(--section SourceCounters --section InstructionStats)
        fi
        # shellcheck disable=SC2086  # KCC_NCU_ARGS is a list of words
        timeout -k 10 "${KCC_NCU_TIMEOUT:-240}" "$NCU" --kernel-name "regex:nvjet|device_kernel" \
            --clock-control none "${sections[@]}" -f -o "$LOGS/ncu/gemm" \
            python3 plugins/cutlass_plugin/gpu/profile_gemm.py ${KCC_NCU_ARGS:-} \
            > "$LOGS/ncu/profile.log" 2>&1
        echo "== ncu exit $? after $((SECONDS - start)) s"
        tail -n 15 "$LOGS/ncu/profile.log"
        if [ ! -s "$LOGS/ncu/gemm.ncu-rep" ]; then
            echo "== ncu: no report written (see ncu/profile.log)"
        else
            report=$LOGS/ncu/gemm.ncu-rep
            "$NCU" --import "$report" --page details --csv > "$LOGS/ncu/details.csv" 2>&1
            "$NCU" --import "$report" --page raw --csv > "$LOGS/ncu/raw.csv" 2>&1
            "$NCU" --import "$report" --page details > "$LOGS/ncu/details.txt" 2>&1
            if [ "${KCC_NCU_SOURCE:-0}" = "1" ]; then
                "$NCU" --import "$report" --page source --csv --print-source sass \
                    > "$LOGS/ncu/source.csv" 2>&1
            fi
        fi
    fi
    pack
fi
