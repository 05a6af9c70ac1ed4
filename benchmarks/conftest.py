"""Fixtures of the GPU benchmarks: `pytest benchmarks -m gpu` on a GPU machine.

The programs are built once per session, one all-in-one Orion pool (CUDA backend, one
vGPU per GPU) serves every Orion run, and each program's native run is kept so that the
Orion runs get the same calibrated work and report ratios. Without nvcc or a usable GPU
every benchmark is skipped. Environment: ORION_SHIM_DIR (a prebuilt orion_client/lib,
as in tests/), ORION_BENCH_QUICK=1 (the --quick budgets of run_suite.py),
ORION_BENCH_BACKEND=host (the pool on Orion's host-memory test backend, no GPU: checks
the harness only, native runs are skipped and the figures mean nothing).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import harness  # noqa: E402


def bench_quick() -> bool:
    return os.environ.get("ORION_BENCH_QUICK", "") not in ("", "0")


def bench_backend() -> str:
    return "host" if os.environ.get("ORION_BENCH_BACKEND") == "host" else "cuda"


@pytest.fixture(scope="session")
def bench_requirements() -> None:
    # checked when a benchmark runs, not at collection: CI collects these modules too
    if harness.nvcc_path() is None:
        pytest.skip("nvcc not found")
    if bench_backend() == "cuda" and not harness.gpu_present():
        pytest.skip("no usable NVIDIA GPU")


@pytest.fixture(scope="session")
def bench_shim_dir(bench_requirements) -> Path:
    if os.environ.get("ORION_SHIM_DIR"):
        return Path(os.environ["ORION_SHIM_DIR"]).resolve()
    from orion_client.native_build import build
    return build().parent.resolve()


@pytest.fixture(scope="session")
def bench_build_dir(bench_requirements, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench-programs")
    harness.build_all(out)
    return out


@pytest.fixture(scope="session")
def bench_pool(bench_requirements, tmp_path_factory):
    from orion_client.local_pool import LocalPool
    with LocalPool(backend=bench_backend(), vgpu_count=1,
                   log_dir=tmp_path_factory.mktemp("bench-pool")) as pool:
        yield pool


@pytest.fixture(scope="session")
def bench_runner(bench_build_dir, bench_shim_dir, bench_pool, tmp_path_factory):
    return harness.Runner(bench_build_dir, bench_shim_dir, bench_pool.controller,
                          tmp_path_factory.mktemp("bench-logs"),
                          host_backend=bench_backend() == "host")


@pytest.fixture(scope="session")
def native_runs() -> dict:
    """program -> its native harness.Run (the first one of the session)."""
    return {}
