"""int8 and fp8 GEMM at 28672x8192 M=128: the 64x128 cluster-2x1 tile (9) against the 1x4 tile
(13), CUDA graphs of 20 calls, 21 interleaved rounds (order alternating), paired ratios."""
import json, statistics as st, torch
from kernel_core_cutlass import ops, quant
from kernel_core.bench.timing import capture_graph
torch.manual_seed(0)
n, k, m, bf = 28672, 8192, 128, torch.bfloat16
x = torch.randn(m, k, device="cuda", dtype=bf)
w = torch.randn(n, k, device="cuda") * 0.05
ws = ops.workspace_for(x.device)
res = {}
for kind in ("int8", "fp8"):
    if kind == "int8":
        q, s = quant.quantize_int8_per_token(x, True)[:2]
        wsc = (w.abs().amax(1) / 127).float()
        wq = (w / wsc[:, None]).round().clamp(-127, 127).to(torch.int8)
    else:
        q, s = quant.quantize_fp8_per_token(x)
        wsc = (w.abs().amax(1) / 448).float()
        wq = (w / wsc[:, None]).to(torch.float8_e4m3fn)
    call = lambda t: ops.scaled_mm(q, wq, s, wsc, None, None, None, ws, bf, t, False)
    outs = {t: call(t).float() for t in (9, 13)}
    g = {t: capture_graph([lambda t=t: call(t)] * 20) for t in (9, 13)}
    r = {9: [], 13: []}
    for i in range(21):
        for t in ((9, 13) if i % 2 else (13, 9)):
            a, b = torch.cuda.Event(True), torch.cuda.Event(True)
            a.record(); g[t].replay(); b.record(); torch.cuda.synchronize()
            r[t].append(a.elapsed_time(b) * 1e3 / 20)
    ratio = [p / q_ for p, q_ in zip(r[9], r[13])]
    res[kind] = {"us_64x128_cluster2": st.median(r[9]), "us_128x128_cluster_n4": st.median(r[13]),
                 "ratio_64x128_over_n4": {"median": st.median(ratio), "min": min(ratio), "max": max(ratio)},
                 "max_abs_diff_rel": float((outs[9] - outs[13]).abs().max() / outs[9].abs().max())}
print(json.dumps(res, indent=1))
