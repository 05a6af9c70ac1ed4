"""What NVML says about the vGPUs of a session and the GPUs under them.

The client's NVML shim knows a vGPU's identity from its snapshot; what changes it asks
with orionNvmlDeviceInfo: the memory the session holds on the vGPU (the accounting its
size is enforced with, so NVML agrees with cudaMemGetInfo) and the physical GPU's
sensors and driver, read here with NVML (pynvml) by the GPU's UUID. `gpu_sensors` also
serves oriond, which reports the GPUs of its node to orion-nv-smi.

NVML_INFO is struct orion_nvml_info (native/src/nvml/nvml_shim.h); a sensor the GPU
does not report travels as NA and the client answers NVML_ERROR_NOT_SUPPORTED for it.
"""
from __future__ import annotations

import struct
import threading

from .. import backend as B

NVML_INFO_VERSION = 1
NA = 0xFFFFFFFF
# version, reserved, memory used, gpu/memory utilisation, temperature, power usage,
# power limit, enforced power limit, fan, pstate, clocks[4], max clocks[4], driver
# version, serial, reserved[16]
NVML_INFO = struct.Struct("<IIQ8I4I4I80s32s16I")
SENSORS = ("gpu_util", "memory_util", "temperature", "power_usage", "power_limit",
           "enforced_power_limit", "fan_speed", "pstate")
_init_lock = threading.Lock()
_initialised = False


def pack_info(memory_used: int, sensors: dict) -> bytes:
    """struct orion_nvml_info from a sensor dict (keys of `gpu_sensors`; missing: NA)."""
    def clocks(key: str) -> list[int]:
        values = list(sensors.get(key) or [])
        return (values + [NA] * 4)[:4]
    return NVML_INFO.pack(NVML_INFO_VERSION, 0, memory_used,
                          *(sensors.get(k, NA) for k in SENSORS),
                          *clocks("clocks"), *clocks("max_clocks"),
                          sensors.get("driver_version", "").encode()[:79],
                          sensors.get("serial", "").encode()[:31], *[0] * 16)


def _nvml():
    """pynvml, initialised once per process (NVML counts init calls; we never shut down)."""
    global _initialised
    import pynvml
    with _init_lock:
        if not _initialised:
            pynvml.nvmlInit()
            _initialised = True
    return pynvml


def gpu_sensors(uuid: str) -> dict:
    """The physical GPU's sensors now; a value it does not report is NA."""
    nvml = _nvml()
    handle = nvml.nvmlDeviceGetHandleByUUID(uuid)

    def read(fn, *args):
        try:
            value = fn(handle, *args)
        except nvml.NVMLError:
            return NA
        return _text(value)

    util = read(nvml.nvmlDeviceGetUtilizationRates)
    pci = read(nvml.nvmlDeviceGetPciInfo)
    driver = nvml.nvmlSystemGetDriverVersion()
    serial = read(nvml.nvmlDeviceGetSerial)
    return {
        "gpu_util": NA if util == NA else util.gpu,
        "memory_util": NA if util == NA else util.memory,
        "temperature": read(nvml.nvmlDeviceGetTemperature, nvml.NVML_TEMPERATURE_GPU),
        "power_usage": read(nvml.nvmlDeviceGetPowerUsage),
        "power_limit": read(nvml.nvmlDeviceGetPowerManagementLimit),
        "enforced_power_limit": read(nvml.nvmlDeviceGetEnforcedPowerLimit),
        "fan_speed": read(nvml.nvmlDeviceGetFanSpeed),
        "pstate": read(nvml.nvmlDeviceGetPerformanceState),
        "clocks": [read(nvml.nvmlDeviceGetClockInfo, t) for t in range(4)],
        "max_clocks": [read(nvml.nvmlDeviceGetMaxClockInfo, t) for t in range(4)],
        "driver_version": _text(driver),
        "serial": "" if serial == NA else serial,
        "pci_bus_id": "N/A" if pci == NA else _text(pci.busId),
    }


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else value


def gpu_processes(uuid: str) -> dict[int, int]:
    """pid -> bytes of GPU memory, for every compute process on the physical GPU."""
    nvml = _nvml()
    handle = nvml.nvmlDeviceGetHandleByUUID(uuid)
    return {p.pid: p.usedGpuMemory or 0
            for p in nvml.nvmlDeviceGetComputeRunningProcesses(handle)}


def node_gpus(gpus: dict, workers: dict[int, str], backend: str) -> list[dict]:
    """oriond's `gpu_info` reply for its GPUs ({index: Gpu}): each one's sensors, and the
    memory the session workers ({pid: lease}) hold on it (`used_bytes`, None where the
    backend cannot tell)."""
    if backend == "host":
        from .host_nvml import gpu_sensors as host_sensors
        return [{"index": i, "uuid": g.uuid, **host_sensors(i),
                 "processes": [{"pid": pid, "lease": lease, "used_bytes": None}
                               for pid, lease in workers.items()]} for i, g in gpus.items()]
    return [{"index": i, "uuid": g.uuid, **gpu_sensors(g.uuid),
             "processes": [{"pid": pid, "lease": workers[pid], "used_bytes": used}
                           for pid, used in gpu_processes(g.uuid).items() if pid in workers]}
            for i, g in gpus.items()]


class NvmlCalls:
    """Mixin of CudaBackend (it keeps `used`, bytes allocated per vGPU)."""

    def orionNvmlDeviceInfo(self, device: int, length: int, size: int):
        if length != NVML_INFO.size or not 0 <= device < len(self.vgpus):
            return (B.cudaErrorInvalidValue,)
        return (0, pack_info(self.used[device], gpu_sensors(self.vgpus[device].uuid)))
