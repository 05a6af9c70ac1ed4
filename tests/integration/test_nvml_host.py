"""The NVML shim on the host backend: pynvml, unchanged, against libnvidia-ml.so.1 in
real processes (controller, oriond, worker). Sensors are the host backend's fixed
values; identity, memory and processes are the session's own."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pytest

from conftest import shim_env

pynvml = pytest.importorskip("pynvml")


def run_python(pool, shim_dir, home, code: str, **env) -> dict:
    """Run `code` (which sets `out`) under the shims; its `out`, as JSON."""
    script = "import json, pynvml as N\nout = {}\n" + textwrap.dedent(code) + \
        "\nprint(json.dumps(out))"
    proc = subprocess.run([sys.executable, "-c", script], env=shim_env(pool, shim_dir, home, **env),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_pynvml_sees_the_vgpus(host_pool, shim_dir, tmp_path):
    out = run_python(host_pool, shim_dir, tmp_path, """
        import os
        N.nvmlInit()
        out["count"] = N.nvmlDeviceGetCount()
        out["driver"] = N.nvmlSystemGetDriverVersion()
        out["cuda"] = N.nvmlSystemGetCudaDriverVersion()
        out["devices"] = []
        for i in range(out["count"]):
            h = N.nvmlDeviceGetHandleByIndex(i)
            mem = N.nvmlDeviceGetMemoryInfo(h)
            uuid, serial = N.nvmlDeviceGetUUID(h), N.nvmlDeviceGetSerial(h)
            bus = N.nvmlDeviceGetPciInfo(h).busId
            bus = bus.decode() if isinstance(bus, bytes) else bus
            out["devices"].append({
                "name": N.nvmlDeviceGetName(h), "uuid": uuid, "total": mem.total,
                "used": mem.used, "free": mem.free,
                "by_uuid": N.nvmlDeviceGetIndex(N.nvmlDeviceGetHandleByUUID(uuid)),
                "by_serial": N.nvmlDeviceGetIndex(N.nvmlDeviceGetHandleBySerial(serial)),
                "by_bus": N.nvmlDeviceGetIndex(N.nvmlDeviceGetHandleByPciBusId(bus)),
                "util": N.nvmlDeviceGetUtilizationRates(h).gpu,
                "temperature": N.nvmlDeviceGetTemperature(h, N.NVML_TEMPERATURE_GPU),
                "power": N.nvmlDeviceGetPowerUsage(h),
                "limit": N.nvmlDeviceGetEnforcedPowerLimit(h),
                "sm_clock": N.nvmlDeviceGetClockInfo(h, N.NVML_CLOCK_SM),
                "cc": list(N.nvmlDeviceGetCudaComputeCapability(h)),
                "pids": [p.pid for p in N.nvmlDeviceGetComputeRunningProcesses(h)],
                "graphics": len(N.nvmlDeviceGetGraphicsRunningProcesses(h)),
            })
        out["pid"] = os.getpid()
        try:
            N.nvmlDeviceGetFanSpeed(N.nvmlDeviceGetHandleByIndex(0))
        except N.NVMLError_NotSupported:
            out["fan"] = "not supported"
        try:
            N.nvmlDeviceGetBAR1MemoryInfo(N.nvmlDeviceGetHandleByIndex(0))
        except N.NVMLError_NotSupported:
            out["bar1"] = "not supported"
        N.nvmlShutdown()
    """, ORION_VGPU=2, ORION_GMEM=4096)
    assert out["count"] == 2 and out["cuda"] == 13000 and out["driver"] == "580.65.06"
    assert out["fan"] == out["bar1"] == "not supported"
    first, second = out["devices"]
    assert first["uuid"] != second["uuid"]
    for i, d in enumerate(out["devices"]):
        assert d["name"] == "Orion Host Test Device"
        assert (d["total"], d["used"], d["free"]) == (4096 << 20, 0, 4096 << 20)
        assert d["by_uuid"] == d["by_serial"] == d["by_bus"] == i
        assert (d["util"], d["temperature"], d["power"], d["limit"]) == (0, 33, 71000, 700000)
        assert d["sm_clock"] == 345 and d["cc"] == [9, 0]
        assert d["pids"] == [out["pid"]] and d["graphics"] == 0


def test_vgpus_sharing_a_gpu_have_their_own_uuids(one_gpu_pool, shim_dir, tmp_path):
    out = run_python(one_gpu_pool, shim_dir, tmp_path, """
        import ctypes, os, subprocess, sys, uuid
        from orion_controller.client import ControlClient
        rt = ctypes.CDLL("libcudart.so.13")
        prop = ctypes.create_string_buffer(4096)   # cudaDeviceProp: name[256], then uuid
        out["cuda"] = []
        for i in range(2):
            assert rt.cudaGetDeviceProperties(prop, i) == 0
            out["cuda"].append("GPU-" + str(uuid.UUID(bytes=prop.raw[256:272])))
        N.nvmlInit()
        out["nvml"] = [N.nvmlDeviceGetUUID(N.nvmlDeviceGetHandleByIndex(i)) for i in range(2)]
        out["by_uuid"] = [N.nvmlDeviceGetIndex(N.nvmlDeviceGetHandleByUUID(u))
                          for u in out["nvml"]]
        smi = [sys.executable, "-m", "orion_client.nvsmi"]
        out["smi"] = subprocess.run(smi + ["--query-gpu=uuid", "--format=csv,noheader"],
                                    capture_output=True, text=True).stdout.split()
        out["smi_i"] = subprocess.run(smi + ["-L", "-i", out["nvml"][1]],
                                      capture_output=True, text=True).stdout
        with ControlClient(os.environ["ORION_CONTROLLER"]) as client:
            status = client.request({"op": "status"})
        out["physical"] = status["nodes"][0]["gpus"][0]["uuid"]
        out["granted"] = [v["vgpu_uuid"] for v in status["leases"][0]["vgpus"]]
        try:
            N.nvmlDeviceGetHandleByUUID(out["physical"])
        except N.NVMLError_NotFound:
            out["by_physical"] = "not found"
    """, ORION_VGPU=2, ORION_GMEM=2048, ORION_CLIENT_ID="carol")
    first, second = out["nvml"]
    assert first != second and out["physical"] not in out["nvml"]
    # one identity each, whoever shows it
    assert out["cuda"] == out["smi"] == out["granted"] == out["nvml"]
    assert out["by_uuid"] == [0, 1] and out["by_physical"] == "not found"
    assert out["smi_i"] == f"GPU 1: Orion Host Test Device (UUID: {second})\n"


def test_cuda_and_nvml_share_one_lease_and_its_memory(host_pool, shim_dir, tmp_path):
    out = run_python(host_pool, shim_dir, tmp_path, """
        import ctypes
        rt = ctypes.CDLL("libcudart.so.13")
        ptr = ctypes.c_void_p()
        assert rt.cudaMalloc(ctypes.byref(ptr), ctypes.c_size_t(64 << 20)) == 0
        N.nvmlInit()   # ORION_VGPU is unset: the runtime's vGPU, not a preview
        h = N.nvmlDeviceGetHandleByIndex(0)
        out["count"] = N.nvmlDeviceGetCount()
        out["used"] = N.nvmlDeviceGetMemoryInfo(h).used
        out["process_used"] = N.nvmlDeviceGetComputeRunningProcesses(h)[0].usedGpuMemory
        # an error owed to the next CUDA call stays the application's
        assert rt.cudaMemsetAsync(ctypes.c_void_p(0x10), 0, ctypes.c_size_t(4), None) == 0
        out["serial"] = N.nvmlDeviceGetSerial(h)
        out["sync"] = rt.cudaDeviceSynchronize()
    """)
    assert out["count"] == 1 and out["used"] == out["process_used"] == 64 << 20
    assert out["sync"] == 1   # cudaErrorInvalidValue, from the memset
    assert out["serial"]
    assert not host_pool.status()["leases"]   # one lease, given back at exit


def test_without_orion_vgpu_a_monitor_sees_what_a_new_run_would_get(host_pool, shim_dir,
                                                                    tmp_path):
    out = run_python(host_pool, shim_dir, tmp_path, """
        N.nvmlInit()
        h = N.nvmlDeviceGetHandleByIndex(0)
        out["count"] = N.nvmlDeviceGetCount()
        out["name"] = N.nvmlDeviceGetName(h)
        out["total"] = N.nvmlDeviceGetMemoryInfo(h).total
        out["pids"] = N.nvmlDeviceGetComputeRunningProcesses(h)
        out["uuid"] = N.nvmlDeviceGetUUID(h)
        try:
            N.nvmlDeviceGetTemperature(h, N.NVML_TEMPERATURE_GPU)
        except N.NVMLError_NotSupported:
            out["temperature"] = "not supported"
        import os
        from orion_controller.client import ControlClient
        with ControlClient(os.environ["ORION_CONTROLLER"]) as client:
            out["leases"] = client.request({"op": "status"})["leases"]
            [out["grant"]] = client.request({"op": "preview", "gmem": 3000})["vgpus"]
    """, ORION_GMEM=3000)
    assert out["count"] == 1 and out["name"] == "Orion Host Test Device"
    assert out["total"] == 3000 << 20 and out["pids"] == []
    assert out["temperature"] == "not supported"
    assert out["leases"] == []   # the preview's grant was given back at once
    # the previewed vGPU's own UUID, not its physical GPU's
    assert out["uuid"] == out["grant"]["vgpu_uuid"] != out["grant"]["gpu_uuid"]


def test_an_unreachable_pool_is_driver_not_loaded(shim_dir, tmp_path):
    class Nowhere:
        controller = "127.0.0.1:1"
    started = time.monotonic()
    out = run_python(Nowhere, shim_dir, tmp_path, """
        try:
            N.nvmlInit()
        except N.NVMLError_DriverNotLoaded:
            out["init"] = "driver not loaded"
    """, ORION_VGPU=1)
    assert out["init"] == "driver not loaded" and time.monotonic() - started < 10
