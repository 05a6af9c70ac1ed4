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

cudaErrorGraphExecUpdateFailure = 910

NODE_KERNEL, NODE_MEMCPY, NODE_MEMSET, NODE_HOST, NODE_GRAPH, NODE_EMPTY = 0, 1, 2, 3, 4, 5
CAPTURE_GLOBAL, CAPTURE_THREAD_LOCAL, CAPTURE_RELAXED = 0, 1, 2

_MEMSET_PARAMS = struct.Struct("<QQIIQQ")   # cudaMemsetParams
_UPDATE_RESULT = struct.Struct("<I4xQQ")    # cudaGraphExecUpdateResultInfo
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
    op: object                     # Memset, Copy, Launch, Graph (child) or None (empty)
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


def same_topology(a: list[Node], b: list[Node]) -> bool:
    """Whether two ordered node lists have the same types and edges (cudaGraphExecUpdate)."""
    if len(a) != len(b):
        return False
    index_a = {n.handle: i for i, n in enumerate(a)}
    index_b = {n.handle: i for i, n in enumerate(b)}
    return all(x.type == y.type and
               sorted(index_a[d] for d in x.deps) == sorted(index_b[d] for d in y.deps)
               for x, y in zip(a, b))


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
        e, new = self._exec(hGraphExec), self._graph(hGraph).order()
        if not same_topology(e.steps, new):
            raise CudaError(cudaErrorGraphExecUpdateFailure, "the graph's topology changed")
        e.steps = [Node(n.handle, n.type, n.op, list(n.deps)) for n in new]
        return 0, _UPDATE_RESULT.pack(0, 0, 0)

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
