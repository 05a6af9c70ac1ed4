"""Collect what the GPU writes to this process's stdout and stderr (device printf, device
assert messages), for the client.

The driver prints a kernel's printf buffer with the C library's stdio at synchronising
calls. The worker points fd 1 (and 2) at a pipe, a thread drains the pipe as it fills (a full
pipe would block the driver), and each reply takes what has arrived after flushing
stdio, so output reaches the client with the call that synchronised it.
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import select
import threading


class DeviceOutput:
    """What the GPU writes to one of this process's descriptors: 1 (printf) or 2 (the
    messages of failed device asserts)."""

    def __init__(self, fd: int):
        self._libc = ctypes.CDLL(None)
        read_end, write_end = os.pipe()
        os.dup2(write_end, fd)
        os.close(write_end)
        fcntl.fcntl(read_end, fcntl.F_SETFL, fcntl.fcntl(read_end, fcntl.F_GETFL) | os.O_NONBLOCK)
        self._read_end = read_end
        self._pending = bytearray()
        self._lock = threading.Lock()
        threading.Thread(target=self._drain, daemon=True, name="device-output").start()

    def _read_available(self) -> None:
        """Move what the pipe holds into _pending; lock held."""
        while True:
            try:
                chunk = os.read(self._read_end, 65536)
            except BlockingIOError:
                return
            if not chunk:
                return
            self._pending += chunk

    def _drain(self) -> None:
        while True:
            select.select([self._read_end], [], [])
            with self._lock:
                self._read_available()

    def take(self) -> bytes:
        """Everything printed so far: flush stdio (which writes into the pipe, the drain
        thread making room if it fills), then collect what the pipe holds."""
        self._libc.fflush(None)
        with self._lock:
            self._read_available()
            data, self._pending = bytes(self._pending), bytearray()
        return data
