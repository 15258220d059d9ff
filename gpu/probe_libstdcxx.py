"""Which compiler/link setting gives torch extensions a working C++ runtime on this machine.

On the GPU machine torch's cpp_extension builds with /opt/gcc/bin/g++, which linked libstdc++
statically into the extension; its iostreams were never initialised and a TORCH_CHECK whose
message holds an integer segfaulted (kernel_core/include/kernel_core/check.h works around it).
This builds one tiny extension per candidate setting, each in a fresh process, and records what
the library links (ldd) and whether the integer message raises or crashes. Writes JSON to --out.

    python3 gpu/probe_libstdcxx.py --out $OUT/libstdcxx-probe.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

SOURCE = textwrap.dedent("""
    #include <torch/extension.h>
    void check_integer(int64_t value) { TORCH_CHECK(value == 0, "expected 0, found ", value); }
    PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) { m.def("check_integer", &check_integer); }
""")

RUN = textwrap.dedent("""
    import sys
    from torch.utils.cpp_extension import load
    module = load("probe", [sys.argv[1]], build_directory=sys.argv[2], extra_ldflags=sys.argv[3:],
                  verbose=False)
    try:
        module.check_integer(3)
    except RuntimeError as error:
        print("raised:", str(error).splitlines()[0])
""")


def candidates() -> dict[str, tuple[dict[str, str], list[str]]]:
    """name -> (environment overrides, extra link flags)."""
    found = {"default": ({}, [])}
    found["-shared-libgcc -lstdc++"] = ({}, ["-shared-libgcc", "-lstdc++"])
    for compiler in ("/usr/bin/g++", "/usr/bin/c++"):
        if Path(compiler).exists():
            found[f"CXX={compiler}"] = ({"CXX": compiler}, [])
            break
    system_lib = Path("/usr/lib/x86_64-linux-gnu")
    if (system_lib / "libstdc++.so.6").exists():
        found["-L system lib dir"] = ({}, [f"-L{system_lib}", "-l:libstdc++.so.6"])
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="libstdcxx-probe-"))
    source = work / "probe.cpp"
    source.write_text(SOURCE)
    results = {
        "which c++": shutil.which("c++"), "which g++": shutil.which("g++"),
        "CXX": os.environ.get("CXX"), "candidates": {},
    }
    for name, (env, ldflags) in candidates().items():
        build = work / name.replace("/", "_").replace(" ", "_").replace("=", "_")
        build.mkdir()
        print(f"probe: {name}", file=sys.stderr, flush=True)
        done = subprocess.run(
            [sys.executable, "-c", RUN, str(source), str(build), *ldflags],
            capture_output=True, text=True, env={**os.environ, **env}, timeout=240, check=False,
        )
        library = next(build.glob("*.so"), None)
        ldd = subprocess.run(["ldd", str(library)], capture_output=True, text=True, check=False)
        results["candidates"][name] = {
            "env": env, "ldflags": ldflags, "returncode": done.returncode,
            "stdout": done.stdout.strip()[-400:], "stderr_tail": done.stderr.strip()[-600:],
            "libstdc++ linked": [line.strip() for line in ldd.stdout.splitlines()
                                 if "stdc++" in line or "libgcc" in line] if library else None,
        }
        print(f"  -> rc {done.returncode}: {done.stdout.strip()[-120:]}", file=sys.stderr)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
