"""The UUID each vGPU shows (NVML, cudaGetDeviceProperties, orion-nv-smi).

Several vGPUs may share a physical GPU, so its UUID cannot be theirs: tools find
devices by UUID (nvmlDeviceGetHandleByUUID) and must tell them apart. A vGPU's UUID is
derived from its physical GPU's UUID and its `vgpu_id` (`<lease>-<n>`: the lease and its
position in the grant), so the controller, oriond's workers and orion-nv-smi compute
the same one without asking each other, and it stays the same for the lease's life.
"""
from __future__ import annotations

import uuid

# Fixed for good: changing it changes every vGPU's UUID.
_NAMESPACE = uuid.UUID("b34ff2f6-d6e7-4e7a-aa8d-78b1bea59415")


def vgpu_uuid(gpu_uuid: str, vgpu_id: str) -> str:
    """The vGPU's UUID, written as NVIDIA writes a GPU's: `GPU-xxxxxxxx-xxxx-...`."""
    return "GPU-" + str(uuid.uuid5(_NAMESPACE, f"{gpu_uuid}/{vgpu_id}"))
