"""The fused decode probe (gpu/fused_decode_probe.cu) against the plugin's fp8 apply, on a GPU.

One launch quantizes the bf16 activations per token and multiplies them with the FP8 weight
(NOTES.md v23). This script builds the probe into a shared library (gpu/probe_library.py),
checks it, then times it:

- correctness: every (N, K) and M below, with and without bias, output poisoned with NaN first:
  against the plugin's apply (relative difference below 1e-3: the same formula, the probe's codes
  as products where the plugin divides, so a rare code differs by one step), a guard row past M
  that must stay NaN, a second launch that must be bit-identical, and a float64 product of the
  same per-token codes
  (the plugin's formula, computed in torch; below 1e-2 as the plugin's GPU tests: the FP8 wgmma's
  accumulation and the bf16 output read 1.7e-3 at K=1024 to 4.7e-3 at K=28672 for both kernels);
- timing: ``bench_cutlass.interleaved_rounds`` (CUDA-graph batches of >= 1 ms, rounds alternating,
  weights rotated past the L2): bf16 matmul, the plugin's apply (``ours``), the probe with 8 and 12
  weight stages. Ratios are bf16 time / candidate time and ours / candidate in the same rounds.

Run (repo root, the CUTLASS plugin installed): ``python3 plugins/cutlass_plugin/gpu/probe_fused_decode.py
--out OUT.json``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
from bench_cutlass import interleaved_rounds, rotated
from probe_library import build_probe_library

from kernel_core.bench.timing import l2_cache_bytes, paired, rotation_count
from kernel_core.families.fp8 import FP8ScaledMMLinearLayerConfig
from kernel_core.formats.fp8 import dequantize_fp8, quantize_fp8
from kernel_core.formats.layer import make_layer
from kernel_core.testing import relative_error
from kernel_core_cutlass.kernels import CutlassFP8ScaledMMLinearKernel

SOURCE = Path(__file__).with_name("fused_decode_probe.cu")
SHAPES = ((8192, 8192), (28672, 8192), (8192, 28672))
#: Besides the benchmark shapes: K of 1 / 3 slices (fewer slices than stages, the prologue's
#: edge cases), and a square layer.
CHECK_SHAPES = ((1024, 256), (1024, 768), (1024, 1024), *SHAPES)
M_VALUES = (1, 16)
#: 12: the second chunk of a thread partly active (tokens 8-11).
CHECK_M = (1, 5, 12, 16)
#: Weight stages of the builds (a stage is refilled two slices after its use: 2 / 6 / 10 in flight).
#: 4 stages fit several CTAs an SM: v23 read 0.917x bf16 with them on 28672 x 8192 at M=1 (448
#: CTAs), where 8 and 12 (one CTA an SM) read 0.55x.
STAGES = (4, 8, 12)
ROUNDS = 21


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def build() -> ctypes.CDLL:
    """The probe library (gpu/probe_library.py: cached per source and flags) with its signature."""
    lib = build_probe_library(SOURCE, "fused_decode")
    lib.kc_fused_decode_fp8.restype = ctypes.c_int
    lib.kc_fused_decode_fp8.argtypes = [ctypes.c_void_p] * 5 + [ctypes.c_int] * 4 + [ctypes.c_void_p]
    return lib


def fused(lib: ctypes.CDLL, x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor,
          bias: torch.Tensor | None, stages: int, poison: bool = False) -> torch.Tensor:
    """The probe's output; ``poison`` fills it with NaN first (the checks: an unwritten element
    stays NaN), not when timing (the fill would be a second launch)."""
    m, k = x.shape
    n = weight.shape[0]
    assert weight_scale.numel() == n, "the probe reads one weight scale a channel"
    # With poison, one guard row past M: a write there would stay invisible in out[:m].
    out = torch.empty((m + int(poison), n), dtype=torch.bfloat16, device=x.device)
    if poison:
        out.fill_(float("nan"))
    status = lib.kc_fused_decode_fp8(
        x.data_ptr(), weight.data_ptr(), weight_scale.data_ptr(),
        None if bias is None else bias.data_ptr(), out.data_ptr(), m, n, k, stages,
        torch.cuda.current_stream().cuda_stream)
    if status != 0:
        raise RuntimeError(f"kc_fused_decode_fp8 returned {status} for M={m} N={n} K={k}")
    if poison:
        if not out[m:].isnan().all():
            raise RuntimeError(f"the probe wrote past row M={m} (N={n} K={k}, {stages} stages)")
        return out[:m]
    return out


def codes_reference(x: torch.Tensor, weight: torch.Tensor, weight_scale: torch.Tensor,
                    bias: torch.Tensor | None) -> torch.Tensor:
    """float64 product of the plugin's per-token codes (kernel_core.formats' formula, the GPU
    quantizers') with the dequantized weight."""
    q, scale = quantize_fp8(x, "token")
    ref = dequantize_fp8(q, scale, dtype=torch.float64) @ (weight.double() * weight_scale.double()[:, None]).T
    return ref if bias is None else ref + bias.double()


def layer_for(n: int, k: int, gen: torch.Generator):
    config = FP8ScaledMMLinearLayerConfig(weight_shape=(n, k))
    weight = torch.randn((n, k), generator=gen, device="cuda") * 0.05
    layer = make_layer(config, weight=weight, device="cuda")
    del layer.reference_weight
    kernel = CutlassFP8ScaledMMLinearKernel(config)
    kernel.process_weights_after_loading(layer)
    return kernel, layer, weight


def check(lib: ctypes.CDLL, gen: torch.Generator) -> list[dict]:
    rows = []
    for n, k in CHECK_SHAPES:
        kernel, layer, _ = layer_for(n, k, gen)
        w_scale = layer.weight_scale.reshape(-1).float().contiguous()
        for m in CHECK_M:
            x = torch.randn((m, k), generator=gen, device="cuda").to(torch.bfloat16)
            for with_bias in (False, True):
                bias = (torch.randn(n, generator=gen, device="cuda") * 0.1).to(torch.bfloat16) if with_bias else None
                ref = codes_reference(x, layer.weight, w_scale, bias)
                plugin = kernel.apply_weights(layer, x, bias)
                for stages in STAGES:
                    out = fused(lib, x, layer.weight, w_scale, bias, stages, poison=True)
                    again = fused(lib, x, layer.weight, w_scale, bias, stages, poison=True)
                    row = {"N": n, "K": k, "M": m, "bias": with_bias, "stages": stages,
                           "unwritten": int(out.isnan().sum()),
                           "repeatable": bool(torch.equal(out, again)),
                           "rel_error_vs_codes_float64": relative_error(out, ref),
                           "rel_diff_vs_plugin_apply": relative_error(out, plugin)}
                    row["ok"] = (row["unwritten"] == 0 and row["repeatable"]
                                 and row["rel_diff_vs_plugin_apply"] < 1e-3
                                 and row["rel_error_vs_codes_float64"] < 1e-2)
                    rows.append(row)
                    log(json.dumps(row))
        del kernel, layer
        torch.cuda.empty_cache()
    return rows


def time_point(lib: ctypes.CDLL, kernel, layers: list, scales: list[torch.Tensor],
               bf16: list[torch.Tensor], xs: list[torch.Tensor]) -> dict:
    """One (shape, M): every candidate in the same interleaved rounds."""
    sets = range(len(layers))
    m, k = xs[0].shape
    n = layers[0].weight.shape[0]
    candidates = {
        "bf16_matmul": [lambda i=i: torch.matmul(xs[i], bf16[i].t()) for i in sets],
        "ours": [lambda i=i: kernel.apply_weights(layers[i], xs[i]) for i in sets],
        **{f"fused_{s}_stages": [lambda i=i, s=s: fused(lib, xs[i], layers[i].weight, scales[i], None, s)
                                 for i in sets]
           for s in STAGES},
    }
    times = interleaved_rounds(candidates, ROUNDS, f"fused N={n} K={k} M={m}")
    row = {"N": n, "K": k, "M": m, "rounds_us": times,
           "median_us": {name: statistics.median(v) if isinstance(v, list) else v
                         for name, v in times.items()},
           "over_bf16": {name: paired(times["bf16_matmul"], v) for name, v in times.items()
                         if name != "bf16_matmul"},
           "over_ours": {name: paired(times["ours"], v) for name, v in times.items()
                         if name.startswith("fused")}}
    log(f"N={n} K={k} M={m}: " + "  ".join(
        f"{name} {v['ratio']:.3f}x bf16" if isinstance(v, dict) else f"{name} {v}"
        for name, v in row["over_bf16"].items()) + " | " + "  ".join(
        f"{name} {v['ratio']:.3f}x ours" if isinstance(v, dict) else f"{name} {v}"
        for name, v in row["over_ours"].items()))
    return row


def timing(lib: ctypes.CDLL, gen: torch.Generator) -> list[dict]:
    rows = []
    for n, k in SHAPES:
        kernel, layer, weight = layer_for(n, k, gen)
        copies = rotation_count(n * k, l2_cache_bytes(torch.device("cuda")))
        layers = rotated(layer, copies)
        scales = [lyr.weight_scale.reshape(-1).float().contiguous() for lyr in layers]
        bf16 = [weight.to(torch.bfloat16) for _ in range(copies)]
        for m in M_VALUES:
            xs = [torch.randn((m, k), generator=gen, device="cuda").to(torch.bfloat16)
                  for _ in range(copies)]
            rows.append(time_point(lib, kernel, layers, scales, bf16, xs))
        torch.cuda.empty_cache()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--git-rev", default="unknown")
    parser.add_argument("--profile", action="store_true",
                        help="only launch the probe three times at 8192 x 8192, M=1, 8 stages "
                             "(a target for Nsight Compute), no checks or timing")
    args = parser.parse_args()
    result = {"device": torch.cuda.get_device_name(), "git_revision": args.git_rev,
              "versions": {"torch": torch.__version__, "cuda": torch.version.cuda},
              "command": " ".join(sys.argv)}
    gen = torch.Generator(device="cuda").manual_seed(23)
    lib = build()
    if args.profile:
        _, layer, _ = layer_for(8192, 8192, gen)
        x = torch.randn((1, 8192), generator=gen, device="cuda").to(torch.bfloat16)
        for _ in range(3):
            fused(lib, x, layer.weight, layer.weight_scale.reshape(-1).float(), None, 8)
        torch.cuda.synchronize()
        return 0
    result["check"] = check(lib, gen)
    args.out.write_text(json.dumps(result, indent=1))
    result["all_ok"] = all(row["ok"] for row in result["check"])
    log(f"correctness: {'all ok' if result['all_ok'] else 'FAILURES'}")
    if result["all_ok"]:
        result["timing"] = timing(lib, gen)
    args.out.write_text(json.dumps(result, indent=1))
    return 0 if result["all_ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
