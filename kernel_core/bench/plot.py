"""``--plot FILE.png``: speedup over the baseline against M (log x, log y: ratios), one line per
kernel and baseline (dashed), one subplot per layer. matplotlib is imported only here, only when a plot is asked for
(``pip install kernel-core[plot]``)."""

from __future__ import annotations

import math
from pathlib import Path

from kernel_core.bench.runner import BenchReport

__all__ = ["plot_speedups"]


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ValueError(
            "--plot needs matplotlib, which is not installed; pip install 'kernel-core[plot]'"
        ) from None
    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt
    import matplotlib.ticker as ticker

    return plt, ticker


def plot_speedups(report: BenchReport, path: Path | str) -> Path:
    """Write the PNG; a layer whose points all failed gets an empty subplot saying so."""
    plt, ticker = _pyplot()
    count = len(report.layers)
    columns = min(count, 2)
    rows = math.ceil(count / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(6.5 * columns, 4.2 * rows), squeeze=False)
    for ax, layer in zip(axes.flat, report.layers, strict=False):
        for name in layer.names:
            points = [(r.m, r.speedup) for r in layer.results
                      if r.name == name and r.speedup is not None]
            if not points:
                continue
            style = "--" if name == layer.baseline else "-"
            ax.plot(*zip(*points, strict=True), style, marker="o", markersize=3, label=name)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log", base=2)
        ax.yaxis.set_major_formatter(ticker.FormatStrFormatter("%.3gx"))
        ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%d"))
        ax.axhline(1.0, color="grey", linewidth=0.6)
        n, k = layer.layer.config.weight_shape
        ax.set_title(f"{layer.layer.label} (N={n}, K={k})", fontsize=10)
        ax.set_xlabel("M (tokens per call)")
        ax.set_ylabel(f"speedup over {layer.baseline}")
        ax.grid(True, which="both", alpha=0.3)
        if ax.lines[1:]:
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no kernel measured", ha="center", transform=ax.transAxes)
    for ax in list(axes.flat)[count:]:
        ax.set_visible(False)
    env = report.environment
    fig.suptitle(
        f"{report.layers[0].layer.config.family if report.layers else ''} on {env.get('device')} "
        f"(torch {env.get('torch')}, CUDA {env.get('cuda')})", fontsize=11,
    )
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
