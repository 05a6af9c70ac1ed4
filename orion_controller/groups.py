"""Reserved groups: vGPUs a group (a job, a pod) keeps between runs until released.

A request with `group_id` and `reserved: true` that is granted fresh capacity files each
vGPU as a slot of its group. When the lease ends the slots stay, idle and still counted
on their GPUs and in the group client's quota. A later request of the group that idle
slots can serve gets them back (the same GPUs). `release_group` gives idle slots back to
the pool; slots whose lease still runs pass to that lease and return when it ends.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Mapping

from orion_controller.fields import NotFound
from orion_controller.model import Demand


@dataclass(eq=False)
class ReservedSlot:
    node: str
    gpu_uuid: str
    memory_mib: int
    ratio: int
    qos: str
    holder: str | None = None     # the lease using it now
    placed: bool = False          # counted on its GPU (False while the GPU is not in the pool)

    def wire(self) -> dict[str, Any]:
        entry = asdict(self)
        del entry["placed"]       # a fact of this process, not durable state
        return entry


@dataclass(eq=False)
class ReservedGroup:
    group_id: str
    client_id: str | None
    slots: list[ReservedSlot] = field(default_factory=list)

    def wire(self) -> dict[str, Any]:
        return {"group_id": self.group_id, "client_id": self.client_id,
                "slots": [slot.wire() for slot in self.slots]}


class GroupBook:
    def __init__(self) -> None:
        self._groups: dict[str, ReservedGroup] = {}

    def load(self, entry: Mapping[str, Any]) -> ReservedGroup:
        group = ReservedGroup(entry["group_id"], entry.get("client_id"),
                              [ReservedSlot(**slot) for slot in entry["slots"]])
        self._groups[group.group_id] = group
        return group

    def get(self, group_id: str | None) -> ReservedGroup | None:
        return None if group_id is None else self._groups.get(group_id)

    def open(self, group_id: str, client_id: str | None) -> ReservedGroup:
        return self._groups.setdefault(group_id, ReservedGroup(group_id, client_id))

    def remove(self, group_id: str) -> ReservedGroup:
        if group_id not in self._groups:
            raise NotFound(f"no reserved group {group_id}")
        return self._groups.pop(group_id)

    def all(self) -> list[ReservedGroup]:
        return list(self._groups.values())

    def slots(self) -> Iterator[tuple[ReservedGroup, ReservedSlot]]:
        for group in self._groups.values():
            for slot in group.slots:
                yield group, slot


def idle_slots(group: ReservedGroup, demand: Demand,
               usable: Callable[[ReservedSlot], bool]) -> list[ReservedSlot] | None:
    """`demand.vgpu` idle slots of the group that serve the demand, or None.

    A slot serves it when its size and QoS are what the request asks (a size left to
    its default accepts the slot's) and `usable` says its GPU can be used now.
    """
    chosen = []
    for slot in group.slots:
        if (slot.holder is None and slot.placed and slot.qos == demand.qos
                and demand.gmem in (None, slot.memory_mib)
                and demand.ratio in (None, slot.ratio) and usable(slot)):
            chosen.append(slot)
            if len(chosen) == demand.vgpu:
                return chosen
    return None
