"""The pool: nodes -> physical GPUs -> vGPU grants held as leases. Pure logic, no I/O.

Invariants:
- No GPU is overcommitted: the vGPUs granted on a GPU sum to at most its memory_mib and
  to at most 100 % ratio. Usage is summed from the leases whenever it is needed, so it
  cannot drift from them: releasing a lease is the only way capacity comes back.
- Time moves only through the injected clock. Every public operation first applies the
  timeouts that have passed (`expire`), so outcomes do not depend on how often the
  service loop happens to call `expire`.
- A grant is atomic: every vGPU of a request is placed, or the pool is left unchanged.
"""
from __future__ import annotations

import logging
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any, Callable

from orion_controller import fields
from orion_controller.fields import Invalid
from orion_controller.model import Demand, Gpu, VGpu
from orion_controller.placement import Policy, Slot, first_fit, place

log = logging.getLogger(__name__)

DEFAULT_VGPU_COUNT = 4       # the reference's ORION_VGPU_COUNT default
MAX_VGPU_COUNT = 100         # keeps the default ratio, 100 // vgpu_count, at >= 1 %
FULL_RATIO = 100
DEFAULT_LEASE_TIMEOUT_S = 5.0
DEFAULT_NODE_TIMEOUT_S = 10.0
_NODES_IN_REASON = 8         # a refusal lists this many nodes' free capacity at most


class Busy(Exception):
    """A valid request the pool cannot serve now; it may succeed later."""


@dataclass
class Node:
    name: str
    server: str               # data-plane address of its oriond, copied into grants
    gpus: tuple[Gpu, ...]     # by index
    vgpu_count: int
    last_seen: float
    up: bool = True


@dataclass
class Lease:
    lease_id: str
    vgpus: list[VGpu]
    owner: dict[str, Any]     # client_id, host, pid of the request; None after a rebuild
    granted_at: float
    last_seen: float          # grant, or the last heartbeat that reported it


@dataclass(frozen=True)
class Grant:
    lease: str
    vgpus: tuple[VGpu, ...]


@dataclass(frozen=True)
class HeartbeatResult:
    known: bool               # False: the pool does not know the node; it must register
    lost: tuple[str, ...]     # reported leases the pool does not hold and could not rebuild


class Pool:
    def __init__(self, *, lease_timeout: float = DEFAULT_LEASE_TIMEOUT_S,
                 node_timeout: float = DEFAULT_NODE_TIMEOUT_S,
                 clock: Callable[[], float] = time.monotonic,
                 policy: Policy = first_fit) -> None:
        self._lease_timeout = lease_timeout
        self._node_timeout = node_timeout
        self._clock = clock
        self._policy = policy
        self._nodes: dict[str, Node] = {}     # registration order is first-fit order
        self._leases: dict[str, Lease] = {}

    # -- nodes ------------------------------------------------------------------------

    def register(self, node: Any, server: Any, gpus: Any,
                 vgpu_count: Any = DEFAULT_VGPU_COUNT) -> bool:
        """Adds a node, or refreshes a known one (oriond restarted). True if it was known."""
        self.expire()
        name = fields.text("node", node)
        server = fields.text("server", server)
        vgpu_count = fields.integer("vgpu_count", vgpu_count, low=1, high=MAX_VGPU_COUNT)
        parsed = tuple(sorted((_gpu(i, g) for i, g in enumerate(fields.listing("gpus", gpus))),
                              key=lambda g: g.index))
        self._check_gpus(name, parsed)
        now = self._clock()
        known = self._nodes.get(name)
        if known is None:
            self._nodes[name] = Node(name, server, parsed, vgpu_count, last_seen=now)
        else:
            # Same name, same identity: its place in the order and its leases stay.
            known.server, known.gpus, known.vgpu_count = server, parsed, vgpu_count
            known.last_seen, known.up = now, True
            present = {gpu.uuid for gpu in parsed}
            for lease in self._leases_on(name):
                if any(v.node == name and v.gpu_uuid not in present for v in lease.vgpus):
                    self._drop(lease, f"lost: its GPU left node {name}")
        log.info("node %s %s: server %s, vgpu_count %d, GPUs %s", name,
                 "registered again" if known else "registered", server, vgpu_count,
                 ", ".join(f"{g.index}:{g.name}:{g.memory_mib}MiB:{g.uuid}" for g in parsed)
                 or "none")
        return known is not None

    def unregister(self, node: Any) -> None:
        self.expire()
        name = fields.text("node", node)
        if name not in self._nodes:
            raise Invalid(f"unknown node {name!r}")
        for lease in self._leases_on(name):
            self._drop(lease, f"lost: node {name} unregistered")
        del self._nodes[name]
        log.info("node %s unregistered", name)

    def heartbeat(self, node: Any, leases: Any, grants: Any = None) -> HeartbeatResult:
        """Marks the node alive and renews the leases it reports.

        A reported lease the pool does not hold (the controller restarted, or the node
        was down) is rebuilt from `grants[lease]`, the vGPU entries the node received,
        when they still fit; otherwise it is returned as lost.
        """
        self.expire()
        name = fields.text("node", node)
        reported = [fields.text(f"leases[{i}]", lease)
                    for i, lease in enumerate(fields.listing("leases", leases))]
        grants = {} if grants is None else fields.mapping("grants", grants)
        entry = self._nodes.get(name)
        if entry is None:
            return HeartbeatResult(known=False, lost=())
        now = self._clock()
        entry.last_seen = now
        if not entry.up:
            entry.up = True
            log.info("node %s is back up", name)
        lost = []
        for lease_id in reported:
            lease = self._leases.get(lease_id)
            if lease is not None and any(v.node == name for v in lease.vgpus):
                lease.last_seen = now
            elif not self._rebuild(entry, lease_id, grants.get(lease_id)):
                log.info("lease %s reported by node %s is not held: lost", lease_id, name)
                lost.append(lease_id)
        return HeartbeatResult(known=True, lost=tuple(lost))

    # -- grants -----------------------------------------------------------------------

    def allocate(self, vgpu: Any = 1, gmem: Any = None, ratio: Any = None, *,
                 client_id: Any = None, host: Any = None, pid: Any = None) -> Grant:
        """Grants `vgpu` vGPUs on one node, or raises Invalid (never fits) or Busy (not now)."""
        self.expire()
        demand = Demand(vgpu=fields.integer("vgpu", vgpu, low=1),
                        gmem=fields.optional_integer("gmem", gmem, low=1),
                        ratio=fields.optional_integer("ratio", ratio, low=1, high=FULL_RATIO))
        owner = {"client_id": fields.optional_text("client_id", client_id),
                 "host": fields.optional_text("host", host),
                 "pid": fields.optional_integer("pid", pid, low=0)}
        who = _describe_owner(owner)
        try:
            self._check_ever_fits(demand)
        except (Invalid, Busy) as why:
            log.info("allocate %s for %s: refused: %s", demand.describe(), who, why)
            raise
        slots = self._slots(demand, self._usage(), live=True)
        candidates = self._policy(slots, demand)
        chosen = place(candidates, demand.vgpu)
        shown = ", ".join(slot.describe() for slot in candidates) or "none"
        if chosen is None:
            log.info("allocate %s for %s: candidates [%s]; refused: busy",
                     demand.describe(), who, shown)
            raise Busy(self._busy_reason(demand, slots))
        lease_id = uuid.uuid4().hex
        vgpus = tuple(VGpu(vgpu_id=f"{lease_id}-{i}", server=self._nodes[s.node].server,
                           node=s.node, gpu_uuid=s.gpu.uuid, gpu_index=s.gpu.index,
                           gpu_name=s.gpu.name, memory_mib=s.gmem, ratio=s.ratio)
                      for i, s in enumerate(chosen))
        now = self._clock()
        self._leases[lease_id] = Lease(lease_id, list(vgpus), owner, now, now)
        log.info("allocate %s for %s: candidates [%s]; chose [%s]: lease %s",
                 demand.describe(), who, shown,
                 ", ".join(f"{v.node}/gpu{v.gpu_index} {v.memory_mib} MiB {v.ratio} %"
                           for v in vgpus), lease_id)
        return Grant(lease_id, vgpus)

    def release(self, lease: Any) -> None:
        self.expire()
        lease_id = fields.text("lease", lease)
        found = self._leases.get(lease_id)
        if found is None:
            raise Invalid(f"unknown lease {lease_id} (already released or expired)")
        self._drop(found, "released")

    def expire(self) -> list[str]:
        """Applies the timeouts that have passed; returns the ids of the leases it released."""
        now = self._clock()
        dropped = []
        for node in self._nodes.values():
            if node.up and now - node.last_seen > self._node_timeout:
                node.up = False
                log.warning("node %s is down: no heartbeat for %.1f s", node.name,
                            now - node.last_seen)
                dropped += [self._drop(lease, f"lost: node {node.name} is down")
                            for lease in self._leases_on(node.name)]
        for lease in list(self._leases.values()):
            if now - lease.last_seen > self._lease_timeout:
                dropped.append(self._drop(
                    lease, f"expired: not reported for {now - lease.last_seen:.1f} s"))
        return dropped

    def status(self) -> dict[str, list]:
        """The pool as the `status` reply shows it (times are seconds ago)."""
        self.expire()
        now = self._clock()
        used = self._usage()
        counts = Counter(v.gpu_uuid for lease in self._leases.values() for v in lease.vgpus)
        nodes = [{"node": node.name, "server": node.server,
                  "state": "up" if node.up else "down", "vgpu_count": node.vgpu_count,
                  "last_seen_s": round(now - node.last_seen, 1),
                  "gpus": [{"uuid": g.uuid, "name": g.name, "index": g.index,
                            "memory_mib": g.memory_mib,
                            "used_mib": used.get(g.uuid, (0, 0))[0],
                            "used_ratio": used.get(g.uuid, (0, 0))[1],
                            "vgpus": counts[g.uuid]} for g in node.gpus]}
                 for node in self._nodes.values()]
        leases = [{"lease": lease.lease_id, **lease.owner,
                   "age_s": round(now - lease.granted_at, 1),
                   "last_seen_s": round(now - lease.last_seen, 1),
                   "vgpus": [v.wire() for v in lease.vgpus]}
                  for lease in self._leases.values()]
        return {"nodes": nodes, "leases": leases}

    # -- internals --------------------------------------------------------------------

    def _check_gpus(self, name: str, gpus: tuple[Gpu, ...]) -> None:
        for what, values in (("uuid", [g.uuid for g in gpus]), ("index", [g.index for g in gpus])):
            repeated = sorted({str(v) for v in values if values.count(v) > 1})
            if repeated:
                raise Invalid(f"gpus repeat {what} {', '.join(repeated)}")
        owners = {g.uuid: other.name for other in self._nodes.values() if other.name != name
                  for g in other.gpus}
        for gpu in gpus:
            if gpu.uuid in owners:
                raise Invalid(f"GPU {gpu.uuid} is already registered by node {owners[gpu.uuid]}")

    def _usage(self) -> dict[str, tuple[int, int]]:
        """MiB and % granted on each GPU (by uuid), summed from the leases."""
        used: dict[str, tuple[int, int]] = {}
        for lease in self._leases.values():
            for v in lease.vgpus:
                mib, ratio = used.get(v.gpu_uuid, (0, 0))
                used[v.gpu_uuid] = (mib + v.memory_mib, ratio + v.ratio)
        return used

    def _slots(self, demand: Demand, used: dict[str, tuple[int, int]], *,
               live: bool) -> list[Slot]:
        """Every GPU as a candidate for `demand`. live: GPUs of nodes that are up, with
        their free capacity; not live: GPUs of all nodes as if empty (what could ever fit)."""
        slots = []
        for node in self._nodes.values():
            if live and not node.up:
                continue
            ratio = demand.ratio if demand.ratio is not None else FULL_RATIO // node.vgpu_count
            for gpu in node.gpus:
                gmem = demand.gmem if demand.gmem is not None else max(
                    1, gpu.memory_mib // node.vgpu_count)
                mib, pct = used.get(gpu.uuid, (0, 0))
                slots.append(Slot(node.name, gpu, gmem, ratio, gpu.memory_mib - mib,
                                  FULL_RATIO - pct))
        return slots

    def _check_ever_fits(self, demand: Demand) -> None:
        """Raises Invalid if the request could not be served even by an idle pool."""
        if not any(node.gpus for node in self._nodes.values()):
            raise Busy("no GPU is registered in the pool")
        empty = self._slots(demand, {}, live=False)
        if place(self._policy(empty, demand), demand.vgpu) is not None:
            return
        largest = max(g.memory_mib for node in self._nodes.values() for g in node.gpus)
        if demand.gmem is not None and demand.gmem > largest:
            raise Invalid(f"gmem {demand.gmem} MiB is larger than any GPU in the pool "
                          f"(largest: {largest} MiB)")
        most = max(sum(s.fits for s in empty if s.node == node) for node in self._nodes)
        raise Invalid(f"no node could ever hold {demand.describe()}: "
                      f"one node holds at most {most} such vGPU(s)")

    def _busy_reason(self, demand: Demand, slots: list[Slot]) -> str:
        parts = []
        for node in self._nodes.values():
            if not node.up:
                parts.append(f"{node.name} is down")
                continue
            free = ", ".join(f"gpu{s.gpu.index} {s.free_mib} MiB {s.free_ratio} %"
                             for s in slots if s.node == node.name)
            parts.append(f"{node.name}: {free or 'no GPUs'}")
        if len(parts) > _NODES_IN_REASON:
            parts[_NODES_IN_REASON:] = [f"{len(parts) - _NODES_IN_REASON} more node(s)"]
        return f"no node has room for {demand.describe()} now; free: {'; '.join(parts)}"

    def _rebuild(self, node: Node, lease_id: str, entries: Any) -> bool:
        """Re-creates the node's part of a lease from what the node reported. False if
        nothing was reported or it no longer fits (then the lease is lost)."""
        if entries is None:
            return False
        try:
            vgpus = self._reported_vgpus(node, lease_id, entries)
        except Invalid as why:
            log.warning("lease %s reported by node %s not rebuilt: %s", lease_id, node.name, why)
            return False
        now = self._clock()
        lease = self._leases.get(lease_id)
        if lease is None:
            owner = {"client_id": None, "host": None, "pid": None}
            self._leases[lease_id] = Lease(lease_id, vgpus, owner, now, now)
        else:   # another node's part is held already (cross-node grants)
            lease.vgpus.extend(vgpus)
            lease.last_seen = now
        log.info("lease %s rebuilt from node %s: %s", lease_id, node.name,
                 ", ".join(f"gpu{v.gpu_index} {v.memory_mib} MiB {v.ratio} %" for v in vgpus))
        return True

    def _reported_vgpus(self, node: Node, lease_id: str, entries: Any) -> list[VGpu]:
        gpus = {gpu.uuid: gpu for gpu in node.gpus}
        used = self._usage()
        vgpus = []
        for i, entry in enumerate(fields.listing(f"grants[{lease_id}]", entries)):
            where = f"grants[{lease_id}][{i}]"
            entry = fields.mapping(where, entry)
            if entry.get("node", node.name) != node.name:
                continue    # another node's part of the lease; that node reports it
            gpu_uuid = fields.text(f"{where}.gpu_uuid", entry.get("gpu_uuid"))
            gpu = gpus.get(gpu_uuid)
            if gpu is None:
                raise Invalid(f"GPU {gpu_uuid} is not on node {node.name}")
            mib = fields.integer(f"{where}.memory_mib", entry.get("memory_mib"), low=1)
            ratio = fields.integer(f"{where}.ratio", entry.get("ratio"), low=1, high=FULL_RATIO)
            mib_used, ratio_used = used.get(gpu_uuid, (0, 0))
            if mib_used + mib > gpu.memory_mib or ratio_used + ratio > FULL_RATIO:
                raise Invalid(f"gpu{gpu.index} has no room for it any more "
                              f"({gpu.memory_mib - mib_used} MiB, {FULL_RATIO - ratio_used} % free)")
            used[gpu_uuid] = (mib_used + mib, ratio_used + ratio)
            vgpus.append(VGpu(vgpu_id=fields.text(f"{where}.vgpu_id", entry.get("vgpu_id")),
                              server=node.server, node=node.name, gpu_uuid=gpu_uuid,
                              gpu_index=gpu.index, gpu_name=gpu.name, memory_mib=mib,
                              ratio=ratio))
        if not vgpus:
            raise Invalid(f"no entry names node {node.name}")
        return vgpus

    def _leases_on(self, node: str) -> list[Lease]:
        return [lease for lease in self._leases.values()
                if any(v.node == node for v in lease.vgpus)]

    def _drop(self, lease: Lease, why: str) -> str:
        del self._leases[lease.lease_id]
        log.info("lease %s %s; gave back %s", lease.lease_id, why,
                 ", ".join(f"{v.node}/gpu{v.gpu_index} {v.memory_mib} MiB {v.ratio} %"
                           for v in lease.vgpus))
        return lease.lease_id


def _gpu(i: int, value: Any) -> Gpu:
    entry = fields.mapping(f"gpus[{i}]", value)
    return Gpu(uuid=fields.text(f"gpus[{i}].uuid", entry.get("uuid")),
               name=fields.text(f"gpus[{i}].name", entry.get("name")),
               index=fields.integer(f"gpus[{i}].index", entry.get("index"), low=0),
               memory_mib=fields.integer(f"gpus[{i}].memory_mib", entry.get("memory_mib"), low=1))


def _describe_owner(owner: dict[str, Any]) -> str:
    known = [f"{key}={value}" for key, value in owner.items() if value is not None]
    return " ".join(known) or "anonymous client"
