"""Pins down where a refused stream-kernel launch crashes (run 2026-11-27: a segmentation fault in
the extension call of ``test_sixteen_consumer_warps_refused_off_the_flat_consumer``, whose first
launch the bindings' own ``TORCH_CHECK`` refuses, while refusals by the launcher's return code
passed in the same process).

Each case runs in a fresh process (a crash cannot hide the others) with faulthandler on and
unbuffered output: the bindings' check or the launcher's return code refusing, called on the
extension directly or through the ``torch.library`` op. A case that dies on a signal runs again
under cuda-gdb (which debugs host code too) for a native backtrace. The report (text) goes to
``--out``; the environment variables that change how torch builds C++ exception messages
(``TORCH_SHOW_CPP_STACKTRACES``, ``TORCH_SYMBOLIZE_MODE``, ``TORCH_DISABLE_ADDR2LINE``) head it.

Usage (repo root, extension built): python3 plugins/marlin_plugin/gpu/refusal_probe.py --out F
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys

#: case -> (through the op?, M tiles, consumer warps, pipeline, K): what each launch asks for and
#: which layer refuses it.
CASES = {
    "bindings-warps-direct": (False, 1, 16, 2, 2048),  # bindings: at most 8 warps off pipeline 3
    "bindings-warps-op": (True, 1, 16, 2, 2048),
    "bindings-k-direct": (False, 1, 8, 2, 2040),  # bindings: K must be a multiple of 16
    "launcher-direct": (False, 1, 3, 2, 2048),  # launcher: three consumer warps
    "launcher-op": (True, 1, 3, 2, 2048),
}
ENV_KEYS = ("TORCH_SHOW_CPP_STACKTRACES", "TORCH_SYMBOLIZE_MODE", "TORCH_DISABLE_ADDR2LINE")


def run_case(name: str) -> None:
    """One launch of ``name``; prints what it raised (a crash prints nothing after 'calling')."""
    import torch
    from kernel_core_marlin import ops
    from kernel_core_marlin.kernels import MarlinMPLinearKernel

    from kernel_core.families import MPLinearLayerConfig
    from kernel_core.formats.layer import make_layer

    through_op, mt, wk, pipeline, k = CASES[name]
    config = MPLinearLayerConfig(weight_shape=(1000, 2048), group_size=128)
    layer = make_layer(config, seed=0, device="cuda")
    kernel = MarlinMPLinearKernel(config)
    kernel.process_weights_after_loading(layer)
    x = torch.randn(4, k, device="cuda", dtype=torch.bfloat16)
    args = (kernel._fmt, kernel._group_size, kernel._zconst, mt, 1, 1, wk, pipeline)
    print(f"{name}: calling (op={through_op}, mt={mt}, wk={wk}, pipeline={pipeline}, K={k})",
          flush=True)
    try:
        if through_op:
            ops.gemm(x, layer.weight, layer.weight_scale, None, None, None, None, kernel._fmt,
                     config.out_features, *args[1:])
        else:
            out = torch.empty(4, config.out_features, device="cuda", dtype=torch.bfloat16)
            empty = x.new_empty(0)
            ops.extension(x.device).gemm(x, layer.weight, layer.weight_scale, empty, empty, empty,
                                         empty, out, *args,
                                         torch.cuda.current_stream().cuda_stream)
        torch.cuda.synchronize()
        print(f"{name}: NOT refused", flush=True)
    except RuntimeError as exc:
        print(f"{name}: refused: {str(exc).splitlines()[0]}", flush=True)


def _run(command: list[str], timeout: int) -> tuple[int, str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout,
                              env=env, check=False)
    except subprocess.TimeoutExpired as exc:
        partial = exc.stdout if isinstance(exc.stdout, str) else (exc.stdout or b"").decode()
        return 124, partial + "\n<timed out>"
    return proc.returncode, proc.stdout + proc.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=sorted(CASES))
    parser.add_argument("--out")
    parser.add_argument("--timeout", type=int, default=40, help="seconds per case")
    args = parser.parse_args()
    if args.case:
        run_case(args.case)
        return
    lines = [f"{key}={os.environ.get(key)!r}" for key in ENV_KEYS]
    debugger = shutil.which("cuda-gdb")  # one backtrace is enough: the first crashing case
    for name in CASES:
        script = [sys.executable, "-X", "faulthandler", __file__, "--case", name]
        code, output = _run(script, args.timeout)
        lines += [f"== {name}: exit {code}", output.strip()[-3000:]]
        print(lines[-2], file=sys.stderr, flush=True)
        if code < 0 or code in (124, 134, 139):
            if debugger is None:
                lines.append("(no cuda-gdb here, or one case already ran under it)")
            else:
                gdb = [debugger, "-q", "-batch", "-ex", "set pagination off", "-ex", "run",
                       "-ex", "bt 40", "-ex", "info registers rip", "--args", *script]
                code, output = _run(gdb, 3 * args.timeout)  # symbol loading is slow
                lines += [f"== {name} under cuda-gdb: exit {code}", output.strip()[-6000:]]
                debugger = None
        if args.out:  # after every case: an outer timeout keeps what was found
            with open(args.out, "w") as f:
                f.write("\n".join(lines) + "\n")
    print("\n".join(lines), file=sys.stderr)


if __name__ == "__main__":
    main()
