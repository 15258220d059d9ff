#!/usr/bin/env bash
# Tune the Llama-3-70B linear layers on this GPU, then ask selection what it picks.
#
#   OUT=/some/dir bash gpu/tune_llama70b.sh          (from the repository root; gpu/run_all.sh
#                                                     runs it as its "tune" part)
#
# For each layer config, `kernel-core tune --preset llama-3-70b` times every kernel that can serve
# each layer against torch.matmul (bf16) and, for fp8, torch._scaled_mm (rowwise), over
# M = 1..8192, and merges the times into one tune table ($OUT/tune.json). TUNE_CONFIGS picks them
# (default "mp fp8 fp8-tensor"):
#   mp         : int4 weights (uint4b8, GPTQ-style symmetric), group 128, bf16 activations (W4A16)
#   fp8        : FP8 W8A8, per-channel weight scales, dynamic per-token activation scales
#   fp8-tensor : FP8 W8A8, per-tensor weight scale, dynamic per-tensor activation scale (the
#                config where FlashInfer's cuBLASLt kernel and CUTLASS both serve, so the table
#                has a choice to make per M)
# Then `kernel-core explain --json` for every layer and phase (decode: M 1..64, prefill:
# M 128..8192) with KERNEL_CORE_TUNE_TABLE pointing at that table.
#
# Each family's JIT kernels are built first (`kernel-core warmup`, WARMUP_TIMEOUT, default 240 s).
# Outputs: tune.json, bench-<config>.{json,png} per config, explain.json (every explain answer,
# keyed "<config>.<layer>.<phase>"), explain.txt (the same as tables), log.txt: 10 files with the
# default configs; the device tool returns 8, so run it through gpu/run_all.sh (which packs $OUT
# into results.tgz) or with TUNE_CONFIGS="mp fp8" (8 files).
# Env: TUNE_TIMEOUT (seconds per config, default 200; the table is saved after every layer, so a
# timed-out config keeps the layers it finished), TUNE_ARGS (extra tune options, default
# "--warmup-ms 10 --rep-ms 40"), TUNE_SELECT (the layers, default "--preset llama-3-70b"; e.g.
# "--shape 256 512" for a dry run on a CPU).
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to a writable directory}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
export KERNEL_CORE_TUNE_TABLE="$OUT/tune.json"
exec > >(tee -a "$OUT/log.txt") 2>&1
log() { echo "[$(date -u +%H:%M:%S)] $*"; }

if ! python3 -c 'import kernel_core, kernel_core_marlin, kernel_core_cutlass, kernel_core_flashinfer' 2>/dev/null; then
    log "installing kernel-core and its plugins"
    if compgen -G ".whl/*.whl" >/dev/null; then
        python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl
        export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fi
    python3 -m pip install -q --no-deps --no-build-isolation -e . -e plugins/emulation_plugin \
        -e plugins/marlin_plugin -e plugins/cutlass_plugin -e plugins/flashinfer_plugin || exit 1
fi
log "environment: $(python3 -c 'from kernel_core.tune import environment_key as e; print(e())' 2>&1 | tail -1)"
python3 -m kernel_core.cli plugins

plot_ok=1
python3 -c 'import matplotlib' 2>/dev/null || { plot_ok=0; log "matplotlib missing: no PNGs"; }

# Each config: the family, then its layer options (read by the tune loop and the explain step).
export TUNE_CONFIGS=${TUNE_CONFIGS:-"mp fp8 fp8-tensor"}
export CONFIG_mp="mp --weight-type uint4b8 --group-size 128 --act-dtype bf16"
export CONFIG_fp8="fp8 --activation-mode w8a8 --weight-scale channel --input-scale dynamic \
--input-granularity token --act-dtype bf16"
export CONFIG_fp8_tensor="fp8 --activation-mode w8a8 --weight-scale tensor --input-scale dynamic \
--input-granularity tensor --act-dtype bf16"
status=0
warmed=" "
for name in $TUNE_CONFIGS; do
    config_var=CONFIG_${name//-/_}
    [ -n "${!config_var:-}" ] || { log "unknown config $name"; status=1; continue; }
    read -r family options <<< "${!config_var}"
    plot=()
    [ "$plot_ok" = 1 ] && plot=(--plot "$OUT/bench-$name.png")
    if [[ "$warmed" != *" $family "* ]]; then
        warmed+="$family "
        log "warmup $family (JIT builds, cached on disk; outside the timing)"
        timeout "${WARMUP_TIMEOUT:-240}" python3 -m kernel_core.cli warmup --family "$family" \
            || log "warmup $family: exit $? (a kernel that cannot build shows as an error below)"
    fi
    log "tune $name: $family $options"
    start=$SECONDS
    # shellcheck disable=SC2086  # option strings split on purpose
    if timeout "${TUNE_TIMEOUT:-200}" python3 -m kernel_core.cli tune $family \
        ${TUNE_SELECT:---preset llama-3-70b} $options ${TUNE_ARGS:---warmup-ms 10 --rep-ms 40} \
        --output "$OUT/tune.json" --json "$OUT/bench-$name.json" "${plot[@]}"; then
        log "tune $name done in $((SECONDS - start)) s"
    else
        log "tune $name FAILED (exit $?) after $((SECONDS - start)) s"
        status=1
    fi
done

log "explain every layer and phase against $KERNEL_CORE_TUNE_TABLE"
# In one process (torch imports once): `kernel-core explain ... --json` and the table, through the
# CLI's own entry point, for each layer of the preset (or of TUNE_SELECT's shapes).
python3 - "$OUT" ${TUNE_SELECT:---preset llama-3-70b} <<'EOF' || status=1
import contextlib, io, json, os, shlex, sys
from pathlib import Path

from kernel_core.bench.presets import preset_layers
from kernel_core.cli import main

out, select = Path(sys.argv[1]), sys.argv[2:]
if select[0] == "--preset":
    layers = [(f"{select[1]}.{p.label}", p.n, p.k) for p in preset_layers(select[1])]
else:  # --shape N K [--shape N K ...]
    layers = [(f"{n}x{k}", int(n), int(k)) for n, k in zip(select[1::3], select[2::3])]
configs = {
    name: shlex.split(os.environ.get("CONFIG_" + name.replace("-", "_"), ""))
    for name in os.environ["TUNE_CONFIGS"].split()
}
answers, text = {}, []
for name, (family, *extra) in ((n, c) for n, c in configs.items() if c):
    for label, n, k in layers:
        for phase in ("decode", "prefill"):
            argv = ["explain", family, "--shape", str(n), str(k), *extra, "--phase", phase]
            key = f"{name}.{label}.{phase}"
            for as_json in (True, False):
                buffer, errors = io.StringIO(), io.StringIO()
                with contextlib.redirect_stdout(buffer), contextlib.redirect_stderr(errors):
                    code = main([*argv, "--json"] if as_json else argv)
                if as_json:
                    try:
                        answers[key] = json.loads(buffer.getvalue())
                    except json.JSONDecodeError:
                        answers[key] = {"error": errors.getvalue().strip(), "exit": code}
                else:
                    text.append(f"== kernel-core {' '.join(argv)}\n{buffer.getvalue()}"
                                f"{errors.getvalue()}")
            answer = answers[key]
            plan = (answer.get("dispatch_by_m") or {}).get("text")
            print(f"{key}: {answer.get('chosen', answer.get('error'))}"
                  + (f"  | by M: {plan}" if plan else ""))
(out / "explain.json").write_text(json.dumps(answers, indent=1))
(out / "explain.txt").write_text("\n".join(text))
EOF
log "done (status $status)"
exit $status
