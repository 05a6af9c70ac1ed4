"""Leases: who holds which vGPUs, kept in the order they were last seen.

The ordering is what makes expiry O(expired): every renewal moves its lease to the end,
so the leases due to expire are always at the front (all leases share one timeout).
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterator

from orion_controller.groups import ReservedSlot
from orion_controller.model import Owner, VGpu


@dataclass(eq=False)
class Lease:
    lease_id: str
    vgpus: list[VGpu]
    owner: Owner              # anonymous after a rebuild
    qos: str
    granted_at: float
    last_seen: float          # grant, or the last heartbeat that reported it
    # The reserved slots it runs on, one per vGPU: their capacity is the group's, so the
    # lease itself holds none. None for a lease on plain capacity.
    slots: list[ReservedSlot] | None = None


class LeaseBook:
    def __init__(self) -> None:
        self._leases: OrderedDict[str, Lease] = OrderedDict()   # oldest last_seen first
        # node -> its leases, in grant order (a dict keeps the order a set would lose)
        self._by_node: dict[str, dict[str, None]] = {}

    def __len__(self) -> int:
        return len(self._leases)

    def __iter__(self) -> Iterator[Lease]:
        return iter(list(self._leases.values()))

    def get(self, lease_id: str) -> Lease | None:
        return self._leases.get(lease_id)

    def add(self, lease: Lease) -> None:
        self._leases[lease.lease_id] = lease
        self._index(lease, lease.vgpus)

    def extend(self, lease: Lease, vgpus: list[VGpu], now: float) -> None:
        """Adds another node's part (a cross-node lease rebuilt node by node)."""
        lease.vgpus.extend(vgpus)
        self._index(lease, vgpus)
        self.renew(lease, now)

    def renew(self, lease: Lease, now: float) -> None:
        lease.last_seen = now
        self._leases.move_to_end(lease.lease_id)

    def remove(self, lease: Lease) -> None:
        del self._leases[lease.lease_id]
        for node in {v.node for v in lease.vgpus}:
            held = self._by_node[node]
            held.pop(lease.lease_id, None)
            if not held:
                del self._by_node[node]

    def on_node(self, node: str) -> list[Lease]:
        return [self._leases[lease_id] for lease_id in self._by_node.get(node, ())]

    def due(self, before: float) -> list[Lease]:
        """Leases last seen before this time."""
        due = []
        for lease in self._leases.values():
            if lease.last_seen >= before:
                break
            due.append(lease)
        return due

    def _index(self, lease: Lease, vgpus: list[VGpu]) -> None:
        for v in vgpus:
            self._by_node.setdefault(v.node, {})[lease.lease_id] = None
