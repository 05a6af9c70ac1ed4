"""Kernel launches from the call ring to the driver without the generic path.

Asynchronous launches are the calls a training loop makes most. Through the generic
path (`CallRing.next_request` slicing frames, `Session.handle` parsing the header, the
handler, `wire.decode_args`) each costs the worker several microseconds of Python, and
even a bare Python loop calling `cuLaunchKernel` through cffi takes 6.0 µs per launch on
the H100 machine where a C loop takes 3.2-3.9 µs. So the loop is C
(native/worker/launch_loop.c, in liborion_worker.so): it walks the ring, checks each
launch record and calls the backend's launch function (the driver's `cuLaunchKernel`
itself on the GPU backend), and comes back to Python only for a decision:

- a function or stream handle it does not know yet: the backend says whether it is the
  session's (`Backend.launch_args_size`, `Backend.launch_stream_known`) and the loop
  remembers the answer until a stream is destroyed, the device is reset or changes;
- a compute turn (`Session.before_compute`), before the first launch and when the
  turn's time is up;
- a failed launch: its status is kept for the next synchronous call (sticky errors stop
  the run), as the generic path keeps it.

It takes only what the generic path would do the same with: a well-formed async
`orionLaunchKernel` record with no launch flags for the current device, of a session
without a sticky error, whose kernel takes exactly the argument bytes sent. Anything
else (another call, a padding or ON_SOCKET record, a malformed record, another device,
an unknown function or stream, a cooperative launch) stops the run before that record,
and the generic path answers it with its checks, errors and log lines.
"""
from __future__ import annotations

import functools
import logging
import math
import struct
from pathlib import Path

import cffi

from . import backend as B
from . import ring, wire
from .generated.cudart_table import CALLS

log = logging.getLogger("orion.worker")

LIBRARY = Path(__file__).resolve().parent / "lib" / "liborion_worker.so"
LAUNCH_ID, _LAUNCH = next((i, c) for i, c in CALLS.items() if c.name == "orionLaunchKernel")
# what ends a session's launch handles (a stream's, or all of them)
FORGETS_HANDLES = frozenset(i for i, c in CALLS.items()
                            if c.name in ("cudaStreamDestroy", "cudaDeviceReset"))

ffi = cffi.FFI()
ffi.cdef("""
struct orion_launch_run {
    uint64_t tail, head;
    uint64_t call;
    int64_t turn_end_ns;
    int32_t new_turn;
    uint64_t taken;
    uint64_t function, stream;
    int32_t status;
};
void *orion_launch_loop_new(void *request, uint64_t size, void *control, uint64_t frames,
                            uint64_t header, void *launch);
void orion_launch_loop_free(void *loop);
uint64_t orion_launch_record_size(void);
uint64_t orion_launch_run_size(void);
void orion_launch_loop_allow_function(void *loop, uint64_t function, uint32_t args_size);
void orion_launch_loop_allow_stream(void *loop, uint64_t stream);
void orion_launch_loop_forget(void *loop);
int orion_launch_loop_run(void *loop, struct orion_launch_run *run);
""")
STOP_EMPTY, STOP_GENERIC, STOP_UNKNOWN_FUNCTION, STOP_UNKNOWN_STREAM, STOP_TURN, \
    STOP_FAILED = range(6)
NO_TURNS = (1 << 63) - 1
# The launch function's C type: cuLaunchKernel's, with handles as integers.
LAUNCH_TYPE = ("int(uintptr_t, unsigned int, unsigned int, unsigned int, unsigned int, "
               "unsigned int, unsigned int, unsigned int, uintptr_t, void **, void **)")


def _arguments_format() -> str:
    """orionLaunchKernel's packed arguments as struct codes (dim3s as three u32, the
    in_buf as its u64 length), from the generated table, so the loop cannot drift from
    what the shim packs."""
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
# launch_loop.c's `struct launch_record` is this layout; the words that must hold one
# value are compared as u64s:
#   bytes 4-11:  frame count 2, record flags 0, frame 0's length FRAME0   (FRAMES)
#   bytes 16-23: magic, version, flags ASYNC and nothing else              (HEADER)
#   bytes 24-31: call id orionLaunchKernel, the device, reserved 0         (_call(device))
RECORD = struct.Struct("<IQIQQ8x" + _arguments_format())
FRAME0 = RECORD.size - 16
ARGS = 16 + ((FRAME0 + 7) & ~7)
FRAMES = 2 | FRAME0 << 32
HEADER = wire.MAGIC | wire.VERSION << 32 | wire.FLAG_ASYNC << 48
assert FRAME0 == wire.HEADER_SIZE + struct.calcsize("<" + _arguments_format())


def _call(device: int) -> int:
    return LAUNCH_ID | device << 32


@functools.cache
def _load():
    lib = ffi.dlopen(str(LIBRARY))
    if (lib.orion_launch_record_size(), lib.orion_launch_run_size()) != (
            RECORD.size, ffi.sizeof("struct orion_launch_run")):
        raise RuntimeError(f"{LIBRARY} is not built from this tree's launch_loop.c: "
                           "rebuild it (python3 -m orion_client.native_build)")
    return lib


class LaunchPath:
    """`CallRing.fast` of a session: `path(tail, head)` launches the run of launch
    records from `tail` and returns the tail after them."""

    def __init__(self, lib, session, call_ring: ring.CallRing, sticky_errors, launch: int):
        self.lib, self.session, self.sticky = lib, session, sticky_errors
        request = ffi.cast("void *", call_ring.request_address)
        control = ffi.cast("void *", call_ring.header_address)
        loop = lib.orion_launch_loop_new(request, call_ring.request_size, control, FRAMES,
                                         HEADER, ffi.cast("void *", launch))
        if loop == ffi.NULL:
            raise MemoryError("launch loop")
        self.loop = ffi.gc(loop, lib.orion_launch_loop_free)
        self.run = ffi.new("struct orion_launch_run *")
        # the request ring as u64 words (records start 8-aligned), so a record that is
        # not a launch goes back to the generic path without a call into C
        self.words, self.size = call_ring.request_words, call_ring.request_size
        self.handles_of = None      # (device, session.handles_version) the loop knows

    def __call__(self, tail: int, head: int) -> int:
        session, lib, loop, run = self.session, self.lib, self.loop, self.run
        backend = session.backend
        device = backend.device
        pos = tail & (self.size - 1)
        if (session.sticky_error or pos + ARGS > self.size
                or self.words[(pos + 24) >> 3] != _call(device)):
            return tail
        handles_of = (device, session.handles_version)
        if handles_of != self.handles_of:
            lib.orion_launch_loop_forget(loop)
            self.handles_of = handles_of
        run.tail, run.head, run.call, run.taken = tail, head, _call(device), 0
        run.turn_end_ns = 0 if session.gate is not None else NO_TURNS
        run.new_turn = 0
        try:
            while True:
                stop = lib.orion_launch_loop_run(loop, run)
                if stop == STOP_UNKNOWN_FUNCTION:
                    size = backend.launch_args_size(run.function)
                    if size is None:
                        break
                    lib.orion_launch_loop_allow_function(loop, run.function, size)
                elif stop == STOP_UNKNOWN_STREAM:
                    if not backend.launch_stream_known(run.stream):
                        break
                    lib.orion_launch_loop_allow_stream(loop, run.stream)
                elif stop == STOP_TURN:
                    end = session.before_compute(device)
                    run.turn_end_ns = int(end * 1e9) if math.isfinite(end) else NO_TURNS
                    run.new_turn = 1
                elif stop == STOP_FAILED:
                    if self._failed(run.status):
                        break
                else:
                    break
        finally:
            session.calls += run.taken
        return run.tail

    def _failed(self, status: int) -> bool:
        """Keep a failed launch's status for the next synchronous call; True when it is
        sticky (the run ends: the session answers nothing else from now on)."""
        session = self.session
        if status != B.cudaErrorNotReady:
            log.info("orionLaunchKernel returned %d", status)
        if not session.pending_error:
            session.pending_error = status
        if status in self.sticky:
            session.sticky_error = status
            return True
        return False

    def timeout(self, timeout_s: float) -> float:
        """The wait for the next request after a run: the session's, as _serve_ring
        asks it before each request (a compute turn taken in the run shortens it)."""
        return self.session.wait_s(timeout_s)


class handler_launch:
    """A C launch function (LAUNCH_TYPE, at `address`) that calls a backend's
    `orionLaunchKernel` handler: the loop's launches on backends without a driver (the
    host backend, test backends), with their checks and errors."""

    _DIM3 = struct.Struct("<III")

    def __init__(self, handler):
        pack, size_of = self._DIM3.pack, ffi.typeof("size_t *")

        def launch(function, gx, gy, gz, bx, by, bz, shared, stream, params, extra):
            args = (b"" if extra == ffi.NULL else
                    ffi.buffer(extra[1], ffi.cast(size_of, extra[3])[0]))
            try:
                return handler(function, pack(gx, gy, gz), pack(bx, by, bz), shared, stream,
                               0, args, len(args))[0]
            except B.CudaError as e:
                log.info("orionLaunchKernel: %s", e)
                return e.status
        self.callback = ffi.callback(LAUNCH_TYPE, launch, error=B.cudaErrorUnknown)
        self.address = int(ffi.cast("uintptr_t", self.callback))


def attach(session, call_ring: ring.CallRing, sticky_errors) -> None:
    """Let the session's launches on this ring take the C loop, where the backend has a
    launch function and the worker's library is built."""
    launch = session.backend.launch_function()
    if launch is None:
        return
    try:
        lib = _load()
    except (OSError, RuntimeError) as e:
        log.error("launches take the generic path: %s", e)
        return
    call_ring.fast = LaunchPath(lib, session, call_ring, sticky_errors, launch)
