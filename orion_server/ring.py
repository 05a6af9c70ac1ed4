"""Worker side of the same-host call ring (docs/protocol.md, "Same-host call ring").

A client on this host creates a POSIX shared-memory region and offers it over the
session's socket (a request with call id `CALL_ID`); once the worker has taken it, every
request arrives in its request ring and every reply leaves through its reply area,
framed exactly as on the socket, because a ZeroMQ round trip to Python costs ~65 µs and
a polled shared word under one. The client side is native/src/ring.c.

Both sides poll for a while, then sleep on a futex word of the region: a side about to
sleep sets its flag, makes a full fence and looks once more; the other side publishes,
makes a full fence and wakes it if the flag is set. Python has no fence of its own, so
`_fence` takes and drops a lock, whose atomic read-modify-write is a full barrier on
x86-64. Plain loads and stores suffice otherwise because x86-64 keeps loads in order and
stores in order (TSO); other machines would need acquire and release barriers on every
access, so the ring is refused there and the session stays on the socket.

Frames handed out by `next_request` are views into the ring, valid until `finish`: the
handlers keep no frame past their return (the ZeroMQ path frees them then too).

`fast`, when set, sees the records first: it takes a run of records it knows (the
calls of a training step: orion_server/fast_path.py, a loop in C) without the generic
frame slicing and decoding, and leaves the first one it does not know to
`next_request`.
"""
from __future__ import annotations

import ctypes
import mmap
import os
import platform
import re
import struct
import sys
import threading
import time
import zlib

from .shm import open_client_file

CALL_ID = zlib.crc32(b"orionCallRing")   # the offer: not a CUDA call
MAGIC = 0x474E524F                       # b"ORNG" little-endian
VERSION = 1
HEADER_SIZE = 256
FLAG_PAD = 1         # record: skip to the start of the ring
FLAG_ON_SOCKET = 2   # record: this message travels on the ZeroMQ socket
MAX_FRAMES = 16
SPIN_S = 50e-6       # poll this long before sleeping (as the client does)
ON_SOCKET = object()  # what next_request returns for an ON_SOCKET record

_NAME = re.compile(r"^/orion-ring-\d+-\d+$")
_INFO = struct.Struct("<IHHII")    # magic, version, header size, request bytes, reply bytes
_RECORD = struct.Struct("<IHH")    # size, frame count, flags
_LENS = [struct.Struct(f"<{n}I") for n in range(MAX_FRAMES + 1)]
_HEADS = [struct.Struct(f"<IHH{n}I") for n in range(MAX_FRAMES + 1)]   # record + lengths
_OFFER = struct.Struct("<I")       # the offer's argument: u32 length, then the name
# indexes into the header as u64 and u32 words
_HEAD, _TAIL, _REPLY_SEQ = 64 // 8, 128 // 8, 136 // 8
_CLIENT_SLEEPING, _WORKER_SLEEPING = 72 // 4, 144 // 4

_SYS_FUTEX, _FUTEX_WAIT, _FUTEX_WAKE = 202, 0, 1   # x86-64; shared, so not PRIVATE
_syscall = ctypes.CDLL(None, use_errno=True).syscall   # CDLL: releases the GIL
_syscall.restype = ctypes.c_long
_syscall.argtypes = [ctypes.c_long, ctypes.c_void_p, ctypes.c_int, ctypes.c_uint,
                     ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint]
_FENCE = threading.Lock()


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class RingError(Exception):
    """The ring cannot be used (refused offer), or the client broke its records."""


class Frame:
    """A request frame as Session.handle reads it (zmq.Frame's `buffer`)."""
    __slots__ = ("buffer",)


def offered_name(head) -> str | None:
    """The ring's name if `head` (frame 0 of a request) is a ring offer, else None."""
    if len(head) < 28 or _OFFER.unpack_from(head, 8)[0] != CALL_ID:
        return None
    (n,) = _OFFER.unpack_from(head, 24)
    return bytes(head[28:28 + n]).decode(errors="replace")


class CallRing:
    def __init__(self, name: str, owner_uid: int | None = None):
        """The client's ring `name`, which must be a file of owner_uid where given."""
        if sys.byteorder != "little" or platform.machine() not in ("x86_64", "AMD64"):
            raise RingError(f"the call ring needs x86-64, this is {platform.machine()}")
        if not _NAME.match(name):
            raise RingError(f"bad ring name {name!r}")
        try:
            fd, st = open_client_file(name, owner_uid)
        except OSError as e:
            raise RingError(f"cannot open {name}: {e}") from None
        try:
            size = st.st_size
            self._map = mmap.mmap(fd, size) if size >= HEADER_SIZE else None
        finally:
            os.close(fd)
        if self._map is None:
            raise RingError(f"{name} is too small")
        magic, version, header, req, rep = _INFO.unpack_from(self._map, 0)
        if (magic, version, header) != (MAGIC, VERSION, HEADER_SIZE) or req < 4096 or (
                req & (req - 1)) or rep < 4096 or HEADER_SIZE + req + rep > size:
            self._map.close()
            raise RingError(f"{name}: header {magic:#x} v{version} {header}+{req}+{rep} "
                            f"does not describe a ring of {size} bytes")
        self.name, self.request_size, self.reply_size = name, req, rep
        view = memoryview(self._map)
        self._ctl64 = view[:HEADER_SIZE].cast("Q")
        self._ctl32 = view[:HEADER_SIZE].cast("I")
        self._request = view[HEADER_SIZE:HEADER_SIZE + req]
        self._reply = view[HEADER_SIZE + req:HEADER_SIZE + req + rep]
        self._words = (ctypes.c_uint32.from_buffer(self._map, _CLIENT_SLEEPING * 4),
                       ctypes.c_uint32.from_buffer(self._map, _WORKER_SLEEPING * 4),
                       ctypes.c_char.from_buffer(self._map, HEADER_SIZE))
        self._client_word = ctypes.addressof(self._words[0])
        self._worker_word = ctypes.addressof(self._words[1])
        # for `fast`: where the header and the request ring lie in this process
        self.request_address = ctypes.addressof(self._words[2])
        self.header_address = self.request_address - HEADER_SIZE
        self.request_words = self._request.cast("Q")
        # fast(tail, head) -> the new tail: takes the records from `tail` on that it
        # knows (all of them published: `head`), stopping at the first it does not
        # know; publishes the tail in the header itself as it goes, so a long run does
        # not keep a waiting client from the room.
        # fast.timeout(timeout_s) -> how long to wait for the next request after a run
        # (the session's idle timeout may have changed with it)
        self.fast = None
        self._timeout = _Timespec()
        self._tail = self._next_tail = self._ctl64[_TAIL]
        # reused for every request: a list of Frame per frame count
        self._frames = [[Frame() for _ in range(n)] for n in range(MAX_FRAMES + 1)]

    # ---- requests ----
    def next_request(self, timeout_s: float):
        """The frames of the next request; ON_SOCKET when the socket carries them; None
        when none came within timeout_s (spinning SPIN_S of it, sleeping the rest)."""
        ctl, tail = self._ctl64, self._tail
        head = ctl[_HEAD]
        while True:
            if head == tail:
                if not self._wait(tail, timeout_s):
                    return None
                head = ctl[_HEAD]
            if self.fast is None:
                break
            taken = self.fast(tail, head)
            if taken == tail:          # the record at tail is for the generic path
                break
            self._tail = self._next_tail = tail = taken
            head = ctl[_HEAD]
            if head == tail:           # what the calls taken changed (a compute turn)
                timeout_s = self.fast.timeout(timeout_s)
        req = self._request
        pos = tail & (self.request_size - 1)
        size, n, flags = _RECORD.unpack_from(req, pos)
        if flags & FLAG_PAD:
            if size != self.request_size - pos:
                raise RingError(f"padding of {size} bytes at {pos}")
            tail += size
            pos = 0
            size, n, flags = _RECORD.unpack_from(req, 0)
        if n > MAX_FRAMES or size < 8 or pos + size > self.request_size or (
                tail + size > head or head - tail > self.request_size):
            raise RingError(f"record of {size} bytes and {n} frames at {pos}")
        self._tail, self._next_tail = tail, tail + size
        if flags & FLAG_ON_SOCKET:
            return ON_SOCKET
        frames = self._frames[n]
        end, off = pos + size, pos + ((8 + 4 * n + 7) & ~7)
        for frame, length in zip(frames, _LENS[n].unpack_from(req, pos + 8)):
            if off + length > end:
                raise RingError(f"frame of {length} bytes runs past its record")
            frame.buffer = req[off:off + length]
            off += (length + 7) & ~7
        return frames

    def finish(self) -> None:
        """The request from next_request is done with: its room goes back to the client."""
        self._tail = self._next_tail
        self._ctl64[_TAIL] = self._tail

    def _wait(self, tail: int, timeout_s: float) -> bool:
        ctl = self._ctl64
        clock = time.perf_counter
        spin_until = clock() + SPIN_S
        while ctl[_HEAD] == tail:
            if clock() > spin_until:
                break
        else:
            return True
        ctl32 = self._ctl32
        ctl32[_WORKER_SLEEPING] = 1
        _FENCE.acquire()
        _FENCE.release()
        if ctl[_HEAD] == tail:
            rest = max(timeout_s - SPIN_S, 0.0)
            self._timeout.tv_sec = int(rest)
            self._timeout.tv_nsec = int((rest % 1) * 1e9)
            _syscall(_SYS_FUTEX, self._worker_word, _FUTEX_WAIT, 1,
                     ctypes.addressof(self._timeout), None, 0)
        ctl32[_WORKER_SLEEPING] = 0
        return ctl[_HEAD] != tail

    # ---- replies ----
    def reply(self, seq: int, frames: list) -> bool:
        """Publish the reply to call `seq`; False when it does not fit the reply area (then
        send it on the socket and call reply_on_socket)."""
        n = len(frames)
        if n > MAX_FRAMES:
            return False
        start = size = (8 + 4 * n + 7) & ~7
        lens = []
        for frame in frames:
            length = len(frame)
            lens.append(length)
            size += (length + 7) & ~7
        if size > self.reply_size:
            return False
        rep = self._reply
        _HEADS[n].pack_into(rep, 0, size, n, 0, *lens)
        off = start
        for frame, length in zip(frames, lens):
            rep[off:off + length] = frame
            off += (length + 7) & ~7
        self._publish(seq)
        return True

    def reply_on_socket(self, seq: int) -> None:
        """The reply to `seq` went on the socket: say so in its place."""
        _RECORD.pack_into(self._reply, 0, 8, 0, FLAG_ON_SOCKET)
        self._publish(seq)

    def _publish(self, seq: int) -> None:
        self._ctl64[_REPLY_SEQ] = seq   # one 8-byte store, after the record's (TSO)
        _FENCE.acquire()
        _FENCE.release()
        if self._ctl32[_CLIENT_SLEEPING]:
            self._ctl32[_CLIENT_SLEEPING] = 0
            _syscall(_SYS_FUTEX, self._client_word, _FUTEX_WAKE, 1, None, None, 0)

    def close(self) -> None:
        for frames in self._frames:
            for frame in frames:
                frame.buffer = None
        del self._words
        self.fast = None
        for view in (self.request_words, self._ctl64, self._ctl32, self._request,
                     self._reply):
            view.release()
        self._map.close()
