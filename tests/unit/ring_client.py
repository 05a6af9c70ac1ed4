"""The client's half of the call ring as the shim uses it (native/src/ring.c, built here
with gcc and called through ctypes), shared by the ring's and the fast path's tests."""
from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

from orion_server import ring

SRC = Path(__file__).resolve().parents[2] / "native" / "src"


class CFrame(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def build_ring_lib(directory: Path) -> ctypes.CDLL:
    """ring.c (and the shared-memory naming it uses) as a library in `directory`."""
    if not shutil.which("gcc"):
        pytest.skip("gcc not found")
    path = directory / "libring.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-o", str(path),
                    str(SRC / "ring.c"), str(SRC / "shm_object.c"), "-lrt"], check=True)
    lib = ctypes.CDLL(str(path))
    lib.orion_ring_create.restype = ctypes.c_void_p
    lib.orion_ring_name.restype = ctypes.c_char_p
    lib.orion_ring_name.argtypes = [ctypes.c_void_p]
    lib.orion_ring_destroy.argtypes = [ctypes.c_void_p]
    lib.orion_ring_put.argtypes = [ctypes.c_void_p, ctypes.POINTER(CFrame), ctypes.c_int,
                                   ctypes.c_uint, ctypes.c_int]
    lib.orion_ring_wait_reply.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_int]
    lib.orion_ring_reply.argtypes = [ctypes.c_void_p, ctypes.POINTER(CFrame), ctypes.c_int,
                                     ctypes.POINTER(ctypes.c_uint)]
    return lib


class RingClient:
    """A ring made and filled as transport.c does."""

    def __init__(self, lib):
        self.lib, self.r = lib, lib.orion_ring_create()
        assert self.r, "no shared memory"
        self.name = lib.orion_ring_name(self.r).decode()

    def put(self, frames, flags=0, timeout_us=1000) -> int:
        """orion_ring_put's answer (0: in the ring)."""
        arr = (CFrame * max(len(frames), 1))()
        keep = [ctypes.create_string_buffer(bytes(f), max(len(f), 1)) for f in frames]
        for i, buf in enumerate(keep):
            arr[i] = CFrame(ctypes.addressof(buf), len(frames[i]))
        return self.lib.orion_ring_put(self.r, arr, len(frames), flags, timeout_us)

    def close(self):
        self.lib.orion_ring_destroy(self.r)


def ring_pair(client: RingClient):
    """(client, the worker's side of its ring), for a fixture to yield from; both closed
    afterwards."""
    worker = ring.CallRing(client.name)
    yield client, worker
    worker.close()
    client.close()
