"""Device memory of the host backend: host buffers at fake device addresses.

Addresses only grow: a freed range is never handed out again in the session, and a
guard gap follows every allocation, so stale pointers and overruns resolve to nothing
(cudaErrorInvalidValue) instead of to someone else's bytes.

Every device has a budget (its vGPU's memory). It is charged for what the GPU would
hold: plain allocations, arrays and module variables, and for stream-ordered pools
what the pool has reserved, which outlives the allocations until the pool is trimmed.
"""
from __future__ import annotations

import bisect
import mmap
from dataclasses import dataclass, field

from ..backend import CudaError, cudaErrorInvalidValue, cudaErrorMemoryAllocation

BASE_ADDRESS = 0x7F00_0000_0000
ALIGNMENT = 512            # as real GPUs; also the unit of the budget
GUARD = ALIGNMENT
# Larger buffers are anonymous mappings: their pages cost host RAM only once written,
# so a program may allocate most of a large vGPU and touch little of it.
_LAZY_BYTES = 1 << 20


def align_up(n: int, alignment: int = ALIGNMENT) -> int:
    return -(-n // alignment) * alignment


@dataclass(eq=False)
class MemPool:
    handle: int
    device: int
    max_size: int = 0                   # 0: bounded by the device only
    threshold: int = 0                  # cudaMemPoolAttrReleaseThreshold
    reuse: dict = field(default_factory=lambda: {1: 1, 2: 1, 3: 1})  # the int attributes
    used: int = 0
    used_high: int = 0
    reserved: int = 0
    reserved_high: int = 0
    alive: bool = True


@dataclass(eq=False)
class Allocation:
    base: int
    size: int
    device: int
    kind: str                           # "malloc", "async", "array", "var"; "host": mapped
    data: bytearray | mmap.mmap
    pool: MemPool | None
    charge: int                         # bytes of the budget (or of its pool) it holds


def _zeroed(size: int) -> bytearray | mmap.mmap:
    return mmap.mmap(-1, size) if size >= _LAZY_BYTES else bytearray(size)


class Memory:
    """All allocations of a session by address, and each device's budget."""

    def __init__(self, capacities: list[int]):
        self.capacity = list(capacities)
        self.used = [0] * len(capacities)
        self.pools: list[MemPool] = []
        self._bases: list[int] = []         # sorted, since addresses only grow
        self._by_base: dict[int, Allocation] = {}
        self._next = BASE_ADDRESS

    # ---- budget ----
    def charge(self, device: int, nbytes: int) -> None:
        if self.used[device] + nbytes > self.capacity[device]:
            raise CudaError(cudaErrorMemoryAllocation,
                            f"{nbytes} bytes do not fit: {self.used[device]} of "
                            f"{self.capacity[device]} in use on device {device}")
        self.used[device] += nbytes

    def free_bytes(self, device: int) -> int:
        return self.capacity[device] - self.used[device]

    # ---- allocations ----
    def allocate(self, device: int, size: int, kind: str, pool: MemPool | None = None) -> int:
        """Address of a new zeroed allocation; pool allocations are charged by the pool."""
        charged = align_up(size)
        if pool is None:
            self.charge(device, charged)
        try:
            data = _zeroed(size)
        except (MemoryError, OSError, OverflowError):
            if pool is None:
                self.used[device] -= charged
            raise CudaError(cudaErrorMemoryAllocation,
                            f"the host cannot back {size} bytes") from None
        return self._place(Allocation(0, size, device, kind, data, pool, charged))

    def map(self, device: int, data: mmap.mmap, kind: str = "host") -> int:
        """Address of host memory made visible to the device (not charged)."""
        return self._place(Allocation(0, len(data), device, kind, data, None, 0))

    def _place(self, alloc: Allocation) -> int:
        alloc.base = self._next
        self._next = alloc.base + align_up(alloc.size) + GUARD
        self._bases.append(alloc.base)
        self._by_base[alloc.base] = alloc
        return alloc.base

    def release(self, alloc: Allocation) -> None:
        del self._by_base[alloc.base]
        del self._bases[bisect.bisect_left(self._bases, alloc.base)]
        if alloc.pool is None:
            self.used[alloc.device] -= alloc.charge
        else:
            self._pool_free(alloc.pool, alloc.charge)

    def at_base(self, address: int) -> Allocation:
        """The allocation that starts at `address` (what cudaFree takes)."""
        alloc = self._by_base.get(address)
        if alloc is None:
            raise CudaError(cudaErrorInvalidValue, f"0x{address:x} is not an allocation")
        return alloc

    def containing(self, address: int) -> Allocation:
        i = bisect.bisect_right(self._bases, address) - 1
        alloc = self._by_base[self._bases[i]] if i >= 0 else None
        if alloc is None or address >= alloc.base + alloc.size:
            raise CudaError(cudaErrorInvalidValue, f"0x{address:x} is not device memory")
        return alloc

    def view(self, address: int, count: int) -> memoryview:
        """The `count` bytes at `address`, which must lie inside one allocation."""
        if count == 0:
            return memoryview(bytearray())
        alloc = self.containing(address)
        offset = address - alloc.base
        if offset + count > alloc.size:
            raise CudaError(cudaErrorInvalidValue,
                            f"{count} bytes at 0x{address:x} run past the allocation of "
                            f"{alloc.size} bytes at 0x{alloc.base:x}")
        return memoryview(alloc.data)[offset:offset + count]

    def allocations(self) -> list[Allocation]:
        return list(self._by_base.values())

    # ---- stream-ordered pools ----
    def create_pool(self, handle: int, device: int, max_size: int = 0) -> MemPool:
        pool = MemPool(handle, device, max_size)
        self.pools.append(pool)
        return pool

    def allocate_from_pool(self, pool: MemPool, size: int, kind: str = "async") -> int:
        need = align_up(size)
        if pool.max_size and pool.used + need > pool.max_size:
            raise CudaError(cudaErrorMemoryAllocation, f"pool 0x{pool.handle:x} is full")
        grow = pool.used + need - pool.reserved
        if grow > 0 and grow > self.free_bytes(pool.device):
            # as the driver does before failing: give back what the pools keep cached
            for p in self.pools:
                if p.device == pool.device:
                    self.trim(p, 0)
            grow = pool.used + need - pool.reserved
        if grow > 0:
            self.charge(pool.device, grow)
            pool.reserved += grow
            pool.reserved_high = max(pool.reserved_high, pool.reserved)
        pool.used += need
        pool.used_high = max(pool.used_high, pool.used)
        try:
            return self.allocate(pool.device, size, kind, pool)
        except CudaError:
            pool.used -= need
            raise

    def _pool_free(self, pool: MemPool, nbytes: int) -> None:
        pool.used -= nbytes
        if not pool.alive:        # a destroyed pool keeps nothing cached
            self.destroy_pool(pool)

    def trim(self, pool: MemPool, keep: int) -> None:
        """Release reserved bytes the pool does not use, down to `keep`."""
        target = min(pool.reserved, max(pool.used, keep))
        self.used[pool.device] -= pool.reserved - target
        pool.reserved = target

    def synchronized(self, device: int) -> None:
        """A synchronization point: pools keep at most their release threshold."""
        for pool in self.pools:
            if pool.device == device:
                self.trim(pool, pool.threshold)

    def destroy_pool(self, pool: MemPool) -> None:
        """Its handle dies now; its allocations stay valid until freed (as in CUDA)."""
        pool.alive = False
        self.trim(pool, 0)
        if pool.used == 0 and pool in self.pools:
            self.pools.remove(pool)

    def reset(self, device: int) -> None:
        """Forget every allocation and pool of `device` (cudaDeviceReset); mapped host
        memory is the client's, and stays."""
        for alloc in self.allocations():
            if alloc.device == device and alloc.kind != "host":
                del self._by_base[alloc.base]
        self._bases = sorted(self._by_base)
        self.pools = [p for p in self.pools if p.device != device]
        self.used[device] = 0
