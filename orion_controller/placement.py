"""Where the vGPUs of one request go: the policy's rank, and the choice over candidates.

Filter then score. The pool filters (model, type, ids, node, host, room, quota) through
`fits`; the policy scores every GPU by two loads, each the dominant share (memory or
compute) of what is granted, per mille:
- device load: of the GPU; ALGORITHM_DEVICE_COMPACT=true ranks loaded GPUs first
  (pack onto few GPUs), false ranks empty ones first (spread);
- server load: of the GPU's node; ALGORITHM_SERVER_COMPACT likewise for nodes;
- ALGORITHM_DEVICE_PREFERED=true compares device load first, false server load first.
Ties go to the older node, then the lower GPU index: with nothing granted the order is
first fit. "Pack everything" is DEVICE_PREFERED=true with DEVICE_COMPACT=true; "spread
everything" is DEVICE_PREFERED=false with SERVER_COMPACT=false (and DEVICE_COMPACT=false
to spread over a node's GPUs too).

`choose` walks candidates best first. Without cross_node the request goes to the first
node that can hold it all; within the node its vGPUs go round-robin over the node's GPUs
best first, so they land on distinct GPUs while there are some with room and share one
only when the node has no other. With cross_node (whole GPUs) the vGPUs are taken one
per GPU, node after node in rank order, until the request is served.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

if TYPE_CHECKING:
    from orion_controller.inventory import Device, Node

SHOWN = 5    # candidates and scores a decision log shows


@dataclass(frozen=True)
class Policy:
    device_compact: bool = True
    server_compact: bool = True
    device_prefered: bool = True

    def rank(self, device: Device) -> tuple[int, int]:
        """Smaller is better."""
        device_term = -device.load() if self.device_compact else device.load()
        server_load = device.node.load()
        server_term = -server_load if self.server_compact else server_load
        return (device_term, server_term) if self.device_prefered else (server_term, device_term)

    def describe(self) -> str:
        return (f"device {'compact' if self.device_compact else 'spread'}, "
                f"server {'compact' if self.server_compact else 'spread'}, "
                f"{'device' if self.device_prefered else 'server'} first")


@dataclass(frozen=True)
class Seen:
    """A candidate as it was when the decision was made."""

    label: str
    free_mib: int
    free_ratio: int
    fits: int
    device_load: int
    server_load: int


@dataclass
class Trace:
    """What one decision looked at, for its log line."""

    qos: str
    examined: int = 0
    without_room: int = 0
    shown: list[Seen] = field(default_factory=list)

    def note(self, device: Device, fits: int) -> None:
        if len(self.shown) < SHOWN:
            self.shown.append(Seen(device.label, *device.free(self.qos), fits, device.load(),
                                   device.node.load()))


Fits = Callable[["Device"], int]          # vGPUs of the request a GPU takes now; 0: filtered
NodeOrder = Callable[["Node"], Sequence["Device"]]


def choose(ordered: Iterable[Device], count: int, fits: Fits, node_order: NodeOrder, *,
           cross_node: bool, trace: Trace) -> list[Device] | None:
    """`count` devices (one per vGPU, a device may repeat) or None if they do not fit."""
    tried: set[str] = set()
    spread: list[Device] = []          # cross_node: whole GPUs taken so far
    for device in ordered:
        trace.examined += 1
        takes = fits(device)
        if takes <= 0:
            trace.without_room += 1
            continue
        trace.note(device, takes)
        node = device.node
        if node.name in tried:
            continue
        tried.add(node.name)
        on_node = [(d, n) for d in node_order(node) if (n := fits(d)) > 0]
        if cross_node:
            spread += [d for d, _ in on_node[:count - len(spread)]]
            if len(spread) == count:
                return spread
        elif sum(n for _, n in on_node) >= count:
            return _round_robin(on_node, count)
    return None


def _round_robin(on_node: list[tuple[Device, int]], count: int) -> list[Device]:
    left = [n for _, n in on_node]
    chosen: list[Device] = []
    while len(chosen) < count:   # terminates: the caller checked sum(left) >= count
        for i, (device, _) in enumerate(on_node):
            if left[i] and len(chosen) < count:
                chosen.append(device)
                left[i] -= 1
    return chosen
