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
