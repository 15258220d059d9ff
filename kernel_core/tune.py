"""The tune table: measured kernel times per layer and M, and the selection hook that ranks by them.

A tune table is a JSON file (``KERNEL_CORE_TUNE_TABLE``, default ``<cache dir>/tune.json``) that
people can read and edit::

    {
      "format": "kernel-core tune table 1",
      "entries": [
        {
          "environment": {"device": "NVIDIA H200", "compute_capability": 90,
                          "torch": "2.11.0+cu130", "cuda": "13.0",
                          "plugins": {"marlin": "0.1.0", "cutlass": "0.1.0"}},
          "layers": [
            {
              "label": "llama-3-70b.o",
              "config": {"family": "mp", "weight_shape": [8192, 8192], ...},
              "times_us": {"1": {"MarlinKernel": 21.0, "CutlassKernel": 30.5}, "4096": {...}},
              "baselines_us": {"1": {"torch.matmul(bf16)": 33.0}},
              "pin": null
            }
          ]
        }
      ]
    }

An entry serves only the environment it was measured in: the same device name, compute
capability, torch and CUDA versions and installed plugin versions. A table with no entry for this
environment is ignored with one warning. A layer matches when its config's ``as_dict()`` equals
the stored ``config``.

``pin`` (edit by hand) overrides the measurements: ``"pin": "KernelName"`` puts that kernel first
for every M, like ``force=``; ``"pin": [{"kernel": "A", "m_min": 1, "m_max": 64}, {"kernel": "B",
"m_min": 65}]`` pins per M range (the first item whose range overlaps the query's M range applies;
a missing bound is open). A pinned kernel that cannot serve the layer falls through to the next
candidate, with a warning, as a forced one does.

Ranking over an M range (``m_range``: ``(lo, hi)`` or a phase, :data:`PHASES`; the default is
:data:`DEFAULT_PHASE`): a kernel's time for the range is the geometric mean of its times at the
measured M points inside the range, so each point counts equally in relative terms (an arithmetic
mean would let the largest M decide alone). A kernel missing any of those points gets no time and
ranks after the measured ones. When no measured M lies in the range, the measured M nearest to it
stands in.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kernel_core import envs
from kernel_core.config import LayerConfig
from kernel_core.kernel import LinearKernel
from kernel_core.platform import current_compute_capability, current_platform, device_name
from kernel_core.registry import registry

__all__ = [
    "FORMAT",
    "PHASES",
    "DEFAULT_PHASE",
    "MRange",
    "MeasuredRanking",
    "resolve_m_range",
    "environment_key",
    "layer_key",
    "TuneTable",
    "table_hook",
    "per_m_times",
    "pinned_kernel",
    "reload",
]

logger = logging.getLogger(__name__)

FORMAT = "kernel-core tune table 1"
#: Closed M ranges (tokens per call) of the engine phases a caller can name.
PHASES: dict[str, tuple[int, int]] = {"decode": (1, 64), "prefill": (128, 8192)}
#: What selection ranks for when the caller names no range: decode, where a quantized kernel's
#: choice matters most (prefill is compute-bound and close to the dense baseline for every kernel).
DEFAULT_PHASE = "decode"

MRange = tuple[int, int]
#: The environment variables ``envs.tune_table_path()`` reads.
_PATH_VARIABLES = ("KERNEL_CORE_TUNE_TABLE", "KERNEL_CORE_CACHE_DIR", "XDG_CACHE_HOME", "HOME")


def resolve_m_range(m_range: str | Sequence[int] | None) -> MRange:
    """``None`` -> the default phase; a phase name -> its range; ``(lo, hi)`` checked."""
    if m_range is None:
        m_range = DEFAULT_PHASE
    if isinstance(m_range, str):
        if m_range not in PHASES:
            raise ValueError(
                f"m_range={m_range!r}: expected one of {', '.join(sorted(PHASES))} or (lo, hi)"
            )
        return PHASES[m_range]
    values = tuple(m_range)
    if (
        len(values) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in values)
        or not 1 <= values[0] <= values[1]
    ):
        raise ValueError(f"m_range={m_range!r}: expected (lo, hi) with 1 <= lo <= hi")
    return values[0], values[1]


@dataclass(frozen=True)
class MeasuredRanking:
    """What the tune-table hook tells selection: times for the range, a pin, their source."""

    times_us: Mapping[str, float]
    pinned: str | None = None
    source: str | None = None


def environment_key() -> dict[str, Any]:
    """What a measurement depends on besides the layer: device, versions, loaded plugins."""
    plugins = {
        record.name: record.version
        for record in registry.plugins()
        if record.distribution is not None and record.error is None
    }
    return {
        "device": device_name(),
        "platform": current_platform(),
        "compute_capability": current_compute_capability(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "plugins": dict(sorted(plugins.items())),
    }


def layer_key(config: LayerConfig | Mapping[str, Any]) -> str:
    """A config's identity in the table: its ``as_dict()`` as canonical JSON."""
    data = config.as_dict() if isinstance(config, LayerConfig) else config
    return json.dumps(data, sort_keys=True)


def pinned_kernel(layer: Mapping[str, Any], m_range: MRange) -> str | None:
    """The kernel a stored layer pins for the M range, if any."""
    pin = layer.get("pin")
    if pin is None:
        return None
    if isinstance(pin, str):
        return pin
    for item in pin:
        lo = item.get("m_min") or 1
        hi = item.get("m_max") or math.inf
        if lo <= m_range[1] and m_range[0] <= hi:
            return item["kernel"]
    return None


def _check_pin(pin: Any, where: str) -> None:
    if pin is None or isinstance(pin, str):
        return
    if isinstance(pin, list) and all(
        isinstance(item, dict) and isinstance(item.get("kernel"), str) for item in pin
    ):
        return
    raise ValueError(
        f"{where}.pin: expected null, a kernel name or a list of "
        f'{{"kernel": NAME, "m_min": INT, "m_max": INT}}, found {pin!r}'
    )


class TuneTable:
    """The whole file as plain data, with merging and per-environment lookup."""

    def __init__(self, data: dict[str, Any] | None = None, path: Path | None = None) -> None:
        self.data = data if data is not None else {"format": FORMAT, "entries": []}
        self.path = path
        self._check()

    def _check(self) -> None:
        where = str(self.path or "tune table")
        if self.data.get("format") != FORMAT or not isinstance(self.data.get("entries"), list):
            raise ValueError(
                f"{where}: expected a JSON object with format {FORMAT!r} and a list of entries, "
                f"found format {self.data.get('format')!r}"
            )
        for i, entry in enumerate(self.data["entries"]):
            if not isinstance(entry.get("environment"), dict) or not isinstance(
                entry.get("layers"), list
            ):
                raise ValueError(f"{where}: entries[{i}] needs an environment and a list of layers")
            for j, layer in enumerate(entry["layers"]):
                if not isinstance(layer.get("config"), dict):
                    raise ValueError(f"{where}: entries[{i}].layers[{j}] has no config object")
                _check_pin(layer.get("pin"), f"{where}: entries[{i}].layers[{j}]")

    @classmethod
    def load(cls, path: Path | str) -> TuneTable:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a JSON object, found {type(data).__name__}")
        return cls(data, path)

    def save(self, path: Path | str | None = None) -> Path:
        """Write atomically (a reader never sees half a table)."""
        target = Path(path or self.path or envs.tune_table_path())
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.data, indent=1) + "\n")
        os.replace(tmp, target)
        self.path = target
        return target

    def entry(self, environment: Mapping[str, Any]) -> dict[str, Any] | None:
        for entry in self.data["entries"]:
            if entry["environment"] == environment:
                return entry
        return None

    def merge_layer(
        self,
        environment: Mapping[str, Any],
        config: LayerConfig,
        times_us: Mapping[int, Mapping[str, float]],
        baselines_us: Mapping[int, Mapping[str, float]] | None = None,
        label: str | None = None,
    ) -> None:
        """Add or update one layer's times: new M points replace old ones, a pin stays."""
        entry = self.entry(environment)
        if entry is None:
            entry = {"environment": dict(environment), "layers": []}
            self.data["entries"].append(entry)
        key = layer_key(config)
        layer = next((item for item in entry["layers"] if layer_key(item["config"]) == key), None)
        if layer is None:
            layer = {"label": label, "config": config.as_dict(), "times_us": {},
                     "baselines_us": {}, "pin": None}
            entry["layers"].append(layer)
        if label:
            layer["label"] = label
        for field, new in (("times_us", times_us), ("baselines_us", baselines_us or {})):
            stored = layer.setdefault(field, {})
            for m, times in new.items():
                stored[str(m)] = {name: round(float(t), 3) for name, t in times.items()}
            layer[field] = dict(sorted(stored.items(), key=lambda kv: int(kv[0])))

    def layers(self, environment: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """The layers of the environment's entry, by :func:`layer_key`."""
        entry = self.entry(environment)
        if entry is None:
            return {}
        return {layer_key(layer["config"]): layer for layer in entry["layers"]}


def per_m_times(layer: Mapping[str, Any], names: Iterable[str]) -> dict[int, dict[str, float]]:
    """A stored layer's times as ``{M: {kernel: us}}``, only for the given kernels."""
    wanted = set(names)
    return {
        int(m): {k: float(t) for k, t in times.items() if k in wanted}
        for m, times in layer.get("times_us", {}).items()
    }


def _range_times(
    by_m: Mapping[int, Mapping[str, float]], m_range: MRange
) -> tuple[dict[str, float], list[int]]:
    points = [m for m in by_m if m_range[0] <= m <= m_range[1]]
    if not points and by_m:
        points = [min(by_m, key=lambda m: min(abs(m - m_range[0]), abs(m - m_range[1])))]
    points.sort()
    names = set().union(*(by_m[m] for m in points)) if points else set()
    times = {}
    for name in names:
        values = [by_m[m].get(name) for m in points]
        if all(v is not None and v > 0 for v in values):
            times[name] = math.exp(sum(math.log(v) for v in values) / len(values))
    return times, points


class _TableHook:
    """The selection hook over the table file: loaded once, re-read when its mtime changes (or
    the registry changes: the plugins are part of the environment an entry must match)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._stamp: tuple[str, int, int] | None = None
        self._layers: dict[str, dict[str, Any]] = {}
        self._warned: set[tuple[str, int]] = set()
        self._path_key: tuple[str | None, ...] | None = None
        self._path = ""

    def path(self) -> str:
        """``envs.tune_table_path()``, recomputed only when a variable it depends on changes
        (resolving it costs ~20 us, and selection asks on every uncached query)."""
        key = tuple(os.environ.get(name) for name in _PATH_VARIABLES)
        if key != self._path_key:
            self._path_key, self._path = key, str(envs.tune_table_path())
        return self._path

    def clear(self) -> None:
        with self._lock:
            self._stamp = None
            self._layers = {}

    def layers(self) -> dict[str, dict[str, Any]]:
        """This environment's layers from the current table file (empty without a usable one)."""
        path = self.path()
        try:
            mtime = os.stat(path).st_mtime_ns
        except OSError:
            return {}
        stamp = (path, mtime, registry.state)
        with self._lock:
            if stamp == self._stamp:
                return self._layers
            self._stamp, self._layers = stamp, self._read(Path(path), (path, mtime))
            return self._layers

    def _read(self, path: Path, stamp: tuple[str, int]) -> dict[str, dict[str, Any]]:
        try:
            table = TuneTable.load(path)
        except (OSError, ValueError) as exc:
            self._warn_once(stamp, "tune table %s is ignored: %s", path, exc)
            return {}
        environment = environment_key()
        layers = table.layers(environment)
        if not layers and table.data["entries"]:
            found = "; ".join(
                f"{e['environment'].get('device')} cc {e['environment'].get('compute_capability')} "
                f"torch {e['environment'].get('torch')} plugins {e['environment'].get('plugins')}"
                for e in table.data["entries"]
            )
            self._warn_once(
                stamp,
                "tune table %s is ignored: it has no entry for this environment (%s cc %s, torch "
                "%s, cuda %s, plugins %s); it holds: %s. Run `kernel-core tune` here.",
                path, environment["device"], environment["compute_capability"],
                environment["torch"], environment["cuda"], environment["plugins"], found,
            )
        return layers

    def _warn_once(self, stamp: tuple[str, int], message: str, *args: Any) -> None:
        if stamp not in self._warned:
            self._warned.add(stamp)
            logger.warning(message, *args)

    def __call__(
        self,
        config: LayerConfig,
        kernels: Sequence[type[LinearKernel]],
        m_range: MRange,
    ) -> MeasuredRanking:
        layers = self.layers()
        layer = layers.get(layer_key(config)) if layers else None
        if layer is None:
            return MeasuredRanking({})
        by_m = per_m_times(layer, (k.name for k in kernels))
        times, points = _range_times(by_m, m_range)
        source = (
            f"tune table {self.path()}: geometric mean over M="
            f"{','.join(map(str, points)) or 'none'} for M range {m_range[0]}..{m_range[1]}"
        )
        return MeasuredRanking(times, pinned_kernel(layer, m_range), source)


#: The hook selection uses by default (``selection.set_measured_times(None)`` restores it).
table_hook = _TableHook()


def reload() -> None:
    """Forget the loaded table and selection's cached answers (after an in-process edit)."""
    from kernel_core import selection

    table_hook.clear()
    selection.clear_cache()
