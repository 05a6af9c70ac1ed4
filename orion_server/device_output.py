"""Collect what the GPU writes to this process's stdout and stderr (device printf, device
assert messages), for the client.

The driver prints a kernel's printf buffer with the C library's stdio at synchronising
calls. The worker points fd 1 (and 2) at a pipe, a thread drains the pipe as it fills (a
full pipe would block the driver), and each reply takes what has arrived after flushing
stdio, so output reaches the client with the call that synchronised it.

Every synchronising call asks, and almost always nothing was printed: the question is one
fflush and one poll of all the pipes (reading each empty non-blocking pipe, which raises,
cost ~3 µs per pipe per call), and a look at `waiting`, a word the C call loop
(native/worker/call_loop.c) reads too: the drain threads set it before they read a pipe
and after they keep what they read, and `take` clears it before it takes, so output is
always in a pipe or flagged.
"""
from __future__ import annotations

import ctypes
import fcntl
import os
import select
import threading

import cffi

_ffi = cffi.FFI()
_libc = ctypes.CDLL(None)


class DeviceOutputs:
    """The captured descriptors: `take` at every synchronising call."""

    def __init__(self, captured: tuple[tuple[int, int], ...]):
        """`captured`: (reply flag, descriptor) pairs, in the order replies carry them."""
        self.waiting = _ffi.new("int[1]")
        self.outputs = tuple((flag, DeviceOutput(fd, self.waiting)) for flag, fd in captured)
        self.fds = tuple(output.read_end for _, output in self.outputs)
        self._readable = select.poll()
        for fd in self.fds:
            self._readable.register(fd, select.POLLIN)

    def take(self) -> tuple[int, list[bytes]]:
        """Push what the driver printed with stdio into the pipes; the flags of the
        descriptors that have output and their texts, in order."""
        _libc.fflush(None)
        if not self.waiting[0] and not self._readable.poll(0):
            return 0, []
        self.waiting[0] = 0
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

    def __init__(self, fd: int, waiting):
        read_end, write_end = os.pipe()
        os.dup2(write_end, fd)
        os.close(write_end)
        fcntl.fcntl(read_end, fcntl.F_SETFL, fcntl.fcntl(read_end, fcntl.F_GETFL) | os.O_NONBLOCK)
        self.read_end = read_end
        self._waiting = waiting
        self._pending = bytearray()      # read from the pipe, not yet taken
        self._lock = threading.Lock()
        threading.Thread(target=self._drain, daemon=True, name="device-output").start()

    def _read_available(self) -> None:
        """Move what the pipe holds into _pending; lock held."""
        while True:
            try:
                chunk = os.read(self.read_end, 65536)
            except BlockingIOError:
                return
            if not chunk:
                return
            self._pending += chunk

    def _drain(self) -> None:
        while True:
            select.select([self.read_end], [], [])
            self._waiting[0] = 1
            with self._lock:
                self._read_available()
            self._waiting[0] = 1

    def take(self) -> bytes:
        """Everything that reached the pipe (the drain thread makes room in it while
        stdio writes into it)."""
        with self._lock:
            self._read_available()
            data, self._pending = bytes(self._pending), bytearray()
        return data
