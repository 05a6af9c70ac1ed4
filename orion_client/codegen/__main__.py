"""Regenerate every generated file: `python -m orion_client.codegen [--check]`.

--check writes nothing and exits 1 when a committed file differs from what the spec and
headers produce now (the test suite runs it, so stale output cannot land).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import emit_c, emit_errors, emit_py, headers, spec

ROOT = Path(__file__).resolve().parents[2]
SPECS = {"cudart": spec.SPEC_DIR / "cudart.toml", "nvml": spec.SPEC_DIR / "nvml.toml"}


def outputs() -> dict[Path, str]:
    files = {}
    for name, path in SPECS.items():
        lib = spec.load(path)
        spec_name = f"orion_client/codegen/{path.name}"
        files[ROOT / f"native/generated/{name}_stubs.c"] = emit_c.stubs(lib, spec_name)
        files[ROOT / f"native/generated/{name}_internal.h"] = emit_c.internal_header(lib, spec_name)
        files[ROOT / f"native/generated/lib{name}.map"] = emit_c.version_script(lib, spec_name)
        files[ROOT / f"orion_server/generated/{name}_table.py"] = emit_py.call_table(lib, spec_name)
        if name == "cudart":
            files[ROOT / "native/generated/cudart_errors.c"] = emit_errors.error_table(
                lib, emit_c.banner(lib, spec_name), headers.cuda_include_dir())
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if generated files are stale")
    args = parser.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        if path.exists() and path.read_text() == text:
            continue
        if args.check:
            stale.append(path.relative_to(ROOT))
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print("stale generated files: " + ", ".join(map(str, stale)) +
              "\nregenerate with: python -m orion_client.codegen", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
