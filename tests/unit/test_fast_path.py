"""The fast path (orion_server/fast_path.py and its C loop, native/worker/call_loop.c):
launches, stream and event synchronisation and shared-memory copies from the call ring
straight to the backend's functions, everything else (and every call it does not know)
through Session.handle, with the same order, replies, errors and checks."""
from __future__ import annotations

import ctypes
import logging
import math
import mmap
import os
import shutil
import struct
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import zmq

from orion_server import backend as B
from orion_server import fast_path, ring, wire
from orion_server import worker as worker_module
from orion_server.generated.cudart_table import CALLS
from orion_server.peer import Peer
from orion_server.worker import Session
from ring_client import RingClient, build_ring_lib, ring_pair

ROOT = Path(__file__).resolve().parents[2]
ID = {c.name: i for i, c in CALLS.items()}
LAUNCH = struct.Struct("<Q12s12sQQIQQ")    # as native/generated/cudart_stubs.c packs it
DIM3 = struct.Struct("<III")
FUNC, OTHER_FUNC, NO_PARAMS, FAILING, STICKY, GENERIC_ONLY = (
    0xF00, 0xF01, 0xF02, 0xBAD, 0x5717, 0x6E0)
STREAM = 0x5000
# the argument bytes each kernel of LaunchBackend takes (GENERIC_ONLY: the backend does
# not tell the loop, so its launches take the generic path)
ARGS_SIZE = {FUNC: 8, OTHER_FUNC: 52, NO_PARAMS: 0, FAILING: 8, STICKY: 8}


def build(tmp_path_factory, name: str, source: Path | str, *flags: str) -> Path:
    """source (a path, or C text) and any further sources and flags, as one library."""
    if not shutil.which("gcc"):
        pytest.skip("gcc not found")
    out = tmp_path_factory.mktemp(name) / f"lib{name}.so"
    if isinstance(source, str):
        (out.parent / f"{name}.c").write_text(source)
        source = out.parent / f"{name}.c"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-Wall", "-o", str(out), str(source),
                    *flags], check=True)
    return out


@pytest.fixture(scope="module")
def ring_lib(tmp_path_factory):
    return build_ring_lib(tmp_path_factory.mktemp("ring"))


class Client(RingClient):
    """Puts calls in the ring as the shim does, numbered."""

    def __init__(self, lib):
        super().__init__(lib)
        self.seq = 0

    def call(self, name, args=b"", flags=0, device=0, bulk=()):
        self.seq += 1
        frames = [wire.pack_request_header(ID[name], self.seq, flags, device) + args, *bulk]
        assert self.put(frames) == 0

    def launch(self, function=FUNC, args=b"", stream=STREAM, grid=(1, 1, 1), block=(32, 1, 1),
               shared=0, flags=0, device=0, header_flags=wire.FLAG_ASYNC, length=None,
               size=None):
        packed = LAUNCH.pack(function, DIM3.pack(*grid), DIM3.pack(*block), shared, stream,
                             flags, len(args) if length is None else length,
                             len(args) if size is None else size)
        self.call("orionLaunchKernel", packed, header_flags, device, [args])


class LaunchBackend(B.Backend):
    """Records what it is asked to do; some functions fail."""

    def __init__(self, vgpus=1):
        super().__init__([B.VGpu(i, 0, 1 << 30, 100) for i in range(vgpus)])
        self.done = []

    def fast_args_size(self, function):
        return ARGS_SIZE.get(function)

    def fast_stream_known(self, stream):
        return stream in (STREAM, 0, 1, 2)

    def orionLaunchKernel(self, function, grid, block, shared, stream, flags, args, size):
        if function == FAILING:
            raise B.CudaError(B.cudaErrorInvalidResourceHandle, "no such kernel")
        if function == STICKY:
            return (700,)
        if len(args) != size or size != ARGS_SIZE.get(function, size):
            return (B.cudaErrorInvalidValue,)
        self.done.append(("launch", self.device, function, DIM3.unpack(grid),
                          DIM3.unpack(block), shared, stream, flags, bytes(args)))
        return (0,)

    def cudaStreamSynchronize(self, stream):
        self.done.append(("sync", stream))
        return (0,)

    def cudaStreamDestroy(self, stream):
        self.done.append(("destroy", stream))
        return (0,)


@pytest.fixture
def pair(ring_lib):
    yield from ring_pair(Client(ring_lib))


delivered = []    # replies the fast path hands to _serve_ring's `deliver`


def serve_all(session, worker, fast=True):
    """What _serve_ring does, until the ring is empty: the replies Session.handle made,
    and the calls that went through it (by name)."""
    if fast:
        fast_path.attach(session, worker, delivered.append)
    replies, generic = [], []
    while (frames := worker.next_request(0.01)) is not None:
        generic.append(CALLS[wire.parse_request_header(frames[0].buffer).call_id].name)
        reply = session.handle(frames)
        worker.finish()
        if reply is not None:
            replies.append(wire.parse_reply_header(reply[0]))
    return replies, generic


def sync(client):
    client.call("cudaStreamSynchronize", struct.pack("<Q", STREAM))


def test_launches_skip_session_handle_and_keep_their_order(pair):
    client, worker = pair
    for i in range(200):
        client.launch(args=struct.pack("<Q", 0x1000 + i), grid=(i + 1, 2, 3),
                      block=(64, 2, 1), shared=i * 8, stream=(STREAM, 0, 2)[i % 3])
    sync(client)
    client.launch(function=NO_PARAMS)                # a kernel without parameters
    client.launch(function=OTHER_FUNC, args=b"\x01" * 52)
    session = Session(LaunchBackend())
    replies, generic = serve_all(session, worker)
    assert generic == ["cudaStreamSynchronize"] and replies == [(0, 201)]
    assert session.calls == 203 and not session.pending_error
    done = session.backend.done
    assert done[:2] == [
        ("launch", 0, FUNC, (1, 2, 3), (64, 2, 1), 0, STREAM, 0, struct.pack("<Q", 0x1000)),
        ("launch", 0, FUNC, (2, 2, 3), (64, 2, 1), 8, 0, 0, struct.pack("<Q", 0x1001))]
    assert done[199] == ("launch", 0, FUNC, (200, 2, 3), (64, 2, 1), 199 * 8, 0, 0,
                         struct.pack("<Q", 0x1000 + 199))
    assert done[200] == ("sync", STREAM)
    assert done[201:] == [("launch", 0, NO_PARAMS, (1, 1, 1), (32, 1, 1), 0, STREAM, 0, b""),
                          ("launch", 0, OTHER_FUNC, (1, 1, 1), (32, 1, 1), 0, STREAM, 0,
                           b"\x01" * 52)]


def test_a_destroyed_stream_is_asked_about_again(pair):
    """The loop remembers the backend's answers until a stream is destroyed."""
    client, worker = pair
    asked = []

    class Asked(LaunchBackend):
        def fast_stream_known(self, stream):
            asked.append(stream)
            return stream == STREAM and not any(d[0] == "destroy" for d in self.done)

    client.launch(args=b"a" * 8)
    client.launch(args=b"b" * 8)
    client.call("cudaStreamDestroy", struct.pack("<Q", STREAM))
    client.launch(args=b"c" * 8)                 # the generic path answers: destroyed
    session = Session(Asked())
    replies, generic = serve_all(session, worker)
    assert asked == [STREAM, STREAM]
    assert generic == ["cudaStreamDestroy", "orionLaunchKernel"]
    assert [d[-1] for d in session.backend.done if d[0] == "launch"] == [b"a" * 8, b"b" * 8,
                                                                        b"c" * 8]


@pytest.fixture
def no_log_records():
    """No log records: pytest keeps them, and the exceptions they hold would keep views
    of the ring (their tracebacks' frames) alive past its close."""
    logging.disable(logging.CRITICAL)
    yield
    logging.disable(logging.NOTSET)


def test_the_fast_path_does_what_the_generic_path_does(ring_lib, no_log_records):
    """The same requests, with and without the fast path: the same calls on the backend,
    the same replies and errors."""
    def requests(client):
        client.launch(args=b"a" * 8)
        client.launch(function=FAILING, args=b"b" * 8)      # raises: 400, owed
        client.launch(args=b"c" * 8, length=7)                # the frame says 8: malformed
        client.launch(args=b"d" * 16, size=8)                 # the handler refuses
        sync(client)                                          # 400, the first of them
        client.launch(args=b"e" * 8, header_flags=0)          # a synchronous launch
        client.launch(args=b"f" * 8, device=1)                # the other vGPU
        client.launch(args=b"g" * 8, device=1)
        client.launch(function=GENERIC_ONLY, args=b"h" * 8, device=1)
        client.launch(args=b"i" * 8)
        client.launch(args=b"j" * 8, flags=2)                 # launch flags
        sync(client)
        client.launch(function=STICKY, args=b"k" * 8)         # 700 poisons the session
        client.launch(args=b"l" * 8)                          # not run
        sync(client)
        sync(client)

    results = []
    for fast in (True, False):
        client = Client(ring_lib)
        worker = ring.CallRing(client.name)
        try:
            requests(client)
            session = Session(LaunchBackend(vgpus=2))
            replies, generic = serve_all(session, worker, fast)
            results.append((replies, session.backend.done, session.calls, generic))
        finally:
            worker.close()
            client.close()
    (replies, done, calls, generic), (replies_slow, done_slow, calls_slow, _) = results
    assert (replies, done, calls) == (replies_slow, done_slow, calls_slow)
    assert replies == [(400, 5), (0, 6), (0, 12), (700, 15), (700, 16)]
    assert [d[-1] for d in done if d[0] == "launch"] == [b"a" * 8, b"e" * 8, b"f" * 8,
                                                           b"g" * 8, b"h" * 8, b"i" * 8,
                                                           b"j" * 8]
    # through Session.handle: what the fast path does not take, and nothing else
    L, S = "orionLaunchKernel", "cudaStreamSynchronize"
    assert generic == [L, L, S,    # the malformed launch, the refused one
                       L, L,       # the synchronous one, the first on vGPU 1 (switches)
                       L, L, L,    # GENERIC_ONLY, the first back on vGPU 0, the flags
                       S, L,       # the launch after the sticky error
                       S, S]


class GoneMonitor:
    """A socket monitor with one event: the client disconnected."""
    events = 1

    def poll(self, timeout=0):
        return self.events

    def recv_multipart(self, flags=0):
        self.events = 0
        return [struct.pack("=hi", zmq.EVENT_DISCONNECTED, 0), b"ipc://gone"]


def test_the_worker_serve_loop_takes_the_fast_path(ring_lib, monkeypatch):
    client = Client(ring_lib)
    try:
        for i in range(50):
            client.launch(args=struct.pack("<Q", i))
        sync(client)
        session = Session(LaunchBackend())
        handled = []
        handle = session.handle
        session.handle = lambda frames: handled.append(1) or handle(frames)
        monkeypatch.setattr(worker_module, "RING_IDLE_S", 0.0)
        peer = Peer("token")
        peer.fd = 0                    # the client spoke on the connection GoneMonitor ends
        worker_module._serve_ring(ring.CallRing(client.name), None, None, GoneMonitor(),
                                  session, peer)
        assert len(handled) == 1 and session.calls == 51
        assert len(session.backend.done) == 51 and session.backend.done[-1][0] == "sync"
    finally:
        client.close()


def gated(session, ends):
    """A session whose compute turns end at `ends(turns so far)`; the turns taken."""
    turns = []
    session.gate = SimpleNamespace(idle_timeout=lambda default: default)
    session.before_compute = lambda device: turns.append(device) or ends(len(turns))
    return turns


def test_launches_wait_for_the_compute_gate(pair):
    client, worker = pair
    for _ in range(3):
        client.launch(args=b"x" * 8)
    session = Session(LaunchBackend())
    turns = gated(session, lambda n: 0.0)          # each turn over at once: one per launch
    serve_all(session, worker)
    assert turns == [0, 0, 0] and len(session.backend.done) == 3


def test_a_turn_lasts_until_its_end(pair):
    client, worker = pair
    for _ in range(50):
        client.launch(args=b"x" * 8)
    session = Session(LaunchBackend())
    turns = gated(session, lambda n: time.monotonic() + 3600 if n == 1 else math.inf)
    serve_all(session, worker)
    assert turns == [0] and len(session.backend.done) == 50
    for _ in range(5):
        client.launch(args=b"x" * 8)
    serve_all(session, worker)                    # a new run asks for a turn again
    assert turns == [0, 0] and len(session.backend.done) == 55


def test_after_a_run_the_wait_is_the_sessions_idle_timeout(pair):
    """A compute turn taken during a run shortens the wait for the next request (the
    turn goes back when the client stays idle), as _serve_ring's next wait_s would."""
    client, worker = pair
    client.launch(args=b"x" * 8)
    session = Session(LaunchBackend())
    turns = gated(session, lambda n: math.inf)
    session.wait_s = lambda default: 0.01 if turns else default
    fast_path.attach(session, worker, delivered.append)
    started = time.monotonic()
    assert worker.next_request(30.0) is None
    assert time.monotonic() - started < 5 and turns == [0]


def ring_memory(worker):
    """The ring's shared memory, as the client maps it."""
    fd = os.open("/dev/shm" + worker.name, os.O_RDWR)
    try:
        return mmap.mmap(fd, 0)
    finally:
        os.close(fd)


def published_tail(memory) -> int:
    return struct.unpack_from("<Q", memory, 128)[0]


def test_a_run_gives_the_room_back_as_it_goes(pair):
    """A long run of launches publishes the ring's tail every PUBLISH_EVERY launches: a
    client waiting for room need not wait for the whole run."""
    client, worker = pair
    memory = ring_memory(worker)
    tails = []

    class Watching(LaunchBackend):
        def orionLaunchKernel(self, *args):
            tails.append(published_tail(memory))
            return super().orionLaunchKernel(*args)

    for _ in range(100):
        client.launch(args=b"x" * 8)
    serve_all(Session(Watching()), worker)
    record = fast_path.LAUNCH_ARGS + 8
    assert tails[32] == 32 * record and tails[31] == 0
    assert published_tail(memory) == struct.unpack_from("<Q", memory, 64)[0] == 100 * record
    memory.close()


def test_broken_launch_records_still_end_the_ring(pair):
    client, worker = pair
    client.launch(args=b"x" * 8)
    client.launch(args=b"y" * 8)
    second = ring.HEADER_SIZE + fast_path.LAUNCH_ARGS + 8
    memory = ring_memory(worker)
    memory[second + 4:second + 6] = struct.pack("<H", 200)   # too many frames
    memory.close()
    session = Session(LaunchBackend())
    fast_path.attach(session, worker, delivered.append)
    with pytest.raises(ring.RingError):
        worker.next_request(0.01)
    assert len(session.backend.done) == 1


def test_the_record_layout_is_what_the_shim_sends():
    """One struct reads a launch record: the ring's record header and frame lengths, the
    request header and the arguments, as the generated stub packs them; the C loop's
    record is the same size."""
    assert fast_path.LAUNCH.size == 16 + wire.HEADER_SIZE + LAUNCH.size == 16 + 92
    assert fast_path.LAUNCH_ARGS == 16 + 96
    assert fast_path.RECORDS["orionMemcpyShm"].size == 16 + wire.HEADER_SIZE + 36
    fast_path._load()      # checks call_loop.c's sizes against these


# ---- the GPU backend's calls, on a stub driver ----

STUB = r"""
#include <string.h>
unsigned long long last_f, last_stream, last_size, last_handle;
unsigned long long copy_dst, copy_src, copy_count, copy_stream;
unsigned last_dims[7];
unsigned char last_args[256];
int calls, syncs, copies, last_extra_null, last_params_null;
int cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                   unsigned by, unsigned bz, unsigned shared, void *stream, void **params,
                   void **extra)
{
    unsigned dims[7] = {gx, gy, gz, bx, by, bz, shared};
    calls++;
    last_f = (unsigned long long)f;
    last_stream = (unsigned long long)stream;
    memcpy(last_dims, dims, sizeof dims);
    last_params_null = params == 0;
    last_extra_null = extra == 0;
    last_size = 0;
    if (extra) {   /* {BUFFER_POINTER, bytes, BUFFER_SIZE, &size, END} */
        if (extra[0] != (void *)1 || extra[2] != (void *)2 || extra[4] != 0)
            return 1;
        last_size = *(unsigned long *)extra[3];
        memcpy(last_args, extra[1], last_size < 256 ? last_size : 256);
    }
    return f == (void *)0xBAD ? 400 : 0;
}
int cuMemcpyAsync(unsigned long long dst, unsigned long long src, unsigned long count,
                  void *stream)
{
    copies++;
    copy_dst = dst, copy_src = src, copy_count = count;
    copy_stream = (unsigned long long)stream;
    return 0;
}
/* handle 0x700: an error; event 0x600: not ready */
static int handle_call(void *h)
{
    syncs++;
    last_handle = (unsigned long long)h;
    return h == (void *)0x700 ? 700 : h == (void *)0x600 ? 600 : 0;
}
int cuStreamSynchronize(void *stream) { return handle_call(stream); }
int cuStreamQuery(void *stream) { return handle_call(stream); }
int cuEventRecord(void *event, void *stream) { return 0; }
int cuEventRecordWithFlags(void *event, void *stream, unsigned flags) { return 0; }
int cuEventQuery(void *event) { return handle_call(event); }
int cuEventSynchronize(void *event) { return handle_call(event); }
int cuCtxSynchronize(void) { return handle_call((void *)0xC7); }
"""
EVENT, NOT_READY_EVENT, FAILING_STREAM = 0xE0, 0x600, 0x700
DEVICE, SEGMENT = 0x7000_0000, 0x5500_0000      # a device allocation, a shared segment


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    pytest.importorskip("cuda.bindings")
    pytest.importorskip("cffi")
    path = build(tmp_path_factory, "stubcuda", STUB)
    return path, ctypes.CDLL(str(path))


def stub_value(lib, name, kind=ctypes.c_ulonglong):
    return kind.in_dll(lib, name).value


def last_launch(lib):
    dims = (ctypes.c_uint * 7).in_dll(lib, "last_dims")
    size = stub_value(lib, "last_size")
    return (stub_value(lib, "last_f"), tuple(dims), stub_value(lib, "last_stream"),
            stub_value(lib, "last_params_null", ctypes.c_int),
            stub_value(lib, "last_extra_null", ctypes.c_int),
            ctypes.string_at(ctypes.addressof(ctypes.c_ubyte.in_dll(lib, "last_args")), size))


def stub_backend(path):
    """The GPU backend's fast-path methods and handlers over the stub driver: a kernel
    FUNC (8 argument bytes) and NO_PARAMS, STREAM and FAILING_STREAM, EVENT and
    NOT_READY_EVENT, 4 KiB of device memory at DEVICE and a shared segment of 4 KiB at
    SEGMENT (mapped at SEGMENT + 0x100000 here)."""
    import numpy as np

    from orion_server.backends.cuda import CudaBackend
    from orion_server.backends.cuda_driver import Driver
    from orion_server.backends.cuda_kernels import KernelCalls

    class StubDriverBackend(B.Backend):
        fast_functions = CudaBackend.fast_functions
        fast_args_size = KernelCalls.fast_args_size
        fast_stream_known = CudaBackend.fast_stream_known
        fast_event_known = CudaBackend.fast_event_known
        orionLaunchKernel = KernelCalls.orionLaunchKernel

        def __init__(self):
            super().__init__([B.VGpu(0, 0, 1 << 30, 100)])
            self.driver = Driver(str(path))
            self.functions = {FUNC: (object(), np.array([0], dtype=np.uint64), 8),
                              NO_PARAMS: (object(), np.array([], dtype=np.uint64), 0)}
            self.streams = {STREAM, FAILING_STREAM}
            self.events = {EVENT, NOT_READY_EVENT}
            self.generic = []

        def fast_device_range(self, ptr, count):
            return (DEVICE, 4096) if DEVICE <= ptr and ptr + count <= DEVICE + 4096 else None

        def fast_segment(self, ptr, count):
            if SEGMENT <= ptr and ptr + count <= SEGMENT + 4096:
                return SEGMENT, 4096, SEGMENT + 0x100000
            return None

        def cudaStreamSynchronize(self, stream):
            self.generic.append(("sync", stream))
            return (0,)

        def orionMemcpyShm(self, dst, src, count, kind, stream):
            self.generic.append(("copy", dst, src, count))
            return (B.cudaErrorInvalidValue,)
    return StubDriverBackend()


def reply_in_area(worker):
    """(status, seq, flags) of the reply the ring's reply area holds."""
    memory = ring_memory(worker)
    try:
        at = ring.HEADER_SIZE + worker.request_size + 16
        magic, version, flags, status, _, seq = wire.REPLY.unpack_from(memory, at)
        return status, seq, flags
    finally:
        memory.close()


def test_the_loop_calls_the_gpu_backends_driver(driver, pair):
    """The GPU backend's launches: the C loop calls the driver's cuLaunchKernel (a stub
    here) with the argument bytes where they lie in the ring; what the backend does not
    know goes to orionLaunchKernel, which refuses it."""
    path, lib = driver
    client, worker = pair
    calls = lambda: stub_value(lib, "calls", ctypes.c_int)  # noqa: E731
    before = calls()
    client.launch(args=b"ARGUMENT", grid=(4, 5, 6), block=(7, 8, 9), shared=96)
    client.launch(function=NO_PARAMS, stream=2)
    session = Session(stub_backend(path))
    serve_all(session, worker)
    assert calls() == before + 2
    assert last_launch(lib) == (NO_PARAMS, (1, 1, 1, 32, 1, 1, 0), 2, 1, 1, b"")
    assert not session.pending_error

    client.launch(args=b"ARGUMENT", grid=(4, 5, 6), block=(7, 8, 9), shared=96)
    serve_all(session, worker)
    assert last_launch(lib) == (FUNC, (4, 5, 6, 7, 8, 9, 96), STREAM, 1, 0, b"ARGUMENT")
    for refused in (dict(function=FUNC + 5),       # not a kernel of the session
                    dict(stream=STREAM + 1),       # not a stream of the session
                    dict(stream=3)):               # nor a special one
        client.launch(args=b"ARGUMENT", **refused)
        replies, generic = serve_all(session, worker)
        assert generic == ["orionLaunchKernel"]
        assert session.pending_error == B.cudaErrorInvalidResourceHandle
        session.pending_error = 0
    client.launch(args=b"ARGUMENTS...", size=12)   # the kernel takes 8 bytes
    replies, generic = serve_all(session, worker)
    assert generic == ["orionLaunchKernel"]
    assert session.pending_error == B.cudaErrorInvalidValue
    assert calls() == before + 3


def test_the_loop_answers_synchronous_calls(driver, pair):
    """Stream, event and device synchronisation and queries: the loop calls the driver
    and writes the reply itself; a query's "not ready" is a reply too."""
    path, lib = driver
    client, worker = pair
    session = Session(stub_backend(path))
    syncs = lambda: stub_value(lib, "syncs", ctypes.c_int)  # noqa: E731
    before = syncs()
    for name, handle, status in (("cudaStreamSynchronize", STREAM, 0),
                                 ("cudaStreamSynchronize", 0, 0),     # legacy stream
                                 ("cudaEventQuery", EVENT, 0),
                                 ("cudaEventQuery", NOT_READY_EVENT, 600),
                                 ("cudaEventSynchronize", EVENT, 0),
                                 ("cudaDeviceSynchronize", None, 0)):
        client.call(name, b"" if handle is None else struct.pack("<Q", handle))
        delivered.clear()
        replies, generic = serve_all(session, worker)
        assert (replies, generic, delivered) == ([], [], [])
        assert reply_in_area(worker) == (status, client.seq, 0)
        assert stub_value(lib, "last_handle") == (0xC7 if handle is None else handle)
    assert syncs() == before + 6 and session.calls == 6


def test_what_the_loop_does_not_reply_to_goes_to_python(driver, pair):
    """An error from the driver, and an error owed from an earlier async call: Python
    replies (and reports); an unknown stream: the generic path."""
    path, lib = driver
    client, worker = pair
    session = Session(stub_backend(path))
    client.call("cudaStreamSynchronize", struct.pack("<Q", FAILING_STREAM))
    delivered.clear()
    replies, generic = serve_all(session, worker)
    assert generic == [] and [wire.parse_reply_header(r[0]) for r in delivered] == [(700, 1)]
    assert session.sticky_error == 700

    session = Session(stub_backend(path))
    client.launch(function=0xBAD)                         # the stub fails it: 400, owed
    session.backend.functions[0xBAD] = session.backend.functions[NO_PARAMS]
    client.call("cudaStreamSynchronize", struct.pack("<Q", STREAM))
    client.call("cudaStreamSynchronize", struct.pack("<Q", STREAM + 8))   # not the session's
    replies, generic = serve_all(session, worker)
    assert generic == ["cudaStreamSynchronize", "cudaStreamSynchronize"]
    assert [r[0] for r in replies] == [400, 0]     # (this handler checks no stream)
    assert session.backend.generic == [("sync", STREAM), ("sync", STREAM + 8)]


def test_device_output_goes_with_the_reply(driver, pair, tmp_path):
    """Output the driver printed is waiting: Python replies and carries it."""
    from orion_server.device_output import DeviceOutputs
    path, lib = driver
    client, worker = pair
    session = Session(stub_backend(path))
    fds = [os.open(tmp_path / f"out{i}", os.O_WRONLY | os.O_CREAT) for i in range(2)]
    session.outputs = DeviceOutputs(tuple(zip((wire.FLAG_OUTPUT, wire.FLAG_ERRORS), fds)))
    client.call("cudaStreamSynchronize", struct.pack("<Q", STREAM))
    delivered.clear()
    serve_all(session, worker)
    assert delivered == [] and reply_in_area(worker) == (0, 1, 0)    # nothing printed

    os.write(fds[0], b"from the kernel\n")
    client.call("cudaStreamSynchronize", struct.pack("<Q", STREAM))
    serve_all(session, worker)
    assert len(delivered) == 1
    status, seq = wire.parse_reply_header(delivered[0][0])
    assert (status, seq) == (0, 2) and bytes(delivered[0][1]) == b"from the kernel\n"
    assert struct.unpack_from("<H", delivered[0][0], 6)[0] == wire.FLAG_OUTPUT


def test_the_loop_copies_between_device_and_shared_memory(driver, pair):
    """orionMemcpyShm both ways and async: the driver gets this process's address of
    the shared bytes; a range that is not the session's goes to the handler."""
    path, lib = driver
    client, worker = pair
    session = Session(stub_backend(path))
    shm = struct.Struct("<QQQIQ")
    local = SEGMENT + 0x100000
    copies = lambda: stub_value(lib, "copies", ctypes.c_int)  # noqa: E731
    before = copies()
    client.call("orionMemcpyShm", shm.pack(SEGMENT + 8, DEVICE + 16, 4, 2, STREAM))    # D2H
    serve_all(session, worker)
    assert reply_in_area(worker) == (0, 1, 0)
    assert (stub_value(lib, "copy_dst"), stub_value(lib, "copy_src"),
            stub_value(lib, "copy_count"), stub_value(lib, "copy_stream")) == (
                local + 8, DEVICE + 16, 4, STREAM)
    client.call("orionMemcpyShmAsync", shm.pack(DEVICE, SEGMENT + 4000, 96, 1, 0),
                wire.FLAG_ASYNC)                                                    # H2D
    replies, generic = serve_all(session, worker)
    assert (replies, generic) == ([], [])
    assert (stub_value(lib, "copy_dst"), stub_value(lib, "copy_src"),
            stub_value(lib, "copy_count")) == (DEVICE, local + 4000, 96)
    assert copies() == before + 2 and session.calls == 2
    for outside in (shm.pack(SEGMENT, DEVICE + 4090, 8, 2, STREAM),     # past the device
                    shm.pack(SEGMENT + 4090, DEVICE, 8, 2, STREAM),     # past the segment
                    shm.pack(SEGMENT, DEVICE, 8, 3, STREAM)):           # another kind
        client.call("orionMemcpyShm", outside)
        replies, generic = serve_all(session, worker)
        assert generic == ["orionMemcpyShm"] and replies[0][0] == B.cudaErrorInvalidValue
    assert copies() == before + 2


def test_the_cpu_benchmark_runs(driver):
    """benchmarks/worker_launch.py (the per-launch profile of NOTES.md), briefly, with and
    without the fast path."""
    import sys
    for extra in ([], ["--generic"]):
        out = subprocess.run([sys.executable, str(ROOT / "benchmarks/worker_launch.py"),
                              "--backend", "cuda", "--args", "0,32", "--launches", "300",
                              "--rounds", "2", *extra],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert out.stdout.count("us/launch") == 2, out.stdout
