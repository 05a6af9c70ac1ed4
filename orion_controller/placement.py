"""Where the vGPUs of one request go.

Pure functions over a snapshot of free capacity; the pool builds the snapshot and
applies the result. The seam for placement policies is `Policy`: it filters and orders
the candidate GPUs, and `place` takes the first node in that order that can hold the
whole request. Packing or spreading policies (ALGORITHM_DEVICE_COMPACT and friends in
the reference) only need to supply another ordering.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from orion_controller.model import Demand, Gpu


@dataclass(frozen=True)
class Slot:
    """One physical GPU seen as a candidate for one request."""

    node: str
    gpu: Gpu
    gmem: int         # MiB each vGPU of the request would take here (default resolved)
    ratio: int        # % each vGPU of the request would take here (default resolved)
    free_mib: int
    free_ratio: int

    @property
    def fits(self) -> int:
        """How many vGPUs of the request this GPU could take now."""
        return min(self.free_mib // self.gmem, self.free_ratio // self.ratio)

    def describe(self) -> str:
        return (f"{self.node}/gpu{self.gpu.index} (free {self.free_mib} MiB, "
                f"{self.free_ratio} %, fits {self.fits})")


# Filters and orders the candidate GPUs of a request.
Policy = Callable[[Sequence[Slot], Demand], list[Slot]]


def first_fit(slots: Sequence[Slot], demand: Demand) -> list[Slot]:
    """GPUs that can take at least one vGPU, in the order given: nodes in registration
    order, GPUs by index."""
    return [slot for slot in slots if slot.fits > 0]


def place(candidates: Sequence[Slot], count: int) -> list[Slot] | None:
    """`count` slots on one node (a slot may repeat), or None if no node can hold them.

    All vGPUs of a request come from one node (cross-node grants come later). Within the
    node they go round-robin over its GPUs in candidate order, so the first vGPUs land on
    distinct GPUs and a GPU takes a second one only when every other GPU is full or used.
    """
    by_node: dict[str, list[Slot]] = {}
    for slot in candidates:
        by_node.setdefault(slot.node, []).append(slot)
    for slots in by_node.values():
        if sum(slot.fits for slot in slots) >= count:
            return _round_robin(slots, count)
    return None


def _round_robin(slots: list[Slot], count: int) -> list[Slot]:
    left = [slot.fits for slot in slots]
    chosen: list[Slot] = []
    while len(chosen) < count:   # terminates: the caller checked sum(left) >= count
        for i, slot in enumerate(slots):
            if left[i] and len(chosen) < count:
                chosen.append(slot)
                left[i] -= 1
    return chosen
