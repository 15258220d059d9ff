"""The JIT cache: a keyed library that already exists is imported without invoking a build."""

from pathlib import Path

import pytest

from kernel_core import jit


def test_existing_library_is_loaded_without_building(tmp_path, monkeypatch):
    monkeypatch.setenv("KERNEL_CORE_CACHE_DIR", str(tmp_path / "cache"))
    source = tmp_path / "ext.cu"
    source.write_text("// kernel\n")
    key = jit._fingerprint([source], ["-gencode=arch=compute_90a,code=sm_90a"], [], "sm_90a")
    library = jit.build_dir_for("ext", key) / "ext.so"
    library.parent.mkdir(parents=True)
    library.write_bytes(b"built elsewhere")
    imported: list[Path] = []
    monkeypatch.setattr(jit, "_import_built", lambda name, path: imported.append(path) or name)

    def no_build(**_kwargs):
        raise AssertionError("a cached library must not be rebuilt")

    monkeypatch.setattr("torch.utils.cpp_extension.load", no_build)
    assert jit.load_extension("ext", [source]) == "ext"
    assert imported == [library]


def test_edited_header_beside_the_source_changes_the_key(tmp_path):
    source = tmp_path / "ext.cu"
    source.write_text("#include \"helper.cuh\"\n")
    header = tmp_path / "helper.cuh"
    header.write_text("// v1\n")
    before = jit._fingerprint([source], [], [], "sm_90a")
    header.write_text("// v2\n")
    assert jit._fingerprint([source], [], [], "sm_90a") != before


def test_unimportable_library_names_the_file(tmp_path):
    with pytest.raises(ImportError, match="bogus"):
        jit._import_built("bogus", tmp_path / "bogus.txt")


def test_shared_headers_are_part_of_every_key(tmp_path):
    """kernel_core's own headers (check.h) are hashed into every extension's key: an edit there
    rebuilds the plugins' extensions."""
    source = tmp_path / "ext.cu"
    source.write_text("// kernel\n")
    assert (jit.INCLUDE_DIR / "kernel_core" / "check.h").resolve() in jit._source_files([source])


def test_every_build_gets_the_shared_include_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("KERNEL_CORE_CACHE_DIR", str(tmp_path / "cache"))
    source = tmp_path / "ext.cu"
    source.write_text("// kernel\n")
    seen: dict = {}
    monkeypatch.setattr("torch.utils.cpp_extension.load", lambda **kw: seen.update(kw) or "ext")
    jit.load_extension("ext", [source], extra_include_paths=["/mine"])
    assert seen["extra_include_paths"] == [str(jit.INCLUDE_DIR), "/mine"]


def test_plugin_extensions_check_inputs_through_kc_check():
    """TORCH_CHECK formats integers through an ostream; in an extension linked against a static
    libstdc++ (the GPU machine's compiler) that segfaults instead of raising (check.h). Every
    plugin's C++ source refuses bad input through KC_CHECK."""
    root = Path(__file__).resolve().parents[1] / "plugins"
    offenders = [
        f"{path.relative_to(root)}:{number}"
        for path in sorted(root.glob("*/kernel_core_*/csrc/*"))
        if path.suffix in {".cpp", ".cu", ".cuh", ".h"}
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "TORCH_CHECK(" in line
    ]
    assert offenders == [], f"use KC_CHECK (kernel_core/check.h) instead: {offenders}"
