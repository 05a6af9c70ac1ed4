"""HostBackend handlers, called directly as the worker calls them (no processes).

Kernel-related calls, which need real fat binaries, are in test_fatbin.py.
"""
import inspect
import mmap
import os
import struct
import uuid as uuidlib

import pytest

from orion_server import backend as B
from orion_server.backend import CudaError, VGpu
from orion_server.backends.host import HostBackend
from orion_server.worker import CALLS   # both client libraries' calls

MiB = 1 << 20
# two vGPUs of one physical GPU: each has its own UUID (orion_controller.identity)
UUIDS = ("GPU-6f1c0a52-0c3e-5d2a-9b1e-0a1b2c3d4e5f", "GPU-0d9e8f7a-6b5c-5d4e-8f3a-2b1c0d9e8f7a")


@pytest.fixture
def b():
    backend = HostBackend([VGpu(0, 0, 64 * MiB, 100, "GPU-1111")])
    yield backend
    backend.close()


@pytest.fixture
def two():
    backend = HostBackend([VGpu(0, 0, 64 * MiB, 50, "GPU-1111", UUIDS[0]),
                           VGpu(1, 0, 32 * MiB, 50, "GPU-1111", UUIDS[1])])
    yield backend
    backend.close()


def status(call, *args) -> int:
    """The status a call answers with, whether returned or raised."""
    try:
        return call(*args)[0]
    except CudaError as e:
        return e.status


def h2d(b, dst, data: bytes, stream=0):
    assert b.orionMemcpyHtoD(dst, memoryview(data), len(data), stream) == (0,)


def d2h(b, src, count, stream=0) -> bytes:
    result, data = b.orionMemcpyDtoH(count, src, count, stream)
    assert result == 0 and len(data) == count
    return bytes(data)


# ---------------------------------------------------------------- the contract
def test_every_handler_is_a_call_of_the_table_with_its_arity():
    calls = {c.name: c for c in CALLS.values()}
    handlers = [n for n in dir(HostBackend) if n.startswith(("cuda", "orion"))]
    assert set(handlers) <= set(calls), set(handlers) - set(calls)
    for name in handlers:
        takes = len(inspect.signature(getattr(HostBackend, name)).parameters) - 1
        assert takes == len([p for p in calls[name].params if p.kind != "out"]), name


# ---------------------------------------------------------------- memory
def test_allocations_are_aligned_distinct_and_never_reused(b):
    ptrs = [b.cudaMalloc(n)[1] for n in (1, 100, 4096, 1000)]
    assert all(p % 256 == 0 for p in ptrs) and len(set(ptrs)) == 4
    assert b.cudaFree(ptrs[0]) == (0,)
    again = b.cudaMalloc(1)[1]
    assert again not in ptrs
    assert status(b.cudaFree, ptrs[0]) == 1                 # double free
    assert status(b.orionMemcpyDtoH, 1, ptrs[0], 1, 0) == 1  # stale pointer
    assert status(b.cudaFree, ptrs[1] + 4) == 1             # not the start
    assert b.cudaFree(0) == (0,)
    assert b.cudaMalloc(0) == (0, 0)


def test_pointer_arithmetic_and_ranges(b):
    _, p = b.cudaMalloc(1000)
    h2d(b, p, bytes(range(200)) * 5)
    assert d2h(b, p + 10, 5) == bytes(range(10, 15))
    assert d2h(b, p + 999, 1) == bytes([999 % 200])
    assert status(b.orionMemcpyDtoH, 2, p + 999, 2, 0) == 1     # one byte past the end
    assert status(b.orionMemcpyHtoD, p - 1, memoryview(b"x"), 1, 0) == 1
    assert status(b.orionMemcpyDtoH, 1, 0x1234, 1, 0) == 1
    assert d2h(b, 0xDEAD, 0) == b""                           # nothing to copy
    assert b.orionPointerType(p + 500) == (0, 2)
    assert b.orionPointerType(p + 1000) == (0, 0)
    assert status(b.orionMemcpyHtoD, p, memoryview(b"abc"), 4, 0) == 1   # length mismatch


def test_the_vgpu_memory_is_the_limit(b):
    assert b.cudaMemGetInfo() == (0, 64 * MiB, 64 * MiB)
    _, p = b.cudaMalloc(40 * MiB)
    assert b.cudaMemGetInfo() == (0, 24 * MiB, 64 * MiB)
    assert status(b.cudaMalloc, 30 * MiB) == B.cudaErrorMemoryAllocation
    assert status(b.cudaMalloc, 1 << 60) == B.cudaErrorMemoryAllocation
    _, q = b.cudaMalloc(24 * MiB)                            # exactly what is left
    assert b.cudaMemGetInfo()[1] == 0
    assert status(b.cudaMalloc, 1) == B.cudaErrorMemoryAllocation
    b.cudaFree(p)
    b.cudaFree(q)
    assert b.cudaMemGetInfo() == (0, 64 * MiB, 64 * MiB)


def test_copies_between_device_buffers(b):
    _, p = b.cudaMalloc(64)
    _, q = b.cudaMalloc(64)
    h2d(b, p, bytes(range(64)))
    assert b.orionMemcpyDtoD(q, p, 64, 0) == (0,)
    assert b.orionMemcpyDtoDAsync(q + 32, p, 16, 0) == (0,)
    assert d2h(b, q, 64) == bytes(range(32)) + bytes(range(16)) + bytes(range(48, 64))
    b.orionMemcpyDtoD(p + 8, p, 32, 0)                       # overlapping: memmove
    assert d2h(b, p, 48) == bytes(range(8)) + bytes(range(32)) + bytes(range(40, 48))
    assert b.orionMemcpyHtoDAsync(p, memoryview(b"\xff" * 4), 4, 0) == (0,)
    assert d2h(b, p, 4) == b"\xff" * 4


def test_memsets(b):
    _, p = b.cudaMalloc(100)
    assert b.cudaMemset(p, 0x1A5, 100) == (0,)              # the low byte counts
    assert d2h(b, p, 100) == b"\xa5" * 100
    _, s = b.cudaStreamCreate()
    assert b.cudaMemsetAsync(p + 10, 7, 5, s) == (0,)
    assert d2h(b, p, 16) == b"\xa5" * 10 + b"\x07" * 5 + b"\xa5"
    assert status(b.cudaMemset, p + 50, 0, 51) == 1
    assert b.cudaMemset(p + 100, 0, 0) == (0,)


def test_pitched_allocations_and_2d_memsets(b):
    _, p, pitch = b.cudaMallocPitch(100, 4)
    assert pitch == 512
    assert b.cudaMemset2D(p, pitch, 0, pitch, 4) == (0,)
    assert b.cudaMemset2D(p + 2, pitch, 9, 3, 4) == (0,)
    data = d2h(b, p, pitch * 4)
    for y in range(4):
        assert data[y * pitch:y * pitch + 6] == b"\0\0\x09\x09\x09\0"
    assert status(b.cudaMemset2D, p, 8, 0, 9, 2) == 1        # width > pitch
    assert status(b.cudaMemset2D, p, pitch, 0, 100, 5) == 1  # one row too many
    assert b.cudaMemset2DAsync(p, pitch, 1, 100, 4, 0) == (0,)


def test_3d_allocation_and_memset(b):
    extent = struct.pack("<QQQ", 40, 3, 2)
    result, raw = b.cudaMalloc3D(extent)
    ptr, pitch, xsize, ysize = struct.unpack("<QQQQ", raw)
    assert result == 0 and pitch == 512 and (xsize, ysize) == (40, 3)
    b.cudaMemset(ptr, 0, pitch * 3 * 2)
    box = struct.pack("<QQQ", 4, 2, 2)
    assert b.cudaMemset3D(struct.pack("<QQQQ", ptr + 1, pitch, xsize, ysize), 0x5A, box) == (0,)
    data = d2h(b, ptr, pitch * 3 * 2)
    for z in range(2):
        for y in range(3):
            row = data[(z * 3 + y) * pitch:(z * 3 + y) * pitch + 6]
            assert row == (b"\0" + b"\x5a" * 4 + b"\0" if y < 2 else bytes(6)), (z, y)
    assert b.cudaMemset3DAsync(raw, 1, extent, 0) == (0,)


def test_2d_copies(b):
    _, p, pitch = b.cudaMallocPitch(10, 3)
    rows = bytes(range(30))
    assert b.orionMemcpy2DHtoD(p, pitch, memoryview(rows), 10, 3, 0) == (0,)
    assert d2h(b, p + pitch, 10) == rows[10:20]
    result, packed = b.orionMemcpy2DDtoH(30, p, pitch, 10, 3, 0)
    assert result == 0 and bytes(packed) == rows
    _, q = b.cudaMalloc(30)
    assert b.orionMemcpy2DDtoD(q, 10, p, pitch, 10, 3, 0) == (0,)      # pitched -> packed
    assert d2h(b, q, 30) == rows
    assert b.orionMemcpy2DDtoDAsync(p, pitch, q, 10, 10, 3, 0) == (0,)
    assert b.orionMemcpy2DHtoDAsync(p, pitch, memoryview(rows), 10, 3, 0) == (0,)
    assert status(b.orionMemcpy2DHtoD, p, 5, memoryview(rows), 10, 3, 0) == 12
    assert status(b.orionMemcpy2DDtoH, 30, p, pitch, 10, 4, 0) == 1     # length != rows


def test_peer_copies(two):
    _, p = two.cudaMalloc(16)
    two.set_device(1)
    _, q = two.cudaMalloc(16)
    h2d(two, p, b"0123456789abcdef")
    assert two.cudaMemcpyPeer(q, 1, p, 0, 16) == (0,)
    assert d2h(two, q, 16) == b"0123456789abcdef"
    assert two.cudaMemcpyPeerAsync(p, 0, q + 8, 1, 8, 0) == (0,)
    assert d2h(two, p, 8) == b"89abcdef"
    assert status(two.cudaMemcpyPeer, q, 0, p, 0, 16) == 1     # q is device 1's
    assert status(two.cudaMemcpyPeer, q, 5, p, 0, 16) == 101


# ---------------------------------------------------------------- arrays and textures
CHANNEL_INT = struct.pack("<5i", 32, 0, 0, 0, 0)          # cudaChannelFormatKindSigned


def test_arrays(b):
    result, array = b.cudaMallocArray(CHANNEL_INT, 8, 4, 0)
    assert result == 0
    _, desc, extent, flags = b.cudaArrayGetInfo(array)
    assert desc == CHANNEL_INT and struct.unpack("<QQQ", extent) == (8, 4, 0) and flags == 0
    assert b.cudaGetChannelDesc(array) == (0, CHANNEL_INT)
    assert b.cudaMemGetInfo()[1] == 64 * MiB - 512

    data = bytes(range(128))
    assert b.orionMemcpy2DToArray(array, 0, 0, memoryview(data), 32, 4, 0) == (0,)
    result, sub = b.orionMemcpy2DFromArray(8 * 2, array, 4, 1, 8, 2, 0)
    assert result == 0 and bytes(sub) == data[36:44] + data[68:76]
    assert status(b.orionMemcpy2DFromArray, 64, array, 0, 3, 32, 2, 0) == 1   # past the rows

    _, p = b.cudaMalloc(128)
    assert b.orionMemcpy2DArrayDtoD(array, 0, 0, p, 32, 32, 4, 0, 0) == (0,)    # from array
    assert d2h(b, p, 128) == data
    b.cudaMemset(p, 0, 128)
    assert b.orionMemcpy2DArrayDtoD(array, 0, 0, p, 32, 32, 4, 1, 0) == (0,)    # to array
    assert bytes(b.orionMemcpy2DFromArray(128, array, 0, 0, 32, 4, 0)[1]) == bytes(128)

    assert b.cudaFreeArray(array) == (0,)
    assert status(b.cudaArrayGetInfo, array) == 400
    assert b.cudaFreeArray(0) == (0,)
    assert status(b.cudaMallocArray, struct.pack("<5i", 12, 0, 0, 0, 0), 8, 4, 0) == 20
    assert status(b.cudaMallocArray, None, 8, 4, 0) == 1
    result, array3d = b.cudaMalloc3DArray(CHANNEL_INT, struct.pack("<QQQ", 4, 4, 4), 0)
    assert result == 0 and struct.unpack("<QQQ", b.cudaArrayGetInfo(array3d)[2]) == (4, 4, 4)


def test_texture_and_surface_objects(b):
    _, array = b.cudaMallocArray(CHANNEL_INT, 8, 8, 0)
    _, surface_array = b.cudaMallocArray(CHANNEL_INT, 8, 8, 2)   # cudaArraySurfaceLoadStore
    res = struct.pack("<I4xQ", 0, array).ljust(144, b"\0")
    tex_desc = bytes(72)
    result, tex = b.cudaCreateTextureObject(res, tex_desc, None)
    assert result == 0 and tex
    assert status(b.cudaCreateTextureObject, res, None, None) == 1
    assert status(b.cudaCreateSurfaceObject, res) == 1          # no load/store flag
    result, surf = b.cudaCreateSurfaceObject(
        struct.pack("<I4xQ", 0, surface_array).ljust(144, b"\0"))
    assert result == 0 and surf != tex

    _, p = b.cudaMalloc(256)
    linear = struct.pack("<I4xQ5i4xQ", 2, p, 32, 0, 0, 0, 2, 256).ljust(144, b"\0")
    assert b.cudaCreateTextureObject(linear, tex_desc, None)[0] == 0
    too_long = struct.pack("<I4xQ5i4xQ", 2, p, 32, 0, 0, 0, 2, 257).ljust(144, b"\0")
    assert status(b.cudaCreateTextureObject, too_long, tex_desc, None) == 1

    assert b.cudaGetTextureObjectResourceDesc(tex) == (0, res)
    assert b.cudaGetTextureObjectTextureDesc(tex) == (0, tex_desc)
    assert b.cudaGetTextureObjectResourceViewDesc(tex) == (0, bytes(112))
    assert b.cudaGetSurfaceObjectResourceDesc(surf)[1][8:16] == struct.pack("<Q", surface_array)
    assert b.cudaDestroyTextureObject(tex) == (0,)
    assert status(b.cudaDestroyTextureObject, tex) == 400
    assert b.cudaDestroySurfaceObject(surf) == (0,)
    assert status(b.cudaDestroySurfaceObject, surf) == 400


# ---------------------------------------------------------------- shared page-locked memory
@pytest.fixture
def segment():
    """A client's page-locked buffer: a POSIX shared-memory segment, mapped here."""
    name = f"/orion-{os.getpid()}-{id(object())}"
    fd = os.open("/dev/shm" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    os.ftruncate(fd, 4096)
    client = mmap.mmap(fd, 4096)
    os.close(fd)
    yield name, client
    client.close()
    os.unlink("/dev/shm" + name)


CLIENT_BASE = 0x7FFF_0000_0000


def test_copies_with_shared_page_locked_memory(two, segment):
    name, client = segment
    assert two.orionShmAttach(name, 4096, CLIENT_BASE) == (0,)
    two.set_device(1)
    assert two.orionShmAttach(name, 4096, CLIENT_BASE) == (0,)   # the other device's turn
    assert status(two.orionShmAttach, "/orion-1-2", 4096, CLIENT_BASE) == 1
    two.set_device(0)
    _, p = two.cudaMalloc(64)
    client[100:110] = b"0123456789"
    assert two.orionMemcpyShm(p, CLIENT_BASE + 100, 10, 1, 0) == (0,)
    assert d2h(two, p, 10) == b"0123456789"
    assert two.orionMemcpyShmAsync(CLIENT_BASE + 200, p + 2, 4, 2, 0) == (0,)
    assert client[200:204] == b"2345"
    assert status(two.orionMemcpyShm, p, CLIENT_BASE + 4090, 10, 1, 0) == 1   # past the end
    assert status(two.orionMemcpyShm, p, CLIENT_BASE, 10, 3, 0) == 1

    # a captured copy reads the client's memory when the graph runs, not before
    _, s = two.cudaStreamCreate()
    two.orionStreamBeginCapture(s, 0)
    two.orionMemcpyShmAsync(p, CLIENT_BASE, 4, 1, s)
    two.orionMemcpyShmAsync(CLIENT_BASE + 8, p, 4, 2, s)
    _, graph = two.orionStreamEndCapture(s)
    _, graph_exec = two.cudaGraphInstantiate(graph, 0)
    for round_ in range(3):
        client[0:4] = bytes([round_]) * 4
        two.cudaGraphLaunch(graph_exec, s)
        assert client[8:12] == bytes([round_]) * 4

    _, mapped = two.orionShmDevicePointer(CLIENT_BASE + 16)
    assert two.orionPointerType(mapped) == (0, 1)                 # host memory
    client[16:20] = b"abcd"
    assert d2h(two, mapped, 4) == b"abcd"
    assert status(two.cudaFree, mapped) == 1
    assert two.cudaDeviceReset() == (0,)                          # the client's memory stays
    assert d2h(two, mapped, 4) == b"abcd"
    assert two.orionShmDetach(CLIENT_BASE) == (0,)
    assert d2h(two, mapped, 4) == b"abcd"                         # still attached once
    assert two.orionShmDetach(CLIENT_BASE) == (0,)
    assert status(two.orionMemcpyDtoH, 4, mapped, 4, 0) == 1
    assert status(two.orionShmDetach, CLIENT_BASE) == 1
    assert status(two.orionShmAttach, "/etc/passwd", 4096, CLIENT_BASE) == 1


# ---------------------------------------------------------------- streams and events
def test_streams(b):
    assert b.cudaDeviceGetStreamPriorityRange() == (0, 0, -5)
    _, s = b.cudaStreamCreateWithPriority(1, -100)
    assert b.cudaStreamGetPriority(s) == (0, -5)
    assert b.cudaStreamGetFlags(s) == (0, 1)
    _, t = b.cudaStreamCreate()
    assert b.cudaStreamGetFlags(t) == (0, 0) and b.cudaStreamGetPriority(t) == (0, 0)
    assert b.cudaStreamGetId(s)[1] != b.cudaStreamGetId(t)[1]
    assert b.cudaStreamGetDevice(s) == (0, 0)
    for handle in (0, 1, 2, s):
        assert b.cudaStreamQuery(handle) == (0,)
        assert b.cudaStreamSynchronize(handle) == (0,)
    assert status(b.cudaStreamCreateWithFlags, 4) == 1
    assert b.cudaStreamDestroy(s) == (0,)
    assert status(b.cudaStreamQuery, s) == 400
    assert status(b.cudaStreamDestroy, s) == 400
    assert status(b.cudaStreamDestroy, 0) == 400


def test_events(b):
    _, start = b.cudaEventCreate()
    _, stop = b.cudaEventCreateWithFlags(1)
    _, untimed = b.cudaEventCreateWithFlags(2)
    assert b.cudaEventQuery(stop) == (0,)                       # never recorded: complete
    assert status(b.cudaEventElapsedTime, start, stop) == 400   # not recorded
    _, s = b.cudaStreamCreate()
    assert b.cudaEventRecord(start, s) == (0,)
    assert b.cudaEventRecordWithFlags(stop, s, 0) == (0,)
    assert b.cudaEventRecord(untimed, 0) == (0,)
    assert b.cudaEventSynchronize(stop) == (0,)
    result, ms = b.cudaEventElapsedTime(start, stop)
    assert result == 0 and ms >= 0
    assert status(b.cudaEventElapsedTime, start, untimed) == 400
    assert b.cudaStreamWaitEvent(s, stop, 0) == (0,)
    assert status(b.cudaStreamWaitEvent, s, stop, 8) == 1
    assert status(b.cudaEventCreateWithFlags, 4) == 1            # interprocess needs no timing
    assert b.cudaEventCreateWithFlags(6)[0] == 0
    assert b.cudaEventDestroy(start) == (0,)
    for call, args in ((b.cudaEventQuery, (start,)), (b.cudaEventDestroy, (start,)),
                       (b.cudaEventRecord, (start, 0)), (b.cudaStreamWaitEvent, (s, start, 0))):
        assert status(call, *args) == 400


# ---------------------------------------------------------------- capture and graphs
def test_capture_records_instead_of_running(b):
    _, s = b.cudaStreamCreateWithFlags(1)
    _, p = b.cudaMalloc(16)
    _, q = b.cudaMalloc(16)
    assert b.cudaStreamIsCapturing(s) == (0, 0)
    assert b.orionStreamBeginCapture(s, 0) == (0,)
    assert b.cudaStreamIsCapturing(s) == (0, 1)
    b.cudaMemsetAsync(p, 1, 16, s)
    h2d(b, p + 8, b"ABCDEFGH", s)
    b.orionMemcpyDtoDAsync(q, p, 16, s)
    assert d2h(b, p, 16) == bytes(16)                        # legacy stream: not captured
    result, graph = b.orionStreamEndCapture(s)
    assert result == 0 and b.cudaStreamIsCapturing(s) == (0, 0)
    _, graph_exec = b.cudaGraphInstantiate(graph, 0)
    assert d2h(b, q, 16) == bytes(16)
    assert b.cudaGraphLaunch(graph_exec, s) == (0,)
    assert d2h(b, q, 16) == b"\x01" * 8 + b"ABCDEFGH"


def test_what_a_capture_forbids(b):
    _, s = b.cudaStreamCreate()
    _, p = b.cudaMalloc(16)
    assert status(b.orionStreamBeginCapture, 0, 0) == 900      # the legacy stream
    b.orionStreamBeginCapture(s, 0)
    assert status(b.orionStreamBeginCapture, s, 0) == 401
    assert status(b.orionMemcpyDtoH, 16, p, 16, s) == 900     # its bytes are needed now
    assert b.cudaStreamIsCapturing(s) == (0, 2)                # invalidated
    assert status(b.cudaMemsetAsync, p, 0, 16, s) == 901
    assert status(b.orionStreamEndCapture, s) == 901
    assert status(b.orionStreamEndCapture, s) == 401            # no capture any more

    b.orionStreamBeginCapture(s, 0)                             # global mode
    assert status(b.cudaMalloc, 16) == 900                    # unsafe during capture
    assert status(b.orionStreamEndCapture, s) == 901
    b.orionStreamBeginCapture(s, 0)
    assert b.cudaThreadExchangeStreamCaptureMode(2) == (0, 0)  # this thread: relaxed
    assert b.cudaMalloc(16)[0] == 0
    assert b.cudaThreadExchangeStreamCaptureMode(0) == (0, 2)
    assert status(b.cudaStreamSynchronize, s) == 900
    assert status(b.orionStreamEndCapture, s) == 901
    b.orionStreamBeginCapture(s, 2)                             # relaxed capture
    assert b.cudaMalloc(16)[0] == 0
    assert b.orionStreamEndCapture(s)[0] == 0


def test_fork_and_join_through_events(b):
    _, origin = b.cudaStreamCreate()
    _, side = b.cudaStreamCreate()
    _, fork = b.cudaEventCreate()
    _, join = b.cudaEventCreate()
    _, p = b.cudaMalloc(8)
    b.orionStreamBeginCapture(origin, 0)
    b.cudaMemsetAsync(p, 1, 4, origin)
    b.cudaEventRecord(fork, origin)
    b.cudaStreamWaitEvent(side, fork, 0)
    assert b.cudaStreamIsCapturing(side) == (0, 1)
    b.cudaMemsetAsync(p + 4, 2, 4, side)
    b.cudaEventRecord(join, side)
    b.cudaStreamWaitEvent(origin, join, 0)
    assert status(b.orionStreamEndCapture, side) == 903         # not where it began
    _, graph = b.orionStreamEndCapture(origin)
    assert b.cudaStreamIsCapturing(side) == (0, 0)
    assert d2h(b, p, 8) == bytes(8)
    _, graph_exec = b.cudaGraphInstantiate(graph, 0)
    b.cudaGraphLaunch(graph_exec, 0)
    assert d2h(b, p, 8) == b"\x01" * 4 + b"\x02" * 4


def _memset_params(dst, value, element, width, height=1, pitch=0) -> bytes:
    return struct.pack("<QQIIQQ", dst, pitch, value, element, width, height)


def _nodes(*handles) -> memoryview:
    return memoryview(struct.pack(f"<{len(handles)}Q", *handles))


def test_graphs_built_node_by_node(b):
    _, p = b.cudaMalloc(64)
    _, graph = b.cudaGraphCreate(0)
    _, first = b.cudaGraphAddMemsetNode(graph, _nodes(), 0, _memset_params(p, 0x11223344, 4, 8))
    _, empty = b.cudaGraphAddEmptyNode(graph, _nodes(first), 1)
    _, second = b.cudaGraphAddMemsetNode(graph, _nodes(), 0, _memset_params(p + 4, 0xEE, 1, 2))
    assert b.cudaGraphAddDependencies(graph, _nodes(empty), _nodes(second), None, 1) == (0,)
    assert status(b.cudaGraphAddDependencies, graph, _nodes(empty), _nodes(second), None, 1) == 1
    assert b.cudaGraphNodeGetType(first) == (0, 2) and b.cudaGraphNodeGetType(empty) == (0, 5)
    assert b.cudaGraphMemsetNodeGetParams(first) == (0, _memset_params(p, 0x11223344, 4, 8))

    _, graph_exec = b.cudaGraphInstantiateWithFlags(graph, 0)
    assert b.cudaGraphUpload(graph_exec, 0) == (0,)
    assert d2h(b, p, 8) == bytes(8)
    b.cudaGraphLaunch(graph_exec, 0)
    assert d2h(b, p, 8) == struct.pack("<I", 0x11223344) + b"\xee\xee\x22\x11"

    # the exec is a snapshot: changing the graph changes it only through ExecUpdate
    b.cudaGraphMemsetNodeSetParams(first, _memset_params(p, 0, 4, 8))
    b.cudaGraphLaunch(graph_exec, 0)
    assert d2h(b, p, 4) == struct.pack("<I", 0x11223344)
    result, info = b.cudaGraphExecUpdate(graph_exec, graph)
    assert result == 0 and len(info) == 24
    b.cudaGraphLaunch(graph_exec, 0)
    assert d2h(b, p, 8) == bytes(4) + b"\xee\xee\0\0"
    b.cudaGraphExecMemsetNodeSetParams(graph_exec, first, _memset_params(p, 7, 1, 4))
    b.cudaGraphLaunch(graph_exec, 0)
    assert d2h(b, p, 8) == b"\x07" * 4 + b"\xee\xee\0\0"

    _, clone = b.cudaGraphClone(graph)
    _, parent = b.cudaGraphCreate(0)
    _, child = b.cudaGraphAddChildGraphNode(parent, _nodes(), 0, clone)
    assert b.cudaGraphNodeGetType(child) == (0, 4)
    _, parent_exec = b.cudaGraphInstantiate(parent, 0)
    b.cudaMemset(p, 0, 8)
    b.cudaGraphLaunch(parent_exec, 0)
    assert d2h(b, p, 8) == bytes(4) + b"\xee\xee\0\0"

    assert b.cudaGraphDestroyNode(second) == (0,)
    assert status(b.cudaGraphNodeGetType, second) == 1
    assert status(b.cudaGraphExecUpdate, graph_exec, graph) == 910   # a node less
    assert b.cudaGraphExecDestroy(graph_exec) == (0,)
    assert status(b.cudaGraphLaunch, graph_exec, 0) == 1
    assert b.cudaGraphDestroy(graph) == (0,)
    assert status(b.cudaGraphInstantiate, graph, 0) == 1
    assert status(b.cudaGraphNodeGetType, first) == 1


def test_graph_validation(b):
    _, p = b.cudaMalloc(16)
    _, graph = b.cudaGraphCreate(0)
    assert status(b.cudaGraphCreate, 1) == 1
    assert status(b.cudaGraphAddMemsetNode, graph, _nodes(), 0, _memset_params(p, 0, 3, 4)) == 1
    assert status(b.cudaGraphAddMemsetNode, graph, _nodes(), 0, _memset_params(p, 0, 4, 5)) == 1
    assert status(b.cudaGraphAddEmptyNode, graph, _nodes(0x999), 1) == 1
    assert status(b.cudaGraphAddEmptyNode, graph, _nodes(), 1) == 1      # count != bytes
    _, a = b.cudaGraphAddEmptyNode(graph, _nodes(), 0)
    _, c = b.cudaGraphAddEmptyNode(graph, _nodes(a), 1)
    b.cudaGraphAddDependencies(graph, _nodes(c), _nodes(a), None, 1)     # a cycle
    assert status(b.cudaGraphInstantiate, graph, 0) == 1
    assert status(b.cudaGraphInstantiate, graph, 0x100) == 1
    assert status(b.cudaGraphAddChildGraphNode, graph, _nodes(), 0, graph) == 1


# ---------------------------------------------------------------- pools
def _attr(b, pool, attr) -> int:
    size = 4 if attr <= 3 else 8
    result, raw = b.cudaMemPoolGetAttribute(pool, attr, size)
    assert result == 0 and len(raw) == size
    return int.from_bytes(raw, "little", signed=size == 4)


def _set(b, pool, attr, value):
    size = 4 if attr <= 3 else 8
    return b.cudaMemPoolSetAttribute(pool, attr, memoryview(value.to_bytes(size, "little")))


def test_default_pool_and_its_attributes(b):
    _, pool = b.cudaDeviceGetDefaultMemPool(0)
    assert b.cudaDeviceGetMemPool(0) == (0, pool)
    assert [_attr(b, pool, a) for a in range(1, 9)] == [1, 1, 1, 0, 0, 0, 0, 0]
    assert status(b.cudaMemPoolGetAttribute, pool, 4, 4) == 1             # u64 attribute
    assert status(b.cudaMemPoolGetAttribute, pool, 1, 8) == 1             # int attribute
    assert status(b.cudaMemPoolGetAttribute, pool, 9, 8) == 1
    assert status(_set, b, pool, 5, 0) == 1                                # read-only
    assert status(_set, b, pool, 6, 5) == 1                                # only 0 resets

    _, s = b.cudaStreamCreate()
    _, p = b.cudaMallocAsync(4 * MiB, s)
    assert _attr(b, pool, 7) == 4 * MiB and _attr(b, pool, 5) == 4 * MiB
    assert b.cudaMemGetInfo()[1] == 60 * MiB
    h2d(b, p, b"abc", s)
    b.cudaFreeAsync(p, s)
    assert _attr(b, pool, 7) == 0 and _attr(b, pool, 5) == 4 * MiB       # cached until sync
    b.cudaStreamSynchronize(s)
    assert _attr(b, pool, 5) == 0 and b.cudaMemGetInfo()[1] == 64 * MiB  # threshold 0

    assert _set(b, pool, 4, 64 * MiB) == (0,)
    assert _attr(b, pool, 4) == 64 * MiB
    _, p = b.cudaMallocAsync(4 * MiB, s)
    b.cudaFreeAsync(p, s)
    b.cudaStreamSynchronize(s)
    assert _attr(b, pool, 5) == 4 * MiB and _attr(b, pool, 8) == 4 * MiB
    _, p = b.cudaMallocAsync(MiB, s)                                      # reuses the cache
    assert _attr(b, pool, 5) == 4 * MiB
    b.cudaFreeAsync(p, s)
    assert b.cudaMemPoolTrimTo(pool, 0) == (0,)
    assert _attr(b, pool, 5) == 0
    assert _set(b, pool, 8, 0) == (0,) and _attr(b, pool, 8) == 0
    assert _set(b, pool, 2, 0) == (0,) and _attr(b, pool, 2) == 0
    assert status(b.cudaMemPoolDestroy, pool) == 1


def test_pool_memory_is_the_vgpus(b):
    _, pool = b.cudaDeviceGetDefaultMemPool(0)
    _set(b, pool, 4, (1 << 64) - 1)                      # keep everything cached
    _, s = b.cudaStreamCreate()
    _, p = b.cudaMallocAsync(40 * MiB, s)
    b.cudaFreeAsync(p, s)
    b.cudaStreamSynchronize(s)
    assert b.cudaMemGetInfo()[1] == 24 * MiB             # the pool holds it
    assert status(b.cudaMalloc, 30 * MiB) == B.cudaErrorMemoryAllocation
    # a pool that needs more than is free makes the pools give back their cache first
    props = struct.pack("<IIIi", 1, 0, 1, 0).ljust(88, b"\0")
    _, own = b.cudaMemPoolCreate(props)
    assert b.cudaMallocFromPoolAsync(30 * MiB, own, s)[0] == 0
    assert _attr(b, pool, 5) == 0 and b.cudaMemGetInfo()[1] == 34 * MiB
    assert status(b.cudaMallocAsync, 35 * MiB, s) == B.cudaErrorMemoryAllocation


def test_pools_of_our_own(b):
    props = struct.pack("<IIIiQQH", 1, 0, 1, 0, 0, 8 * MiB, 0).ljust(88, b"\0")
    result, pool = b.cudaMemPoolCreate(props)
    assert result == 0
    _, s = b.cudaStreamCreate()
    _, p = b.cudaMallocFromPoolAsync(6 * MiB, pool, s)
    assert status(b.cudaMallocFromPoolAsync, 4 * MiB, pool, s) == 2          # maxSize
    assert b.cudaDeviceSetMemPool(0, pool) == (0,)
    assert b.cudaDeviceGetMemPool(0) == (0, pool)
    _, q = b.cudaMallocAsync(MiB, s)
    assert _attr(b, pool, 7) == 7 * MiB
    assert b.cudaMemPoolDestroy(pool) == (0,)
    assert b.cudaDeviceGetMemPool(0) == (0, b.cudaDeviceGetDefaultMemPool(0)[1])
    assert status(b.cudaMemPoolGetAttribute, pool, 7, 8) == 1
    h2d(b, p, b"still valid")                           # allocations outlive their pool
    b.cudaFree(p)
    b.cudaFreeAsync(q, s)
    assert b.cudaMemGetInfo()[1] == 64 * MiB
    bad_location = struct.pack("<IIIi", 1, 0, 1, 3).ljust(88, b"\0")
    assert status(b.cudaMemPoolCreate, bad_location) == 1
    assert status(b.cudaDeviceSetMemPool, 1, pool) == 101


# ---------------------------------------------------------------- the device
def _snapshot(b, device):
    result, raw = b.orionDeviceSnapshot(device, B.SNAPSHOT_SIZE, B.SNAPSHOT_SIZE)
    assert result == 0 and len(raw) == B.SNAPSHOT_SIZE
    version, count, name, uuid, total, *attrs = struct.unpack(
        f"<II256s16sQ{B.SNAPSHOT_ATTRS}i", raw)
    assert (version, count) == (B.SNAPSHOT_VERSION, B.SNAPSHOT_ATTRS)
    return name.rstrip(b"\0").decode(), uuid, total, attrs


def test_snapshot(two):
    name, uuid, total, attrs = _snapshot(two, 0)
    assert name == "Orion Host Test Device" and total == 64 * MiB
    expected = {1: 1024, 2: 1024, 3: 1024, 4: 64, 5: 2**31 - 1, 6: 65535, 7: 65535, 8: 49152,
                9: 65536, 10: 32, 12: 65536, 14: 512, 16: 16, 18: 0, 19: 1, 20: 0, 31: 1,
                41: 1, 75: 9, 76: 0, 39: 2048, 95: 1, 97: 232448, 99: 1, 106: 32, 115: 1}
    assert {a: attrs[a] for a in expected} == expected
    _, uuid1, total1, attrs1 = _snapshot(two, 1)
    assert total1 == 32 * MiB and attrs1[33] != attrs[33]
    # each vGPU shows its own UUID, not the GPU-1111 they share
    assert [uuid, uuid1] == [uuidlib.UUID(u.removeprefix("GPU-")).bytes for u in UUIDS]
    assert status(two.orionDeviceSnapshot, 2, B.SNAPSHOT_SIZE, B.SNAPSHOT_SIZE) == 101
    assert status(two.orionDeviceSnapshot, 0, 100, 100) == 1


def test_simulated_devices_are_configurable():
    b = HostBackend([VGpu(0, 1, MiB, 100, "GPU-1111", UUIDS[0])],
                    devices=[{}, {"name": "Small", "sm_count": 4, "major": 7, "minor": 5}])
    name, _, _, attrs = _snapshot(b, 0)
    assert (name, attrs[16], attrs[75], attrs[76], attrs[97]) == ("Small", 4, 7, 5, 65536)
    with pytest.raises(ValueError):
        HostBackend([VGpu(0, 0, MiB, 100)], devices=[{"colour": "green"}])
    with pytest.raises(ValueError):
        HostBackend([VGpu(0, 0, 2 * MiB, 100)], devices=[{"memory": MiB}])
    with pytest.raises(ValueError):
        HostBackend([VGpu(0, 3, MiB, 100)], devices=[{}])


def test_pci_bus_ids_lead_back(two):
    for device in (0, 1):
        result, raw = two.cudaDeviceGetPCIBusId(64, 64, device)
        assert result == 0 and len(raw) == 64
        text = raw.split(b"\0")[0].decode()
        assert two.cudaDeviceGetByPCIBusId(text) == (0, device)
        assert two.cudaDeviceGetByPCIBusId(text.upper()) == (0, device)
    assert two.cudaDeviceGetPCIBusId(5, 5, 0)[1] == b"0000\0"
    assert status(two.cudaDeviceGetByPCIBusId, "0000:99:00.0") == 101
    assert status(two.cudaDeviceGetByPCIBusId, "not a bus id") == 1


def test_limits_and_cache_config(b):
    assert b.cudaDeviceGetLimit(0) == (0, 1024)
    assert b.cudaDeviceSetLimit(2, 64 * MiB) == (0,)
    assert b.cudaDeviceGetLimit(2) == (0, 64 * MiB)
    assert status(b.cudaDeviceGetLimit, 99) == 215
    assert status(b.cudaDeviceSetLimit, 99, 1) == 215
    assert b.cudaDeviceSetCacheConfig(2) == (0,) and b.cudaDeviceGetCacheConfig() == (0, 2)
    assert status(b.cudaDeviceSetCacheConfig, 4) == 1
    for call in (b.cudaDeviceSynchronize, b.cudaCtxResetPersistingL2Cache,
                 b.cudaProfilerStart, b.cudaProfilerStop):
        assert call() == (0,)


def test_peer_access(two):
    assert two.cudaDeviceCanAccessPeer(0, 1) == (0, 1)
    assert two.cudaDeviceCanAccessPeer(0, 0) == (0, 0)
    assert status(two.cudaDeviceCanAccessPeer, 0, 2) == 101
    assert two.cudaDeviceEnablePeerAccess(1, 0) == (0,)
    assert status(two.cudaDeviceEnablePeerAccess, 1, 0) == 704
    assert status(two.cudaDeviceEnablePeerAccess, 0, 0) == 101
    assert status(two.cudaDeviceEnablePeerAccess, 1, 1) == 1
    assert two.cudaDeviceDisablePeerAccess(1) == (0,)
    assert status(two.cudaDeviceDisablePeerAccess, 1) == 705
    assert two.cudaDeviceGetP2PAttribute(2, 0, 1) == (0, 1)
    assert status(two.cudaDeviceGetP2PAttribute, 2, 1, 1) == 101
    assert status(two.cudaDeviceGetP2PAttribute, 9, 0, 1) == 1


def test_each_vgpu_has_its_own_memory(two):
    assert two.cudaMemGetInfo() == (0, 64 * MiB, 64 * MiB)
    two.set_device(1)
    assert two.cudaMemGetInfo() == (0, 32 * MiB, 32 * MiB)
    assert status(two.cudaMalloc, 40 * MiB) == 2
    _, s = two.cudaStreamCreate()
    assert two.cudaStreamGetDevice(s) == (0, 1)
    with pytest.raises(CudaError) as e:
        two.set_device(2)
    assert e.value.status == 101


def test_device_reset_frees_everything_of_the_device(two):
    _, p = two.cudaMalloc(MiB)
    _, s = two.cudaStreamCreate()
    _, ev = two.cudaEventCreate()
    _, graph = two.cudaGraphCreate(0)
    _, array = two.cudaMallocArray(CHANNEL_INT, 4, 4, 0)
    two.cudaDeviceSetLimit(2, 123)
    two.set_device(1)
    _, other = two.cudaMalloc(MiB)
    two.set_device(0)
    assert two.cudaDeviceReset() == (0,)
    assert two.cudaMemGetInfo() == (0, 64 * MiB, 64 * MiB)
    assert status(two.orionMemcpyDtoH, 1, p, 1, 0) == 1
    assert status(two.cudaStreamQuery, s) == 400
    assert status(two.cudaEventQuery, ev) == 400
    assert status(two.cudaGraphInstantiate, graph, 0) == 1
    assert status(two.cudaArrayGetInfo, array) == 400
    assert two.cudaDeviceGetLimit(2) == (0, 8 * MiB)
    assert two.cudaMalloc(MiB)[1] not in (p, other)
    assert d2h(two, other, 1) == b"\0"                   # device 1 untouched
