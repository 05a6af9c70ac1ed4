"""Page-locked buffers for the bytes of downloads over the socket (orionMemcpyDtoH).

A download chunk copied into pageable memory goes through the driver's own staging (a
DMA, then a CPU copy: 11-12 GB/s for pageable memory on the H100 machine); into
page-locked memory it is one DMA. The worker's main thread is the busiest stage of a
tcp:// download (100 % in `top -H`, benchmarks/NOTES.md), so its chunks land in
page-locked buffers, reused once ZeroMQ has sent them: pyzmq holds a reference to a
frame's buffer until libzmq is done with it, so a buffer nothing else refers to is
free again.

The buffers live as long as the worker process: a reply still being sent when the
session closes may read one.
"""
from __future__ import annotations

import ctypes
import sys

import numpy as np
from cuda.bindings import driver as drv

SIZE = 1 << 20      # the client's chunk (WIRE_CHUNK, native/src/memory.c)
MAX_BUFFERS = 32    # 8 chunks in flight per download, more than one download at a time
_PORTABLE = 1       # CU_MEMHOSTALLOC_PORTABLE: page-locked for every vGPU's context
_FREE = 3           # references of a free buffer: the list's, the loop's, getrefcount's


class ReplyBuffers:
    def __init__(self):
        self._buffers: list[np.ndarray] = []

    def take(self, count: int) -> np.ndarray | None:
        """`count` bytes of a free page-locked buffer; None when there is none (the
        caller uses pageable memory)."""
        if count > SIZE:
            return None
        for buf in self._buffers:
            if sys.getrefcount(buf) == _FREE:
                return buf[:count]
        if len(self._buffers) == MAX_BUFFERS:
            return None
        err, ptr = drv.cuMemHostAlloc(SIZE, _PORTABLE)
        if err:
            return None
        buf = np.ctypeslib.as_array((ctypes.c_ubyte * SIZE).from_address(int(ptr)))
        self._buffers.append(buf)
        return buf[:count]
