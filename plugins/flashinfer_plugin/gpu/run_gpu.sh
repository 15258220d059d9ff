#!/usr/bin/env bash
# The FlashInfer plugin's whole GPU job, run from the repository root on the GPU machine:
# install the carried wheels (.whl/) and the repo, build FlashInfer's JIT modules, compile the
# DeepGEMM kernels in parallel, then the accuracy sweep, the GPU tests (conformance kit included)
# and the benchmark. Results go to $OUT (or ./gpu-out). Steps: STEPS="accuracy tests bench"
# (and "hostcosts": the host time of the eager path's pieces, gpu/host_costs.py);
# each has a time limit (ACCURACY_TIMEOUT, TESTS_TIMEOUT, BENCH_TIMEOUT seconds); the DeepGEMM
# prewarm covers the steps chosen. BENCH_M="1,16,128" restricts the benchmark's batch sizes;
# RESULT_DATE (default: today, UTC) names the result files; PREWARM=0 skips the DeepGEMM prewarm.
# A prebuilt cache (.fi_cache/, carried; see README) skips the builds.
set -uo pipefail
OUT=${OUT:-$PWD/gpu-out}
mkdir -p "$OUT"
STEPS=${STEPS:-"accuracy tests bench"}
export PYTHONUNBUFFERED=1 MAX_JOBS=16
export KERNEL_CORE_CACHE_DIR=${KERNEL_CORE_CACHE_DIR:-/tmp/kernel-core-cache}
RESULT_DATE=${RESULT_DATE:-$(date -u +%F)}
# The revision: the carried .git_revision first (the device copy's .git, where there is one, was
# seen to hold an older commit), else git.
KC_GIT_REVISION=$(cat .git_revision 2>/dev/null || git rev-parse --verify -q HEAD 2>/dev/null || echo unknown)
export KC_GIT_REVISION
log() { echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$OUT/log.txt" >&2; }

python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
python3 -m pip install -q --no-deps --no-build-isolation -e . -e plugins/flashinfer_plugin \
  -e plugins/emulation_plugin || exit 1
log "installed: $(python3 -c 'import flashinfer, torch; print(flashinfer.__version__, torch.__version__)' 2>&1 | tail -1)"

# A carried cache: prebuilt JIT modules load as FlashInfer AOT artifacts; DeepGEMM cubins as is.
if [ -f .fi_cache/fi_cache.tar.gz ]; then
  mkdir -p "$KERNEL_CORE_CACHE_DIR/flashinfer" /tmp/fi_aot
  tar -xzf .fi_cache/fi_cache.tar.gz -C /tmp/fi_aot
  for so in /tmp/fi_aot/aot/*.so; do
    name=$(basename "$so" .so)
    mkdir -p "/tmp/site/flashinfer/data/aot/$name" && cp "$so" "/tmp/site/flashinfer/data/aot/$name/"
  done
  [ -d /tmp/fi_aot/deep_gemm ] && cp -r /tmp/fi_aot/deep_gemm "$KERNEL_CORE_CACHE_DIR/flashinfer/"
  log "carried cache unpacked: $(ls /tmp/site/flashinfer/data/aot) $(ls $KERNEL_CORE_CACHE_DIR/flashinfer/deep_gemm/cache 2>/dev/null | wc -l) cubins"
fi

log "warmup (JIT builds)"
python3 -c 'from kernel_core_flashinfer.kernels import FlashInferFp8ScaledMMLinearKernel as K; K.warmup()' 2>&1 | tail -3 &
python3 -c 'from kernel_core_flashinfer.kernels import FlashInferFp8BlockScaledMMLinearKernel as K; K.warmup()' 2>&1 | tail -3
wait
log "warmup done"
# The DeepGEMM kernels the chosen steps run (every group when no such step is chosen: STEPS=none
# is gpu/run_all.sh's warmup, ahead of all of them).
# PREWARM=0 skips it (a carried cache that already holds those cubins).
groups=$(for step in $STEPS; do case $step in accuracy|tests|bench) echo "$step" ;; esac; done | paste -sd, -)
if [ "${PREWARM:-1}" != 0 ]; then
  timeout "${PREWARM_TIMEOUT:-200}" python3 plugins/flashinfer_plugin/gpu/prewarm.py --workers 8 \
    --groups "${groups:-accuracy,bench,tests}" ${BENCH_M:+--bench-m "$BENCH_M"} > "$OUT/prewarm.txt" 2>&1
  tail -3 "$OUT/prewarm.txt"
fi
log "prewarm done"
# Bring the builds back (small enough to carry next time): JIT .so files and DeepGEMM cubins.
base=$KERNEL_CORE_CACHE_DIR/flashinfer
mkdir -p /tmp/fi_pack/aot
find "$base" -path '*cached_ops*' -name '*.so' -exec cp {} /tmp/fi_pack/aot/ \; 2>/dev/null
cp /tmp/site/flashinfer/data/aot/*/*.so /tmp/fi_pack/aot/ 2>/dev/null
[ -d "$base/deep_gemm" ] && cp -r "$base/deep_gemm" /tmp/fi_pack/ && rm -rf /tmp/fi_pack/deep_gemm/tmp
tar -czf "$OUT/fi_cache.tar.gz" -C /tmp/fi_pack . && log "cache: $(du -h "$OUT/fi_cache.tar.gz" | cut -f1)"

DEVICE=$(python3 -c 'import torch; n=torch.cuda.get_device_name().lower(); print("h200" if "h200" in n else "h100" if "h100" in n else n.split()[-1])')
for step in $STEPS; do
  case $step in
    accuracy)
      timeout "${ACCURACY_TIMEOUT:-150}" python3 plugins/flashinfer_plugin/gpu/accuracy_vs_m.py --time \
        --out "$OUT/flashinfer-accuracy-vs-m-$DEVICE-$RESULT_DATE.json" 2>&1 | tee -a "$OUT/log.txt" ;;
    hostcosts)
      timeout 60 python3 plugins/flashinfer_plugin/gpu/host_costs.py \
        --out "$OUT/flashinfer-host-costs-$DEVICE-$RESULT_DATE.json" 2>&1 | tee -a "$OUT/log.txt" ;;
    tests)
      timeout "${TESTS_TIMEOUT:-200}" python3 -m pytest -q plugins/flashinfer_plugin/tests \
        -p no:cacheprovider > "$OUT/pytest.txt" 2>&1; tail -25 "$OUT/pytest.txt" | tee -a "$OUT/log.txt" ;;
    bench)
      timeout "${BENCH_TIMEOUT:-300}" python3 benchmarks/bench_flashinfer.py ${BENCH_M:+--m "$BENCH_M"} \
        --out "$OUT/flashinfer-$DEVICE-$RESULT_DATE.json" 2>&1 | tee -a "$OUT/log.txt" ;;
  esac
  log "$step done"
done

