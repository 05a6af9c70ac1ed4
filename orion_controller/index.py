"""GPUs kept sorted by the placement policy's rank, on shelves by the room they have.

Placement walks GPUs best rank first and stops at the first node that can hold the
request, so a grant costs O(GPUs examined), not O(pool). A compact policy ranks the
fullest GPUs first, and those are the ones that cannot take the request: "dust" (a few
MiB left after memory // vgpu_count) would be walked past on every request. So each
GPU model's GPUs sit on shelves by free compute and free memory (coarse bands), each
shelf sorted by rank, and a request merges only the shelves whose band could hold it.

When a GPU's load changes, the ranks of every GPU of its node change with it (the
server load is part of the rank), and those entries are moved: O(GPUs per node x
log n) comparisons plus a C memmove.

Invariant: a device is filed exactly when its node is up and it has room for at least
1 MiB and 1 % under the most permissive QoS; `device.key` is the rank it was filed
under and `device.shelf` the list holding `(*key, device)` (both None when not filed).
Keys end with the node's registration number and the GPU index, so they are unique and
the device itself is never compared.
"""
from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right, insort
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from orion_controller.model import SHARED_ALL

if TYPE_CHECKING:
    from orion_controller.inventory import Device

Rank = Callable[["Device"], tuple]
Group = tuple[str, str]            # (device type, model name), both lower case
Needs = Callable[[Group], tuple[int, int]]   # the least % and MiB a vGPU takes there

# Lower edges of the bands of free % and free MiB. Common sizes (10, 25, 50, 100 %,
# powers of two MiB) sit on edges, so a request seldom shares a band with GPUs too
# small for it. Above the last edge: overcommitted room.
_RATIO_EDGES = (0, 5, 10, 20, 25, 30, 40, 50, 60, 75, 100, 101)
_MIB_EDGES = (0, 256, 1024, 2048, 4096, 8192, 12288, 16384, 20480, 24576, 32768, 40960,
              49152, 65536, 98304, 131072)


def _band(edges: tuple[int, ...], value: int) -> int:
    return bisect_right(edges, value) - 1


def _may_hold(edges: tuple[int, ...], band: int, need: int) -> bool:
    """Whether a value in this band (below the next edge) can be >= need."""
    return band + 1 == len(edges) or edges[band + 1] > need


class RankIndex:
    def __init__(self, rank: Rank) -> None:
        self._rank = rank
        self._shelves: dict[Group, dict[tuple[int, int], list[tuple]]] = {}
        self._count: dict[Group, int] = {}
        # Bounds for default sizes (memory // vgpu_count): only ever widened, so an
        # estimate from them never leaves out a GPU that could hold the request.
        self.most_vgpu_count = 1
        self._least_mib: dict[Group, int] = {}

    def admit(self, devices: Iterable[Device]) -> None:
        """Widens the default-size bounds for GPUs joining the pool (before filing them)."""
        for device in devices:
            self.most_vgpu_count = max(self.most_vgpu_count, device.node.vgpu_count)
            self._least_mib[device.group] = min(
                self._least_mib.get(device.group, device.gpu.memory_mib), device.gpu.memory_mib)

    def refile(self, devices: Iterable[Device], up: bool) -> None:
        """Re-shelves devices whose load (or node's load or state) changed."""
        for device in devices:
            self.remove(device)
            if not up:
                continue
            free_mib, free_ratio = device.free(SHARED_ALL)   # the most any QoS may use
            if free_mib < 1 or free_ratio < 1:
                continue
            group = device.group
            band = (_band(_RATIO_EDGES, free_ratio), _band(_MIB_EDGES, free_mib))
            device.key = (*self._rank(device), device.node.seq, device.gpu.index)
            device.shelf = self._shelves.setdefault(group, {}).setdefault(band, [])
            insort(device.shelf, (*device.key, device))
            self._count[group] = self._count.get(group, 0) + 1

    def remove(self, device: Device) -> None:
        if device.key is None:
            return
        at = bisect_left(device.shelf, device.key)   # a key prefix sorts just before its entry
        assert device.shelf[at][-1] is device, "index entry out of place"
        del device.shelf[at]
        self._count[device.group] -= 1
        device.key = device.shelf = None

    def least_mib(self, group: Group) -> int:
        return self._least_mib.get(group, 1)

    def groups(self) -> list[Group]:
        return [group for group, count in self._count.items() if count]

    def size(self, groups: Iterable[Group]) -> int:
        return sum(self._count.get(group, 0) for group in groups)

    def ordered(self, groups: Iterable[Group], needs: Needs) -> Iterator[Device]:
        """Filed devices of these groups on shelves that may hold `needs`, best rank
        first (a lazy k-way merge)."""
        lists = []
        for group in groups:
            ratio, mib = needs(group)
            lists += [shelf for (ratio_band, mib_band), shelf in self._shelves.get(group, {}).items()
                      if shelf and _may_hold(_RATIO_EDGES, ratio_band, ratio)
                      and _may_hold(_MIB_EDGES, mib_band, mib)]
        merged = lists[0] if len(lists) == 1 else heapq.merge(*lists)
        return (entry[-1] for entry in merged)
