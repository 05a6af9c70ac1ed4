"""The physical GPUs a server offers to the pool."""
from __future__ import annotations

import uuid as uuidlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Gpu:
    index: int
    uuid: str
    name: str
    memory_mib: int


def discover_nvml(skip: int = 0) -> list[Gpu]:
    """Every GPU NVML sees, less the first `skip` kept for native use (NATIVE_GPU_COUNT)."""
    import pynvml
    pynvml.nvmlInit()
    try:
        gpus = []
        for i in range(skip, pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            name = pynvml.nvmlDeviceGetName(h)
            uuid = pynvml.nvmlDeviceGetUUID(h)
            mem = pynvml.nvmlDeviceGetMemoryInfo(h).total
            gpus.append(Gpu(i, uuid.decode() if isinstance(uuid, bytes) else uuid,
                            name.decode() if isinstance(name, bytes) else name, mem >> 20))
        return gpus
    finally:
        pynvml.nvmlShutdown()


def simulated(node: str, count: int, memory_mib: int) -> list[Gpu]:
    """GPUs of the host-memory test backend: stable UUIDs derived from the node name."""
    return [Gpu(i, "GPU-" + str(uuidlib.uuid5(uuidlib.NAMESPACE_DNS, f"{node}/{i}")),
                "Orion Host Test Device", memory_mib) for i in range(count)]
