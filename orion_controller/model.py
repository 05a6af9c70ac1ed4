"""Values the pool and the placement share: frozen dataclasses, no behaviour beyond views."""
from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Gpu:
    """A physical GPU as its node registered it."""

    uuid: str
    name: str
    index: int
    memory_mib: int


@dataclass(frozen=True)
class Demand:
    """One allocate request, checked. None means "the default of the GPU it lands on"."""

    vgpu: int
    gmem: int | None    # MiB per vGPU; default: the GPU's memory // its node's vgpu_count
    ratio: int | None   # % of a GPU per vGPU; default: 100 // the node's vgpu_count

    def describe(self) -> str:
        gmem = "default memory" if self.gmem is None else f"{self.gmem} MiB"
        ratio = "default ratio" if self.ratio is None else f"{self.ratio} %"
        return f"{self.vgpu} vGPU(s) of {gmem}, {ratio}"


@dataclass(frozen=True)
class VGpu:
    """One granted vGPU; `wire()` is the entry of the allocate reply and of heartbeat grants."""

    vgpu_id: str
    server: str
    node: str
    gpu_uuid: str
    gpu_index: int
    gpu_name: str
    memory_mib: int   # of the vGPU, not of the physical GPU
    ratio: int

    def wire(self) -> dict:
        return asdict(self)
