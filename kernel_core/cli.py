"""The ``kernel-core`` command: plugins, kernels, explain, doctor, warmup, bench, tune.

Every subcommand prints a table for people and, with ``--json``, plain JSON for scripts. Bad
arguments end with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from kernel_core.families import FAMILIES
from kernel_core.layer_options import add_layer_options, config_from_options
from kernel_core.platform import current_compute_capability, current_platform
from kernel_core.registry import registry
from kernel_core.selection import explain, probe_platform

__all__ = ["main"]

logger = logging.getLogger("kernel_core.cli")


class UsageError(Exception):
    """A bad argument: reported on one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _print_table(rows: list[dict[str, Any]], columns: Sequence[str]) -> None:
    cells = [[str(r.get(c, "")) if r.get(c) is not None else "-" for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip())
    for row in cells:
        print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


def cmd_plugins(args: argparse.Namespace) -> int:
    records = [p.as_dict() for p in registry.plugins()]
    if args.json:
        print(json.dumps(records, indent=2))
        return 0
    rows = [
        {**r, "kernels": ", ".join(r["kernels"]) or "-", "error": r["error"]} for r in records
    ]
    _print_table(rows, ("name", "distribution", "version", "kernels", "error"))
    return 0


def cmd_kernels(args: argparse.Namespace) -> int:
    platform = current_platform()
    capability = current_compute_capability()
    rows = []
    for kernel in sorted(registry.kernels(args.family), key=lambda k: (k.family, -k.priority, k.name)):
        runs, reason = probe_platform(kernel, capability, platform)
        rows.append({**kernel.describe(), "runs_here": runs, "reason": reason})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    _print_table(
        [{**r, "runs_here": "yes" if r["runs_here"] else "no"} for r in rows],
        ("family", "name", "provider", "priority", "runs_here", "reason"),
    )
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from kernel_core.dispatch import describe_plan, plan_by_m

    config = config_from_options(args)
    m_range = tuple(args.m_range) if args.m_range else args.phase
    result = explain(
        config, args.capability, platform=args.platform, force=args.force, m_range=m_range
    )
    routes = plan_by_m(config, args.capability, platform=args.platform)
    plan = describe_plan(config, routes) if len(routes) > 1 else None
    if args.json:
        print(json.dumps({**result.as_dict(), "dispatch_by_m": plan}, indent=2))
    else:
        print(f"{config.short()} on {result.platform} (capability {result.compute_capability})")
        if result.measured_source:
            print(f"ranked by measured time: {result.measured_source}")
        print(result.table())
        chosen = result.chosen.name if result.chosen else "none: no candidate can serve this layer"
        print(f"chosen: {chosen}")
        if plan:
            print(f"fastest by M (init_kernel(..., dispatch_by_m=True)): {plan['text']}")
    return 0 if result.chosen else 1


def _bench_layers(args: argparse.Namespace) -> list[Any]:
    """The layers named by --preset and --shape, each built with the layer options."""
    from kernel_core.bench.presets import preset_layers
    from kernel_core.bench.runner import BenchLayer

    named = [(f"{args.preset}.{p.label}", p.n, p.k) for p in preset_layers(args.preset)] \
        if args.preset else []
    named += [(f"{n}x{k}", n, k) for n, k in args.shape or ()]
    if not named:
        raise UsageError("give --shape N K (repeatable) or --preset NAME")
    layers = []
    for label, n, k in named:
        options = argparse.Namespace(**{**vars(args), "shape": (n, k)})
        layers.append(BenchLayer(label, config_from_options(options)))
    return layers


def _run_bench(args: argparse.Namespace, on_layer: Any = None) -> Any:
    """Shared by bench and tune: validate outputs first (no hour of timing lost to a typo)."""
    from kernel_core.bench.runner import run_bench
    from kernel_core.bench.timing import CPU_BUDGET, CUDA_BUDGET, Budget

    if args.plot:
        from kernel_core.bench.plot import _pyplot

        _pyplot()
    for target in (args.plot, args.json if args.json != "-" else None):
        if target:
            os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    layers = _bench_layers(args)
    budget = None
    if args.warmup_ms is not None or args.rep_ms is not None:
        base = CUDA_BUDGET if current_platform() == "cuda" else CPU_BUDGET
        budget = Budget(
            args.warmup_ms if args.warmup_ms is not None else base.warmup_ms,
            args.rep_ms if args.rep_ms is not None else base.rep_ms,
            base.min_reps, base.max_reps,
        )
    report = run_bench(
        layers, args.m, budget=budget, include_reference=args.include_reference,
        command="kernel-core " + shlex.join(args.argv), on_layer=on_layer,
    )
    if args.plot:
        from kernel_core.bench.plot import plot_speedups

        print(f"wrote {plot_speedups(report, args.plot)}", file=sys.stderr)
    if args.json and args.json != "-":
        with open(args.json, "w") as f:
            json.dump(report.as_dict(), f, indent=1)
        print(f"wrote {args.json}", file=sys.stderr)
    if args.json == "-":
        print(json.dumps(report.as_dict(), indent=1))
    else:
        print(report.table())
    return report


def cmd_bench(args: argparse.Namespace) -> int:
    report = _run_bench(args)
    failed = all(r.time_us is None for layer in report.layers for r in layer.results
                 if r.kind == "kernel")
    return 1 if failed else 0


def cmd_tune(args: argparse.Namespace) -> int:
    from kernel_core import envs, tune

    path = args.output or envs.tune_table_path()
    table = tune.TuneTable.load(path) if os.path.exists(path) else tune.TuneTable(path=None)
    environment = tune.environment_key()

    def save(layer: Any) -> None:  # after every layer: an interrupted run keeps what it measured
        table.merge_layer(environment, layer.layer.config, layer.times_by_m("kernel"),
                          layer.times_by_m("baseline"), label=layer.layer.label)
        table.save(path)

    report = _run_bench(args, on_layer=save)
    tune.reload()
    print(f"wrote tune table {path} ({len(report.layers)} layers, M={list(report.m_values)})",
          file=sys.stderr)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from kernel_core.doctor import run_doctor

    report = run_doctor()
    if args.json:
        print(json.dumps(report, indent=2))
        return 0 if report["ok"] else 1
    print(f"platform: {report['platform']}  device: {report['device']}  "
          f"capability: {report['compute_capability']}")
    print(f"python {report['python']}  torch {report['torch']}  cuda {report['cuda']}")
    print("\nplugins:")
    _print_table(
        [{**p, "kernels": len(p["kernels"]), "error": p["error"]} for p in report["plugins"]],
        ("name", "distribution", "version", "kernels", "error"),
    )
    print("\nper family, a representative layer, the chosen kernel and a check against the reference:")
    rows = []
    for c in report["checks"]:
        error = f"{c['rel_error']:.2e}" if c["rel_error"] is not None else "-"
        bound = f"{c['tolerance']:.0e}" if c["tolerance"] is not None else "-"
        verdict = "ok" if c["ok"] else f"FAIL {c['error'] or ''}".strip()
        rows.append({"family": c["family"], "kernel": c["kernel"], "reference": c["reference"],
                     "rel_error": error, "bound": bound, "result": verdict.splitlines()[0]})
    _print_table(rows, ("family", "kernel", "reference", "rel_error", "bound", "result"))
    print("\nall good" if report["ok"] else "\nproblems found (see above)")
    return 0 if report["ok"] else 1


def cmd_warmup(args: argparse.Namespace) -> int:
    capability = current_compute_capability()
    platform = current_platform()
    failures = 0
    for kernel in registry.kernels(args.family):
        if platform not in kernel.platforms:
            continue  # another platform's kernel: nothing to build here
        ok, reason = probe_platform(kernel, capability, platform)
        if not ok:
            print(f"skip {kernel.name}: {reason}", file=sys.stderr)
            continue
        print(f"warming up {kernel.name} ...", file=sys.stderr, flush=True)
        try:
            kernel.warmup(capability)
        except Exception as exc:
            failures += 1
            print(f"warmup of {kernel.name} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
    return 1 if failures else 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="kernel-core", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging on stderr")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("plugins", help="installed plugins, their kernels and load errors")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("kernels", help="every registered kernel and whether it runs here")
    p.add_argument("--family", choices=sorted(FAMILIES))
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_kernels)

    p = sub.add_parser("explain", help="rank the kernels for one layer, with reasons")
    add_layer_options(p)
    p.add_argument("--capability", type=int, help="compute capability, e.g. 90 (default: here)")
    p.add_argument("--platform", choices=("cuda", "rocm", "xpu", "cpu"))
    p.add_argument("--force", action="append", help="kernel name to try first (repeatable)")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--m-range", nargs=2, type=int, metavar=("LO", "HI"),
                      help="rank by measured time over these tokens per call (default: decode)")
    when.add_argument("--phase", choices=("decode", "prefill"),
                      help="decode: M 1..64, prefill: M 128..8192")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_explain)

    for name, func, text in (
        ("bench", cmd_bench, "time the kernels for layers against torch baselines over M"),
        ("tune", cmd_tune, "bench, then write the measured times into the tune table"),
    ):
        p = sub.add_parser(name, help=text, conflict_handler="resolve")
        add_layer_options(p)
        p.add_argument("--shape", nargs=2, type=int, action="append", metavar=("N", "K"),
                       help="a weight shape (out_features, in_features) to time (repeatable)")
        p.add_argument("--preset", help="a model's linear layers: llama-3-8b, llama-3-70b, "
                                        "deepseek-v3")
        p.add_argument("--m", nargs="+", type=int, metavar="M",
                       help="tokens per call (default: 1 16 64 128 256 1024 4096 8192 on CUDA, "
                            "1 16 64 on a CPU)")
        p.add_argument("--include-reference", action="store_true",
                       help="also time the reference (emulation) kernels")
        p.add_argument("--warmup-ms", type=float, help="warm-up budget per point")
        p.add_argument("--rep-ms", type=float, help="measurement budget per point")
        p.add_argument("--json", nargs="?", const="-", metavar="FILE",
                       help="JSON report to stdout, or to FILE (the table still goes to stdout)")
        p.add_argument("--plot", metavar="FILE.png", help="speedup over the baseline against M")
        if name == "tune":
            p.add_argument("--output", help="tune table to write or merge into (default: "
                                            "KERNEL_CORE_TUNE_TABLE or <cache dir>/tune.json)")
        p.set_defaults(func=func)

    p = sub.add_parser("doctor", help="platform, plugins, and a checked kernel per family")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("warmup", help="build JIT kernels ahead of time")
    p.add_argument("--family", choices=sorted(FAMILIES))
    p.set_defaults(func=cmd_warmup)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        args.argv = list(sys.argv[1:] if argv is None else argv)
        logging.basicConfig(
            level=logging.DEBUG if args.verbose else logging.WARNING,
            format="%(levelname)s %(name)s: %(message)s",
        )
        return int(args.func(args))
    except UsageError as exc:
        print(f"kernel-core: error: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # a bad layer description, an unknown kernel name
        first = str(exc).splitlines()[0]
        print(f"kernel-core: error: {first}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
