"""The ``kernel-core`` command: plugins, kernels, explain, doctor, warmup.

Every subcommand prints a table for people and, with ``--json``, plain JSON for scripts. Bad
arguments end with one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from kernel_core.families import FAMILIES
from kernel_core.layer_options import add_layer_options, config_from_options
from kernel_core.platform import current_compute_capability, current_platform
from kernel_core.registry import registry
from kernel_core.selection import explain

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
        if platform not in kernel.platforms:
            runs, reason = False, f"runs on {', '.join(sorted(kernel.platforms))}, not {platform}"
        else:
            runs, reason = probe_kernel_platform(kernel, capability)
        rows.append({**kernel.describe(), "runs_here": runs, "reason": reason})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    _print_table(
        [{**r, "runs_here": "yes" if r["runs_here"] else "no"} for r in rows],
        ("family", "name", "provider", "priority", "runs_here", "reason"),
    )
    return 0


def probe_kernel_platform(kernel: type, capability: int | None) -> tuple[bool, str | None]:
    """``is_supported`` alone, with exceptions turned into reasons (no layer to check against)."""
    try:
        ok, reason = kernel.is_supported(capability)
    except Exception as exc:
        return False, f"is_supported raised {type(exc).__name__}: {exc}"
    return bool(ok), reason


def cmd_explain(args: argparse.Namespace) -> int:
    config = config_from_options(args)
    result = explain(config, args.capability, platform=args.platform, force=args.force)
    if args.json:
        print(json.dumps(result.as_dict(), indent=2))
    else:
        print(f"{config.short()} on {result.platform} (capability {result.compute_capability})")
        print(result.table())
        chosen = result.chosen.name if result.chosen else "none: no candidate can serve this layer"
        print(f"chosen: {chosen}")
    return 0 if result.chosen else 1


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
    failures = 0
    for kernel in registry.kernels(args.family):
        if current_platform() not in kernel.platforms:
            continue
        ok, reason = probe_kernel_platform(kernel, capability)
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
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_explain)

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
