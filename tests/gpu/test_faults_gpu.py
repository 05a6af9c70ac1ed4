"""Faults on the real server: a client killed mid-kernel has its GPU memory freed within
5 s, and a kernel fault in one session leaves another session on the same GPU unharmed."""
from __future__ import annotations

import subprocess
import time

import pytest

from conftest import programs, shared_memory_of, until_ready
from test_nvml_gpu import orion_env
from test_shim_gpu import gpu_pool  # noqa: F401  (the module's pool fixture)

pytestmark = pytest.mark.gpu


def gpu_memory_used_mib() -> float:
    import pynvml as nvml
    nvml.nvmlInit()
    try:
        return nvml.nvmlDeviceGetMemoryInfo(nvml.nvmlDeviceGetHandleByIndex(0)).used / 2**20
    finally:
        nvml.nvmlShutdown()


def test_client_killed_mid_kernel_frees_its_gpu_memory_within_5_s(
        gpu_pool, shim_dir, program_dir, tmp_path, record_property):
    spin = programs.build("spin", program_dir)
    before = gpu_memory_used_mib()
    proc = subprocess.Popen([str(spin), "60", "4096"], stdout=subprocess.PIPE, text=True,
                            env=orion_env(gpu_pool, shim_dir, tmp_path, ORION_VGPU=1))
    try:
        assert proc.stdout.readline().startswith("READY")
        assert proc.stdout.readline().startswith("WORK")   # kernels are running
        assert gpu_memory_used_mib() > before + 4000
    finally:
        proc.kill()
        proc.wait()
    killed = time.monotonic()
    while gpu_memory_used_mib() > before + 256 and time.monotonic() < killed + 5:
        time.sleep(0.05)
    freed_after = time.monotonic() - killed
    assert gpu_memory_used_mib() <= before + 256, f"still {gpu_memory_used_mib()} MiB used"
    assert shared_memory_of(proc.pid) == [], "its shared memory outlived it"
    record_property("freed_after_s", round(freed_after, 2))   # in the JUnit report


def test_a_faulting_session_leaves_its_neighbour_unharmed(gpu_pool, shim_dir, program_dir,
                                                          tmp_path):
    hold = programs.build("hold", program_dir)
    faulty = programs.build("sticky_error", program_dir)
    with until_ready([hold, 6], orion_env(gpu_pool, shim_dir, tmp_path / "a",
                                          ORION_VGPU=1)) as neighbour:
        fault = subprocess.run([str(faulty)], capture_output=True, text=True, timeout=120,
                               env=orion_env(gpu_pool, shim_dir, tmp_path / "b",
                                             ORION_VGPU=1))
        assert programs.passed(fault, "sticky_error"), fault.stdout + fault.stderr
        rest = neighbour.communicate(timeout=60)[0]
    assert neighbour.returncode == 0 and "PASS hold" in rest, rest


def test_module_variables_count_against_the_vgpu(gpu_pool, shim_dir, program_dir, tmp_path):
    exe = programs.build("module_globals", program_dir)
    fits = subprocess.run([str(exe)], capture_output=True, text=True, timeout=120,
                          env=orion_env(gpu_pool, shim_dir, tmp_path, ORION_VGPU=1,
                                        ORION_GMEM=1024))
    assert programs.passed(fits, "module_globals"), fits.stdout + fits.stderr
    assert "USED_GROWTH_MIB 96" in fits.stdout
    too_small = subprocess.run([str(exe), "expect-oom"], capture_output=True, text=True,
                               timeout=120, env=orion_env(gpu_pool, shim_dir, tmp_path,
                                                          ORION_VGPU=1, ORION_GMEM=64))
    assert programs.passed(too_small, "module_globals"), too_small.stdout + too_small.stderr


def test_graph_memory_must_fit_the_vgpu_to_instantiate(gpu_pool, shim_dir, program_dir,
                                                      tmp_path):
    exe = programs.build("graph_memory", program_dir)
    proc = subprocess.run([str(exe), "instantiate-oom"], capture_output=True, text=True,
                          timeout=120, env=orion_env(gpu_pool, shim_dir, tmp_path,
                                                     ORION_VGPU=1, ORION_GMEM=64))
    assert programs.passed(proc, "graph_memory"), proc.stdout + proc.stderr


def test_another_sessions_memory_is_out_of_reach(gpu_pool, shim_dir, program_dir, tmp_path):
    exe = programs.build("foreign_pointer", program_dir)
    owner = subprocess.Popen([str(exe), "own", "5"], stdout=subprocess.PIPE, text=True,
                             env=orion_env(gpu_pool, shim_dir, tmp_path / "a", ORION_VGPU=1))
    try:
        pointer = owner.stdout.readline().split()[1]
        assert owner.stdout.readline().strip() == "READY"
        intruder = subprocess.run([str(exe), pointer], capture_output=True, text=True,
                                  timeout=120, env=orion_env(gpu_pool, shim_dir,
                                                             tmp_path / "b", ORION_VGPU=1))
        rest = owner.communicate(timeout=60)[0]
    finally:
        owner.kill()
        owner.wait()
    assert programs.passed(intruder, "foreign_pointer"), intruder.stdout + intruder.stderr
    assert owner.returncode == 0 and "PASS foreign_pointer" in rest, rest
