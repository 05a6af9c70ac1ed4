"""Leases rebuilt after a controller restart from what a node reports (docs/protocol.md,
"Restarts"): the reported vGPU entries, checked against the node's GPUs."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from orion_controller import fields
from orion_controller.fields import Invalid
from orion_controller.model import EXCLUSIVE, FULL_RATIO, SHARED_ALL, VGpu

if TYPE_CHECKING:
    from orion_controller.groups import ReservedSlot
    from orion_controller.inventory import Device, Node


def reported_vgpus(node: Node, lease_id: str, entries: Any) -> list[VGpu]:
    """The node's vGPUs of a lease from its report; Invalid if they are malformed or no
    longer fit (the lease is then lost)."""
    if entries is None:
        raise Invalid("the node sent no grants for it")
    devices = {device.gpu.uuid: device for device in node.devices}
    taken: dict[str, tuple[int, int]] = {}
    vgpus = []
    for i, entry in enumerate(fields.listing(f"grants[{lease_id}]", entries)):
        where = f"grants[{lease_id}][{i}]"
        entry = fields.mapping(where, entry)
        if entry.get("node", node.name) != node.name:
            continue    # another node's part of the lease; that node reports it
        gpu_uuid = fields.text(f"{where}.gpu_uuid", entry.get("gpu_uuid"))
        device = devices.get(gpu_uuid)
        if device is None:
            raise Invalid(f"GPU {gpu_uuid} is not on node {node.name}")
        mib = fields.integer(f"{where}.memory_mib", entry.get("memory_mib"), low=1)
        ratio = fields.integer(f"{where}.ratio", entry.get("ratio"), low=1, high=FULL_RATIO)
        more_mib, more_ratio = taken.get(gpu_uuid, (0, 0))
        free_mib, free_ratio = device.free(SHARED_ALL)   # the most a report can be
        if more_mib + mib > free_mib or more_ratio + ratio > free_ratio:
            raise Invalid(f"gpu{device.gpu.index} has no room for it any more "
                          f"({free_mib - more_mib} MiB, {free_ratio - more_ratio} % free)")
        taken[gpu_uuid] = (more_mib + mib, more_ratio + ratio)
        # A client that did not keep the id (it is the lease and a position) gets it back.
        vgpu_id = entry.get("vgpu_id")
        vgpus.append(VGpu(vgpu_id=vgpu_id if isinstance(vgpu_id, str) and vgpu_id
                          else f"{lease_id}-{i}",
                          server=node.server, node=node.name, gpu_uuid=gpu_uuid,
                          gpu_index=device.gpu.index, gpu_name=device.gpu.name,
                          memory_mib=mib, ratio=ratio))
    if not vgpus:
        raise Invalid(f"no entry names node {node.name}")
    return vgpus


def slot_vgpus(node: Node, lease_id: str, slots: list[ReservedSlot],
               devices: dict[str, Device]) -> list[VGpu]:
    """The vGPUs of a lease that ran on these reserved slots of the node."""
    return [VGpu(f"{lease_id}-{i}", node.server, node.name, slot.gpu_uuid,
                 devices[slot.gpu_uuid].gpu.index, devices[slot.gpu_uuid].gpu.name,
                 slot.memory_mib, slot.ratio) for i, slot in enumerate(slots)]


def likely_qos(vgpus: list[VGpu], devices: dict[str, Device]) -> str:
    """Reports do not say the QoS: exclusive if the vGPUs fit physically (the safe guess:
    it blocks overbooking), shared_all if they are overbooked already."""
    for v in vgpus:
        mib, ratio = devices[v.gpu_uuid].free(EXCLUSIVE)
        if mib < v.memory_mib or ratio < v.ratio:
            return SHARED_ALL
    return EXCLUSIVE
