"""NVML answers of the host-memory test backend: the session's real memory accounting
and, for sensors, fixed plausible values of an idle H100 (there is no GPU to read)."""
from __future__ import annotations

from .. import backend as B
from .cuda_nvml import NA, NVML_INFO, pack_info

DRIVER_VERSION = "580.65.06"


def gpu_sensors(gpu_index: int) -> dict:
    """What an idle H100 SXM would report; it has no fan."""
    return {"gpu_util": 0, "memory_util": 0, "temperature": 33, "power_usage": 71_000,
            "power_limit": 700_000, "enforced_power_limit": 700_000, "fan_speed": NA,
            "pstate": 0, "clocks": [345, 345, 2619, 765], "max_clocks": [1980, 1980, 2619, 1980],
            "driver_version": DRIVER_VERSION, "serial": f"16520{gpu_index:08d}",
            "pci_bus_id": f"00000000:{0x19 + gpu_index:02X}:00.0"}


class HostNvmlCalls:
    """Mixin of HostBackend (its `memory` charges each vGPU's budget)."""

    def orionNvmlDeviceInfo(self, device: int, length: int, size: int):
        if length != NVML_INFO.size or not 0 <= device < len(self.vgpus):
            return (B.cudaErrorInvalidValue,)
        return (0, pack_info(self.memory.used[device], gpu_sensors(self.vgpus[device].gpu_index)))
