"""The pool: nodes -> physical GPUs -> vGPU grants held as leases. Logic only; no network.

Invariants:
- No GPU is granted beyond what its holdings' QoS allows (inventory.Device.caps): at
  most its memory and 100 % while an exclusive vGPU is on it, at most the overcommit
  factors times those otherwise. Capacity is held by a lease on plain capacity or by a
  reserved slot of a group, never both, and is counted in exactly one place
  (`Inventory.hold`), with the client's quota usage charged alongside.
- Time moves only through the injected clock. Every public operation first applies the
  timeouts that have passed (`expire`), so outcomes do not depend on how often the
  service loop happens to call `expire`.
- A grant is atomic: every vGPU of a request is placed, or the pool is left unchanged.
- Durable state (reserved groups here; quotas and custom types in `admin`) is written to
  the store before the reply that depends on it is sent.
"""
from __future__ import annotations

import logging
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from orion_controller import fields, rebuild, request
from orion_controller.candidates import Search
from orion_controller.custom_devices import CustomDeviceBook
from orion_controller.fields import Invalid, NotFound
from orion_controller.groups import GroupBook, ReservedGroup, ReservedSlot, idle_slots
from orion_controller.inventory import Device, Inventory, Node
from orion_controller.leases import Lease, LeaseBook
from orion_controller.model import (EXCLUSIVE, FULL_RATIO, Demand, Gpu, Owner,
                                    VGpu)
from orion_controller.overcommit import Overcommit, per_device
from orion_controller.placement import Policy, Trace
from orion_controller.quota import QuotaBook, QuotaExceeded
from orion_controller.store import Store

log = logging.getLogger(__name__)

DEFAULT_VGPU_COUNT = 4       # the reference's ORION_VGPU_COUNT default
MAX_VGPU_COUNT = 100         # keeps the default ratio, 100 // vgpu_count, at >= 1 %
DEFAULT_LEASE_TIMEOUT_S = 5.0
DEFAULT_NODE_TIMEOUT_S = 10.0
_REFUSALS_KEPT = 4096        # "never fits" answers cached until the pool's shape changes


# How long a released lease is remembered: longer than a node takes to notice that
# the session ended and stop reporting it.
RELEASED_MEMORY_S = 60.0


class Busy(Exception):
    """A valid request the pool cannot serve now; it may succeed later."""


@dataclass(frozen=True)
class Grant:
    lease: str
    vgpus: tuple[VGpu, ...]
    qos: str = EXCLUSIVE
    group_id: str | None = None
    reserved: bool = False     # runs on its group's reserved vGPUs


@dataclass(frozen=True)
class HeartbeatResult:
    known: bool               # False: the pool does not know the node; it must register
    lost: tuple[str, ...]     # reported leases the pool does not hold and could not rebuild


class Pool:
    def __init__(self, *, lease_timeout: float = DEFAULT_LEASE_TIMEOUT_S,
                 node_timeout: float = DEFAULT_NODE_TIMEOUT_S,
                 clock: Callable[[], float] = time.monotonic,
                 policy: Policy = Policy(), overcommit: Overcommit = Overcommit(),
                 quota_limit: bool = False, default_vgpu_count: int = DEFAULT_VGPU_COUNT,
                 store: Store | None = None) -> None:
        self._lease_timeout = lease_timeout
        self._node_timeout = node_timeout
        self._clock = clock
        self.policy = policy
        self.overcommit = overcommit
        self.default_vgpu_count = default_vgpu_count
        self.inventory = Inventory(policy.rank)
        self.quotas = QuotaBook(quota_limit)
        self.custom = CustomDeviceBook()
        self.groups = GroupBook()
        self.store = store or Store(":memory:")
        self._leases = LeaseBook()
        self._alive: OrderedDict[str, None] = OrderedDict()   # up nodes, least recent first
        # Leases released on purpose, with when: a heartbeat sent before the node noticed
        # the session end must not bring them back (they are reported lost instead).
        self._released: OrderedDict[str, float] = OrderedDict()
        # Bumped whenever capacity may have come back or rules changed: the service
        # retries waiting requests when it moves.
        self.changes = 0
        self._refusals: dict[tuple, str | None] = {}
        self._claims_until: float | None = None
        self._load()

    # -- nodes ------------------------------------------------------------------------

    def register(self, node: Any, server: Any, gpus: Any, vgpu_count: Any = None, *,
                 overcommit: Any = None, host: Any = None, k8s_node: Any = None) -> bool:
        """Adds a node, or refreshes a known one (oriond restarted). True if it was known."""
        self.expire()
        name = fields.text("node", node)
        server = fields.text("server", server)
        vgpu_count = fields.integer("vgpu_count", self.default_vgpu_count
                                    if vgpu_count is None else vgpu_count,
                                    low=1, high=MAX_VGPU_COUNT)
        parsed = tuple(sorted((_gpu(i, g) for i, g in enumerate(fields.listing("gpus", gpus))),
                              key=lambda g: g.index))
        self._check_gpus(name, parsed)
        factors = per_device(overcommit, parsed, self.overcommit)
        hosts = {name, _address_host(server)}
        if host is not None:
            hosts.add(fields.text("host", host))
        k8s_node = fields.optional_text("k8s_node", k8s_node) or name
        known = self.inventory.nodes.get(name)
        if known is not None:
            present = {gpu.uuid for gpu in parsed}
            for lease in self._leases.on_node(name):
                if any(v.node == name and v.gpu_uuid not in present for v in lease.vgpus):
                    self._drop(lease, f"lost: its GPU left node {name}")
            for _, slot in self.groups.slots():
                if slot.node == name:
                    slot.placed = False    # its old GPU record goes; placed again below
        entry = Node(name, server, 0, vgpu_count, frozenset(h for h in hosts if h), k8s_node,
                     overcommit or {}, last_seen=self._clock())
        self.inventory.add(entry, parsed, factors)
        self._hold_again(entry)
        self._alive[name] = None
        self._alive.move_to_end(name)
        self._touch()
        log.info("node %s %s: server %s, vgpu_count %d, GPUs %s%s", name,
                 "registered again" if known else "registered", server, vgpu_count,
                 ", ".join(f"{g.index}:{g.name}:{g.memory_mib}MiB:{g.uuid}" for g in parsed)
                 or "none", f", overcommit {overcommit}" if overcommit else "")
        return known is not None

    def unregister(self, node: Any) -> None:
        self.expire()
        name = fields.text("node", node)
        entry = self.inventory.nodes.get(name)
        if entry is None:
            raise NotFound(f"unknown node {name!r}")
        for lease in self._leases.on_node(name):
            self._drop(lease, f"lost: node {name} unregistered")
        for _, slot in self.groups.slots():
            if slot.node == name:
                slot.placed = False
        self.inventory.remove(entry)
        self._alive.pop(name, None)
        self._touch()
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
        entry = self.inventory.nodes.get(name)
        if entry is None:
            return HeartbeatResult(known=False, lost=())
        now = self._clock()
        entry.last_seen = now
        self._alive[name] = None
        self._alive.move_to_end(name)
        if not entry.up:
            self.inventory.set_up(entry, True)
            self._touch()
            log.info("node %s is back up", name)
        lost = []
        claims = None     # built once, and only when a reported lease is not held
        for lease_id in reported:
            lease = self._leases.get(lease_id)
            if lease is not None and any(v.node == name for v in lease.vgpus):
                self._leases.renew(lease, now)
                continue
            if lease_id in self._released:
                lost.append(lease_id)
                continue
            claims = self._claims() if claims is None else claims
            if not self._rebuild(entry, lease_id, grants.get(lease_id), claims):
                log.info("lease %s reported by node %s is not held: lost", lease_id, name)
                lost.append(lease_id)
        return HeartbeatResult(known=True, lost=tuple(lost))

    # -- grants -----------------------------------------------------------------------

    def allocate(self, vgpu: Any = 1, gmem: Any = None, ratio: Any = None,
                 **more: Any) -> Grant:
        """Grants a request (fields: request.FIELDS), or raises Invalid (never fits) or
        Busy (not now)."""
        self.expire()
        demand, owner, _ = request.parse({"vgpu": vgpu, "gmem": gmem, "ratio": ratio, **more})
        return self._grant(demand, owner)

    def preview(self, vgpu: Any = 1, gmem: Any = None, ratio: Any = None, **more: Any) -> Grant:
        """What allocate would grant now, holding nothing (no lease, no quota charge, no
        reservation): for tools that show what a new run would get (orion-nv-smi)."""
        self.expire()
        demand, owner, _ = request.parse({"vgpu": vgpu, "gmem": gmem, "ratio": ratio, **more,
                                          "reserved": False})
        return self._grant(demand, owner, commit=False)

    def release(self, lease: Any) -> None:
        self.expire()
        lease_id = fields.text("lease", lease)
        found = self._leases.get(lease_id)
        if found is None:
            raise NotFound(f"unknown lease {lease_id} (already released or expired)")
        self._drop(found, "released")
        self._released[lease_id] = self._clock()

    def release_group(self, group_id: Any) -> dict[str, int]:
        """Ends a group's reservation: idle vGPUs go back to the pool now, vGPUs in use
        when their lease ends."""
        self.expire()
        group = self.groups.remove(fields.text("group_id", group_id))
        freed, running = [], []
        for slot in group.slots:
            lease = self._leases.get(slot.holder) if slot.holder else None
            if lease is not None:
                running.append(lease)
            else:
                freed.append(slot)
        self._place_slots([slot for slot in freed if slot.placed], -1)
        self._charge_slots(group, freed, -1)
        for lease in {id(lease): lease for lease in running}.values():
            # The lease now holds its capacity itself, charged to its own client.
            self._charge_slots(group, lease.slots, -1)
            self.quotas.charge(lease.owner.client_id,
                               _gpus_of(self._devices_of(lease.vgpus), lease.vgpus))
            lease.slots = None
        self.store.delete_group(group.group_id)
        self._freed()
        log.info("group %s released: %d idle vGPU(s) back to the pool, %d in use until "
                 "their lease ends", group.group_id, len(freed), len(group.slots) - len(freed))
        return {"freed": len(freed), "in_use": len(group.slots) - len(freed)}

    def expire(self) -> list[str]:
        """Applies the timeouts that have passed; returns the ids of the leases it released."""
        now = self._clock()
        dropped = []
        while self._released and now - next(iter(self._released.values())) > RELEASED_MEMORY_S:
            self._released.popitem(last=False)
        if self._claims_until is not None and now > self._claims_until:
            self._drop_stale_claims()
        while self._alive:
            node = self.inventory.nodes[next(iter(self._alive))]
            if now - node.last_seen <= self._node_timeout:
                break
            del self._alive[node.name]
            self.inventory.set_up(node, False)
            log.warning("node %s is down: no heartbeat for %.1f s", node.name,
                        now - node.last_seen)
            dropped += [self._drop(lease, f"lost: node {node.name} is down")
                        for lease in self._leases.on_node(node.name)]
        for lease in self._leases.due(now - self._lease_timeout):
            dropped.append(self._drop(
                lease, f"expired: not reported for {now - lease.last_seen:.1f} s"))
        return dropped

    # -- views ------------------------------------------------------------------------

    def status(self) -> dict[str, list]:
        """The pool as the `status` reply shows it (times are seconds ago)."""
        self.expire()
        now = self._clock()
        nodes = [{"node": node.name, "server": node.server,
                  "state": "up" if node.up else "down", "vgpu_count": node.vgpu_count,
                  "last_seen_s": round(now - node.last_seen, 1),
                  "k8s_node": node.k8s_node, "hosts": sorted(node.hosts),
                  "overcommit": node.overcommit,
                  "gpus": [_gpu_status(d) for d in node.devices]}
                 for node in self.inventory.nodes.values()]
        leases = [{"lease": lease.lease_id, "client_id": lease.owner.client_id,
                   "host": lease.owner.host, "pid": lease.owner.pid,
                   "group_id": lease.owner.group_id, "reserved": lease.slots is not None,
                   "qos": lease.qos, "age_s": round(now - lease.granted_at, 1),
                   "last_seen_s": round(now - lease.last_seen, 1),
                   "vgpus": [v.wire() for v in lease.vgpus]}
                  for lease in self._leases]
        return {"nodes": nodes, "leases": leases}

    def summary(self) -> dict[str, Any]:
        """Pool totals, the head of a dashboard."""
        self.expire()
        nodes = self.inventory.nodes.values()
        devices = list(self.inventory.all_devices())
        return {"nodes": len(nodes), "nodes_up": sum(node.up for node in nodes),
                "gpus": len(devices), "vgpus": sum(d.vgpus for d in devices),
                "tasks": len(self._leases), "reserved_groups": len(self.groups.all()),
                "memory_mib": sum(d.gpu.memory_mib for d in devices),
                "used_mib": sum(d.used_mib for d in devices),
                "ratio": FULL_RATIO * len(devices), "used_ratio": sum(d.used_ratio for d in devices),
                "policy": self.policy.describe(), "quota_limit": self.quotas.enforced,
                "overcommit": {"mem_ratio": self.overcommit.mem,
                               "core_ratio": self.overcommit.core}}

    def group_list(self) -> list[dict[str, Any]]:
        return [{**group.wire(), "vgpus": len(group.slots),
                 "idle": sum(slot.holder is None for slot in group.slots)}
                for group in self.groups.all()]

    def touch(self) -> None:
        """Rules changed (quotas, custom types): cached refusals no longer hold, and
        waiting requests may fit now."""
        self._touch()

    # -- internals: granting ----------------------------------------------------------

    def _grant(self, demand: Demand, owner: Owner, commit: bool = True) -> Grant:
        custom = self.custom.find(demand.device_name)
        who = f"allocate {demand.describe()} for {owner.describe()}"
        if custom is not None and demand.cross_node:
            raise Invalid(f"cross_node grants whole GPUs; custom device type {custom.name} "
                          f"is a part of one")
        if custom is not None and (demand.gmem is not None or demand.ratio is not None):
            raise Invalid(f"device_name {custom.name} is a custom device type: it sets "
                          f"gmem and ratio, leave them out")
        group = self.groups.get(owner.group_id)
        if group is not None:
            slots = idle_slots(group, demand, self._usable)
            if slots is not None:
                return self._grant_reserved(demand, owner, group, slots, commit)
        if not self.inventory.devices:
            log.info("%s: refused: the pool is empty", who)
            raise Busy("no GPU is registered in the pool")
        search = Search(self.inventory, demand, owner, custom, self.quotas)
        trace = Trace(demand.qos)
        chosen = search.run(trace)
        decision = _decision(search.in_scope(), trace)
        if chosen is None:
            never = self._never(search, owner)
            log.info("%s: %s; refused: %s", who, decision, never or "busy")
            if never is not None:
                raise Invalid(never)
            raise Busy(search.busy_reason())
        items = [(device, *search.size(device)) for device in chosen]
        try:
            self.quotas.check(owner.client_id, [(d.gpu, mib, ratio) for d, mib, ratio in items])
        except QuotaExceeded as exceeded:
            log.info("%s: %s; refused: %s", who, decision, exceeded)
            raise (Busy if exceeded.retry else Invalid)(str(exceeded)) from None
        lease_id = uuid.uuid4().hex if commit else ""
        vgpus = [VGpu(vgpu_id=f"{lease_id}-{i}", server=d.node.server, node=d.node.name,
                      gpu_uuid=d.gpu.uuid, gpu_index=d.gpu.index, gpu_name=d.gpu.name,
                      memory_mib=mib, ratio=ratio) for i, (d, mib, ratio) in enumerate(items)]
        if not commit:
            return Grant(lease_id, tuple(vgpus), demand.qos, owner.group_id, False)
        slots = None
        if owner.reserved:
            group = self.groups.open(owner.group_id, owner.client_id)
            slots = [ReservedSlot(v.node, v.gpu_uuid, v.memory_mib, v.ratio, demand.qos,
                                  holder=lease_id) for v in vgpus]
            group.slots += slots
            self._place_slots(slots, 1)
            self._charge_slots(group, slots, 1)
            self.store.save_group(group.wire())
        else:
            self.inventory.hold(items, demand.qos)
            self.quotas.charge(owner.client_id, [(d.gpu, mib, r) for d, mib, r in items])
        now = self._clock()
        self._leases.add(Lease(lease_id, vgpus, owner, demand.qos, now, now, slots))
        log.info("%s: %s; chose [%s]: lease %s%s", who, decision, _shown(vgpus), lease_id,
                 f" (reserved for group {owner.group_id})" if owner.reserved else "")
        return Grant(lease_id, tuple(vgpus), demand.qos, owner.group_id, owner.reserved)

    def _grant_reserved(self, demand: Demand, owner: Owner, group: ReservedGroup,
                        slots: list[ReservedSlot], commit: bool = True) -> Grant:
        lease_id = uuid.uuid4().hex if commit else ""
        devices = [self.inventory.devices[slot.gpu_uuid] for slot in slots]
        vgpus = [VGpu(vgpu_id=f"{lease_id}-{i}", server=d.node.server, node=d.node.name,
                      gpu_uuid=d.gpu.uuid, gpu_index=d.gpu.index, gpu_name=d.gpu.name,
                      memory_mib=slot.memory_mib, ratio=slot.ratio)
                 for i, (d, slot) in enumerate(zip(devices, slots))]
        if not commit:
            return Grant(lease_id, tuple(vgpus), demand.qos, group.group_id, True)
        for slot in slots:
            slot.holder = lease_id
        self.store.save_group(group.wire())
        now = self._clock()
        self._leases.add(Lease(lease_id, vgpus, owner, demand.qos, now, now, slots))
        log.info("allocate %s for %s: reserved vGPUs of group %s; chose [%s]: lease %s",
                 demand.describe(), owner.describe(), group.group_id, _shown(vgpus), lease_id)
        return Grant(lease_id, tuple(vgpus), demand.qos, group.group_id, True)

    def _usable(self, slot: ReservedSlot) -> bool:
        device = self.inventory.devices.get(slot.gpu_uuid)
        return device is not None and device.node.up

    def _never(self, search: Search, owner: Owner) -> str | None:
        """Why the request can never be served (None: it could be, later); cached."""
        key = (search.demand, owner.client_id if self.quotas.enforced else None)
        if key not in self._refusals:
            if len(self._refusals) >= _REFUSALS_KEPT:
                self._refusals.clear()
            self._refusals[key] = search.never_reason()
        return self._refusals[key]

    # -- internals: holding and dropping ----------------------------------------------

    def _drop(self, lease: Lease, why: str) -> str:
        self._leases.remove(lease)
        if lease.slots is not None:
            for slot in lease.slots:
                slot.holder = None      # the group keeps the capacity
            group = self.groups.get(lease.owner.group_id)
            if group is not None:
                self.store.save_group(group.wire())
        else:
            devices = self._devices_of(lease.vgpus)
            self.inventory.hold([(d, v.memory_mib, v.ratio) for d, v in zip(devices, lease.vgpus)
                                 if d is not None], lease.qos, -1)
            self.quotas.charge(lease.owner.client_id, _gpus_of(devices, lease.vgpus), -1)
        self._freed()
        log.info("lease %s %s; gave back %s", lease.lease_id, why,
                 ", ".join(f"{v.node}/gpu{v.gpu_index} {v.memory_mib} MiB {v.ratio} %"
                           for v in lease.vgpus))
        return lease.lease_id

    def _place_slots(self, slots: Iterable[ReservedSlot], sign: int) -> None:
        """Counts (1) or stops counting (-1) reserved slots on their GPUs."""
        for slot in slots:
            device = self.inventory.devices[slot.gpu_uuid]
            self.inventory.hold([(device, slot.memory_mib, slot.ratio)], slot.qos, sign)
            slot.placed = sign > 0

    def _charge_slots(self, group: ReservedGroup, slots: Iterable[ReservedSlot],
                      sign: int) -> None:
        """A group's slots count in its client's quota from creation (or loading) until
        release, whether or not their GPU is in the pool at the moment."""
        self.quotas.charge(group.client_id, [(self._slot_gpu(slot), slot.memory_mib, slot.ratio)
                                             for slot in slots], sign)

    def _slot_gpu(self, slot: ReservedSlot) -> Gpu:
        device = self.inventory.devices.get(slot.gpu_uuid)
        # Before its node registers, a slot's GPU is known by uuid only; quotas of the
        # default type and vendor apply to it until then.
        return device.gpu if device is not None else Gpu(slot.gpu_uuid, "", 0, 1)

    def _hold_again(self, node: Node) -> None:
        """Counts again, on a node's fresh GPU records, what is held there."""
        for lease in self._leases.on_node(node.name):
            if lease.slots is None:
                mine = [(self.inventory.devices[v.gpu_uuid], v.memory_mib, v.ratio)
                        for v in lease.vgpus if v.node == node.name]
                self.inventory.hold(mine, lease.qos)
        for group, slot in self.groups.slots():
            device = self.inventory.devices.get(slot.gpu_uuid)
            if slot.placed or device is None or device.node is not node:
                continue
            slot.node = node.name
            mib, ratio = device.free(slot.qos)
            if mib >= slot.memory_mib and ratio >= slot.ratio:
                self._place_slots([slot], 1)
            else:
                log.warning("group %s: reserved vGPU on %s does not fit any more "
                            "(%d MiB %d %% free); it waits", group.group_id, device.label,
                            mib, ratio)

    def _devices_of(self, vgpus: Iterable[VGpu]) -> list[Device | None]:
        return [self.inventory.devices.get(v.gpu_uuid) for v in vgpus]

    # -- internals: rebuilding after a restart ----------------------------------------

    def _rebuild(self, node: Node, lease_id: str, entries: Any,
                 claims: dict[str, list[tuple[ReservedGroup, ReservedSlot]]]) -> bool:
        """Re-creates the node's part of a lease from what the node reported (or from the
        reserved slots it held: `claims`). False if that is impossible: the lease is lost."""
        claimed = [(group, slot) for group, slot in claims.get(lease_id, ())
                   if slot.placed and slot.node == node.name]
        slots = [slot for _, slot in claimed]
        try:
            vgpus = (rebuild.slot_vgpus(node, lease_id, slots, self.inventory.devices) if slots
                     else rebuild.reported_vgpus(node, lease_id, entries))
        except Invalid as why:
            log.warning("lease %s reported by node %s not rebuilt: %s", lease_id, node.name, why)
            return False
        now = self._clock()
        lease = self._leases.get(lease_id)
        if lease is None:
            group = claimed[0][0].group_id if claimed else None
            qos = slots[0].qos if slots else rebuild.likely_qos(vgpus, self.inventory.devices)
            lease = Lease(lease_id, vgpus, Owner(group_id=group), qos, now, now,
                          slots or None)
            self._leases.add(lease)
        else:   # another node's part is held already (cross-node grants)
            self._leases.extend(lease, vgpus, now)
            if slots and lease.slots is not None:
                lease.slots += slots
        if not slots:
            self.inventory.hold([(self.inventory.devices[v.gpu_uuid], v.memory_mib, v.ratio)
                                 for v in vgpus], lease.qos)
        log.info("lease %s rebuilt from node %s: %s", lease_id, node.name,
                 ", ".join(f"gpu{v.gpu_index} {v.memory_mib} MiB {v.ratio} %" for v in vgpus))
        return True

    def _claims(self) -> dict[str, list[tuple[ReservedGroup, ReservedSlot]]]:
        """Reserved slots by the lease that holds them."""
        claims: dict[str, list[tuple[ReservedGroup, ReservedSlot]]] = {}
        for group, slot in self.groups.slots():
            if slot.holder:
                claims.setdefault(slot.holder, []).append((group, slot))
        return claims

    # -- internals: state -------------------------------------------------------------

    def _check_gpus(self, name: str, gpus: tuple[Gpu, ...]) -> None:
        for what, values in (("uuid", [g.uuid for g in gpus]), ("index", [g.index for g in gpus])):
            repeated = sorted({str(v) for v in values if values.count(v) > 1})
            if repeated:
                raise Invalid(f"gpus repeat {what} {', '.join(repeated)}")
        for gpu in gpus:
            owner = self.inventory.devices.get(gpu.uuid)
            if owner is not None and owner.node.name != name:
                raise Invalid(f"GPU {gpu.uuid} is already registered by node {owner.node.name}")

    def _freed(self) -> None:
        self.changes += 1

    def _touch(self) -> None:
        """The pool's shape or rules changed: what never fitted may fit now."""
        self.changes += 1
        self._refusals.clear()

    def _drop_stale_claims(self) -> None:
        """Reserved slots loaded with a holder whose node never reported it again (the
        client ended while the controller was down) become idle."""
        for group in self.groups.all():
            stale = [slot for slot in group.slots
                     if slot.holder and self._leases.get(slot.holder) is None]
            for slot in stale:
                slot.holder = None
            if stale:
                self.store.save_group(group.wire())
                log.info("group %s: %d reserved vGPU(s) idle again: their lease did not "
                         "come back after the restart", group.group_id, len(stale))
        self._claims_until = None

    def _load(self) -> None:
        self.quotas.load(self.store.quotas())
        for entry in self.store.custom_devices():
            self.custom.load(entry)
        for entry in self.store.groups():
            group = self.groups.load(entry)
            self._charge_slots(group, group.slots, 1)
        # Leases held on reserved slots come back in heartbeats within these seconds.
        self._claims_until = (self._clock() + self._node_timeout + self._lease_timeout
                              if self.groups.all() else None)
        log.info("loaded from %s: %d quota(s), %d custom device type(s), %d reserved "
                 "group(s)", self.store.path, len(self.quotas.all()), len(self.custom.all()),
                 len(self.groups.all()))


def _gpu(i: int, value: Any) -> Gpu:
    entry = fields.mapping(f"gpus[{i}]", value)
    return Gpu(uuid=fields.text(f"gpus[{i}].uuid", entry.get("uuid")),
               name=fields.text(f"gpus[{i}].name", entry.get("name")),
               index=fields.integer(f"gpus[{i}].index", entry.get("index"), low=0),
               memory_mib=fields.integer(f"gpus[{i}].memory_mib", entry.get("memory_mib"), low=1),
               type=fields.text(f"gpus[{i}].type", entry.get("type", "GPU")),
               vendor=fields.text(f"gpus[{i}].vendor", entry.get("vendor", "NVIDIA")))


def _gpu_status(device: Device) -> dict[str, Any]:
    gpu = device.gpu
    return {"uuid": gpu.uuid, "name": gpu.name, "index": gpu.index, "type": gpu.type,
            "vendor": gpu.vendor, "memory_mib": gpu.memory_mib,
            "used_mib": device.used_mib, "used_ratio": device.used_ratio,
            "vgpus": device.vgpus, "exclusive_vgpus": device.exclusive,
            "overcommit": {"mem_ratio": device.overcommit.mem,
                           "core_ratio": device.overcommit.core}}


def _gpus_of(devices: list[Device | None], vgpus: list[VGpu]) -> list[tuple[Gpu, int, int]]:
    return [(d.gpu, v.memory_mib, v.ratio) for d, v in zip(devices, vgpus) if d is not None]


def _address_host(server: str) -> str:
    """`10.0.0.5` of `tcp://10.0.0.5:9960` (a client on that address is local)."""
    rest = server.split("://", 1)[-1]
    return rest.rsplit(":", 1)[0].strip("[]") if ":" in rest else rest


def _shown(vgpus: Iterable[VGpu]) -> str:
    return ", ".join(f"{v.node}/gpu{v.gpu_index} {v.memory_mib} MiB {v.ratio} %" for v in vgpus)


def _decision(in_scope: int, trace: Trace) -> str:
    """The filter-and-score part of a decision's log line."""
    candidates = ", ".join(f"{seen.label} (free {seen.free_mib} MiB, {seen.free_ratio} %, "
                           f"fits {seen.fits})" for seen in trace.shown)
    scores = ", ".join(f"{seen.label} device {seen.device_load / 10:g} % server "
                       f"{seen.server_load / 10:g} %" for seen in trace.shown)
    return (f"{in_scope} GPU(s) in scope, examined {trace.examined}, "
            f"{trace.without_room} filtered out; candidates [{candidates or 'none'}]; "
            f"top scores (load) [{scores or 'none'}]")
