"""Accuracy of fp8_blockscale_gemm_sm90 across M, against a float64 oracle.

vLLM and sglang send only M < 32 to this kernel, citing accuracy. This measures it: for each
(N, K) and M, the relative error of each path against the float64 product of the dequantized
1x128-quantized activations and the dequantized 128x128-block weights (what an exact FP8 block
GEMM computes before rounding its output to bf16). Paths:

* ``flashinfer_internal_quant``: ``flashinfer.gemm.fp8_blockscale_gemm_sm90`` on bf16 input (its
  own 1x128 quantizer, then the DeepGEMM kernel);
* ``plugin``: the plugin's op: our 1x128 quantizer writing the scales in the layout the kernel
  reads, then the same kernel's FP8-input mode;
* ``bf16_dequant_matmul``: dequantize both to bf16, ``torch.matmul`` (a reference FP8 path).

Per path: ``rel_fro`` (Frobenius), ``worst_row_rel`` (the worst row's relative error: a bad row
hides in the total at large M), ``max_abs_over_max_ref``; with ``--time``, ``us`` (do_bench).
Data are not near-uniform: weight blocks differ in magnitude by up to 2^6 and activation rows and
groups by e^(+-1), so scale errors show. Also records the two traps (per-row weight scales,
float16 output) at one M. Writes JSON (``--out``) and prints one line per (N, K, M).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import triton.testing

from kernel_core.formats.fp8 import (
    dequantize_fp8_block,
    dequantize_fp8_per_token_group,
    quantize_fp8,
    quantize_fp8_block,
    quantize_fp8_per_token_group,
)
from kernel_core_flashinfer import ops
from kernel_core_flashinfer.environment import flashinfer
from kernel_core_flashinfer.triton_kernels import quantize_per_tensor

M_VALUES = (1, 2, 4, 8, 16, 31, 32, 33, 64, 128, 256, 512, 1024, 4096, 8192)
SHAPES = ((4096, 7168), (7168, 18432))


def make_weight(n: int, k: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    w = torch.randn(n, k, generator=gen, device="cuda") * 0.02
    blocks = torch.exp2(torch.empty(-(-n // 128), k // 128, device="cuda").uniform_(-3, 3, generator=gen))
    w = w * blocks.repeat_interleave(128, 0)[:n].repeat_interleave(128, 1)
    return quantize_fp8_block(w)


def make_input(m: int, k: int, gen: torch.Generator) -> torch.Tensor:
    x = torch.randn(m, k, generator=gen, device="cuda")
    rows = torch.exp(torch.randn(m, 1, generator=gen, device="cuda"))
    groups = torch.exp(torch.randn(m, k // 128, generator=gen, device="cuda")).repeat_interleave(128, 1)
    return (x * rows * groups).to(torch.bfloat16)


def rel(out: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    diff = out.double() - ref
    row_err = diff.norm(dim=1) / ref.norm(dim=1).clamp(min=1e-300)
    return {
        "rel_fro": (diff.norm() / ref.norm()).item(),
        "worst_row_rel": row_err.max().item(),
        "max_abs_over_max_ref": (diff.abs().max() / ref.abs().max()).item(),
        "nonfinite": int((~torch.isfinite(out)).sum().item()),
    }


def bf16_path(x: torch.Tensor, wq: torch.Tensor, ws: torch.Tensor) -> torch.Tensor:
    q, s = quantize_fp8_per_token_group(x)
    a = dequantize_fp8_per_token_group(q, s, dtype=torch.bfloat16)
    return a @ dequantize_fp8_block(wq, ws, dtype=torch.bfloat16).t()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--time", action="store_true", help="also time each path (do_bench)")
    args = parser.parse_args()
    fi = flashinfer()
    paths = {
        "flashinfer_internal_quant": lambda x, w, s: fi.gemm.fp8_blockscale_gemm_sm90(
            x, w, None, s, out_dtype=torch.bfloat16),
        "plugin": lambda x, w, s: ops.fp8_block_gemm(
            x, x.shape[0], w.shape[0], x.shape[1], w, s, None),
        "bf16_dequant_matmul": bf16_path,
    }
    results: list[dict] = []
    broken: dict[str, str] = {}
    gen = torch.Generator(device="cuda").manual_seed(1234)
    for n, k in SHAPES:
        wq, ws = make_weight(n, k, gen)
        w64 = dequantize_fp8_block(wq, ws).double()
        for m in M_VALUES:
            x = make_input(m, k, gen)
            q, s = quantize_fp8_per_token_group(x)
            ref = dequantize_fp8_per_token_group(q, s).double() @ w64.t()
            row = {"N": n, "K": k, "M": m, "bf16_rounding_of_ref": rel(ref.to(torch.bfloat16), ref)["rel_fro"]}
            for name, fn in paths.items():
                if name in broken:
                    continue
                try:
                    out = fn(x, wq, ws)
                    torch.cuda.synchronize()
                except Exception as exc:  # record and stop trying a path this torch lacks
                    broken[name] = f"{type(exc).__name__}: {str(exc)[:300]}"
                    continue
                row[name] = rel(out, ref)
                if args.time and name != "flashinfer_internal_quant":  # timed by the benchmark
                    row[name]["us"] = 1000 * triton.testing.do_bench(lambda: fn(x, wq, ws), warmup=5, rep=20)
            results.append(row)
            cells = " ".join(
                f"{p}={row[p]['rel_fro']:.2e}" for p in paths if p in row and isinstance(row[p], dict)
            )
            print(f"N={n} K={k} M={m}: {cells}", file=sys.stderr, flush=True)

    traps = trap_demonstrations(fi, gen)
    report = {
        "what": "relative error vs float64 oracle (1x128 activation QDQ x 128x128 block weight)",
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "flashinfer": fi.__version__,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": " ".join(sys.argv),
        "git_revision": os.environ.get("KC_GIT_REVISION", "unknown"),
        "broken_paths": broken,
        "rows": results,
        "traps": traps,
    }
    with open(args.out, "w") as fh:
        json.dump(report, fh, indent=1)
    return 0


def trap_demonstrations(fi, gen: torch.Generator) -> dict[str, dict]:
    """What happens if the two traps are not avoided (the plugin refuses both)."""
    n, k, m = 4096, 7168, 64
    x = make_input(m, k, gen)
    q, s = quantize_fp8_per_token_group(x)
    a64 = dequantize_fp8_per_token_group(q, s).double()
    out = {}
    # Per-row weight scales [N, K/128]: accepted by FlashInfer's checks.
    w = torch.randn(n, k, generator=gen, device="cuda") * torch.exp(torch.randn(n, 1, generator=gen, device="cuda"))
    rows = w.unflatten(1, (k // 128, 128))
    row_scale = rows.abs().amax(-1) / 448.0
    wq = (rows / row_scale[..., None]).clamp(-448, 448).to(torch.float8_e4m3fn).flatten(1)
    ref = a64 @ (wq.double().unflatten(1, (k // 128, 128)) * row_scale.double()[..., None]).flatten(1).t()
    got = fi.gemm.fp8_blockscale_gemm_sm90(x, wq, None, row_scale.contiguous(), out_dtype=torch.bfloat16)
    out["per_row_weight_scales"] = rel(got, ref)
    # float16 output: accepted, but the bits written are bf16.
    wq, ws = make_weight(n, k, gen)
    ref = a64 @ dequantize_fp8_block(wq, ws).double().t()
    got = fi.gemm.fp8_blockscale_gemm_sm90(x, wq, None, ws, out_dtype=torch.float16)
    out["float16_output"] = rel(got.float(), ref)
    out["float16_output_reinterpreted_as_bf16"] = rel(got.view(torch.bfloat16), ref)
    # Per-tensor sanity of the quantizer the fp8 kernel uses (exactness vs the formats module).
    xx = make_input(256, k, gen)
    q_ours, s_ours = quantize_per_tensor(xx, None)
    q_ref, s_ref = quantize_fp8(xx, "tensor")
    out["per_tensor_quantizer_mismatches"] = {
        "codes": int((q_ours[0].view(torch.uint8) != q_ref.view(torch.uint8)).sum().item()),
        "scale_equal": bool(torch.equal(s_ours, s_ref)),
    }
    return out


if __name__ == "__main__":
    raise SystemExit(main())
