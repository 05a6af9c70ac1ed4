"""The calls a training step makes, from the call ring to the driver without the
generic path.

Through the generic path (`CallRing.next_request` slicing frames, `Session.handle`
parsing the header, the handler, `wire.decode_args`, the reply) a call costs the worker
~2 µs (a launch) to ~8.6 µs (a synchronous call) of Python before and after the driver
(benchmarks/worker_launch.py, worker_call.py), and even a bare Python loop calling
`cuLaunchKernel` through cffi takes 6.0 µs per launch on the H100 machine where a C loop
takes 3.2-3.9 µs. So the loop is C (native/worker/call_loop.c, in liborion_worker.so):
it walks the ring, checks each record, calls the backend's functions (the driver's
themselves on the GPU backend) and writes the plain replies of synchronous calls. It
takes kernel launches, `cudaStreamSynchronize`, `cudaEventQuery`,
`cudaEventSynchronize`, `cudaDeviceSynchronize` and copies between device memory and the session's shared
memory (`orionMemcpyShm`, `orionMemcpyShmAsync`), and comes back to Python only for a
decision:

- a function, stream or event handle, a device range or a range of shared memory it
  does not know yet: the backend says whether it is the session's
  (`Backend.fast_*`) and the loop remembers the answer until a call that may end one
  (`FORGETS`: destroys, frees, resets, detaches, graph launches) or another device;
- a compute turn (`Session.before_compute`), before the first launch and when the
  turn's time is up;
- a failed asynchronous call: its status is kept for the next synchronous call (sticky
  errors stop the run), as the generic path keeps it;
- a synchronous call whose reply is not a plain status: an error, device printf output
  to carry, and (checked before the call) an error owed from an earlier call.

It takes only what the generic path would do the same with: well-formed records of
these calls for the current device, of a session without a sticky error; anything else
(another call, a padding or ON_SOCKET record, a malformed record, another device, an
unknown handle or range, launch flags) stops the run before that record, and the
generic path answers it with its checks, errors and log lines.
"""
from __future__ import annotations

import functools
import logging
import math
import re
import struct
from pathlib import Path

import cffi

from . import backend as B
from . import ring, wire
from .generated.cudart_table import CALLS

log = logging.getLogger("orion.worker")

LIBRARY = Path(__file__).resolve().parent / "lib" / "liborion_worker.so"
_ID = {c.name: i for i, c in CALLS.items()}
# the kinds of call the loop takes, in call_loop.c's order
KINDS = ("orionLaunchKernel", "cudaStreamSynchronize", "cudaEventQuery",
         "cudaEventSynchronize", "orionMemcpyShm", "orionMemcpyShmAsync",
         "cudaDeviceSynchronize")
# calls after which a handle, device memory or a shared segment the loop was told about
# may be gone (a graph launch may free what its graph allocated): it forgets everything
FORGETS = frozenset(i for i, c in CALLS.items() if re.search(
    "Destroy|Free|Reset|Detach|Unregister|Unload|Trim|GraphLaunch", c.name))

ffi = cffi.FFI()
ffi.cdef("""
struct orion_call_loop_setup {
    uint64_t frames[7];
    uint64_t header_sync, header_async;
    uint32_t ids[7];
    void *launch;
    void *stream_synchronize, *event_query, *event_synchronize;
    void *memcpy_async;
    void *context_synchronize;
    int output_fds[2];
    volatile int *output_waiting;
};
struct orion_call_run {
    uint64_t tail, head;
    uint32_t device;
    int32_t may_reply;
    int64_t turn_end_ns;
    int32_t new_turn;
    uint64_t calls;
    uint64_t handle, count;
    uint64_t seq;
    uint32_t call;
    int32_t status;
};
struct orion_call_loop_sizes { uint64_t launch, handle, memcpy, run; };
void *orion_call_loop_new(void *header, uint64_t request_size,
                          const struct orion_call_loop_setup *setup);
void orion_call_loop_free(void *loop);
void orion_call_loop_sizes(struct orion_call_loop_sizes *out);
void orion_call_loop_allow_function(void *loop, uint64_t function, uint32_t args_size);
void orion_call_loop_allow_stream(void *loop, uint64_t stream);
void orion_call_loop_allow_event(void *loop, uint64_t event);
void orion_call_loop_allow_range(void *loop, uint64_t base, uint64_t size);
void orion_call_loop_allow_segment(void *loop, uint64_t client_base, uint64_t size,
                                   uint64_t local_base);
void orion_call_loop_forget(void *loop);
int orion_call_loop_run(void *loop, struct orion_call_run *run);
""")
(STOP_EMPTY, STOP_GENERIC, STOP_UNKNOWN_FUNCTION, STOP_UNKNOWN_STREAM, STOP_TURN,
 STOP_FAILED, STOP_UNKNOWN_EVENT, STOP_UNKNOWN_RANGE, STOP_UNKNOWN_SEGMENT,
 STOP_ANSWER) = range(10)
NO_TURNS = (1 << 63) - 1
# The C types of the backend's functions (handles as integers).
LAUNCH_TYPE = ("int(uintptr_t, unsigned int, unsigned int, unsigned int, unsigned int, "
               "unsigned int, unsigned int, unsigned int, uintptr_t, void **, void **)")


def _arguments_format(name: str) -> str:
    """A call's packed arguments as struct codes (dim3s as three u32, an in_buf as its
    u64 length), from the generated table, so the loop cannot drift from what the shim
    packs."""
    fmt = ""
    for p in CALLS[_ID[name]].params:
        assert p.kind in ("val", "in_buf"), (name, p)
        fmt += "III" if p.fmt == "12s" else "Q" if p.kind == "in_buf" else p.fmt
    return fmt


assert [p.name for p in CALLS[_ID["orionLaunchKernel"]].params] == [
    "function", "grid", "block", "sharedMem", "stream", "flags", "args", "argsSize"]
assert [p.name for p in CALLS[_ID["orionMemcpyShm"]].params] == [
    "dst", "src", "count", "kind", "stream"]

# A record in the request ring (docs/protocol.md, "Records"): u32 size, u16 frame count,
# u16 flags (0), u32 length of each frame, padded to 8; frame 0 at offset 16 (one or two
# frames): the request header (u32 magic, u16 version, u16 flags, u32 call id, u16
# device, u16 reserved, u64 seq), then the arguments; a launch's frame 1, the kernel's
# argument bytes, at LAUNCH_ARGS. call_loop.c's record structs are these layouts; the
# words that must hold one value are compared as u64s: bytes 4-11 (frame count, record
# flags, frame 0's length: FRAMES), 16-23 (magic, version, flags ASYNC or none: HEADER_*),
# 24-31 (call id, device, reserved 0).
_START = "<IQIQQ8x"
RECORDS = {name: struct.Struct(_START + _arguments_format(name)) for name in KINDS}
LAUNCH = RECORDS["orionLaunchKernel"]
LAUNCH_ARGS = 16 + ((LAUNCH.size - 16 + 7) & ~7)
FRAMES = [(2 if name == "orionLaunchKernel" else 1) | (RECORDS[name].size - 16) << 32
          for name in KINDS]
HEADER_SYNC = wire.MAGIC | wire.VERSION << 32
HEADER_ASYNC = HEADER_SYNC | wire.FLAG_ASYNC << 48


@functools.cache
def _load():
    lib = ffi.dlopen(str(LIBRARY))
    sizes = ffi.new("struct orion_call_loop_sizes *")
    lib.orion_call_loop_sizes(sizes)
    want = (LAUNCH.size, RECORDS["cudaStreamSynchronize"].size,
            RECORDS["orionMemcpyShm"].size, ffi.sizeof("struct orion_call_run"))
    if (sizes.launch, sizes.handle, sizes.memcpy, sizes.run) != want:
        raise RuntimeError(f"{LIBRARY} is not built from this tree's call_loop.c: "
                           "rebuild it (python3 -m orion_client.native_build)")
    return lib


class FastPath:
    """`CallRing.fast` of a session: `path(tail, head)` takes the run of records from
    `tail` the loop knows and returns the tail after them."""

    def __init__(self, lib, session, call_ring: ring.CallRing, functions, deliver):
        """`functions`: the backend's (Backend.fast_functions); `deliver(reply)`: sends
        the frames of a reply (the ring's reply area, or the socket)."""
        self.lib, self.session, self.deliver = lib, session, deliver
        setup = ffi.new("struct orion_call_loop_setup *")
        setup.frames = FRAMES
        setup.header_sync, setup.header_async = HEADER_SYNC, HEADER_ASYNC
        setup.ids = [_ID[name] for name in KINDS]
        for name, address in functions.items():
            setattr(setup, name, ffi.cast("void *", address))
        outputs = session.outputs
        fds = outputs.fds if outputs is not None else ()
        setup.output_fds = [*fds, -1, -1][:2]
        self.waiting = outputs.waiting if outputs is not None else ffi.new("int[1]")
        setup.output_waiting = ffi.cast("int *", ffi.cast("uintptr_t", self.waiting))
        loop = lib.orion_call_loop_new(ffi.cast("void *", call_ring.header_address),
                                       call_ring.request_size, setup)
        if loop == ffi.NULL:
            raise MemoryError("call loop")
        self.loop = ffi.gc(loop, lib.orion_call_loop_free)
        self.run = ffi.new("struct orion_call_run *")
        # the request ring as u64 words (records start 8-aligned), so a record that is
        # none of the loop's goes back to the generic path without a call into C
        self.words, self.size = call_ring.request_words, call_ring.request_size
        self.ids = frozenset(_ID[name] for name in KINDS)
        self.knows_of = None        # (device, session.handles_version) the loop knows

    def __call__(self, tail: int, head: int) -> int:
        session, lib, loop, run = self.session, self.lib, self.loop, self.run
        backend = session.backend
        device = backend.device
        pos = tail & (self.size - 1)
        if (session.sticky_error or pos + LAUNCH_ARGS > self.size
                or self.words[(pos + 24) >> 3] & 0xFFFFFFFF not in self.ids):
            return tail
        knows_of = (device, session.handles_version)
        if knows_of != self.knows_of:
            lib.orion_call_loop_forget(loop)
            self.knows_of = knows_of
        run.tail, run.head, run.device, run.calls = tail, head, device, 0
        run.may_reply = not session.pending_error
        run.turn_end_ns = 0 if session.gate is not None else NO_TURNS
        run.new_turn = 0
        try:
            while True:
                stop = lib.orion_call_loop_run(loop, run)
                if stop == STOP_UNKNOWN_FUNCTION:
                    size = backend.fast_args_size(run.handle)
                    if size is None:
                        break
                    lib.orion_call_loop_allow_function(loop, run.handle, size)
                elif stop == STOP_UNKNOWN_STREAM:
                    if not backend.fast_stream_known(run.handle):
                        break
                    lib.orion_call_loop_allow_stream(loop, run.handle)
                elif stop == STOP_UNKNOWN_EVENT:
                    if not backend.fast_event_known(run.handle):
                        break
                    lib.orion_call_loop_allow_event(loop, run.handle)
                elif stop == STOP_UNKNOWN_RANGE:
                    found = backend.fast_device_range(run.handle, run.count)
                    if found is None:
                        break
                    lib.orion_call_loop_allow_range(loop, *found)
                elif stop == STOP_UNKNOWN_SEGMENT:
                    found = backend.fast_segment(run.handle, run.count)
                    if found is None:
                        break
                    lib.orion_call_loop_allow_segment(loop, *found)
                elif stop == STOP_TURN:
                    end = session.before_compute(device)
                    run.turn_end_ns = int(end * 1e9) if math.isfinite(end) else NO_TURNS
                    run.new_turn = 1
                elif stop == STOP_FAILED:
                    if self._failed(run.status):
                        break
                elif stop == STOP_ANSWER:
                    self.deliver(session.answer(run.call, run.seq, run.status))
                    if session.sticky_error:
                        break
                    run.may_reply = not session.pending_error
                else:
                    break
        finally:
            session.calls += run.calls
        return run.tail

    def _failed(self, status: int) -> bool:
        """Keep a failed async call's status for the next synchronous call; True when
        it is sticky (the run ends: the session answers nothing else from now on)."""
        session = self.session
        session.report_error("an asynchronous call", status)
        if not session.pending_error:
            session.pending_error = status
        self.run.may_reply = 0
        return bool(session.sticky_error)

    def timeout(self, timeout_s: float) -> float:
        """The wait for the next request after a run: the session's, as _serve_ring
        asks it before each request (a compute turn taken in the run shortens it)."""
        return self.session.wait_s(timeout_s)


class HandlerLaunch:
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


def attach(session, call_ring: ring.CallRing, deliver) -> None:
    """Let the session's calls on this ring take the C loop, where the backend has
    functions for it and the worker's library is built."""
    functions = session.backend.fast_functions()
    if not functions:
        return
    try:
        lib = _load()
    except (OSError, RuntimeError) as e:
        log.error("every call takes the generic path: %s", e)
        return
    call_ring.fast = FastPath(lib, session, call_ring, functions, deliver)
