"""Build the native libraries: `python -m orion_client.native_build [--out DIR]`.

Compiles native/src and native/generated into the client shims libcudart.so.13 and
libnvidia-ml.so.1 under orion_client/lib (where the wheel and `orion run` find them),
and native/worker into the server worker's liborion_worker.so under orion_server/lib.
Places beside the shims, like a wheel repair tool would, the libraries they need at run
time that a GPU host may lack: the libzmq (with its libsodium) that pyzmq ships under a
private, hashed name, and libcjson. The shims' rpath is $ORIGIN, so LD_LIBRARY_PATH needs only that one
directory.

The NVML shim is only its own objects (native/src/nvml, nvml_stubs.c): the client
runtime (configuration, controller, sessions, transport) it uses is the one in
libcudart.so.13, which it links against. libcudart.so.13 exports to it, under the
private version ORION_PRIVATE, exactly the runtime functions those objects call (read
from their undefined symbols), so a process running CUDA and NVML has one runtime: one
lease, one session per server.
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from .codegen.headers import cuda_include_dir

NVML_PACKAGE = "nvidia-nvml-dev"   # ships nvml.h (see orion_client/codegen/nvml.toml)
PRIVATE_VERSION = "ORION_PRIVATE"

ROOT = Path(__file__).resolve().parent.parent
NATIVE = ROOT / "native"
LIB_DIR = Path(__file__).resolve().parent / "lib"
WORKER_LIB = ROOT / "orion_server" / "lib" / "liborion_worker.so"
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


def _compile(sources: list[Path], includes: list[Path], obj_dir: Path) -> list[Path]:
    """One object per source, compiled in parallel."""
    def one(src: Path) -> Path:
        obj = obj_dir / f"{src.parent.name}-{src.stem}.o"
        subprocess.run(["gcc", "-c", *CFLAGS, *(f"-I{i}" for i in includes), "-o", str(obj),
                        str(src)], check=True)
        return obj
    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        return list(pool.map(one, sources))


def _symbols(objects: list[Path], which: str) -> set[str]:
    out = subprocess.run(["nm", which, "--format=just-symbols", *map(str, objects)],
                         check=True, capture_output=True, text=True).stdout
    return {line.strip() for line in out.splitlines() if line.strip() and ":" not in line}


def _private_script(nvml_objects: list[Path], path: Path) -> Path:
    """The runtime functions the NVML objects call, exported from libcudart.so.13."""
    needed = sorted(n for n in _symbols(nvml_objects, "--undefined-only") -
                    _symbols(nvml_objects, "--defined-only") if n.startswith("orion_"))
    path.write_text(f"{PRIVATE_VERSION} {{\n  global:\n" +
                    "".join(f"    {n};\n" for n in needed) + "};\n")
    return path


def _link(target: Path, objects: list[Path], args: list[str]) -> None:
    """Link next to `target` and move it in place, so a program running the old one
    (another test, an application) keeps a whole file."""
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    subprocess.run(["gcc", "-shared", *CFLAGS, "-o", str(partial), *map(str, objects), *args],
                   check=True)
    os.replace(partial, target)


def _place(source: Path, target: Path) -> None:
    """Copy a library beside the shims as _link places them: written next to `target`,
    then moved in place. Copying over it would rewrite pages that running programs (other
    tests, benchmarks) have mapped: they die of SIGBUS or SIGSEGV."""
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    shutil.copy2(source, partial)
    os.replace(partial, target)


def build(out_dir: Path = LIB_DIR) -> Path:
    """Build both shims into out_dir; the path of libcudart.so.13."""
    out_dir.mkdir(parents=True, exist_ok=True)
    libzmq, bundled = _pyzmq_libzmq()
    for lib in bundled:
        _place(lib, out_dir / lib.name)
    cjson = _system_library("libcjson.so.1")
    _place(cjson, out_dir / "libcjson.so.1")
    generated, src = NATIVE / "generated", NATIVE / "src"
    includes = [cuda_include_dir(), src, generated]
    nvml_include = cuda_include_dir("nvml.h", NVML_PACKAGE)
    cudart, nvml = out_dir / "libcudart.so.13", out_dir / "libnvidia-ml.so.1"
    with tempfile.TemporaryDirectory(prefix="orion-native-") as tmp:
        cudart_objects = _compile(sorted(src.glob("*.c")) + [
            generated / "cudart_stubs.c", generated / "cudart_errors.c"], includes, Path(tmp))
        nvml_objects = _compile(sorted((src / "nvml").glob("*.c")) + [generated / "nvml_stubs.c"],
                                [nvml_include, *includes], Path(tmp))
        private = _private_script(nvml_objects, Path(tmp) / "private.map")
        _link(cudart, cudart_objects, [
            f"-Wl,--version-script={generated / 'libcudart.map'}",
            f"-Wl,--version-script={private}",
            "-Wl,-soname,libcudart.so.13", "-Wl,-rpath,$ORIGIN", "-Wl,--no-undefined",
            str(out_dir / libzmq.name), str(out_dir / "libcjson.so.1"), "-lpthread", "-lrt"])
        _link(nvml, nvml_objects, [
            f"-Wl,--version-script={generated / 'libnvml.map'}",
            "-Wl,-soname,libnvidia-ml.so.1", "-Wl,-rpath,$ORIGIN", "-Wl,--no-undefined",
            str(cudart), "-lpthread"])
    build_worker()
    return cudart


def build_worker(target: Path = WORKER_LIB) -> Path:
    """The worker's native loops (no CUDA headers: the driver comes as a function pointer)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="orion-native-") as tmp:
        objects = _compile(sorted((NATIVE / "worker").glob("*.c")), [], Path(tmp))
        _link(target, objects, ["-Wl,--no-undefined"])
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=LIB_DIR)
    args = parser.parse_args(argv)
    print(build(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
