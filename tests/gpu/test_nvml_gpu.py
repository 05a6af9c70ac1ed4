"""The NVML shim and orion-nv-smi on the real server: pynvml, unchanged, sees the vGPUs a
run holds with the physical GPU's name and sensors and UUIDs of their own (two vGPUs of
one GPU must be told apart), and orion-nv-smi's CSV has nvidia-smi's columns."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import programs, until_ready
from test_shim_gpu import gpu_pool  # noqa: F401  (the module's pool fixture)

pytestmark = pytest.mark.gpu
QUERY = ("index,name,uuid,memory.total,memory.used,memory.free,utilization.gpu,"
         "temperature.gpu,power.draw,driver_version")


def orion_env(pool, shim_dir, home, **extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ORION_") and k != "LD_LIBRARY_PATH"}
    env.update(LD_LIBRARY_PATH=str(shim_dir), ORION_CONTROLLER=pool.controller,
               HOME=str(home))
    env.update({k: str(v) for k, v in extra.items()})
    return env


def native_gpu() -> dict:
    """The physical GPU 0 through the real NVML (this process has no shim)."""
    import pynvml as nvml
    nvml.nvmlInit()
    try:
        handle = nvml.nvmlDeviceGetHandleByIndex(0)
        return {"name": nvml.nvmlDeviceGetName(handle), "uuid": nvml.nvmlDeviceGetUUID(handle),
                "driver": nvml.nvmlSystemGetDriverVersion()}
    finally:
        nvml.nvmlShutdown()


def test_pynvml_sees_two_vgpus_of_4096_mib(gpu_pool, shim_dir, tmp_path):
    code = textwrap.dedent("""
        import json, pynvml as N
        N.nvmlInit()
        out = []
        for i in range(N.nvmlDeviceGetCount()):
            h = N.nvmlDeviceGetHandleByIndex(i)
            uuid = N.nvmlDeviceGetUUID(h)
            out.append({"name": N.nvmlDeviceGetName(h), "uuid": uuid,
                        "by_uuid": N.nvmlDeviceGetIndex(N.nvmlDeviceGetHandleByUUID(uuid)),
                        "total": N.nvmlDeviceGetMemoryInfo(h).total,
                        "temperature": N.nvmlDeviceGetTemperature(h, 0),
                        "power": N.nvmlDeviceGetPowerUsage(h),
                        "driver": N.nvmlSystemGetDriverVersion()})
        print(json.dumps(out))
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env=orion_env(gpu_pool, shim_dir, tmp_path,
                                                     ORION_VGPU=2, ORION_GMEM=4096))
    assert proc.returncode == 0, proc.stderr
    devices = json.loads(proc.stdout.splitlines()[-1])
    physical = native_gpu()
    assert len(devices) == 2 and devices[0]["uuid"] != devices[1]["uuid"]
    for i, device in enumerate(devices):
        assert device["by_uuid"] == i and device["uuid"] != physical["uuid"]
        assert device["total"] == 4096 << 20
        assert device["name"] == physical["name"] and device["driver"] == physical["driver"]
        assert 0 < device["temperature"] < 120 and device["power"] > 0


def test_orion_nv_smi_shows_a_running_program_in_nvidia_smi_columns(
        gpu_pool, shim_dir, program_dir, tmp_path):
    hold = programs.build("hold", program_dir)
    with until_ready([hold, 120], orion_env(gpu_pool, shim_dir, tmp_path, ORION_VGPU=2,
                                            ORION_GMEM=4096,
                                            ORION_CLIENT_ID="alice")) as proc:
        env = orion_env(gpu_pool, shim_dir, tmp_path, ORION_CLIENT_ID="alice")
        env.pop("LD_LIBRARY_PATH")
        ours = subprocess.run([sys.executable, "-m", "orion_client.nvsmi",
                               f"--query-gpu={QUERY}", "--format=csv"], env=env,
                              capture_output=True, text=True, timeout=60)
        real = subprocess.run(["nvidia-smi", f"--query-gpu={QUERY}", "--format=csv"],
                              capture_output=True, text=True, timeout=60)
        table = subprocess.run([sys.executable, "-m", "orion_client.nvsmi"], env=env,
                               capture_output=True, text=True, timeout=60).stdout
    assert ours.returncode == 0, ours.stderr
    header, *rows = ours.stdout.splitlines()
    assert header == real.stdout.splitlines()[0] and len(rows) == 2
    first, second = ([cell.strip() for cell in row.split(",")] for row in rows)
    assert first[3] == "4096 MiB" and first[2] != second[2]   # one UUID each
    used = int(first[4].split()[0])
    assert 64 <= used < 4096, rows[0]   # the program's 64 MiB (and its context's share)
    assert str(proc.pid) in table and table.count("/ 4096MiB") == 2
