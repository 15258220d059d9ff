"""Host time of the pieces the FlashInfer plugin's eager path is made of, on this machine.

Each item is called in batches of ``--calls`` (a synchronise before each batch, none inside);
the result is microseconds per call, median and minimum over ``--reps`` batches, with Python's
garbage collector off. Items that launch GPU work (quantizer, GEMM) use M=16, K=N=8192 tensors so
the queue never fills. The point is to see what costs what where the benchmark runs (its host is
slower than a developer's machine and has other library versions), e.g. whether Triton's launcher
and tvm-ffi take an ``nn.Parameter`` argument as cheaply as a plain tensor.

The ``ladder`` section then builds the plugin's eager call up from the benchmark's by-hand
baseline one piece at a time (the input check, the compiled hot-path check, the layer's bound runner,
then the whole ``apply_weights``), timed in interleaved rounds as ``benchmarks/bench_flashinfer.py``
times its pairs, so the step that adds the host time shows which piece it is.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
from bench_flashinfer import host_rounds  # the benchmark's interleaved rounds


def per_call_us(fn: Callable[[], object], calls: int, reps: int) -> dict[str, float]:
    fn()
    torch.cuda.synchronize()
    samples = []
    gc.disable()
    try:
        for _ in range(reps):
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            samples.append((time.perf_counter() - start) * 1e6 / calls)
    finally:
        gc.enable()
    torch.cuda.synchronize()
    return {"median_us": statistics.median(samples), "min_us": min(samples)}


def ladder(calls: int, reps: int) -> dict[str, dict[str, float]]:
    """Host us per call of each rung (median over interleaved rounds) and its per-round difference
    from the same kernel's by-hand baseline (median and quartiles), both kernels at M=16."""
    from kernel_core_flashinfer import ops
    from kernel_core_flashinfer.kernels import (
        _PLAN,
        FlashInferFp8BlockScaledMMLinearKernel,
        FlashInferFp8ScaledMMLinearKernel,
    )
    from kernel_core_flashinfer.triton_kernels import quantize_per_tensor, quantize_per_token_group

    from kernel_core.families.fp8 import FP8ScaledMMLinearLayerConfig
    from kernel_core.families.fp8_block import Fp8BlockLinearLayerConfig
    from kernel_core.formats.fp8 import quantize_fp8, quantize_fp8_block

    m = 16
    rungs: dict[str, Callable[[int], object]] = {}
    # fp8_block, N=2112, K=7168 (a DeepSeek shape; ~15 us of GPU time, far below the host's)
    n, k = 2112, 7168
    block = FlashInferFp8BlockScaledMMLinearKernel(Fp8BlockLinearLayerConfig(weight_shape=(n, k)))
    wq, ws = quantize_fp8_block(torch.randn(n, k, device="cuda") * 0.02)
    block_layer = torch.nn.Module()
    block_layer.weight = torch.nn.Parameter(wq, requires_grad=False)
    block_layer.weight_scale = torch.nn.Parameter(ws, requires_grad=False)
    block.process_weights_after_loading(block_layer)
    bw, bws = block_layer.weight.detach(), block_layer.weight_scale.detach()
    bx = torch.randn(m, k, device="cuda").to(torch.bfloat16)
    block.apply_weights(block_layer, bx)  # makes the layer's plan, which the lookup rung reads
    run_gemm = ops.blockscale_runner().run_gemm
    padded = -(-m // 4) * 4

    def block_direct(_: int) -> torch.Tensor:
        out = torch.empty((m, n_block), dtype=torch.bfloat16, device=bx.device)
        scales = torch.empty_strided((padded, k_block // 128), (1, padded), dtype=torch.float32,
                                     device=bx.device)
        q = quantize_per_token_group(bx, scales)
        run_gemm(q, bw, out, scales, bws)
        return out

    def check_only(layer: torch.nn.Module) -> torch.nn.Module:
        """A module sharing the layer's parameters and plan but with a runner that does nothing:
        the hot path's compiled check (eager.eager_call) alone."""
        probe = torch.nn.Module()
        probe.__dict__["_parameters"] = layer._parameters
        probe.__dict__[_PLAN] = (*layer.__dict__[_PLAN][:6], lambda x, m, bias: None)
        return probe

    block_probe = check_only(block_layer)

    n_block, k_block = n, k
    rungs["block: direct"] = block_direct
    rungs["block: direct + check_apply_inputs"] = lambda i: (
        block.check_apply_inputs(bx, None), block_direct(i))
    rungs["block: direct + is_compiling"] = lambda i: (
        torch.compiler.is_compiling(), block_direct(i))
    rungs["block: direct + compiled check"] = lambda i: (
        block._eager_call(block_probe, bx, None, _PLAN), block_direct(i))
    block_run = ops.block_runner(n_block, k_block, bw, bws)
    rungs["block: the layer's runner"] = lambda _: block_run(bx, m, None)
    rungs["block: apply_weights"] = lambda _: block.apply_weights(block_layer, bx)
    # fp8 per tensor, static, N=K=8192
    n = k = 8192
    config = FP8ScaledMMLinearLayerConfig(
        weight_shape=(n, k), weight_scale_granularity="tensor", input_scale="static",
        input_scale_granularity="tensor")
    fp8 = FlashInferFp8ScaledMMLinearKernel(config)
    wq, ws = quantize_fp8(torch.randn(n, k, device="cuda") * 0.02, "tensor")
    fp8_layer = torch.nn.Module()
    fp8_layer.weight = torch.nn.Parameter(wq, requires_grad=False)
    fp8_layer.weight_scale = torch.nn.Parameter(ws.clone(), requires_grad=False)
    fp8_layer.input_scale = torch.nn.Parameter(torch.tensor([0.05], device="cuda"),
                                               requires_grad=False)
    fp8.process_weights_after_loading(fp8_layer)
    weight_t = fp8_layer.weight.detach().t().unsqueeze(0)
    wscale, ascale = fp8_layer.weight_scale.detach(), fp8_layer.input_scale.detach()
    workspace = ops.cublas_workspace(wq.device)
    bmm = ops.cublas_fp8_gemm()
    fx = torch.randn(m, k, device="cuda").to(torch.bfloat16)

    def fp8_direct(_: int) -> torch.Tensor:
        q, s = quantize_per_tensor(fx, ascale)
        out = torch.empty((1, m, n), dtype=torch.bfloat16, device=fx.device)
        bmm(q, weight_t, out, s, wscale, workspace)
        return out[0]

    rungs["fp8: direct"] = fp8_direct
    rungs["fp8: direct + check_apply_inputs"] = lambda i: (
        fp8.check_apply_inputs(fx, None), fp8_direct(i))
    fp8_run = ops.per_tensor_runner(n, weight_t, wscale, ascale, torch.bfloat16, workspace)
    rungs["fp8: the layer's runner"] = lambda _: fp8_run(fx, m, None)
    rungs["fp8: apply_weights"] = lambda _: fp8.apply_weights(fp8_layer, fx)
    for fn in rungs.values():  # Triton compiles, plans are made
        fn(0)
    torch.cuda.synchronize()
    samples = host_rounds(rungs, 1, calls, reps)
    result = {}
    for name, values in samples.items():
        # Paired with the same round's by-hand baseline: drift of the host cancels.
        base = samples[name.split(":")[0] + ": direct"]
        diffs = [host - base_host for (host, _), (base_host, _) in zip(values, base)]
        q1, q2, q3 = statistics.quantiles(diffs, n=4, method="inclusive")
        result[name] = {"median_us": statistics.median(host for host, _ in values),
                        "minus_direct_median_us": q2, "minus_direct_p25_us": q1,
                        "minus_direct_p75_us": q3}
        print(f"ladder {name}: {result[name]['median_us']:.2f} us, minus direct {q2:+.2f} "
              f"({q1:+.2f}..{q3:+.2f})", file=sys.stderr)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--reps", type=int, default=15)
    args = parser.parse_args()

    import tvm_ffi
    from kernel_core_flashinfer import ops
    from kernel_core_flashinfer.triton_kernels import quantize_per_tensor

    m, n, k = 16, 8192, 8192
    x = torch.randn(m, k, device="cuda").to(torch.bfloat16)
    out3 = torch.empty((1, m, n), dtype=torch.bfloat16, device="cuda")
    weight = torch.randn(n, k, device="cuda").to(torch.float8_e4m3fn)
    layer = torch.nn.Module()
    layer.weight = torch.nn.Parameter(weight, requires_grad=False)
    layer.input_scale = torch.nn.Parameter(torch.tensor([0.05], device="cuda"),
                                           requires_grad=False)
    layer.weight_scale = torch.nn.Parameter(torch.tensor([0.01], device="cuda"),
                                            requires_grad=False)
    plain_scale, plain_wscale = layer.input_scale.detach(), layer.weight_scale.detach()
    weight_t = weight.t().unsqueeze(0)
    nop = tvm_ffi.get_global_func("testing.nop")
    bmm = ops.cublas_fp8_gemm()
    workspace = ops.cublas_workspace(x.device)
    q, _ = quantize_per_tensor(x, plain_scale)

    items: dict[str, Callable[[], object]] = {
        "torch.empty [1, M, N]": lambda: torch.empty(
            (1, m, n), dtype=torch.bfloat16, device=x.device),
        "out[0] (a view)": lambda: out3[0],
        "weight.t().unsqueeze(0)": lambda: weight.t().unsqueeze(0),
        "torch.compiler.is_compiling()": torch.compiler.is_compiling,
        "layer.weight (nn.Module __getattr__)": lambda: layer.weight,
        "layer._parameters['weight']": lambda: layer._parameters["weight"],
        "tensor.data_ptr()": weight.data_ptr,
        "x.shape[0]": lambda: x.shape[0],
        "tvm-ffi nop(plain tensor)": lambda: nop(plain_scale),
        "tvm-ffi nop(nn.Parameter)": lambda: nop(layer.input_scale),
        "quantize_per_tensor(x, plain scale)": lambda: quantize_per_tensor(x, plain_scale),
        "quantize_per_tensor(x, nn.Parameter scale)": lambda: quantize_per_tensor(
            x, layer.input_scale),
        "quantize_per_tensor(x, None) (dynamic)": lambda: quantize_per_tensor(x, None),
        "bmm_fp8 binding, plain scales": lambda: bmm(
            q, weight_t, out3, plain_scale, plain_wscale, workspace),
        "bmm_fp8 binding, nn.Parameter scales": lambda: bmm(
            q, weight_t, out3, layer.input_scale, layer.weight_scale, workspace),
    }
    report = {
        "script": "plugins/flashinfer_plugin/gpu/host_costs.py",
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "git_revision": os.environ.get("KC_GIT_REVISION", "unknown"),
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "has_dlpack_c_exchange_api": hasattr(torch.Tensor, "__dlpack_c_exchange_api__"),
        "calls_per_batch": args.calls,
        "batches": args.reps,
        "items": {},
    }
    for name, fn in items.items():
        report["items"][name] = per_call_us(fn, args.calls, args.reps)
        print(f"{name}: {report['items'][name]['median_us']:.2f} us", file=sys.stderr)
    report["ladder"] = ladder(args.calls, 10 * args.reps)
    with open(args.out, "w") as fh:
        json.dump(report, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
