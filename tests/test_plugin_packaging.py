"""Each plugin's wheel carries the CUDA/C++ sources its JIT build needs: a source file that no
package-data pattern matches is missing from a non-editable install (the README's main command),
and the first GPU call would then fail to build."""

from __future__ import annotations

from fnmatch import fnmatch
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

PLUGINS = Path(__file__).resolve().parents[1] / "plugins"


def _plugins_with_sources() -> list[Path]:
    return sorted(p for p in PLUGINS.iterdir() if any(p.glob("kernel_core_*/csrc/*")))


def test_some_plugins_ship_sources() -> None:
    assert {p.name for p in _plugins_with_sources()} >= {"marlin_plugin", "cutlass_plugin"}


@pytest.mark.parametrize("plugin", _plugins_with_sources(), ids=lambda p: p.name)
def test_package_data_covers_every_source(plugin: Path) -> None:
    config = tomllib.loads((plugin / "pyproject.toml").read_text())
    package_data = config["tool"]["setuptools"]["package-data"]
    for package_dir in (p.parent for p in plugin.glob("kernel_core_*/csrc")):
        patterns = package_data.get(package_dir.name, [])
        sources = [p.relative_to(package_dir).as_posix()
                   for p in (package_dir / "csrc").iterdir() if p.is_file()]
        missing = [s for s in sources if not any(fnmatch(s, pattern) for pattern in patterns)]
        assert not missing, (
            f"{plugin.name}/pyproject.toml: package-data for {package_dir.name} ({patterns}) "
            f"does not ship {missing}"
        )


def test_core_ships_its_extension_headers() -> None:
    """kernel_core.jit puts kernel_core/include on every extension's include path; a wheel that
    lacked the headers would fail every plugin's first build."""
    root = PLUGINS.parent
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["kernel_core"]
    headers = [p.relative_to(root / "kernel_core").as_posix()
               for p in (root / "kernel_core" / "include").rglob("*.h")]
    assert headers and all(any(fnmatch(h, pattern) for pattern in patterns) for h in headers)
