"""Host time of the pieces the FlashInfer plugin's eager path is made of, on this machine.

Each item is called in batches of ``--calls`` (a synchronise before each batch, none inside);
the result is microseconds per call, median and minimum over ``--reps`` batches, with Python's
garbage collector off. Items that launch GPU work (quantizer, GEMM) use M=16, K=N=8192 tensors so
the queue never fills. The point is to see what costs what where the benchmark runs (its host is
slower than a developer's machine and has other library versions), e.g. whether Triton's launcher
and tvm-ffi take an ``nn.Parameter`` argument as cheaply as a plain tensor.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
from collections.abc import Callable

import torch


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
    with open(args.out, "w") as fh:
        json.dump(report, fh, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
