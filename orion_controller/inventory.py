"""Nodes and their GPUs with the capacity granted on each: the pool's ledger.

Invariant: a device's `used_mib`, `used_ratio`, `vgpus` and `exclusive`, and its node's
`used_mib` / `used_ratio`, are the sums of the holdings placed on it (lease vGPUs and
reserved slots). They change only through `Inventory.hold`, which also refiles the
node's GPUs in the rank index, so the index cannot drift from the counters.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Iterator

from orion_controller.index import Rank, RankIndex
from orion_controller.model import EXCLUSIVE, FULL_RATIO, SHARED_ALL, Gpu
from orion_controller.overcommit import Overcommit


class Device:
    """A physical GPU in the pool and what is granted on it."""

    __slots__ = ("gpu", "node", "group", "overcommit", "used_mib", "used_ratio", "vgpus",
                 "exclusive", "key", "shelf")

    def __init__(self, gpu: Gpu, node: Node, overcommit: Overcommit) -> None:
        self.gpu = gpu
        self.node = node
        self.group = (gpu.type.lower(), gpu.name.lower())    # its rank index group
        self.overcommit = overcommit
        self.used_mib = 0
        self.used_ratio = 0
        self.vgpus = 0
        self.exclusive = 0      # vGPUs of exclusive QoS on it
        self.key: tuple | None = None        # filed in the rank index under this
        self.shelf: list | None = None       # on this shelf of the index

    @property
    def label(self) -> str:
        return f"{self.node.name}/gpu{self.gpu.index}"

    def caps(self, qos: str) -> tuple[int, int]:
        """MiB and % a vGPU of this QoS may fill the GPU up to.

        Exclusive vGPUs get physical capacity only, and a GPU holding one offers no
        overcommit to anyone, so an exclusive vGPU's share is never overbooked.
        shared_core may overbook compute, shared_all compute and memory.
        """
        if self.exclusive:
            return self.gpu.memory_mib, FULL_RATIO
        return self.capacity(qos)

    def capacity(self, qos: str) -> tuple[int, int]:
        """`caps` of the GPU with nothing granted on it."""
        if qos == EXCLUSIVE:
            return self.gpu.memory_mib, FULL_RATIO
        ratio = int(FULL_RATIO * self.overcommit.core)
        if qos == SHARED_ALL:
            return int(self.gpu.memory_mib * self.overcommit.mem), ratio
        return self.gpu.memory_mib, ratio

    def free(self, qos: str) -> tuple[int, int]:
        mib, ratio = self.caps(qos)
        return mib - self.used_mib, ratio - self.used_ratio

    def load(self) -> int:
        """Dominant share of the physical GPU granted, per mille (> 1000 if overbooked)."""
        return max(self.used_mib * 1000 // self.gpu.memory_mib, self.used_ratio * 10)


@dataclass(eq=False)
class Node:
    name: str
    server: str                   # data-plane address of its oriond, copied into grants
    seq: int                      # registration number: ties in rank go to older nodes
    vgpu_count: int
    hosts: frozenset[str]         # names a client's `host` matches for schedule_rule
    k8s_node: str
    overcommit: dict              # as registered, shown in status
    last_seen: float
    up: bool = True
    devices: tuple[Device, ...] = ()          # by GPU index
    used_mib: int = 0
    used_ratio: int = 0
    memory_mib: int = field(default=0)        # of all its GPUs

    def load(self) -> int:
        if not self.devices:
            return 0
        return max(self.used_mib * 1000 // self.memory_mib,
                   self.used_ratio * 10 // len(self.devices))


class Inventory:
    """Nodes by name (registration order), GPUs by uuid, and the rank index over them."""

    def __init__(self, rank: Rank) -> None:
        self.nodes: dict[str, Node] = {}
        self.devices: dict[str, Device] = {}
        self.index = RankIndex(rank)
        # ("host", name) / ("k8s", name) -> nodes: requests restricted to a host or a
        # Kubernetes node look at those nodes only.
        self._aliases: dict[tuple[str, str], set[str]] = {}
        self._seq = 0

    def add(self, node: Node, gpus: Iterable[Gpu], overcommit: dict[int, Overcommit]) -> None:
        """Files a node (replacing one of the same name, whose holdings must be gone)."""
        old = self.nodes.get(node.name)
        if old is not None:
            node.seq = old.seq          # same name, same identity: its place in the order
            self._forget(old)
        else:
            self._seq += 1
            node.seq = self._seq
        node.devices = tuple(Device(gpu, node, overcommit.get(gpu.index, Overcommit()))
                             for gpu in gpus)
        node.memory_mib = sum(gpu.memory_mib for gpu in gpus)
        self.nodes[node.name] = node
        for device in node.devices:
            self.devices[device.gpu.uuid] = device
        for alias in _aliases(node):
            self._aliases.setdefault(alias, set()).add(node.name)
        self.index.admit(node.devices)
        self.index.refile(node.devices, node.up)

    def remove(self, node: Node) -> None:
        self._forget(node)
        del self.nodes[node.name]

    def set_up(self, node: Node, up: bool) -> None:
        node.up = up
        self.index.refile(node.devices, up)

    def hold(self, items: Iterable[tuple[Device, int, int]], qos: str, sign: int = 1) -> None:
        """Adds (sign 1) or takes back (sign -1) vGPUs of (device, MiB, %) of one QoS."""
        nodes = {}
        for device, mib, ratio in items:
            device.used_mib += sign * mib
            device.used_ratio += sign * ratio
            device.vgpus += sign
            device.exclusive += sign * (qos == EXCLUSIVE)
            device.node.used_mib += sign * mib
            device.node.used_ratio += sign * ratio
            nodes[device.node.name] = device.node
        for node in nodes.values():
            self.index.refile(node.devices, node.up)

    def local_nodes(self, host: str) -> list[Node]:
        """Nodes whose name, registered host or server address is this client host."""
        return self._named(("host", host.lower()))

    def k8s_nodes(self, k8s_node: str) -> list[Node]:
        return self._named(("k8s", k8s_node))

    def _named(self, alias: tuple[str, str]) -> list[Node]:
        return sorted((self.nodes[name] for name in self._aliases.get(alias, ())),
                      key=lambda node: node.seq)

    def all_devices(self) -> Iterator[Device]:
        for node in self.nodes.values():
            yield from node.devices

    def _forget(self, node: Node) -> None:
        for device in node.devices:
            self.index.remove(device)
            del self.devices[device.gpu.uuid]
        for alias in _aliases(node):
            names = self._aliases[alias]
            names.discard(node.name)
            if not names:
                del self._aliases[alias]


def _aliases(node: Node) -> set[tuple[str, str]]:
    return {("host", host.lower()) for host in node.hosts} | {("k8s", node.k8s_node)}
