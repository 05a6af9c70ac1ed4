"""Stream work and CUDA graphs of the host backend.

Work on a stream is one of the operations below. Outside a capture the backend runs it
at once (host memory has no queues, so every stream is always idle); inside one it
becomes a node of the capture's graph, and a graph launch runs the nodes in dependency
order. GraphCalls holds the cudaGraph* handlers.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Callable, NamedTuple

from .. import backend as B
from ..backend import CudaError

cudaErrorInvalidPitchValue = 12
cudaErrorInvalidMemcpyDirection = 21
cudaErrorGraphExecUpdateFailure = 910
# cudaGraphExecUpdateResult
UPDATE_SUCCESS, UPDATE_TOPOLOGY_CHANGED, UPDATE_NODE_TYPE_CHANGED = 0, 2, 3

NODE_KERNEL, NODE_MEMCPY, NODE_MEMSET, NODE_HOST, NODE_GRAPH, NODE_EMPTY = 0, 1, 2, 3, 4, 5
CAPTURE_GLOBAL, CAPTURE_THREAD_LOCAL, CAPTURE_RELAXED = 0, 1, 2

_MEMSET_PARAMS = struct.Struct("<QQIIQQ")   # cudaMemsetParams
_UPDATE_RESULT = struct.Struct("<I4xQQ")    # cudaGraphExecUpdateResultInfo
# cudaMemcpy3DParms: srcArray, srcPos, srcPtr (ptr, pitch, xsize, ysize), dstArray, dstPos,
# dstPtr, extent, kind
_MEMCPY_3D = struct.Struct("<Q3Q4QQ3Q4Q3QI4x")
_EXTENT = struct.Struct("<QQQ")
# cudaMemcpyKind -> whether (src, dst) are host memory; None: either (cudaMemcpyDefault)
_MEMCPY_SIDES = {0: (True, True), 1: (True, False), 2: (False, True), 3: (False, False),
                 4: (None, None)}
_INSTANTIATE_FLAGS = 0x01 | 0x02 | 0x04 | 0x08


class Memset(NamedTuple):
    """cudaMemsetParams: `height` rows of `width` elements, `pitch` bytes apart."""
    dst: int
    pitch: int
    value: int
    element_size: int
    width: int
    height: int

    @classmethod
    def unpack(cls, raw: bytes | None) -> "Memset":
        if raw is None:
            raise CudaError(B.cudaErrorInvalidValue, "no memset parameters")
        return cls(*_MEMSET_PARAMS.unpack(raw))

    def pack(self) -> bytes:
        return _MEMSET_PARAMS.pack(*self)


class Copy(NamedTuple):
    """`height` rows of `width` bytes from src to dst, each pitch bytes apart; `data`
    holds the rows (packed) of a copy from the host, taken when it was issued."""
    dst: int
    dpitch: int
    src: int
    spitch: int
    width: int
    height: int
    data: bytes | memoryview | None = None


class Endpoint(NamedTuple):
    """One side of a cudaMemcpy3DParms: an array (positions in its elements) or a
    pitched pointer (positions in bytes), as the client gave it."""
    array: int
    pos: tuple[int, int, int]
    ptr: int
    pitch: int
    xsize: int
    ysize: int


class Memcpy3D(NamedTuple):
    """A memcpy node: its pointers are the client's (host ones in its shared segments)
    and its arrays handles, resolved each time the node runs."""
    src: Endpoint
    dst: Endpoint
    extent: tuple[int, int, int]
    kind: int

    @classmethod
    def unpack(cls, raw: bytes | None) -> "Memcpy3D":
        if raw is None:
            raise CudaError(B.cudaErrorInvalidValue, "no copy parameters")
        f = _MEMCPY_3D.unpack(raw)
        return cls(Endpoint(f[0], tuple(f[1:4]), *f[4:8]),
                   Endpoint(f[8], tuple(f[9:12]), *f[12:16]), tuple(f[16:19]), f[19])

    @classmethod
    def linear(cls, dst: int, src: int, count: int, kind: int) -> "Memcpy3D":
        """cudaGraphAddMemcpyNode1D's copy."""
        return cls(Endpoint(0, (0, 0, 0), src, count, count, 1),
                   Endpoint(0, (0, 0, 0), dst, count, count, 1), (count, 1, 1), kind)


class Launch(NamedTuple):
    function: int
    grid: tuple[int, int, int]
    block: tuple[int, int, int]
    shared_mem: int
    flags: int
    args: bytes


@dataclass(eq=False)
class Node:
    handle: int
    type: int
    op: object    # Memset, Copy or Memcpy3D, Launch, host function id, Graph (child), None
    deps: list[int] = field(default_factory=list)


@dataclass(eq=False)
class Graph:
    handle: int
    device: int
    nodes: dict[int, Node] = field(default_factory=dict)   # in creation order

    def add(self, handle: int, type_: int, op: object, deps) -> Node:
        deps = list(dict.fromkeys(deps))
        for d in deps:
            if d not in self.nodes:
                raise CudaError(B.cudaErrorInvalidValue, f"dependency 0x{d:x} is not in the graph")
        node = self.nodes[handle] = Node(handle, type_, op, deps)
        return node

    def remove(self, handle: int) -> None:
        del self.nodes[handle]
        for node in self.nodes.values():
            if handle in node.deps:
                node.deps.remove(handle)

    def order(self) -> list[Node]:
        """Nodes in dependency order, ties in creation order; a cycle is an error."""
        done: set[int] = set()
        ordered: list[Node] = []
        pending = list(self.nodes.values())
        while pending:
            ready = [n for n in pending if all(d in done for d in n.deps)]
            if not ready:
                raise CudaError(B.cudaErrorInvalidValue, f"graph 0x{self.handle:x} has a cycle")
            for n in ready:
                done.add(n.handle)
            ordered += ready
            pending = [n for n in pending if n.handle not in done]
        return ordered

    def clone(self, handle: int, new_handle: Callable[[], int]) -> "Graph":
        """A copy with fresh node handles; child graphs are immutable, so shared."""
        copy = Graph(handle, self.device)
        renamed = {old: new_handle() for old in self.nodes}
        for node in self.order():
            copy.add(renamed[node.handle], node.type, node.op,
                     [renamed[d] for d in node.deps])
        return copy


def topology_mismatch(a: list[Node], b: list[Node]) -> tuple[int, int, int] | None:
    """Why ordered node list `b` cannot update `a` (cudaGraphExecUpdate): None when types
    and edges match (child graphs' too), else (cudaGraphExecUpdateResult, the node of b
    at fault or 0, the dependency of it at fault or 0). Nodes pair up by position."""
    index_a = {n.handle: i for i, n in enumerate(a)}
    index_b = {n.handle: i for i, n in enumerate(b)}

    def differ(x: Node, y: Node) -> tuple[int, int, int] | None:
        if x.type != y.type:
            return UPDATE_NODE_TYPE_CHANGED, y.handle, 0
        deps_a = sorted(index_a[d] for d in x.deps)
        if deps_a != sorted(index_b[d] for d in y.deps):
            extra = [d for d in y.deps if index_b[d] not in deps_a]
            return UPDATE_TOPOLOGY_CHANGED, y.handle, extra[0] if extra else 0
        if x.type == NODE_GRAPH and topology_mismatch(x.op.order(), y.op.order()):
            return UPDATE_TOPOLOGY_CHANGED, y.handle, 0
        return None

    first = next(((i, why) for i, (x, y) in enumerate(zip(a, b)) if (why := differ(x, y))),
                 (min(len(a), len(b)), None))
    if len(a) != len(b):       # a node more or less: where the two part ways
        i = first[0]
        return UPDATE_TOPOLOGY_CHANGED, b[i].handle if i < len(b) else 0, 0
    return first[1]


class ExecUpdateFailure(CudaError):
    """cudaGraphExecUpdate's cudaErrorGraphExecUpdateFailure; `info` is the
    cudaGraphExecUpdateResultInfo CUDA would fill in (the wire carries no outputs of a
    failed call, so it stays here and in the log)."""

    def __init__(self, result: int, error_node: int, error_from: int):
        super().__init__(cudaErrorGraphExecUpdateFailure,
                         f"cannot update: result {result}, node 0x{error_node:x}, "
                         f"from node 0x{error_from:x}")
        self.result, self.error_node, self.error_from = result, error_node, error_from
        self.info = _UPDATE_RESULT.pack(result, error_node, error_from)


@dataclass(eq=False)
class GraphExec:
    """An instantiated graph: a frozen copy of its nodes, keyed by the source's handles."""
    handle: int
    device: int
    steps: list[Node]

    def step(self, node: int) -> Node:
        for s in self.steps:
            if s.handle == node:
                return s
        raise CudaError(B.cudaErrorInvalidValue, f"node 0x{node:x} is not in graph exec "
                                               f"0x{self.handle:x}")


@dataclass(eq=False)
class Capture:
    """One stream capture: the graph it builds and the streams that joined it."""
    graph: Graph
    mode: int
    origin: int
    invalidated: bool = False


class GraphCalls:
    """The cudaGraph* handlers of HostBackend, which mixes them in: they use its
    lookups, memset checks and stream work (_submit, _run)."""

    def _graph(self, handle: int) -> Graph:
        return self._lookup(self.graphs, handle, "graph", B.cudaErrorInvalidValue)

    def _exec(self, handle: int) -> GraphExec:
        return self._lookup(self.execs, handle, "graph exec", B.cudaErrorInvalidValue)

    def _node(self, handle: int) -> Node:
        graph = self._lookup(self.node_graph, handle, "graph node", B.cudaErrorInvalidValue)
        return graph.nodes[handle]

    def _add_node(self, graph: int, deps, count: int, type_: int, op) -> tuple:
        g = self._graph(graph)
        if len(deps) != 8 * count:
            raise CudaError(B.cudaErrorInvalidValue, f"{len(deps)} bytes for {count} nodes")
        node = g.add(self._new_handle(), type_, op, struct.unpack(f"<{count}Q", deps))
        self.node_graph[node.handle] = g
        return 0, node.handle

    def cudaGraphCreate(self, flags):
        if flags:
            raise CudaError(B.cudaErrorInvalidValue, f"graph flags {flags:#x}")
        g = Graph(self._new_handle(), self.device)
        self.graphs[g.handle] = g
        return 0, g.handle

    def cudaGraphDestroy(self, graph):
        g = self._graph(graph)
        for node in g.nodes:
            del self.node_graph[node]
        del self.graphs[graph]
        return (0,)

    def cudaGraphClone(self, originalGraph):
        clone = self._graph(originalGraph).clone(self._new_handle(), self._new_handle)
        self.graphs[clone.handle] = clone
        self.node_graph.update(dict.fromkeys(clone.nodes, clone))
        return 0, clone.handle

    def cudaGraphAddEmptyNode(self, graph, pDependencies, numDependencies):
        return self._add_node(graph, pDependencies, numDependencies, NODE_EMPTY, None)

    def cudaGraphAddMemsetNode(self, graph, pDependencies, numDependencies, pMemsetParams):
        memset = self._checked_memset(Memset.unpack(pMemsetParams))
        return self._add_node(graph, pDependencies, numDependencies, NODE_MEMSET, memset)

    def cudaGraphAddChildGraphNode(self, graph, pDependencies, numDependencies, childGraph):
        if childGraph == graph:
            raise CudaError(B.cudaErrorInvalidValue, "a graph cannot contain itself")
        child = self._graph(childGraph).clone(self._new_handle(), self._new_handle)
        return self._add_node(graph, pDependencies, numDependencies, NODE_GRAPH, child)

    def cudaGraphAddDependencies(self, graph, from_, to, edgeData, numDependencies):
        g = self._graph(graph)
        if len(from_) != len(to) or len(to) != 8 * numDependencies:
            raise CudaError(B.cudaErrorInvalidValue, "edge lists do not match their count")
        if edgeData is not None and any(edgeData):
            raise CudaError(B.cudaErrorInvalidValue, "edge data is not supported")
        edges = list(zip(struct.unpack(f"<{numDependencies}Q", from_),
                         struct.unpack(f"<{numDependencies}Q", to)))
        for a, b in edges:
            if a not in g.nodes or b not in g.nodes or a == b or a in g.nodes[b].deps:
                raise CudaError(B.cudaErrorInvalidValue, f"bad edge 0x{a:x} -> 0x{b:x}")
        for a, b in edges:
            g.nodes[b].deps.append(a)
        return (0,)

    def cudaGraphNodeGetType(self, node):
        return 0, self._node(node).type

    def cudaGraphDestroyNode(self, node):
        self._node(node)
        self.node_graph.pop(node).remove(node)
        return (0,)

    def _memset_node(self, node: Node) -> Node:
        if node.type != NODE_MEMSET:
            raise CudaError(B.cudaErrorInvalidValue, f"node 0x{node.handle:x} is no memset")
        return node

    def cudaGraphMemsetNodeGetParams(self, node):
        return 0, self._memset_node(self._node(node)).op.pack()

    def cudaGraphMemsetNodeSetParams(self, node, pNodeParams):
        self._memset_node(self._node(node)).op = self._checked_memset(Memset.unpack(pNodeParams))
        return (0,)

    def cudaGraphInstantiate(self, graph, flags):
        if flags & ~_INSTANTIATE_FLAGS:
            raise CudaError(B.cudaErrorInvalidValue, f"instantiate flags {flags:#x}")
        g = self._graph(graph)
        steps = [Node(n.handle, n.type, n.op, list(n.deps)) for n in g.order()]
        e = GraphExec(self._new_handle(), g.device, steps)
        self.execs[e.handle] = e
        return 0, e.handle

    def cudaGraphInstantiateWithFlags(self, graph, flags):
        return self.cudaGraphInstantiate(graph, flags)

    def cudaGraphExecDestroy(self, graphExec):
        self._exec(graphExec)
        del self.execs[graphExec]
        return (0,)

    def cudaGraphExecMemsetNodeSetParams(self, hGraphExec, node, pNodeParams):
        step = self._memset_node(self._exec(hGraphExec).step(node))
        step.op = self._checked_memset(Memset.unpack(pNodeParams))
        return (0,)

    def cudaGraphExecUpdate(self, hGraphExec, hGraph):
        """The exec takes the graph's node parameters when both have the same nodes and
        edges; its nodes keep the handles of the graph it was instantiated from, which
        exec-level updates go on naming."""
        e, new = self._exec(hGraphExec), self._graph(hGraph).order()
        why = topology_mismatch(e.steps, new)
        if why is not None:
            raise ExecUpdateFailure(*why)
        for step, node in zip(e.steps, new):
            step.op = node.op
        return 0, _UPDATE_RESULT.pack(UPDATE_SUCCESS, 0, 0)

    def cudaGraphLaunch(self, graphExec, stream):
        e, s = self._exec(graphExec), self._stream(stream)
        if s.capture is None:
            for step in e.steps:
                self._run(step.type, step.op, s)
        else:   # launching inside a capture adds a copy of the graph as a child node
            child = Graph(self._new_handle(), e.device,
                          {n.handle: Node(n.handle, n.type, n.op, list(n.deps)) for n in e.steps})
            self._submit(s, NODE_GRAPH, child)
        return (0,)

    def cudaGraphUpload(self, graphExec, stream):
        self._exec(graphExec)
        self._stream(stream)
        return (0,)

    # ---- kernel and host nodes (their parameters packed by the client) ----
    def _kernel_node(self, node: Node) -> Node:
        if node.type != NODE_KERNEL:
            raise CudaError(B.cudaErrorInvalidValue, f"node 0x{node.handle:x} is no kernel")
        return node

    def orionGraphAddKernelNode(self, graph, pDependencies, numDependencies, function, grid,
                                block, sharedMem, args, argsSize):
        self._graph(graph)
        launch = self._checked_launch(function, grid, block, sharedMem, 0, args, argsSize)
        return self._add_node(graph, pDependencies, numDependencies, NODE_KERNEL, launch)

    def orionGraphKernelNodeSetParams(self, graphExec, node, function, grid, block, sharedMem,
                                      args, argsSize):
        """graphExec 0: the graph's node; else that exec's copy of it, and only that."""
        target = self._exec(graphExec).step(node) if graphExec else self._node(node)
        self._kernel_node(target)
        target.op = self._checked_launch(function, grid, block, sharedMem, 0, args, argsSize)
        return (0,)

    def orionGraphAddHostNode(self, graph, pDependencies, numDependencies, ident):
        """`ident` names a function of the client, which runs it at every launch."""
        return self._add_node(graph, pDependencies, numDependencies, NODE_HOST, ident)

    # ---- memcpy nodes: resolved at every run (host pointers: live client memory) ----
    def _memcpy_node(self, node: Node) -> Node:
        if node.type != NODE_MEMCPY:
            raise CudaError(B.cudaErrorInvalidValue, f"node 0x{node.handle:x} is no memcpy")
        return node

    def _resolve(self, ptr: int, count: int, host: bool | None) -> int:
        """The backend address of `count` bytes at a client pointer: host memory is a
        shared segment's, device memory the session's; `host` says which is tried
        first (None: either, the segment first)."""
        def device(p: int, n: int) -> int:
            self.memory.view(p, n)
            return p
        ways = [self._shm_address, device] if host is not False else [device,
                                                                       self._shm_address]
        error = None
        for way in ways:
            try:
                return way(ptr, count)
            except CudaError as e:
                error = error or e
        raise error

    def _endpoint(self, ep: Endpoint, element: int, width: int, height: int, depth: int,
                  host: bool | None) -> tuple[int, int, int]:
        """(address, pitch, bytes between slices) of a copy's region at one side."""
        x, y, z = ep.pos
        if ep.array:
            if ep.ptr:
                raise CudaError(B.cudaErrorInvalidValue, "both an array and a pointer")
            a = self._array(ep.array)
            slices = max(_EXTENT.unpack(a.extent)[2], 1)
            if x * element + width > a.pitch or y + height > a.rows or z + depth > slices:
                raise CudaError(B.cudaErrorInvalidValue,
                                f"copy of {width}x{height}x{depth} at {ep.pos} exceeds array "
                                f"0x{ep.array:x}")
            slice_ = a.pitch * a.rows
            return a.base + z * slice_ + y * a.pitch + x * element, a.pitch, slice_
        if not ep.ptr:
            raise CudaError(B.cudaErrorInvalidValue, "neither an array nor a pointer")
        pitch, slice_ = ep.pitch, ep.pitch * ep.ysize
        if (height > 1 or depth > 1) and x + width > pitch:
            raise CudaError(cudaErrorInvalidPitchValue,
                            f"rows of {width} bytes at {x} in a pitch of {pitch}")
        if depth > 1 and y + height > ep.ysize:
            raise CudaError(B.cudaErrorInvalidValue,
                            f"{height} rows at {y} in slices of {ep.ysize}")
        span = slice_ * (depth - 1) + pitch * (height - 1) + width
        address = self._resolve(ep.ptr + z * slice_ + y * pitch + x, span, host)
        return address, max(pitch, width), slice_

    def _memcpy_copies(self, m: Memcpy3D) -> list[Copy]:
        """The node's copies, one per slice, between backend addresses as of now."""
        if m.kind not in _MEMCPY_SIDES:
            raise CudaError(cudaErrorInvalidMemcpyDirection, f"copy kind {m.kind}")
        width, height, depth = m.extent
        if not (width and height and depth):
            return []
        arrays = [self._array(ep.array) for ep in (m.dst, m.src) if ep.array]
        element = self._element_size(arrays[0].desc) if arrays else 1
        src_host, dst_host = _MEMCPY_SIDES[m.kind]
        src, spitch, sslice = self._endpoint(m.src, element, width * element, height, depth,
                                             src_host)
        dst, dpitch, dslice = self._endpoint(m.dst, element, width * element, height, depth,
                                             dst_host)
        return [self._checked_copy(Copy(dst + z * dslice, dpitch, src + z * sslice, spitch,
                                        width * element, height)) for z in range(depth)]

    def _checked_memcpy(self, m: Memcpy3D) -> Memcpy3D:
        self._memcpy_copies(m)
        return m

    def orionGraphAddMemcpyNode(self, graph, pDependencies, numDependencies, pCopyParams):
        self._graph(graph)
        m = self._checked_memcpy(Memcpy3D.unpack(pCopyParams))
        return self._add_node(graph, pDependencies, numDependencies, NODE_MEMCPY, m)

    def orionGraphAddMemcpyNode1D(self, graph, pDependencies, numDependencies, dst, src, count,
                                 kind):
        self._graph(graph)
        m = self._checked_memcpy(Memcpy3D.linear(dst, src, count, kind))
        return self._add_node(graph, pDependencies, numDependencies, NODE_MEMCPY, m)

    def cudaGraphExecMemcpyNodeSetParams(self, hGraphExec, node, pNodeParams):
        step = self._memcpy_node(self._exec(hGraphExec).step(node))
        step.op = self._checked_memcpy(Memcpy3D.unpack(pNodeParams))
        return (0,)

    def cudaGraphExecMemcpyNodeSetParams1D(self, hGraphExec, node, dst, src, count, kind):
        step = self._memcpy_node(self._exec(hGraphExec).step(node))
        step.op = self._checked_memcpy(Memcpy3D.linear(dst, src, count, kind))
        return (0,)

    # ---- queries ----
    def _node_list(self, nodes: list[int], length: int) -> tuple:
        """cudaGraphGetNodes' answer: the count alone for a buffer of 0 bytes, else up to
        length/8 handles (zero-padded) and how many there are."""
        if not length:
            return 0, b"", len(nodes)
        listed = nodes[:length // 8]
        return 0, struct.pack(f"<{len(listed)}Q", *listed).ljust(length, b"\0"), len(listed)

    def cudaGraphGetNodes(self, graph, nodes, numNodes):
        return self._node_list(list(self._graph(graph).nodes), nodes)

    def cudaGraphGetRootNodes(self, graph, pRootNodes, pNumRootNodes):
        roots = [h for h, n in self._graph(graph).nodes.items() if not n.deps]
        return self._node_list(roots, pRootNodes)
