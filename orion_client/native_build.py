"""Build the client shims: `python -m orion_client.native_build [--out DIR]`.

Compiles native/src and native/generated into libcudart.so.13 under orion_client/lib
(where the wheel and `orion run` find it) and places beside it, like a wheel repair
tool would, the libraries it needs at run time that a GPU host may lack: the libzmq
(with its libsodium) that pyzmq ships under a private, hashed name, and libcjson.
The shim's rpath is $ORIGIN, so LD_LIBRARY_PATH needs only that one directory.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from .codegen.headers import cuda_include_dir

ROOT = Path(__file__).resolve().parent.parent
NATIVE = ROOT / "native"
LIB_DIR = Path(__file__).resolve().parent / "lib"
CFLAGS = ["-O2", "-g", "-fPIC", "-Wall", "-Wextra", "-Wno-unused-parameter",
          "-Wno-deprecated-declarations", "-std=gnu11"]


def _pyzmq_libzmq() -> tuple[Path, list[Path]]:
    """The libzmq inside the installed pyzmq wheel, and the libraries it brings."""
    import zmq
    libs = Path(zmq.__file__).resolve().parent.parent / "pyzmq.libs"
    found = sorted(libs.glob("libzmq*.so*"))
    if not found:
        raise FileNotFoundError(f"no libzmq in {libs}: install pyzmq from its wheel")
    return found[0], sorted(libs.glob("*.so*"))


def _system_library(name: str) -> Path:
    out = subprocess.run(["gcc", f"-print-file-name={name}"], check=True,
                         capture_output=True, text=True).stdout.strip()
    path = Path(out)
    if not path.is_absolute() or not path.exists():
        raise FileNotFoundError(f"{name} not found: install libcjson-dev")
    return path.resolve()


def build(out_dir: Path = LIB_DIR) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    libzmq, bundled = _pyzmq_libzmq()
    for lib in bundled:
        shutil.copy2(lib, out_dir / lib.name)
    cjson = _system_library("libcjson.so.1")
    shutil.copy2(cjson, out_dir / "libcjson.so.1")
    sources = sorted((NATIVE / "src").glob("*.c")) + [
        NATIVE / "generated" / "cudart_stubs.c", NATIVE / "generated" / "cudart_errors.c"]
    target = out_dir / "libcudart.so.13"
    cmd = ["gcc", "-shared", *CFLAGS, f"-I{cuda_include_dir()}", f"-I{NATIVE / 'src'}",
           f"-I{NATIVE / 'generated'}", "-o", str(target), *map(str, sources),
           f"-Wl,--version-script={NATIVE / 'generated' / 'libcudart.map'}",
           "-Wl,-soname,libcudart.so.13", "-Wl,-rpath,$ORIGIN", "-Wl,--no-undefined",
           str(out_dir / libzmq.name), str(out_dir / "libcjson.so.1"), "-lpthread", "-lrt"]
    subprocess.run(cmd, check=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=LIB_DIR)
    args = parser.parse_args(argv)
    print(build(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
