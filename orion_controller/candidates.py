"""One request's view of the pool: which GPUs it may use, what each can take, and why
it was refused when none can.

Filters, in the order a request meets them: the GPU's node is up and the GPU has room
(the rank index holds only those); device_type; device_name (a model, or a custom type
that also sizes the vGPU per model); device_ids; k8s_node; schedule_rule local-only;
the client's single-vGPU quota limits; the room left under the request's QoS.
"""
from __future__ import annotations

from typing import Iterable, Iterator

from orion_controller.custom_devices import CustomDevice
from orion_controller.inventory import Device, Inventory, Node
from orion_controller.model import FULL_RATIO, LOCAL_FIRST, LOCAL_ONLY, Demand, Owner
from orion_controller.placement import Trace, choose
from orion_controller.quota import QuotaBook

_NODES_IN_REASON = 8         # a refusal lists this many nodes' free capacity at most


class Search:
    def __init__(self, inventory: Inventory, demand: Demand, owner: Owner,
                 custom: CustomDevice | None, quotas: QuotaBook) -> None:
        self.inventory = inventory
        self.demand = demand
        self._owner = owner
        self._custom = custom
        self._quotas = quotas
        self._ids = frozenset(demand.device_ids)
        self._type = demand.device_type.lower() if demand.device_type else None
        self._model = demand.device_name.lower() if demand.device_name else None
        self._local = ({node.name for node in inventory.local_nodes(demand.host)}
                       if demand.host else set())

    # -- per GPU ----------------------------------------------------------------------

    def size(self, device: Device) -> tuple[int, int] | None:
        """MiB and % of each vGPU of the request on this GPU; None if it may not go there."""
        if self._custom is not None:
            ratio = self._custom.ratio_on(device.gpu.name)
            return None if ratio is None else (self._custom.memory, ratio)
        count = device.node.vgpu_count
        return (self.demand.gmem or max(1, device.gpu.memory_mib // count),
                self.demand.ratio or FULL_RATIO // count)

    def matches(self, device: Device) -> bool:
        gpu_type, model = device.group
        node = device.node
        return ((self._type is None or gpu_type == self._type)
                and (self._custom is not None or self._model is None or model == self._model)
                and (not self._ids or device.gpu.uuid in self._ids)
                and (self.demand.k8s_node is None or node.k8s_node == self.demand.k8s_node)
                and (self.demand.schedule_rule != LOCAL_ONLY or node.name in self._local))

    def fits(self, device: Device) -> int:
        """How many vGPUs of the request this GPU can take now (0: filtered out)."""
        return self._fits(device, device.free(self.demand.qos)) if device.key else 0

    def fits_empty(self, device: Device, *, quota: bool = True) -> int:
        """`fits` on this GPU with nothing granted anywhere: what could ever be."""
        return self._fits(device, device.capacity(self.demand.qos), quota=quota)

    def _fits(self, device: Device, free: tuple[int, int], *, quota: bool = True) -> int:
        if not self.matches(device):
            return 0
        size = self.size(device)
        if size is None:
            return 0
        gmem, ratio = size
        if gmem > device.gpu.memory_mib:    # overcommit shares a GPU; it does not enlarge one
            return 0
        if quota:
            most_mib, most_ratio = self._quotas.single_limits(self._owner.client_id, device.gpu)
            if (most_mib is not None and gmem > most_mib) or (
                    most_ratio is not None and ratio > most_ratio):
                return 0
        takes = min(free[0] // gmem, free[1] // ratio)
        # cross_node vGPUs are whole GPUs, one per GPU, even where overcommit would allow two
        return min(takes, 1) if self.demand.cross_node else max(takes, 0)

    # -- the choice -------------------------------------------------------------------

    def run(self, trace: Trace) -> list[Device] | None:
        """The devices of the grant, best first by the policy, or None if nothing fits now."""
        restricted = self._restricted_nodes()
        if restricted is not None:
            return self._choose(self._ordered_on(restricted), trace)
        if self.demand.schedule_rule == LOCAL_FIRST and self._local:
            local = [self.inventory.nodes[name] for name in self._local]
            chosen = self._choose(self._ordered_on(local), trace)
            if chosen is not None:
                return chosen
        return self._choose(self.inventory.index.ordered(self._groups(), self._needs), trace)

    def in_scope(self) -> int:
        """GPUs the request's filters leave before room is looked at (for the log)."""
        restricted = self._restricted_nodes()
        if restricted is None:
            return self.inventory.index.size(self._groups())
        return sum(1 for node in restricted for device in node.devices if self.matches(device))

    def _choose(self, ordered: Iterable[Device], trace: Trace) -> list[Device] | None:
        return choose(ordered, self.demand.vgpu, self.fits, _filed_on, trace=trace,
                      cross_node=self.demand.cross_node)

    def _restricted_nodes(self) -> list[Node] | None:
        """The few nodes a request restricted to ids, a node or its host may use."""
        inventory = self.inventory
        if self._ids:
            found = {inventory.devices[uuid].node.name: inventory.devices[uuid].node
                     for uuid in self._ids if uuid in inventory.devices}
            return sorted(found.values(), key=lambda node: node.seq)
        if self.demand.k8s_node is not None:
            return inventory.k8s_nodes(self.demand.k8s_node)
        if self.demand.schedule_rule == LOCAL_ONLY:
            return [inventory.nodes[name] for name in sorted(
                self._local, key=lambda name: inventory.nodes[name].seq)]
        return None

    def _ordered_on(self, nodes: Iterable[Node]) -> list[Device]:
        return sorted((d for node in nodes for d in node.devices if d.key is not None),
                      key=_key)

    def _needs(self, group: tuple[str, str]) -> tuple[int, int]:
        """The least % and MiB a vGPU of the request takes on a GPU of this group."""
        if self._custom is not None:
            return self._custom.ratio_on(group[1]) or 1, self._custom.memory
        index = self.inventory.index
        return (self.demand.ratio or FULL_RATIO // index.most_vgpu_count,
                self.demand.gmem or max(1, index.least_mib(group) // index.most_vgpu_count))

    def _groups(self) -> list[tuple[str, str]]:
        models = set(self._custom.models) if self._custom is not None else (
            {self._model} if self._model else None)
        return [group for group in self.inventory.index.groups()
                if (self._type is None or group[0] == self._type)
                and (models is None or group[1] in models)]

    # -- refusals ---------------------------------------------------------------------

    def never_reason(self) -> str | None:
        """Why the request could not be served even by an idle pool; None if it could."""
        restricted = self._restricted_nodes()
        nodes = restricted if restricted is not None else list(self.inventory.nodes.values())
        devices = [d for node in nodes for d in node.devices]
        if choose(devices, self.demand.vgpu, self.fits_empty, _all_on,
                  trace=Trace(self.demand.qos),
                  cross_node=self.demand.cross_node) is not None:
            return None
        matching = [d for d in devices if self.matches(d) and self.size(d) is not None]
        if not matching:
            return f"no GPU in the pool matches {self._filters()}"
        if not any(self.fits_empty(d, quota=False) for d in matching):
            largest = max(d.gpu.memory_mib for d in matching)
            if self.demand.gmem is not None and self.demand.gmem > largest:
                return (f"gmem {self.demand.gmem} MiB is larger than any GPU in the pool "
                        f"(largest: {largest} MiB)")
        elif not any(self.fits_empty(d) for d in matching):
            return (f"the quota of {self._owner.client_id} allows no vGPU this large "
                    f"({self.demand.describe()})")
        if self.demand.cross_node:
            most = sum(self.fits_empty(d) for d in matching)
            return (f"the pool could ever hold only {most} vGPU(s) of "
                    f"{self.demand.describe()}")
        most = max(sum(self.fits_empty(d) for d in node.devices) for node in nodes)
        return (f"no node could ever hold {self.demand.describe()}: "
                f"one node holds at most {most} such vGPU(s)")

    def busy_reason(self) -> str:
        restricted = self._restricted_nodes()
        nodes = restricted if restricted is not None else list(self.inventory.nodes.values())
        parts = []
        for node in _first(nodes, _NODES_IN_REASON + 1):
            if not node.up:
                parts.append(f"{node.name} is down")
                continue
            free = ", ".join(
                f"gpu{d.gpu.index} {d.free(self.demand.qos)[0]} MiB "
                f"{d.free(self.demand.qos)[1]} %" for d in node.devices if self.matches(d))
            parts.append(f"{node.name}: {free or 'no GPUs'}")
        if len(parts) > _NODES_IN_REASON:
            parts[_NODES_IN_REASON:] = [f"{len(nodes) - _NODES_IN_REASON} more node(s)"]
        return f"no node has room for {self.demand.describe()} now; free: {'; '.join(parts)}"

    def _filters(self) -> str:
        asked = [f"{name} {value!r}" for name, value in (
            ("device_type", self.demand.device_type), ("device_name", self.demand.device_name),
            ("k8s_node", self.demand.k8s_node)) if value is not None]
        if self._ids:
            asked.append(f"device_ids [{', '.join(self.demand.device_ids)}]")
        if self.demand.schedule_rule == LOCAL_ONLY:
            asked.append(f"local-only on host {self.demand.host!r}")
        return " and ".join(asked) or "the request"


def _key(device: Device) -> tuple:
    return device.key


def _filed_on(node: Node) -> list[Device]:
    """The node's GPUs in the index, best rank first."""
    return sorted((d for d in node.devices if d.key is not None), key=_key)


def _all_on(node: Node) -> tuple[Device, ...]:
    return node.devices


def _first(nodes: Iterable[Node], count: int) -> Iterator[Node]:
    for i, node in enumerate(nodes):
        if i == count:
            return
        yield node
