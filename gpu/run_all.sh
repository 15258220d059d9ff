#!/usr/bin/env bash
# The one GPU job: install carried wheels, install the project, build, run every GPU test and
# benchmark, and leave JSON/PNG results under $OUT. Run from the repository root on the GPU machine:
#
#     bash gpu/run_all.sh [warmup] [tests] [marlin] [cutlass] [flashinfer] [tune]   (default: all)
#
# warmup builds every JIT extension in parallel (CUTLASS, Marlin, FlashInfer with its carried
# cache); the parts after it reuse the builds (KERNEL_CORE_CACHE_DIR, kept between calls while the
# machine is warm). The git revision comes from the carried file .git_revision (the device copy
# may hold a stale .git), else from `git rev-parse`.
# Carry: [".whl", ".fi_cache", ".jit_cache", ".git_revision"] (the last three optional).
# Each part's own script writes into $OUT/<part>/; at the end everything is also packed into
# $OUT/results.tgz, because the device tool returns at most 8 files.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
: "${OUT:?set OUT to a writable directory}"
parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(warmup tests marlin cutlass flashinfer tune)
REVISION=$(cat .git_revision 2>/dev/null || git rev-parse --verify -q HEAD 2>/dev/null || echo unknown)
export KCM_GIT_REV=$REVISION KC_GIT_REVISION=$REVISION

export PYTHONUNBUFFERED=1 MAX_JOBS=${MAX_JOBS:-16}
export KERNEL_CORE_CACHE_DIR=${KERNEL_CORE_CACHE_DIR:-$ROOT/.cache/kernel-core}
mkdir -p "$KERNEL_CORE_CACHE_DIR" "$OUT/logs"
# Built extensions from an earlier machine (same sources, same torch): jit.py loads a keyed
# library without rebuilding, so carrying .jit_cache/ skips minutes of nvcc on a fresh machine.
if [ -f .jit_cache/jit_cache.tgz ]; then
    tar -xzf .jit_cache/jit_cache.tgz -C "$KERNEL_CORE_CACHE_DIR" && echo "== unpacked the carried JIT cache" >&2
fi

if compgen -G ".whl/*.whl" >/dev/null; then
    echo "== installing carried wheels" >&2
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
echo "== installing kernel-core and its plugins (no dependencies: the image has them)" >&2
python3 -m pip install -q --no-deps --no-build-isolation -e . -e plugins/emulation_plugin \
    -e plugins/marlin_plugin -e plugins/cutlass_plugin -e plugins/flashinfer_plugin || exit 1

{
    echo "git_revision: $REVISION"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
    python3 -c 'import torch, triton; print("torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__)'
    python3 -c 'import matplotlib; print("matplotlib", matplotlib.__version__)' || echo "no matplotlib: no PNG plots"
    nvcc --version | tail -1
} > "$OUT/environment.txt" 2>&1
cat "$OUT/environment.txt" >&2

status=0
pack() {
    tar -czf /tmp/results.tgz -C "$OUT" --exclude=results.tgz --exclude=jit_cache.tgz --exclude=fi_cache.tar.gz . && mv /tmp/results.tgz "$OUT/results.tgz"
}
run_part() {
    local name=$1; shift
    echo "== $name" >&2
    local start=$SECONDS
    mkdir -p "$OUT/$name"
    if OUT="$OUT/$name" "$@" > "$OUT/logs/$name.log" 2>&1; then
        echo "== $name passed in $((SECONDS - start)) s" >&2
    else
        echo "== $name FAILED (exit $?) after $((SECONDS - start)) s; tail of its log:" >&2
        tail -30 "$OUT/logs/$name.log" >&2
        status=1
    fi
    pack  # after every part, so a run stopped at its time limit still returns what finished
}

warmup_all() {
    # The three builds are independent; together they fit the 16 cores (MAX_JOBS each).
    STEPS=none OUT="$OUT/flashinfer-setup" bash plugins/flashinfer_plugin/gpu/run_gpu.sh &
    python3 -c "from kernel_core_cutlass import ops; ops.build()" &
    python3 -c "from kernel_core_marlin import ops; ops.extension()" &
    local failed=0
    for job in $(jobs -p); do wait "$job" || failed=1; done
    return $failed
}

for part in "${parts[@]}"; do
    case $part in
        warmup) run_part warmup timeout "${WARMUP_TIMEOUT:-240}" bash -c "$(declare -f warmup_all); warmup_all" ;;
        tests) run_part tests timeout "${TESTS_TIMEOUT:-300}" python3 -m pytest -q -m gpu \
                   -p no:cacheprovider --junitxml="$OUT/tests/junit.xml" \
                   tests plugins examples ;;
        marlin) run_part marlin env KCM_TESTS=0 bash plugins/marlin_plugin/gpu/run_gpu.sh ;;
        cutlass) run_part cutlass env KCC_TEST_TIMEOUT=1 bash plugins/cutlass_plugin/gpu/run_gpu.sh "$REVISION" ;;
        flashinfer) run_part flashinfer env STEPS="accuracy bench" bash plugins/flashinfer_plugin/gpu/run_gpu.sh ;;
        tune) run_part tune bash gpu/tune_llama70b.sh ;;
        *) echo "unknown part $part" >&2; status=2 ;;
    esac
done

# The built libraries alone (no objects), for the next machine: copy to .jit_cache/ and carry it.
(cd "$KERNEL_CORE_CACHE_DIR" && find jit -name '*.so' -print0 | tar -czf "$OUT/jit_cache.tgz" --null -T -) 2>/dev/null
pack
echo "== done (status $status); results in \$OUT/results.tgz" >&2
exit $status
