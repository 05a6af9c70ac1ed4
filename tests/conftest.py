"""Shared fixtures: the compiled shim, the test programs, and a local pool on the
host-memory backend (CI's stand-in for a GPU server; launches are recorded, not run)."""
from __future__ import annotations

import contextlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

_BUILD_PY = ROOT / "tests" / "programs" / "build.py"
_spec = importlib.util.spec_from_file_location("orion_test_programs", _BUILD_PY)
programs = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = programs
_spec.loader.exec_module(programs)


@pytest.fixture(scope="session")
def shim_dir() -> Path:
    """libcudart.so.13 built from the current sources (once per test session), or the
    one in $ORION_SHIM_DIR on a machine that runs but cannot build it (the GPU host)."""
    import os
    if os.environ.get("ORION_SHIM_DIR"):
        return Path(os.environ["ORION_SHIM_DIR"])
    from orion_client.native_build import build
    return build().parent


@pytest.fixture(scope="session")
def program_dir(tmp_path_factory) -> Path:
    if not programs.available():
        pytest.skip("nvcc not found")
    return tmp_path_factory.mktemp("programs")


@pytest.fixture
def host_pool(tmp_path, shim_dir):
    """Controller + oriond (host backend, 2 simulated GPUs) for one test."""
    from orion_client.local_pool import LocalPool
    launch_log = tmp_path / "launches.jsonl"
    with LocalPool(backend="host", host_devices=2, log_dir=tmp_path / "logs",
                   extra_env={"ORION_HOST_LAUNCH_LOG": str(launch_log)}) as pool:
        pool.launch_log = launch_log
        yield pool


@pytest.fixture
def one_gpu_pool(tmp_path, shim_dir):
    """Controller + oriond (host backend) with one simulated GPU: a run's vGPUs share it."""
    from orion_client.local_pool import LocalPool
    with LocalPool(backend="host", host_devices=1, log_dir=tmp_path / "logs") as pool:
        yield pool


def shim_env(pool, shim_dir: Path, home: Path, **extra) -> dict:
    import os
    # the test's own settings only; ORION_SHM_RING=0 passes through, to test without ring
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ORION_") or k == "ORION_SHM_RING"}
    env.update({"LD_LIBRARY_PATH": str(shim_dir), "ORION_CONTROLLER": pool.controller,
                "ORION_TEST_HOST_BACKEND": "1", "HOME": str(home)})
    env.update({k: str(v) for k, v in extra.items()})
    return env


@contextlib.contextmanager
def until_ready(args, env: dict):
    """A program that says READY once it holds what it came for (e.g. `hold`): started
    with `env`, yielded from then on, killed at the end whatever happened."""
    proc = subprocess.Popen([str(a) for a in args], stdout=subprocess.PIPE, text=True,
                            env=env)
    try:
        assert proc.stdout.readline().strip() == "READY"
        yield proc
    finally:
        proc.kill()
        proc.wait()


def holding(pool, shim_dir: Path, program_dir: Path, home: Path, seconds: int, **env):
    """The `hold` program through the shim on the host backend (see until_ready)."""
    return until_ready([programs.build("hold", program_dir), seconds],
                       shim_env(pool, shim_dir, home, **env))


def shared_memory_of(pid: int) -> list[str]:
    """A client's named shared-memory objects (segments, call rings) in /dev/shm."""
    return sorted(p.name for p in Path("/dev/shm").glob(f"orion-*{pid}-*")
                  if p.name.split("-")[-2] == str(pid))
