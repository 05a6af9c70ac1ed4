"""Kernel launches from the call ring to the backend without the generic path.

Asynchronous launches are the calls a training loop makes most, and through the generic
path (`CallRing.next_request` slicing frames, `Session.handle` parsing the header into
a Request, looking up the handler, `wire.decode_args` walking the plan, the handler
unpacking dim3s) each cost the worker several microseconds of Python before the driver
is called. Here one struct unpack reads a whole launch record (the ring's record
header, the request header and orionLaunchKernel's arguments), a few comparisons check
it, and the backend's ring launcher (`Backend.ring_launcher`) checks the function and
stream handles against the session's own and calls the driver; consecutive launches
are taken in one loop, per wake-up of the worker.

It takes only what the generic path would do the same with: a well-formed async
`orionLaunchKernel` record for the current device, of a session without a sticky
error, that the launcher accepts. Anything else (another call, a padding or
ON_SOCKET record, a malformed record, another device, an unknown function or stream, a
cooperative launch) stops the run before that record, and the generic path answers it,
with its checks, errors and log lines. What the generic path does around a call is done
here too: the compute gate's turn before the launch (`Session.gate`), the session's
call count, and a failed launch's status kept for the next synchronous call (sticky
errors stop the run).
"""
from __future__ import annotations

import logging
import struct

from . import backend as B
from . import ring, wire
from .generated.cudart_table import CALLS

log = logging.getLogger("orion.worker")

LAUNCH_ID, _LAUNCH = next((i, c) for i, c in CALLS.items() if c.name == "orionLaunchKernel")


def _arguments_format() -> str:
    """orionLaunchKernel's packed arguments as struct codes (dim3s as three u32, the
    in_buf as its u64 length), from the generated table, so the fast path cannot drift
    from what the shim packs."""
    fmt = ""
    for p in _LAUNCH.params:
        assert p.kind in ("val", "in_buf"), p
        fmt += "III" if p.fmt == "12s" else p.fmt
    assert [p.name for p in _LAUNCH.params] == ["function", "grid", "block", "sharedMem",
                                                "stream", "flags", "args", "argsSize"]
    return fmt


# A launch record in the request ring (docs/protocol.md, "Records"): u32 size, u16 frame
# count (2), u16 flags (0), u32 length of frame 0 and of frame 1; frame 0 at offset 16:
# the request header (u32 magic, u16 version, u16 flags, u32 call id, u16 device, u16
# reserved, u64 seq), then the arguments; frame 1, the kernel's argument bytes, at ARGS.
# The words that must hold one value are read as u64s and compared with it at once:
#   bytes 4-11:  frame count 2, record flags 0, frame 0's length FRAME0   (_FRAMES)
#   bytes 16-23: magic, version, flags ASYNC and nothing else              (_HEADER)
#   bytes 24-31: call id orionLaunchKernel, the device, reserved 0         (_call(device))
# (any other value, ASYNC with more flags included, goes to the generic path); seq is
# skipped.
_ARGS_FORMAT = _arguments_format()
FRAME0 = wire.HEADER_SIZE + struct.calcsize("<" + _ARGS_FORMAT)
ARGS = 16 + ((FRAME0 + 7) & ~7)
RECORD = struct.Struct("<IQIQQ8x" + _ARGS_FORMAT)
assert RECORD.size == 16 + FRAME0
_FRAMES = 2 | FRAME0 << 32
_HEADER = wire.MAGIC | wire.VERSION << 32 | wire.FLAG_ASYNC << 48
PUBLISH_EVERY = 32     # launches between stores of the ring's tail during a run


def _call(device: int) -> int:
    return LAUNCH_ID | device << 32


class LaunchPath:
    """`CallRing.fast` of a session: `path(tail, head)` launches the run of launch
    records from `tail` and returns the tail after them."""

    def __init__(self, session, call_ring: ring.CallRing, sticky_errors, launch):
        self.session = session
        self.sticky = sticky_errors
        self.launch = launch
        self.request, self.control = call_ring.request, call_ring.control
        self.size = call_ring.request_size

    def __call__(self, tail: int, head: int) -> int:
        session = self.session
        if session.sticky_error:
            return tail
        device = session.backend.device
        call = _call(device)
        gate = getattr(session, "gate", None)
        request, control, size, launch = self.request, self.control, self.size, self.launch
        mask = size - 1
        unpack = RECORD.unpack_from
        taken = 0
        try:
            while True:
                if head - tail < ARGS:
                    head = control[ring.HEAD]
                    if head - tail < ARGS:
                        break
                pos = tail & mask
                if pos + ARGS > size:
                    break
                (record, frames, length, header, call_device,
                 function, gx, gy, gz, bx, by, bz, shared, stream, launch_flags,
                 buffer, args_size) = unpack(request, pos)
                if (call_device != call or frames != _FRAMES or header != _HEADER
                        or buffer != length or record != ARGS + ((length + 7) & ~7)
                        or pos + record > size or tail + record > head):
                    break
                if gate is not None:
                    session.before_compute(device)
                try:
                    status = launch(function, gx, gy, gz, bx, by, bz, shared, stream,
                                    launch_flags, pos + ARGS, length, args_size)
                    if status is None:       # the generic path answers this one
                        break
                except B.CudaError as e:     # (a string: a kept record must not keep
                    log.info("orionLaunchKernel: %s", str(e))   # the ring's frames alive)
                    status = e.status
                except Exception:
                    log.exception("orionLaunchKernel failed in the backend")
                    status = B.cudaErrorUnknown
                tail += record
                taken += 1
                if status:
                    if status != B.cudaErrorNotReady:
                        log.info("orionLaunchKernel returned %d", status)
                    if not session.pending_error:
                        session.pending_error = status
                    if status in self.sticky:
                        session.sticky_error = status
                        break
                if not taken % PUBLISH_EVERY:
                    control[ring.TAIL] = tail
        finally:
            if taken:
                control[ring.TAIL] = tail
                session.calls += taken
        return tail


    def timeout(self, timeout_s: float) -> float:
        """The wait for the next request after a run: the session's, as _serve_ring
        asks it before each request (a compute turn taken in the run shortens it)."""
        wait_s = getattr(self.session, "wait_s", None)
        return wait_s(timeout_s) if wait_s is not None else timeout_s


def attach(session, call_ring: ring.CallRing, sticky_errors) -> None:
    """Let the session's launches on this ring take the fast path, where its backend has
    a ring launcher (both backends do)."""
    make = getattr(session.backend, "ring_launcher", None)
    launch = make(call_ring.request, call_ring.request_address) if make else None
    if launch is not None:
        call_ring.fast = LaunchPath(session, call_ring, sticky_errors, launch)
