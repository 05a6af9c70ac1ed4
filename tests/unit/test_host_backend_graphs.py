"""HostBackend's graph nodes that need the client's help (kernel, host and memcpy
nodes), node queries and exec updates, called directly as the worker calls them.

Kernels come from a module made here (its parameter layout is what a fat binary would
give), so no compiler is needed.
"""
import mmap
import os
import struct

import pytest

from orion_server.backend import CudaError, VGpu
from orion_server.backends import fatbin
from orion_server.backends.host import HostBackend
from orion_server.backends.host_graph import ExecUpdateFailure

MiB = 1 << 20
MODULE = 0xFEED_0000_0000_0001
CLIENT_BASE = 0x7FFF_0000_0000
SEGMENT = 1 << 16
KERNEL = fatbin.Kernel("_Z9add_valuePiii", ((0, 8), (8, 4), (12, 4)), registers=16)
OTHER = fatbin.Kernel("_Z8scale_byPiii", ((0, 8), (8, 4), (12, 4)), registers=16)
D2H, H2D, D2D, DEFAULT = 2, 1, 3, 4


@pytest.fixture
def b():
    backend = HostBackend([VGpu(0, 0, 64 * MiB, 100, "GPU-1111")])
    backend.modules[MODULE] = fatbin.Image(
        (fatbin.Cubin(90, {k.name: k for k in (KERNEL, OTHER)}, {}),), ())
    yield backend
    backend.close()


def _segment_file():
    name = f"/orion-{os.getpid()}-{id(object())}"
    fd = os.open("/dev/shm" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600)
    os.ftruncate(fd, SEGMENT)
    client = mmap.mmap(fd, SEGMENT)
    os.close(fd)
    return name, client


@pytest.fixture
def client():
    """A client's page-locked buffer, attached at CLIENT_BASE: (backend, its bytes)."""
    made = []

    def attach(backend):
        name, mapping = _segment_file()
        made.append((name, mapping))
        assert backend.orionShmAttach(name, SEGMENT, CLIENT_BASE) == (0,)
        return mapping
    yield attach
    for name, mapping in made:
        mapping.close()
        os.unlink("/dev/shm" + name)


def status(call, *args) -> int:
    try:
        return call(*args)[0]
    except CudaError as e:
        return e.status


def _nodes(*handles) -> memoryview:
    return memoryview(struct.pack(f"<{len(handles)}Q", *handles))


def _dim3(x, y=1, z=1) -> bytes:
    return struct.pack("<III", x, y, z)


def _function(b, kernel=KERNEL) -> int:
    result, info = b.orionFunctionInfo(MODULE, kernel.name, 64, 64)
    assert result == 0
    return struct.unpack_from("<Q", info)[0]


def _args(ptr, value, n=4096) -> memoryview:
    return memoryview(struct.pack("<Qii", ptr, value, n))


def _kernel_node(b, graph, function, args, deps=(), grid=16, block=256, shared=0):
    result, node = b.orionGraphAddKernelNode(graph, _nodes(*deps), len(deps), function,
                                             _dim3(grid), _dim3(block), shared, args,
                                             len(args))
    assert result == 0
    return node


def _set_kernel(b, graph_exec, node, function, args, grid=16):
    return b.orionGraphKernelNodeSetParams(graph_exec, node, function, _dim3(grid),
                                           _dim3(256), 0, args, len(args))


def _memset_params(dst, value, element, width) -> bytes:
    return struct.pack("<QQIIQQ", dst, 0, value, element, width, 1)


def _copy_3d(extent, kind, src_ptr=0, src_pitch=0, src_ysize=0, src_pos=(0, 0, 0),
             dst_ptr=0, dst_pitch=0, dst_ysize=0, dst_pos=(0, 0, 0),
             src_array=0, dst_array=0) -> bytes:
    """cudaMemcpy3DParms (xsize of the pitched pointers is unused by copies)."""
    return struct.pack("<Q3Q4QQ3Q4Q3QI4x", src_array, *src_pos, src_ptr, src_pitch, 0,
                       src_ysize, dst_array, *dst_pos, dst_ptr, dst_pitch, 0, dst_ysize,
                       *extent, kind)


def h2d(b, dst, data: bytes):
    assert b.orionMemcpyHtoD(dst, memoryview(data), len(data), 0) == (0,)


def d2h(b, src, count) -> bytes:
    result, data = b.orionMemcpyDtoH(count, src, count, 0)
    assert result == 0
    return bytes(data)


# ---------------------------------------------------------------- kernel nodes
def test_kernel_nodes_are_recorded_at_every_launch_as_stream_launches_are(b):
    _, p = b.cudaMalloc(4096 * 4)
    function = _function(b)
    _, s = b.cudaStreamCreate()
    b.orionLaunchKernel(function, _dim3(16), _dim3(256), 0, s, 0, _args(p, 5), 16)
    direct = b.launches.pop()

    _, graph = b.cudaGraphCreate(0)
    _, memset = b.cudaGraphAddMemsetNode(graph, _nodes(), 0, _memset_params(p, 7, 4, 4096))
    kernel = _kernel_node(b, graph, function, _args(p, 5), deps=[memset])
    assert b.cudaGraphNodeGetType(kernel) == (0, 0)
    assert b.launches == []                                   # added, not run
    _, graph_exec = b.cudaGraphInstantiate(graph, 0)
    for _ in range(3):
        assert b.cudaGraphLaunch(graph_exec, s) == (0,)
    assert b.launches == [direct] * 3
    assert direct["function"] == KERNEL.name and direct["stream"] == s
    assert direct["args_hex"] == bytes(_args(p, 5)).hex()
    assert d2h(b, p, 8) == struct.pack("<ii", 7, 7)         # the memset ran too


def test_kernel_nodes_are_checked_as_launches_are(b):
    _, p = b.cudaMalloc(64)
    function = _function(b)
    _, graph = b.cudaGraphCreate(0)
    args = _args(p, 1)

    def add(**kw):
        params = {"grid": _dim3(1), "block": _dim3(32), "shared": 0, "args": args,
                  "size": len(args), "function": function, **kw}
        return status(b.orionGraphAddKernelNode, graph, _nodes(), 0, params["function"],
                      params["grid"], params["block"], params["shared"], params["args"],
                      params["size"])
    assert add(grid=_dim3(0)) == 9                             # invalid configuration
    assert add(block=_dim3(2048)) == 9
    assert add(args=memoryview(bytes(8)), size=8) == 1         # the kernel takes 16 bytes
    assert add(shared=1 << 20) == 1
    assert add(function=0x4242) == 400
    assert status(b.orionGraphAddKernelNode, 0x4242, _nodes(), 0, function, _dim3(1),
                  _dim3(32), 0, args, len(args)) == 1          # no such graph
    assert b.cudaGraphGetNodes(graph, 0, 0) == (0, b"", 0)     # nothing was added

    _, empty = b.cudaGraphAddEmptyNode(graph, _nodes(), 0)
    assert status(_set_kernel, b, 0, empty, function, args) == 1          # no kernel node
    kernel = _kernel_node(b, graph, function, args)
    assert status(_set_kernel, b, 0, kernel, function, args, 0) == 9
    _, graph_exec = b.cudaGraphInstantiate(graph, 0)
    _, other_graph = b.cudaGraphCreate(0)
    stranger = _kernel_node(b, other_graph, function, args)
    assert status(_set_kernel, b, graph_exec, stranger, function, args) == 1  # not its node
    assert status(_set_kernel, b, graph_exec, empty, function, args) == 1
    assert status(_set_kernel, b, 0x4242, kernel, function, args) == 1


def test_exec_kernel_updates_touch_only_that_exec(b):
    _, p = b.cudaMalloc(64)
    add, scale = _function(b), _function(b, OTHER)
    _, graph = b.cudaGraphCreate(0)
    kernel = _kernel_node(b, graph, add, _args(p, 5))
    _, first = b.cudaGraphInstantiate(graph, 0)
    _, second = b.cudaGraphInstantiate(graph, 0)

    assert _set_kernel(b, first, kernel, add, _args(p, 10)) == (0,)
    for graph_exec in (first, second):
        b.cudaGraphLaunch(graph_exec, 0)
    assert [r["args_hex"] for r in b.launches] == [bytes(_args(p, 10)).hex(),
                                                   bytes(_args(p, 5)).hex()]
    _, third = b.cudaGraphInstantiate(graph, 0)               # the graph kept its value
    b.launches.clear()
    b.cudaGraphLaunch(third, 0)
    assert b.launches[0]["args_hex"] == bytes(_args(p, 5)).hex()

    # the graph's node, then carried over by cudaGraphExecUpdate (the function too)
    assert _set_kernel(b, 0, kernel, scale, _args(p, 20), grid=2) == (0,)
    b.launches.clear()
    b.cudaGraphLaunch(first, 0)
    assert b.launches[0]["args_hex"] == bytes(_args(p, 10)).hex()   # execs are snapshots
    assert b.cudaGraphExecUpdate(first, graph) == (0, bytes(24))
    b.launches.clear()
    b.cudaGraphLaunch(first, 0)
    b.cudaGraphLaunch(second, 0)
    assert [(r["function"], r["grid"][0], r["args_hex"]) for r in b.launches] == [
        (OTHER.name, 2, bytes(_args(p, 20)).hex()), (KERNEL.name, 16, bytes(_args(p, 5)).hex())]


def test_captured_graph_launch_keeps_kernel_nodes(b):
    _, p = b.cudaMalloc(64)
    function = _function(b)
    _, graph = b.cudaGraphCreate(0)
    _kernel_node(b, graph, function, _args(p, 1))
    _, graph_exec = b.cudaGraphInstantiate(graph, 0)
    _, s = b.cudaStreamCreate()
    b.orionStreamBeginCapture(s, 0)
    b.cudaGraphLaunch(graph_exec, s)                           # becomes a child graph node
    _, outer = b.orionStreamEndCapture(s)
    assert b.launches == []
    _, outer_exec = b.cudaGraphInstantiate(outer, 0)
    b.cudaGraphLaunch(outer_exec, s)
    b.cudaGraphLaunch(outer_exec, s)
    assert len(b.launches) == 2 and b.launches[0]["stream"] == s


# ---------------------------------------------------------------- host nodes
def test_host_nodes_run_in_the_client_at_every_launch_in_order(b):
    _, p = b.cudaMalloc(4)
    seen = []
    b.run_host_function = lambda ident: seen.append((ident, d2h(b, p, 1)[0]))
    _, graph = b.cudaGraphCreate(0)
    _, first = b.cudaGraphAddMemsetNode(graph, _nodes(), 0, _memset_params(p, 1, 1, 4))
    result, host = b.orionGraphAddHostNode(graph, _nodes(first), 1, 77)
    assert result == 0 and b.cudaGraphNodeGetType(host) == (0, 3)
    _, second = b.cudaGraphAddMemsetNode(graph, _nodes(host), 1, _memset_params(p, 2, 1, 4))
    assert seen == []
    _, graph_exec = b.cudaGraphInstantiate(graph, 0)
    b.cudaGraphLaunch(graph_exec, 0)
    b.cudaGraphLaunch(graph_exec, 0)
    assert seen == [(77, 1), (77, 1)]                          # after the first memset only
    assert d2h(b, p, 1) == b"\x02"
    assert status(b.orionGraphAddHostNode, graph, _nodes(0x999), 1, 78) == 1


# ---------------------------------------------------------------- memcpy nodes
def test_memcpy_nodes_read_and_write_live_client_memory(b, client):
    mem = client(b)
    _, d = b.cudaMalloc(256)
    _, graph = b.cudaGraphCreate(0)
    _, up = b.orionGraphAddMemcpyNode1D(graph, _nodes(), 0, d, CLIENT_BASE, 64, H2D)
    result, down = b.orionGraphAddMemcpyNode(graph, _nodes(up), 1, _copy_3d(
        (64, 1, 1), D2H, src_ptr=d, src_pitch=64, src_ysize=1,
        dst_ptr=CLIENT_BASE + 1000, dst_pitch=64, dst_ysize=1))
    assert result == 0 and b.cudaGraphNodeGetType(down) == (0, 1)
    assert mem[1000:1064] == bytes(64)                         # not run yet
    _, graph_exec = b.cudaGraphInstantiate(graph, 0)
    for round_ in range(3):
        mem[0:64] = bytes([round_ + 1]) * 64
        assert b.cudaGraphLaunch(graph_exec, 0) == (0,)
        assert mem[1000:1064] == bytes([round_ + 1]) * 64
    assert d2h(b, d, 64) == b"\x03" * 64


def test_memcpy_node_pointers_are_resolved_at_every_launch(b, client):
    mem = client(b)
    _, d = b.cudaMalloc(64)
    h2d(b, d, b"x" * 64)
    _, graph = b.cudaGraphCreate(0)
    b.orionGraphAddMemcpyNode1D(graph, _nodes(), 0, CLIENT_BASE + 8, d, 16, DEFAULT)
    _, graph_exec = b.cudaGraphInstantiate(graph, 0)
    b.cudaGraphLaunch(graph_exec, 0)
    assert mem[8:24] == b"x" * 16
    assert b.orionShmDetach(CLIENT_BASE) == (0,)
    assert status(b.cudaGraphLaunch, graph_exec, 0) == 1       # the memory is gone
    again = client(b)                                          # new memory, same address
    assert b.cudaGraphLaunch(graph_exec, 0) == (0,)
    assert again[8:24] == b"x" * 16


def test_3d_memcpy_nodes_with_pitches_positions_and_arrays(b, client):
    mem = client(b)
    mem[0:4096] = bytes(i % 251 for i in range(4096))
    # a 6x3x2 box from the client (pitch 100, slices of 10 rows, at x=4, y=1, z=1) to a
    # pitched device buffer (pitch 32, slices of 4 rows, at x=2, y=0, z=0)
    result, pitched = b.cudaMalloc3D(struct.pack("<QQQ", 32, 4, 2))
    d, dpitch = struct.unpack_from("<QQ", pitched)
    b.cudaMemset(d, 0, dpitch * 8)
    _, graph = b.cudaGraphCreate(0)
    copy = _copy_3d((6, 3, 2), H2D, src_ptr=CLIENT_BASE, src_pitch=100, src_ysize=10,
                    src_pos=(4, 1, 1), dst_ptr=d, dst_pitch=dpitch, dst_ysize=4,
                    dst_pos=(2, 0, 0))
    assert b.orionGraphAddMemcpyNode(graph, _nodes(), 0, copy)[0] == 0
    _, graph_exec = b.cudaGraphInstantiate(graph, 0)
    b.cudaGraphLaunch(graph_exec, 0)
    device = d2h(b, d, dpitch * 8)
    for z in range(2):
        for y in range(3):
            src = (1 + z) * 1000 + (1 + y) * 100 + 4
            row = device[z * dpitch * 4 + y * dpitch:][:dpitch]
            assert row[2:8] == mem[src:src + 6] and row[:2] == bytes(2) and not any(row[8:])

    # to an array (extent and positions in its 4-byte elements), then back to the client
    desc = struct.pack("<iiiii", 32, 0, 0, 0, 2)
    _, array = b.cudaMallocArray(desc, 8, 4, 0)
    to_array = _copy_3d((3, 2, 1), H2D, src_ptr=CLIENT_BASE, src_pitch=100, src_ysize=10,
                        dst_array=array, dst_pos=(1, 1, 0))
    from_array = _copy_3d((8, 4, 1), D2H, src_array=array, dst_ptr=CLIENT_BASE + 8192,
                          dst_pitch=32, dst_ysize=4)
    _, graph2 = b.cudaGraphCreate(0)
    _, first = b.orionGraphAddMemcpyNode(graph2, _nodes(), 0, to_array)
    assert b.orionGraphAddMemcpyNode(graph2, _nodes(first), 1, from_array)[0] == 0
    _, exec2 = b.cudaGraphInstantiate(graph2, 0)
    b.cudaGraphLaunch(exec2, 0)
    image = mem[8192:8192 + 128]
    for y in range(4):
        expect = bytes(32)
        if y in (1, 2):
            expect = bytes(4) + mem[(y - 1) * 100:(y - 1) * 100 + 12] + bytes(16)
        assert image[y * 32:y * 32 + 32] == expect, y


def test_memcpy_node_errors(b, client):
    client(b)
    _, d = b.cudaMalloc(64)
    _, graph = b.cudaGraphCreate(0)

    def add_1d(dst, src, count, kind):
        return status(b.orionGraphAddMemcpyNode1D, graph, _nodes(), 0, dst, src, count, kind)
    assert add_1d(d, CLIENT_BASE, 64, 7) == 21                 # no such direction
    assert add_1d(d, 0x1234_5000, 64, H2D) == 1                # pageable: not in a segment
    assert add_1d(d, CLIENT_BASE + SEGMENT - 8, 16, H2D) == 1  # runs past the segment
    assert add_1d(d, CLIENT_BASE, 65, H2D) == 1                # runs past the allocation
    assert add_1d(d, d + 32, 32, D2D) == 0
    assert add_1d(d, CLIENT_BASE, 0, H2D) == 0                 # nothing to copy
    assert status(b.orionGraphAddMemcpyNode, graph, _nodes(), 0, None) == 1
    too_narrow = _copy_3d((16, 2, 1), H2D, src_ptr=CLIENT_BASE, src_pitch=8, src_ysize=2,
                          dst_ptr=d, dst_pitch=16, dst_ysize=2)
    assert status(b.orionGraphAddMemcpyNode, graph, _nodes(), 0, too_narrow) == 12
    _, array = b.cudaMallocArray(struct.pack("<iiiii", 8, 0, 0, 0, 2), 16, 1, 0)
    both = _copy_3d((4, 1, 1), H2D, src_ptr=CLIENT_BASE, src_pitch=4, src_ysize=1,
                    dst_array=array, dst_ptr=d, dst_pitch=4, dst_ysize=1)
    assert status(b.orionGraphAddMemcpyNode, graph, _nodes(), 0, both) == 1
    outside = _copy_3d((4, 1, 1), H2D, src_ptr=CLIENT_BASE, src_pitch=4, src_ysize=1,
                       dst_array=array, dst_pos=(14, 0, 0))
    assert status(b.orionGraphAddMemcpyNode, graph, _nodes(), 0, outside) == 1
    assert b.cudaGraphGetNodes(graph, 0, 0) == (0, b"", 2)


def test_exec_memcpy_updates_touch_only_that_exec(b, client):
    mem = client(b)
    _, d = b.cudaMalloc(64)
    h2d(b, d, bytes(range(64)))
    _, graph = b.cudaGraphCreate(0)
    _, node = b.orionGraphAddMemcpyNode1D(graph, _nodes(), 0, CLIENT_BASE, d, 4, D2H)
    _, memset = b.cudaGraphAddMemsetNode(graph, _nodes(), 0, _memset_params(d, 0, 1, 1))
    _, first = b.cudaGraphInstantiate(graph, 0)
    _, second = b.cudaGraphInstantiate(graph, 0)
    assert b.cudaGraphExecMemcpyNodeSetParams1D(first, node, CLIENT_BASE + 100, d + 8, 4,
                                                D2H) == (0,)
    b.cudaGraphLaunch(second, 0)
    assert mem[0:4] == bytes(range(4)) and mem[100:104] == bytes(4)
    b.cudaGraphLaunch(first, 0)
    assert mem[100:104] == bytes(range(8, 12))
    params = _copy_3d((2, 2, 1), D2H, src_ptr=d, src_pitch=16, src_ysize=2,
                      dst_ptr=CLIENT_BASE + 200, dst_pitch=4, dst_ysize=2)
    assert b.cudaGraphExecMemcpyNodeSetParams(second, node, params) == (0,)
    b.cudaGraphLaunch(second, 0)
    assert mem[200:208] == bytes([0, 1, 0, 0, 16, 17, 0, 0])   # rows of 2 bytes, pitch 4
    assert status(b.cudaGraphExecMemcpyNodeSetParams, second, memset, params) == 1
    assert status(b.cudaGraphExecMemcpyNodeSetParams1D, second, node, d, d, 4, 9) == 21
    assert status(b.cudaGraphExecMemcpyNodeSetParams1D, 0x4242, node, d, d, 4, D2D) == 1
    b.cudaGraphLaunch(second, 0)                               # the failed updates left it
    assert mem[200:208] == bytes([0, 1, 0, 0, 16, 17, 0, 0])


# ---------------------------------------------------------------- queries
def test_node_lists(b):
    _, graph = b.cudaGraphCreate(0)
    _, a = b.cudaGraphAddEmptyNode(graph, _nodes(), 0)
    _, c = b.cudaGraphAddEmptyNode(graph, _nodes(a), 1)
    _, e = b.cudaGraphAddEmptyNode(graph, _nodes(), 0)
    assert b.cudaGraphGetNodes(graph, 0, 0) == (0, b"", 3)
    assert b.cudaGraphGetNodes(graph, 24, 3) == (0, struct.pack("<3Q", a, c, e), 3)
    assert b.cudaGraphGetNodes(graph, 40, 5) == (0, struct.pack("<5Q", a, c, e, 0, 0), 3)
    assert b.cudaGraphGetNodes(graph, 16, 2) == (0, struct.pack("<2Q", a, c), 2)
    assert b.cudaGraphGetRootNodes(graph, 0, 0) == (0, b"", 2)
    assert b.cudaGraphGetRootNodes(graph, 24, 3) == (0, struct.pack("<3Q", a, e, 0), 2)
    b.cudaGraphAddDependencies(graph, _nodes(c), _nodes(e), None, 1)
    assert b.cudaGraphGetRootNodes(graph, 8, 1) == (0, struct.pack("<Q", a), 1)
    b.cudaGraphDestroyNode(c)
    assert b.cudaGraphGetNodes(graph, 0, 0) == (0, b"", 2)
    assert status(b.cudaGraphGetNodes, 0x4242, 0, 0) == 1
    _, empty = b.cudaGraphCreate(0)
    assert b.cudaGraphGetRootNodes(empty, 16, 2) == (0, bytes(16), 0)


# ---------------------------------------------------------------- exec updates
def test_exec_update_failures_name_the_node_and_change_nothing(b):
    _, p = b.cudaMalloc(64)
    function = _function(b)
    _, graph = b.cudaGraphCreate(0)
    first = _kernel_node(b, graph, function, _args(p, 1))
    _kernel_node(b, graph, function, _args(p, 2), deps=[first])
    _, graph_exec = b.cudaGraphInstantiate(graph, 0)

    def failure(other) -> ExecUpdateFailure:
        with pytest.raises(ExecUpdateFailure) as e:
            b.cudaGraphExecUpdate(graph_exec, other)
        assert e.value.status == 910 and len(e.value.info) == 24
        assert struct.unpack("<I4xQQ", e.value.info) == (e.value.result, e.value.error_node,
                                                         e.value.error_from)
        return e.value

    _, types = b.cudaGraphCreate(0)                            # a node of another type
    _, x = b.cudaGraphAddEmptyNode(types, _nodes(), 0)
    _kernel_node(b, types, function, _args(p, 3), deps=[x])
    e = failure(types)
    assert (e.result, e.error_node) == (3, x)

    _, edges = b.cudaGraphCreate(0)                            # same nodes, another edge
    y = _kernel_node(b, edges, function, _args(p, 3))
    _kernel_node(b, edges, function, _args(p, 3), deps=[y])
    _, extra = b.cudaGraphAddEmptyNode(edges, _nodes(), 0)
    e = failure(edges)
    assert (e.result, e.error_node) == (2, extra)              # a node more

    _, fewer = b.cudaGraphCreate(0)
    _kernel_node(b, fewer, function, _args(p, 3))
    assert failure(fewer).result == 2

    _, unwired = b.cudaGraphCreate(0)                          # the edge is missing
    _kernel_node(b, unwired, function, _args(p, 3))
    z = _kernel_node(b, unwired, function, _args(p, 3))
    e = failure(unwired)
    assert (e.result, e.error_node, e.error_from) == (2, z, 0)

    b.cudaGraphLaunch(graph_exec, 0)                           # unchanged by the failures
    assert [r["args_hex"] for r in b.launches] == [bytes(_args(p, 1)).hex(),
                                                   bytes(_args(p, 2)).hex()]

    # three empty nodes, the last after the first; then after the second instead
    def three(after: int) -> tuple[int, list[int]]:
        _, g = b.cudaGraphCreate(0)
        nodes = [b.cudaGraphAddEmptyNode(g, _nodes(), 0)[1] for _ in range(2)]
        nodes.append(b.cudaGraphAddEmptyNode(g, _nodes(nodes[after]), 1)[1])
        return g, nodes
    original, _ = three(0)
    _, three_exec = b.cudaGraphInstantiate(original, 0)
    moved, (_, m1, m2) = three(1)
    with pytest.raises(ExecUpdateFailure) as e:
        b.cudaGraphExecUpdate(three_exec, moved)
    assert (e.value.result, e.value.error_node, e.value.error_from) == (2, m2, m1)


def test_exec_update_from_another_graph_keeps_the_original_node_handles(b):
    _, p = b.cudaMalloc(64)
    function = _function(b)
    _, graph = b.cudaGraphCreate(0)
    kernel = _kernel_node(b, graph, function, _args(p, 1))
    _, graph_exec = b.cudaGraphInstantiate(graph, 0)
    _, clone = b.cudaGraphClone(graph)
    (cloned_kernel,) = struct.unpack("<Q", b.cudaGraphGetNodes(clone, 8, 1)[1])
    assert cloned_kernel != kernel
    _set_kernel(b, 0, cloned_kernel, function, _args(p, 9))
    assert b.cudaGraphExecUpdate(graph_exec, clone)[0] == 0
    b.cudaGraphLaunch(graph_exec, 0)
    assert b.launches[-1]["args_hex"] == bytes(_args(p, 9)).hex()
    assert _set_kernel(b, graph_exec, kernel, function, _args(p, 4)) == (0,)
    assert status(_set_kernel, b, graph_exec, cloned_kernel, function, _args(p, 4)) == 1
    b.cudaGraphLaunch(graph_exec, 0)
    assert b.launches[-1]["args_hex"] == bytes(_args(p, 4)).hex()
