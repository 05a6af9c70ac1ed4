"""Collect what the GPU writes to this process's stdout and stderr (device printf, device
assert messages), for the client.

The driver prints a kernel's printf buffer with the C library's stdio at synchronising
calls. The worker points fd 1 (and 2) at a pipe, a thread drains the pipe as it fills (a full
pipe would block the driver), and each reply takes what has arrived after flushing
stdio, so output reaches the client with the call that synchronised it.

Every synchronising call asks, and almost always nothing was printed: the question is one
fflush and one poll of all the pipes (reading each empty non-blocking pipe, which raises,
cost ~3 µs per pipe per call).
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import select
import threading


_libc = ctypes.CDLL(None)


class DeviceOutputs:
    """The captured descriptors, as (reply flag, DeviceOutput): `take` at every
    synchronising call, one fflush and one poll when nothing was printed."""

    def __init__(self, outputs: tuple[tuple[int, DeviceOutput], ...]):
        self.outputs = outputs
        self._readable = select.poll()
        for _, output in outputs:
            self._readable.register(output.read_end, select.POLLIN)

    def take(self) -> tuple[int, list[bytes]]:
        """Push what the driver printed with stdio into the pipes; the flags of the
        descriptors that have output and their texts, in order."""
        _libc.fflush(None)
        if not self._readable.poll(0) and not any(o.pending for _, o in self.outputs):
            return 0, []
        flags, printed = 0, []
        for flag, output in self.outputs:
            text = output.take()
            if text:
                flags |= flag
                printed.append(text)
        return flags, printed


class DeviceOutput:
    """What the GPU writes to one of this process's descriptors: 1 (printf) or 2 (the
    messages of failed device asserts)."""

    def __init__(self, fd: int):
        read_end, write_end = os.pipe()
        os.dup2(write_end, fd)
        os.close(write_end)
        fcntl.fcntl(read_end, fcntl.F_SETFL, fcntl.fcntl(read_end, fcntl.F_GETFL) | os.O_NONBLOCK)
        self.read_end = read_end
        self.pending = bytearray()      # read from the pipe, not yet taken
        self._lock = threading.Lock()
        threading.Thread(target=self._drain, daemon=True, name="device-output").start()

    def _read_available(self) -> None:
        """Move what the pipe holds into `pending`; lock held."""
        while True:
            try:
                chunk = os.read(self.read_end, 65536)
            except BlockingIOError:
                return
            if not chunk:
                return
            self.pending += chunk

    def _drain(self) -> None:
        while True:
            select.select([self.read_end], [], [])
            with self._lock:
                self._read_available()

    def take(self) -> bytes:
        """Everything that reached the pipe (the drain thread makes room in it while
        stdio writes into it)."""
        with self._lock:
            self._read_available()
            data, self.pending = bytes(self.pending), bytearray()
        return data
