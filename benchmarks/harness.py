"""Build the benchmark programs and run them natively and through Orion.

Used by benchmarks/run_suite.py (the whole suite, one command) and by the pytest
benchmarks (benchmarks/test_bench_gpu.py). The report logic lives in report.py.

Modes: "native" (the real libcudart.so.13), "shm" (Orion's shim, same host: ipc:// and
shared memory), "tcp" (Orion's shim with ORION_ENABLE_NET=1: tcp:// over loopback).
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import os
import platform
import re
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from . import report

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
PROGRAMS_DIR = BENCH_DIR / "programs"

# In suite order: quick, small programs first; the application programs last.
PROGRAMS = ("launch", "roundtrip", "memcpy", "alloc", "first_call", "gemm_bound",
            "launch_bound")
# Calibrated parameters the native run prints (PARAM) and the Orion runs are given.
CALIBRATED = {"gemm_bound": ("iterations",), "launch_bound": ("steps",)}
# Programs whose whole-process wall time (as the harness sees it) is reported too.
PROCESS_WALL = ("gemm_bound", "launch_bound")

NVCC_FLAGS = (
    "-cudart", "shared",          # dynamic libcudart: Orion's shim replaces it
    "-std=c++17", "-O2",
    "-gencode", "arch=compute_90,code=[sm_90,compute_90]",
)
LINK_FLAGS = ("-ldl",)


def _test_programs_module():
    """tests/programs/build.py: how Orion's CUDA programs are compiled and cached (loaded
    by path: the module name `build` would shadow the PyPI package)."""
    spec = importlib.util.spec_from_file_location("orion_test_programs",
                                                  ROOT / "tests" / "programs" / "build.py")
    module = sys.modules.get(spec.name)
    if module is None:
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return module


_programs = _test_programs_module()
BuildError = _programs.BuildError
nvcc_path = _programs.nvcc_path
gpu_present = _programs.gpu_present
_COMPILER = _programs.Compiler(PROGRAMS_DIR, NVCC_FLAGS, "bench.h", LINK_FLAGS)


def build(name: str, outdir: str | os.PathLike) -> Path:
    """Compile benchmarks/programs/<name>.cu into outdir/<name> (cached by content)."""
    return _COMPILER.build(name, outdir)


def build_all(outdir: str | os.PathLike, names: Iterable[str] = PROGRAMS) -> dict[str, Path]:
    """Compile several programs in parallel; raises BuildError for the first failure."""
    names = list(names)
    with ThreadPoolExecutor(max_workers=max(1, min(len(names), os.cpu_count() or 1))) as pool:
        paths = list(pool.map(lambda n: build(n, outdir), names))
    return dict(zip(names, paths))


def shim_ok(shim_dir: Path) -> bool:
    return (Path(shim_dir) / "libcudart.so.13").is_file()


# ------------------------------------------------------------------------------- runs

@dataclass
class Run:
    program: str
    mode: str
    args: list[str]
    rc: int | None
    wall_s: float
    stdout: str
    stderr: str
    timed_out: bool
    parsed: report.Parsed

    @property
    def runtime(self) -> str | None:
        return self.parsed.info.get("cudart")


def _strip_dir(path_list: str, drop: Path) -> str:
    drop_real = os.path.realpath(drop)
    keep = [p for p in path_list.split(os.pathsep)
            if p and os.path.realpath(p) != drop_real]
    return os.pathsep.join(keep)


class Runner:
    """Runs the built programs in one of the modes.

    `controller`: the pool's controller address (None: only native runs possible).
    `log_dir`: client logs go to <log_dir>/client-<mode>; HOME of Orion runs is
    <log_dir>/home (empty: no ~/.orion/client.toml interferes). `host_backend`: the pool
    runs Orion's host-memory test backend (no GPU; the numbers mean nothing).
    """

    def __init__(self, exe_dir: Path, shim_dir: Path, controller: str | None,
                 log_dir: Path, host_backend: bool = False, base_env: Mapping | None = None):
        self.exe_dir, self.shim_dir = Path(exe_dir), Path(shim_dir).resolve()
        self.controller, self.log_dir = controller, Path(log_dir)
        self.host_backend = host_backend
        self.base_env = dict(os.environ if base_env is None else base_env)

    def env(self, mode: str) -> dict[str, str]:
        env = {k: v for k, v in self.base_env.items() if not k.startswith("ORION_")}
        ld = _strip_dir(env.get("LD_LIBRARY_PATH", ""), self.shim_dir)
        if mode == "native":
            if ld:
                env["LD_LIBRARY_PATH"] = ld
            else:
                env.pop("LD_LIBRARY_PATH", None)
            return env
        if mode not in report.ORION_MODES:
            raise ValueError(f"unknown mode {mode!r}")
        if not self.controller:
            raise RuntimeError("no Orion pool: only native runs are possible")
        home = self.log_dir / "home"
        home.mkdir(parents=True, exist_ok=True)
        env.update(LD_LIBRARY_PATH=os.pathsep.join(p for p in (str(self.shim_dir), ld) if p),
                   ORION_CONTROLLER=self.controller, ORION_VGPU="1",
                   ORION_ENABLE_NET="1" if mode == "tcp" else "0",
                   ORION_LOG_DIR=str(self.log_dir / f"client-{mode}"), HOME=str(home))
        if self.host_backend:
            env["ORION_TEST_HOST_BACKEND"] = "1"
        return env

    def run(self, program: str, mode: str, args: Iterable[str] = (),
            timeout: float = 300.0) -> Run:
        exe = self.exe_dir / program
        args = [str(a) for a in args]
        env = self.env(mode)
        t0 = time.monotonic()
        env["ORION_BENCH_T0_NS"] = str(time.time_ns())
        proc = subprocess.Popen([str(exe), *args], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
        timed_out = False
        try:
            stdout, stderr = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.kill()
            stdout, stderr = proc.communicate()
        wall = time.monotonic() - t0
        return Run(program, mode, args, None if timed_out else proc.returncode, wall,
                   stdout or "", stderr or "", timed_out, report.parse_output(stdout or ""))

    def runtime_ok(self, run: Run) -> bool | None:
        """Whether the expected libcudart.so.13 answered (None: the program did not say)."""
        if not run.runtime:
            return None
        inside = os.path.realpath(run.runtime).startswith(str(self.shim_dir) + os.sep)
        return inside if run.mode in report.ORION_MODES else not inside


def wait_pool_idle(pool, timeout_s: float = 20.0) -> bool:
    """Wait until the controller holds no lease (the previous client's vGPU came back)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if not pool.status().get("leases"):
                return True
        except Exception:   # the controller is busy or restarting: try again
            pass
        time.sleep(0.05)
    return False


def refused(run: Run) -> bool:
    """The run got no vGPU (the controller refused the allocation): worth retrying."""
    return (not run.timed_out and run.rc not in (0, None)
            and any("cudaErrorNoDevice" in message for _, message in run.parsed.errors))


def run_with_retry(runner: Runner, pool, program: str, mode: str, args: Iterable[str] = (),
                   timeout: float = 300.0, retries: int = 3) -> tuple[Run, int]:
    """Run once natively; through Orion, after the pool is idle, and again (up to
    `retries` times) when the allocation was refused. Returns (run, retries used).

    Why: right after a client gives its lease back, oriond's next heartbeat may still
    list the session, and the controller then rebuilds the lease; with one vGPU per GPU
    the next client is refused until oriond stops reporting it (about a second)."""
    args = list(args)
    for attempt in range(retries + 1):
        if mode != "native" and pool is not None:
            wait_pool_idle(pool)
        run = runner.run(program, mode, args, timeout)
        if mode == "native" or not refused(run) or attempt == retries:
            return run, attempt
        time.sleep(1.5)   # past one oriond heartbeat (1 s): the stale lease is dropped
    raise AssertionError("unreachable")


def calibrated_args(program: str, native: Run | None) -> list[str]:
    """The arguments that give an Orion run the same work as the native one."""
    args: list[str] = []
    if native is None:
        return args
    for name in CALIBRATED.get(program, ()):
        if name in native.parsed.params:
            args += [f"--{name}", native.parsed.params[name]]
    return args


# ------------------------------------------------------------------------ environment

def _run_text(cmd: list[str], timeout: float = 20.0) -> str | None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def gpu_info() -> dict:
    """Name, driver and memory of GPU 0 (nvidia-smi), or what cuda.bindings says."""
    out = _run_text(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,pci.bus_id,"
                     "persistence_mode,clocks.max.sm,clocks.max.mem", "--format=csv,noheader"])
    if out:
        fields = [f.strip() for f in out.splitlines()[0].split(",")]
        if len(fields) >= 7:
            return {"gpu_name": fields[0], "driver_version": fields[1],
                    "gpu_memory": fields[2], "gpu_pci_bus_id": fields[3],
                    "gpu_persistence_mode": fields[4], "gpu_max_sm_clock": fields[5],
                    "gpu_max_mem_clock": fields[6], "gpu_count": len(out.splitlines())}
    try:
        from cuda.bindings import driver
        driver.cuInit(0)
        err, dev = driver.cuDeviceGet(0)
        err, name = driver.cuDeviceGetName(64, dev)
        err, version = driver.cuDriverGetVersion()
        return {"gpu_name": name.split(b"\0")[0].decode(), "driver_version": str(version)}
    except Exception:
        return {"gpu_name": "unknown-gpu", "driver_version": None}


def _sha256(path: Path) -> str | None:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except OSError:
        return None


def sources_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(PROGRAMS_DIR.glob("*")) + sorted(BENCH_DIR.glob("*.py")):
        if path.is_file():
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def git_commit() -> str | None:
    if not (ROOT / ".git").exists():
        return None
    commit = _run_text(["git", "-C", str(ROOT), "rev-parse", "HEAD"])
    if commit:
        dirty = _run_text(["git", "-C", str(ROOT), "status", "--porcelain"])
        return commit + ("-dirty" if dirty else "")
    return None


def cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def dev_shm_free_mib() -> int | None:
    """Free space of /dev/shm, where Orion's page-locked memory lives (cudaMallocHost)."""
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return None
    return st.f_bavail * st.f_frsize >> 20


def environment(shim_dir: Path, commit: str | None = None) -> dict:
    nvcc = nvcc_path()
    nvcc_version = _run_text([nvcc, "--version"]) if nvcc else None
    if nvcc_version:
        m = re.search(r"release ([\d.]+)", nvcc_version)
        nvcc_version = m.group(1) if m else nvcc_version.splitlines()[-1]
    return {**gpu_info(), "nvcc": nvcc_version, "git_commit": commit or git_commit(),
            "shim_dir": str(shim_dir), "shim_sha256": _sha256(Path(shim_dir) / "libcudart.so.13"),
            "benchmark_sources_sha256": sources_digest(), "hostname": socket.gethostname(),
            "cpu": cpu_model(), "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "dev_shm_free_mib": dev_shm_free_mib(),
            "kernel": platform.release()}


def remove_build(build_dir: Path, names: Iterable[str] = PROGRAMS) -> None:
    """Delete what `build` wrote (executables and their keys), then the folder if empty."""
    build_dir = Path(build_dir)
    for name in names:
        for path in (build_dir / name, build_dir / f"{name}.buildkey"):
            path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        build_dir.rmdir()
