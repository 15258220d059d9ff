"""How long a repeated ``choose_kernel`` takes (the target: under 5 microseconds).

The first query loads plugins and probes every candidate; repeated queries for the same layer
are served from the selection cache. Run: ``python benchmarks/selection_latency.py``.
"""

from __future__ import annotations

import statistics
import time

from kernel_core import FAMILIES, choose_kernel
from kernel_core.doctor import representative_configs


def main(repeats: int = 20_000) -> None:
    configs = representative_configs()
    start = time.perf_counter()
    for config in configs:
        try:
            choose_kernel(config)
        except ValueError:
            pass  # no kernel for this family here: the failure is cached too
    first = (time.perf_counter() - start) / len(configs)
    print(f"families: {', '.join(FAMILIES)}")
    print(f"first query (plugin loading amortized, probing): {first * 1e6:.1f} us per layer")
    for config in configs:
        samples = []
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(repeats):
                try:
                    choose_kernel(config)
                except ValueError:
                    pass
            samples.append((time.perf_counter() - t0) / repeats)
        print(f"{config.family:10s} repeated choose_kernel: {statistics.median(samples) * 1e6:.2f} us")


if __name__ == "__main__":
    main()
