"""Values the controller's modules share: frozen dataclasses, no behaviour beyond views."""
from __future__ import annotations

from dataclasses import dataclass

from orion_controller.identity import vgpu_uuid

FULL_RATIO = 100             # % of a physical GPU: a whole one

# QoS of a request (ORION_RES_EXCLUSIVE / _SHARED_CORE / _SHARED_ALL). Only the shared
# modes may use overcommitted capacity; see `inventory.Device.caps`.
EXCLUSIVE, SHARED_CORE, SHARED_ALL = "exclusive", "shared_core", "shared_all"
QOS_MODES = (EXCLUSIVE, SHARED_CORE, SHARED_ALL)

LOCAL_FIRST, LOCAL_ONLY = "local-first", "local-only"
SCHEDULE_RULES = (LOCAL_FIRST, LOCAL_ONLY)


@dataclass(frozen=True)
class Gpu:
    """A physical GPU as its node registered it."""

    uuid: str
    name: str
    index: int
    memory_mib: int
    type: str = "GPU"          # ORION_DEVICE_TYPE matches this (GPU, MLU, DCU...)
    vendor: str = "NVIDIA"     # quotas are kept per client, type and vendor


@dataclass(frozen=True)
class Demand:
    """What one allocate request asks for, checked. Hashable: refusals are cached by it.

    None means "the default of the GPU it lands on" (gmem, ratio) or "any" (filters).
    """

    vgpu: int
    gmem: int | None    # MiB per vGPU; default: the GPU's memory // its node's vgpu_count
    ratio: int | None   # % of a GPU per vGPU; default: 100 // the node's vgpu_count
    cross_node: bool = False
    device_ids: tuple[str, ...] = ()
    device_name: str | None = None
    device_type: str | None = None
    k8s_node: str | None = None
    schedule_rule: str = LOCAL_FIRST
    qos: str = EXCLUSIVE
    host: str | None = None    # the client's host; schedule_rule is relative to it

    def describe(self) -> str:
        gmem = "default memory" if self.gmem is None else f"{self.gmem} MiB"
        ratio = "default ratio" if self.ratio is None else f"{self.ratio} %"
        extras = [f"{name} {value!r}" for name, value in (
            ("device_name", self.device_name), ("device_type", self.device_type),
            ("k8s_node", self.k8s_node)) if value is not None]
        if self.device_ids:
            extras.append(f"device_ids [{', '.join(self.device_ids)}]")
        if self.cross_node:
            extras.append("cross_node")
        if self.schedule_rule == LOCAL_ONLY:
            extras.append(f"local-only on {self.host!r}")
        if self.qos != EXCLUSIVE:
            extras.append(f"qos {self.qos}")
        return ", ".join([f"{self.vgpu} vGPU(s) of {gmem}", ratio, *extras])


@dataclass(frozen=True)
class Owner:
    """Who asked: shown in tasks; client_id is the identity quotas are kept for."""

    client_id: str | None = None
    host: str | None = None
    pid: int | None = None
    group_id: str | None = None
    reserved: bool = False     # keep the group's vGPUs between runs (release_group ends it)

    def describe(self) -> str:
        known = [f"{key}={value}" for key, value in (
            ("client_id", self.client_id), ("host", self.host), ("pid", self.pid),
            ("group_id", self.group_id)) if value is not None]
        return " ".join(known) or "anonymous client"


@dataclass(frozen=True)
class VGpu:
    """One granted vGPU; `wire()` is the entry of the allocate reply and of heartbeat grants,
    with the vGPU's own UUID beside its physical GPU's (`identity.vgpu_uuid`)."""

    vgpu_id: str
    server: str
    node: str
    gpu_uuid: str
    gpu_index: int
    gpu_name: str
    memory_mib: int   # of the vGPU, not of the physical GPU
    ratio: int

    def wire(self) -> dict:
        # vars(), not asdict(): asdict deep-copies, a cost on every reply and status line
        return {**vars(self), "vgpu_uuid": vgpu_uuid(self.gpu_uuid, self.vgpu_id)}
