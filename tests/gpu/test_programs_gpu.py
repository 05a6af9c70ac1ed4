"""Run the CUDA test programs natively (no Orion shim) on a real GPU.

This proves that the programs themselves are right, so that a failure through the
shim points at Orion. Skipped without nvcc or without a working GPU.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest


def _load_programs_module():
    """tests/programs/build.py, loaded by path (tests/conftest.py may have already)."""
    name = "orion_test_programs"
    if name in sys.modules:
        return sys.modules[name]
    path = Path(__file__).resolve().parents[1] / "programs" / "build.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


programs = _load_programs_module()


def _gpu_present() -> bool:
    return programs.gpu_present()


pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module", autouse=True)
def _require_gpu():
    # Checked when a test runs, not at collection: CI collects this module too.
    if not programs.available():
        pytest.skip("nvcc not found")
    if not _gpu_present():
        pytest.skip("no usable NVIDIA GPU")


# Native runs: no shim (nothing here points LD_LIBRARY_PATH at it), and kernels
# results are checked.
NATIVE_ENV = {"ORION_TEST_HOST_BACKEND": None}

# `program_dir` (the build cache for the session) comes from tests/conftest.py.


def _describe(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def _params(invocations):
    return [pytest.param(name, args, id=" ".join((name, *args))) for name, args in invocations]


@pytest.mark.parametrize("name,args", _params(programs.all_invocations()))
def test_program_native(program_dir, name, args):
    exe = programs.build(name, program_dir)
    proc = programs.run_program(exe, env=NATIVE_ENV, args=args)
    assert programs.passed(proc, name), _describe(proc)
    if name == "printf_assert" and not args:
        lines = proc.stdout.splitlines()
        for expected in programs.PRINTF_LINES:
            assert lines.count(expected) == 1, f"{expected!r} not printed once\n{_describe(proc)}"


# The host-backend code paths (ORION_TEST_HOST_BACKEND=1) run natively too: kernels
# still execute, their results just go unchecked. Invocations that need a device
# error to happen are left out, since on a real GPU it does happen.
@pytest.mark.parametrize(
    "name,args",
    _params(inv for inv in programs.all_invocations() if inv not in programs.EXPECTS_DEVICE_ERROR),
)
def test_program_host_backend_paths_native(program_dir, name, args):
    exe = programs.build(name, program_dir)
    proc = programs.run_program(exe, env={"ORION_TEST_HOST_BACKEND": "1"}, args=args)
    assert programs.passed(proc, name), _describe(proc)
