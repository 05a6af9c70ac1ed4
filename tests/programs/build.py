"""Build and run the CUDA test programs of tests/programs/.

Each program is one `<name>.cu` (plus the shared `common.h`), compiled against the
*shared* CUDA runtime so that Orion's libcudart.so.13 can replace it at run time
through LD_LIBRARY_PATH. SASS for sm_75 and sm_90 is embedded (the host backend
reads kernel parameter layouts from it), plus compute_90 PTX.

Loaded by path (the name `build` would shadow the PyPI package of that name):

    spec = importlib.util.spec_from_file_location("orion_test_programs", PATH)

Public API: `available()`, `all_programs()`, `build(name, outdir)`,
`run_program(path, env=None, args=())`, `passed(proc, name)`, and the tables
`INVOCATIONS`, `EXPECTS_DEVICE_ERROR`, `PRINTF_LINES`.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

PROGRAMS_DIR = Path(__file__).resolve().parent
RUN_TIMEOUT_S = 120

NVCC_FLAGS = (
    "-cudart", "shared",  # dynamic libcudart: Orion's shim replaces it
    "-std=c++17",
    "-O2",
    "-gencode", "arch=compute_75,code=sm_75",
    "-gencode", "arch=compute_90,code=[sm_90,compute_90]",
)

# The argument lists each program is run with; most have just one mode.
INVOCATIONS: dict[str, list[tuple[str, ...]]] = {
    "printf_assert": [(), ("assert",)],
    "graph_memory": [(), ("pause",)],
}

# Programs that need a partner or a setting and are run by their own tests only.
STANDALONE = frozenset({"hold", "foreign_pointer"})

# Invocations that pass only when their kernels really run and fail on the device
# (so not with ORION_TEST_HOST_BACKEND=1 on a real GPU).
EXPECTS_DEVICE_ERROR: frozenset[tuple[str, tuple[str, ...]]] = frozenset({
    ("printf_assert", ("assert",)),
    ("sticky_error", ()),
})

# `printf_assert` (no arguments) prints each of these lines once, in any order,
# when its kernel runs.
PRINTF_LINES: tuple[str, ...] = tuple(
    f"ORION_PRINTF block={b} thread={t} value=42 half=1.50 tag=c0ffee str=orion"
    for b in range(2) for t in range(2)
)


class BuildError(RuntimeError):
    """nvcc failed; the message holds its command line and stderr."""


def nvcc_path() -> str | None:
    """nvcc from $NVCC, then PATH, then /usr/local/cuda/bin."""
    for candidate in (os.environ.get("NVCC"), shutil.which("nvcc"), "/usr/local/cuda/bin/nvcc"):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    return None


def available() -> bool:
    """Whether the programs can be compiled here."""
    return nvcc_path() is not None


def gpu_present() -> bool:
    """An NVIDIA GPU that CUDA can use (cuda.bindings cuInit, else nvidia-smi -L)."""
    if shutil.which("nvidia-smi") is None:
        return False
    try:
        from cuda.bindings import driver
    except ImportError:
        try:
            smi = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True,
                                 timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            return False
        return smi.returncode == 0 and "GPU" in smi.stdout
    (err,) = driver.cuInit(0)
    return err == driver.CUresult.CUDA_SUCCESS


@dataclass(frozen=True)
class Compiler:
    """nvcc with fixed flags over one directory of programs (`<name>.cu` plus a header
    they share); each executable is rebuilt only when its sources, the flags or the
    compiler change (the key is kept in outdir/<name>.buildkey). Safe to call from
    parallel workers: the executable is written under a temporary name and renamed."""

    programs_dir: Path
    flags: tuple[str, ...]
    shared_header: str
    link_flags: tuple[str, ...] = ()

    def command(self, nvcc: str, source: Path, output: Path) -> list[str]:
        return [nvcc, *self.flags, "-I", str(self.programs_dir), "-o", str(output),
                str(source), *self.link_flags]

    def key(self, nvcc: str, source: Path) -> str:
        """Hash of everything the executable depends on: sources, flags, compiler."""
        digest = hashlib.sha256()
        for path in (source, self.programs_dir / self.shared_header):
            digest.update(path.read_bytes())
        digest.update("\0".join(self.command(nvcc, source, Path("out"))).encode())
        stat = os.stat(nvcc)
        digest.update(f"{os.path.realpath(nvcc)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
        return digest.hexdigest()

    def build(self, name: str, outdir: str | os.PathLike) -> Path:
        """Compile <programs_dir>/<name>.cu into outdir/<name> and return its path."""
        nvcc = nvcc_path()
        if nvcc is None:
            raise BuildError("nvcc not found (set $NVCC or put it on PATH)")
        source = self.programs_dir / f"{name}.cu"
        if not source.is_file():
            raise FileNotFoundError(f"no program {source}")
        outdir = Path(outdir)
        outdir.mkdir(parents=True, exist_ok=True)
        exe, key_file = outdir / name, outdir / f"{name}.buildkey"
        key = self.key(nvcc, source)
        if exe.is_file() and key_file.is_file() and key_file.read_text() == key:
            return exe
        tmp = outdir / f".{name}.{os.getpid()}.tmp"
        cmd = self.command(nvcc, source, tmp)
        env = dict(os.environ, TMPDIR=str(outdir))   # nvcc's temporary files stay in outdir
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            tmp.unlink(missing_ok=True)
            raise BuildError(f"{' '.join(cmd)}\nexit {proc.returncode}\n{proc.stderr}{proc.stdout}")
        os.replace(tmp, exe)
        key_file.write_text(key)
        return exe


TEST_PROGRAMS = Compiler(PROGRAMS_DIR, NVCC_FLAGS, "common.h")


def all_programs() -> list[str]:
    """Names of all programs, sorted."""
    return sorted(p.stem for p in PROGRAMS_DIR.glob("*.cu"))


def all_invocations() -> list[tuple[str, tuple[str, ...]]]:
    """(name, args) for every mode of every program."""
    return [(name, args) for name in all_programs() if name not in STANDALONE
            for args in INVOCATIONS.get(name, [()])]


def build(name: str, outdir: str | os.PathLike) -> Path:
    """Compile tests/programs/<name>.cu into outdir/<name> and return its path."""
    return TEST_PROGRAMS.build(name, outdir)


def run_program(
    path: str | os.PathLike,
    env: Mapping[str, str | None] | None = None,
    args: Sequence[str] = (),
    timeout: float = RUN_TIMEOUT_S,
) -> subprocess.CompletedProcess:
    """Run a built program and return its CompletedProcess (text stdout/stderr).

    `env` is applied over the current environment; a value of None removes that
    variable. A non-zero exit does not raise; running past `timeout` seconds
    raises subprocess.TimeoutExpired.
    """
    full_env = dict(os.environ)
    for key, value in (env or {}).items():
        if value is None:
            full_env.pop(key, None)
        else:
            full_env[key] = value
    return subprocess.run(
        [str(path), *args], env=full_env, capture_output=True, text=True, timeout=timeout
    )


def passed(proc: subprocess.CompletedProcess, name: str) -> bool:
    """Exit status 0 and a last stdout line of exactly `PASS <name>`."""
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    return proc.returncode == 0 and bool(lines) and lines[-1].strip() == f"PASS {name}"
