"""Shared-memory segments of a client's page-locked memory, mapped in its worker.

The client names each segment (POSIX shm, "/orion-<pid>-<n>") and says at which address
it mapped it; host pointers inside a segment arrive as client addresses and are
translated here. Only names of that form are opened, and every translated range must
lie inside one segment, so a client can reach nothing else of the worker's memory.

A segment's name lives until the client frees it or exits; one that died leaves its
names behind, so the worker removes those it still has mapped when the session ends
(`remove_names`).
"""
from __future__ import annotations

import bisect
import mmap
import os
import re
import stat
from dataclasses import dataclass

import numpy as np

from .backend import CudaError, cudaErrorInvalidValue

_NAME = re.compile(r"^/orion-\d+-\d+$")


def open_client_file(name: str, owner_uid: int | None) -> tuple[int, os.stat_result]:
    """/dev/shm<name>, a client's shared-memory object, opened read-write: a regular
    file (no link followed) of the client's user where that is known (peer.py)."""
    fd = os.open("/dev/shm" + name, os.O_RDWR | os.O_NOFOLLOW)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or (owner_uid is not None and st.st_uid != owner_uid):
        os.close(fd)
        raise PermissionError(f"not a file of the client's user (uid {owner_uid})")
    return fd, st


@dataclass
class Segment:
    name: str
    client_base: int
    size: int
    local_base: int
    mapping: mmap.mmap
    file_id: tuple[int, int]   # (st_dev, st_ino): the object this name meant at attach


class Segments:
    def __init__(self):
        self._by_base: dict[int, Segment] = {}
        self._bases: list[int] = []
        self.owner_uid: int | None = None    # the client's user, once known (peer.py)

    def attach(self, name: str, size: int, client_base: int) -> Segment:
        if not _NAME.match(name) or size <= 0 or client_base in self._by_base:
            raise CudaError(cudaErrorInvalidValue, f"bad segment {name!r}")
        try:
            fd, st = open_client_file(name, self.owner_uid)
        except OSError as e:
            raise CudaError(cudaErrorInvalidValue, f"cannot open {name}: {e}") from None
        try:
            if st.st_size < size:
                raise CudaError(cudaErrorInvalidValue, f"{name} is smaller than {size}")
            mapping = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        local = np.frombuffer(mapping, dtype=np.uint8).ctypes.data
        seg = Segment(name, client_base, size, local, mapping, (st.st_dev, st.st_ino))
        self._by_base[client_base] = seg
        bisect.insort(self._bases, client_base)
        return seg

    def detach(self, client_base: int) -> Segment:
        seg = self._by_base.pop(client_base, None)
        if seg is None:
            raise CudaError(cudaErrorInvalidValue, f"no segment at 0x{client_base:x}")
        self._bases.remove(client_base)
        return seg

    def segment_of(self, client_ptr: int, count: int = 1) -> Segment:
        """The segment holding client_ptr..client_ptr+count entirely."""
        i = bisect.bisect_right(self._bases, client_ptr) - 1
        if i >= 0:
            seg = self._by_base[self._bases[i]]
            if client_ptr - seg.client_base + count <= seg.size:
                return seg
        raise CudaError(cudaErrorInvalidValue, f"0x{client_ptr:x}+{count} is in no segment")

    def translate(self, client_ptr: int, count: int) -> int:
        """The worker's address of client_ptr..client_ptr+count, which must be mapped."""
        seg = self.segment_of(client_ptr, count)
        return seg.local_base + client_ptr - seg.client_base

    def view(self, client_ptr: int, count: int) -> memoryview:
        """The bytes themselves, for backends that copy in host memory."""
        seg = self.segment_of(client_ptr, count)
        start = client_ptr - seg.client_base
        return memoryview(seg.mapping)[start:start + count]

    def all(self) -> list[Segment]:
        return list(self._by_base.values())

    def remove_names(self) -> None:
        """At the session's end: remove the names of the segments still attached, where
        they still mean the same objects (a new process of the client's pid may have
        made its own under a name the client's exit had freed). Best effort: a client
        that exited removed them itself, another user's stay (no permission)."""
        for seg in self._by_base.values():
            path = "/dev/shm" + seg.name
            try:
                st = os.stat(path)
                if (st.st_dev, st.st_ino) == seg.file_id:
                    os.unlink(path)
            except OSError:
                pass
