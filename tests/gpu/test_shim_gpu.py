"""The GPU suite: every test program natively and through Orion on the real server
(controller + oriond + a cuda-python worker), on the same GPU, compared."""
from __future__ import annotations

import os
import subprocess

import pytest

from conftest import programs
from test_programs_gpu import _describe, _gpu_present

pytestmark = pytest.mark.gpu
INVOCATIONS = programs.all_invocations()


@pytest.fixture(scope="module")
def gpu_pool(tmp_path_factory, shim_dir):
    if not programs.available() or not _gpu_present():
        pytest.skip("needs nvcc and an NVIDIA GPU")
    from orion_client.local_pool import LocalPool
    with LocalPool(backend="cuda", log_dir=tmp_path_factory.mktemp("gpu-pool")) as pool:
        yield pool


def through_orion(pool, shim_dir, exe, args, home, vgpu=1):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ORION_") and k != "LD_LIBRARY_PATH"}
    env.update(LD_LIBRARY_PATH=str(shim_dir), ORION_CONTROLLER=pool.controller,
               ORION_VGPU=str(vgpu), HOME=str(home))
    return subprocess.run([str(exe), *args], env=env, capture_output=True, text=True,
                          timeout=programs.RUN_TIMEOUT_S)


def client_log(home) -> str:
    return "\n".join(p.read_text() for p in sorted((home / ".orion" / "log").glob("*.log")))


@pytest.mark.parametrize("name,args", INVOCATIONS,
                         ids=[" ".join((n, *a)) for n, a in INVOCATIONS])
def test_program_through_orion_matches_native(gpu_pool, shim_dir, program_dir, tmp_path,
                                              name, args):
    exe = programs.build(name, program_dir)
    native = programs.run_program(exe, env={"ORION_TEST_HOST_BACKEND": None}, args=args)
    assert programs.passed(native, name), "native run failed:\n" + _describe(native)
    orion = through_orion(gpu_pool, shim_dir, exe, args, tmp_path,
                          vgpu=2 if name == "multi_gpu" else 1)
    assert programs.passed(orion, name), (_describe(orion) + "\n--- client log\n" +
                                          client_log(tmp_path))
    if name == "printf_assert" and not args:
        for line in programs.PRINTF_LINES:
            assert orion.stdout.splitlines().count(line) == 1, f"{line!r} missing"
