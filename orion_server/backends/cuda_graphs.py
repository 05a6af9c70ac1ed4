"""GPU backend: stream capture, graphs and their nodes, and host functions."""
from __future__ import annotations

import ctypes
import struct

import numpy as np
from cuda.bindings import driver as drv
from cuda.bindings import runtime as rt

from .. import backend as B
from .cuda_common import DIM3, HOST_FN, from_bytes, status, to_bytes


def _driver_launch_host_func():
    """The driver's own cuLaunchHostFunc (see orionHostFunc for why not cuda-python's)."""
    launch = ctypes.CDLL("libcuda.so.1").cuLaunchHostFunc
    launch.argtypes = (ctypes.c_void_p, HOST_FN, ctypes.c_void_p)
    launch.restype = ctypes.c_int
    return launch


class GraphCalls:
    # ---- graphs ----
    def _graph_out(self, kind: str, result):
        err, handle = result
        if err:
            return (status(err),)
        self.handles[kind].add(int(handle))
        return (0, int(handle))

    def _nodes(self, raw, count: int) -> list:
        handles = struct.unpack(f"<{count}Q", raw) if count else ()
        for h in handles:
            self._check("node", h)
        return [rt.cudaGraphNode_t(h) for h in handles]

    def cudaStreamBeginCapture(self, stream: int, mode: int):
        self._check_stream(stream)
        (err,) = rt.cudaStreamBeginCapture(stream, mode)
        if not err:
            self.capturing.add(stream)     # drain() must not synchronise meanwhile
        return (status(err),)

    def cudaStreamEndCapture(self, stream: int):
        self._check_stream(stream)
        self.capturing.discard(stream)     # a failed end ends the capture too
        return self._graph_out("graph", rt.cudaStreamEndCapture(stream))

    def cudaGraphCreate(self, flags: int):
        return self._graph_out("graph", rt.cudaGraphCreate(flags))

    def cudaGraphClone(self, graph: int):
        self._check("graph", graph)
        return self._graph_out("graph", rt.cudaGraphClone(graph))

    def cudaGraphInstantiate(self, graph: int, flags: int):
        self._check("graph", graph)
        self._reserve(self._transient_graph_memory(graph))   # a check: nothing is held
        return self._graph_out("exec", rt.cudaGraphInstantiate(graph, flags))

    def _transient_graph_memory(self, graph: int) -> int:
        """Bytes the graph's memory-allocation nodes take while it runs, beyond what is
        charged already: captured cudaMallocAsync calls were charged when captured, and
        discharged when their cudaFreeAsync was captured too."""
        err, _, count = rt.cudaGraphGetNodes(graph, 0)
        err, nodes, count = rt.cudaGraphGetNodes(graph, count)
        total = 0
        for node in (nodes or [])[:count]:
            err, kind = rt.cudaGraphNodeGetType(node)
            if not err and kind == rt.cudaGraphNodeType.cudaGraphNodeTypeMemAlloc:
                err, params = rt.cudaGraphMemAllocNodeGetParams(node)
                if not err and int(params.dptr) not in self.allocations:
                    total += int(params.bytesize)
        return total

    cudaGraphInstantiateWithFlags = cudaGraphInstantiate

    def cudaGraphLaunch(self, exec_: int, stream: int):
        self._check("exec", exec_)
        self._check_stream(stream)
        return (status(rt.cudaGraphLaunch(exec_, stream)[0]),)

    def cudaGraphUpload(self, exec_: int, stream: int):
        self._check("exec", exec_)
        self._check_stream(stream)
        return (status(rt.cudaGraphUpload(exec_, stream)[0]),)

    def cudaGraphExecDestroy(self, exec_: int):
        self._check("exec", exec_)
        self.handles["exec"].discard(exec_)
        return (status(rt.cudaGraphExecDestroy(exec_)[0]),)

    def cudaGraphDestroy(self, graph: int):
        self._check("graph", graph)
        self.handles["graph"].discard(graph)
        return (status(rt.cudaGraphDestroy(graph)[0]),)

    def cudaGraphAddEmptyNode(self, graph: int, deps, count: int):
        self._check("graph", graph)
        return self._graph_out("node", rt.cudaGraphAddEmptyNode(graph, self._nodes(deps, count),
                                                                count))

    def cudaGraphAddMemsetNode(self, graph: int, deps, count: int, params: bytes | None):
        self._check("graph", graph)
        if params is None:
            return (B.cudaErrorInvalidValue,)
        ptr, pitch, _, elem, width, height = struct.unpack("<QQIIQQ", params)
        self._check_range(ptr, pitch * (max(height, 1) - 1) + width * elem)
        return self._graph_out("node", rt.cudaGraphAddMemsetNode(
            graph, self._nodes(deps, count), count, from_bytes(rt.cudaMemsetParams, params)))

    def cudaGraphAddDependencies(self, graph: int, from_, to, edges, count: int):
        self._check("graph", graph)
        if edges is not None:
            return (B.cudaErrorNotSupported,)   # edge data: not forwarded yet
        return (status(rt.cudaGraphAddDependencies(graph, self._nodes(from_, count),
                                                    self._nodes(to, count), None, count)[0]),)

    def cudaGraphNodeGetType(self, node: int):
        self._check("node", node)
        err, kind = rt.cudaGraphNodeGetType(node)
        return (status(err),) if err else (0, int(kind))

    def cudaGraphDestroyNode(self, node: int):
        self._check("node", node)
        self.handles["node"].discard(node)
        return (status(rt.cudaGraphDestroyNode(node)[0]),)

    # ---- host functions: run in the client, in stream order ----
    def orionHostFunc(self, stream: int, ident: int):
        self._check_stream(stream)
        # The driver calls the stub on its own thread when the stream reaches it; the
        # stream waits until the client has run the function. The driver's entry point
        # is called directly: cuda-python's wrapper frees its callback data after one
        # call, but a captured host function runs at every launch of the graph.
        if self._launch_host_func is None:
            self._launch_host_func = _driver_launch_host_func()
        return (self._launch_host_func(ctypes.c_void_p(stream), self._host_fn_stub(),
                                       ctypes.c_void_p(ident)),)

    def _host_fn_stub(self):
        """The C-callable stub that runs host function <data> in the client (made once,
        kept alive as long as the backend)."""
        if self._stub is None:
            run = self.run_host_function
            self._stub = HOST_FN(lambda data: run(data or 0))
        return self._stub

    # ---- nodes whose parameters the client packed ----
    def _kernel_node_params(self, function: int, grid: bytes, block: bytes, shared: int,
                            args) -> tuple:
        entry = self.functions.get(function)
        if entry is None:
            raise B.CudaError(B.cudaErrorInvalidResourceHandle, "unknown kernel")
        func, offsets, end = entry
        if len(args) != end:    # the driver would read past the bytes
            raise B.CudaError(B.cudaErrorInvalidValue, f"{len(args)} argument bytes, "
                                                       f"the kernel takes {end}")
        buf = np.frombuffer(args, dtype=np.uint8)
        pointers = offsets + np.uint64(buf.ctypes.data)
        p = drv.CUDA_KERNEL_NODE_PARAMS()
        p.func = func
        p.gridDimX, p.gridDimY, p.gridDimZ = DIM3.unpack(grid)
        p.blockDimX, p.blockDimY, p.blockDimZ = DIM3.unpack(block)
        p.sharedMemBytes = shared
        p.kernelParams = pointers.ctypes.data if len(offsets) else 0
        # the driver copies the argument bytes when the node is set; keep them alive
        # until then
        return p, (buf, pointers)

    def orionGraphAddKernelNode(self, graph, deps, count, function, grid, block, shared,
                                args, size):
        self._check("graph", graph)
        params, _alive = self._kernel_node_params(function, grid, block, shared, args)
        err, node = drv.cuGraphAddKernelNode(graph, self._driver_nodes(deps, count), count,
                                             params)
        return self._new_node(err, node)

    def orionGraphKernelNodeSetParams(self, exec_, node, function, grid, block, shared, args,
                                      size):
        self._check("node", node)
        params, _alive = self._kernel_node_params(function, grid, block, shared, args)
        if exec_:
            self._check("exec", exec_)
            (err,) = drv.cuGraphExecKernelNodeSetParams(exec_, node, params)
        else:
            (err,) = drv.cuGraphKernelNodeSetParams(node, params)
        return (status(err),)

    def orionGraphAddHostNode(self, graph, deps, count, ident):
        self._check("graph", graph)
        p = drv.CUDA_HOST_NODE_PARAMS()
        p.fn = drv.CUhostFn(ctypes.cast(self._host_fn_stub(), ctypes.c_void_p).value)
        p.userData = ident
        err, node = drv.cuGraphAddHostNode(graph, self._driver_nodes(deps, count), count, p)
        return self._new_node(err, node)

    def _driver_nodes(self, raw, count: int) -> list:
        return [drv.CUgraphNode(int(n)) for n in self._nodes(raw, count)]

    def _new_node(self, err, node) -> tuple:
        if err:
            return (status(err),)
        self.handles["node"].add(int(node))
        return (0, int(node))

    # ---- memcpy nodes: host addresses are the client's, in shared segments ----
    def _host_or_device(self, ptr: int, count: int) -> int:
        """A client host address in a shared segment becomes the worker's; a device
        address must be this session's."""
        try:
            return self.segments.translate(ptr, count)
        except B.CudaError:
            self._check_range(ptr, count)
            return ptr

    def cudaGraphAddMemcpyNode1D(self, graph, deps, count, dst, src, size, kind):
        self._check("graph", graph)
        return self._graph_out("node", rt.cudaGraphAddMemcpyNode1D(
            graph, self._nodes(deps, count), count, self._host_or_device(dst, size),
            self._host_or_device(src, size), size, rt.cudaMemcpyKind(kind)))

    def cudaGraphExecMemcpyNodeSetParams1D(self, exec_, node, dst, src, size, kind):
        self._check("exec", exec_)
        self._check("node", node)
        return (status(rt.cudaGraphExecMemcpyNodeSetParams1D(
            exec_, node, self._host_or_device(dst, size), self._host_or_device(src, size),
            size, rt.cudaMemcpyKind(kind))[0]),)

    def _copy_params(self, raw: bytes | None):
        """cudaMemcpy3DParms with its host pointers translated (srcPtr.ptr at 32,
        dstPtr.ptr at 96; arrays at 0 and 64)."""
        if raw is None:
            raise B.CudaError(B.cudaErrorInvalidValue, "no copy parameters")
        params = bytearray(raw)
        for array_at, ptr_at in ((0, 32), (64, 96)):
            (array,) = struct.unpack_from("<Q", params, array_at)
            (ptr, pitch, _, ysize) = struct.unpack_from("<QQQQ", params, ptr_at)
            if array:
                self._check_array(array)
            elif ptr:
                width, height, depth = struct.unpack_from("<QQQ", params, 128)
                span = pitch * max(ysize, 1) * max(depth - 1, 0) + \
                    pitch * max(height - 1, 0) + width
                struct.pack_into("<Q", params, ptr_at, self._host_or_device(ptr, span))
        return from_bytes(rt.cudaMemcpy3DParms, bytes(params))

    def cudaGraphAddMemcpyNode(self, graph, deps, count, params):
        self._check("graph", graph)
        return self._graph_out("node", rt.cudaGraphAddMemcpyNode(
            graph, self._nodes(deps, count), count, self._copy_params(params)))

    def cudaGraphExecMemcpyNodeSetParams(self, exec_, node, params):
        self._check("exec", exec_)
        self._check("node", node)
        return (status(rt.cudaGraphExecMemcpyNodeSetParams(exec_, node,
                                                           self._copy_params(params))[0]),)

    # ---- queries ----
    def _node_list(self, graph, length: int, count: int, query):
        self._check("graph", graph)
        err, nodes, total = query(graph, count if length else 0)
        if err:
            return (status(err),)
        handles = [int(n) for n in (nodes or [])][: length // 8]
        self.handles["node"].update(handles)
        listed = struct.pack(f"<{len(handles)}Q", *handles).ljust(length, b"\0")
        return (0, listed, total if not length else len(handles))

    def cudaGraphGetNodes(self, graph, length, count):
        return self._node_list(graph, length, count, rt.cudaGraphGetNodes)

    def cudaGraphGetRootNodes(self, graph, length, count):
        return self._node_list(graph, length, count, rt.cudaGraphGetRootNodes)

    def cudaGraphExecUpdate(self, exec_, graph):
        self._check("exec", exec_)
        self._check("graph", graph)
        err, info = rt.cudaGraphExecUpdate(exec_, graph)
        return (status(err),) if err else (0, to_bytes(info, 24))
