"""HostBackend: the CUDA runtime emulated in host memory, for CI machines without a GPU.

It exists for tests only and is never GPU support: kernels are recorded, not run
(`launches`, and one JSON line each in `launch_log`), so a program's results computed
by kernels are garbage here, while everything else it can observe behaves as on a GPU:
memory contents and copies in every shape, the vGPU's memory limit, CUDA's error codes
for bad pointers, handles and launch configurations, streams, events, stream capture
and graphs (memset, memcpy, kernel, host-function, empty and child-graph nodes, exec
updates), memory pools, and the device description a client builds
cudaGetDeviceProperties from.

Errors are raised as CudaError (the worker answers with the status); handlers return
(0, *outs). The handlers of arrays and textures, graphs, and modules and kernels are in
host_arrays, host_graph and host_kernels. Where this differs from a GPU:
  * work runs when issued, so every stream is always idle; events record host time;
  * copies with the client's page-locked memory (shared segments, orionShm*) are
    captured as on a GPU, but copies whose bytes travel in the messages are not: a
    captured one to the device keeps the bytes sent at capture time, and one to the
    host fails with cudaErrorStreamCaptureUnsupported (its bytes are due at once);
  * cudaMallocAsync during capture allocates at once, and cudaFreeAsync during
    capture leaves the memory allocated (graphs have no alloc/free nodes here);
  * module variables are allocated on first lookup, charged to the vGPU, and their
    initial bytes are the cubin's without relocations (a __device__ pointer
    initialised with another symbol's address starts as null);
  * a failed cudaGraphExecUpdate answers cudaErrorGraphExecUpdateFailure, but the
    cudaGraphExecUpdateResultInfo it would fill in cannot travel (a failed call has no
    outputs on the wire); host_graph.ExecUpdateFailure holds it, and the log shows it.
"""
from __future__ import annotations

import itertools
import json
import os
import struct
import time
from dataclasses import dataclass, field

from .. import backend as B
from ..backend import Backend, CudaError, VGpu
from ..shm import Segments
from . import fatbin, host_device
from .host_arrays import Array, ArrayCalls, Resource
from .host_graph import (CAPTURE_GLOBAL, CAPTURE_RELAXED, NODE_GRAPH, NODE_HOST, NODE_KERNEL,
                         NODE_MEMCPY, NODE_MEMSET, Capture, Copy, Graph, GraphCalls,
                         GraphExec, Launch, Memcpy3D, Memset)
from .host_kernels import KernelCalls
from .host_memory import Memory, MemPool, align_up
from .host_nvml import HostNvmlCalls

cudaErrorInvalidPitchValue = 12
cudaErrorUnsupportedLimit = 215
cudaErrorIllegalState = 401
cudaErrorPeerAccessAlreadyEnabled = 704
cudaErrorPeerAccessNotEnabled = 705
cudaErrorStreamCaptureUnsupported = 900
cudaErrorStreamCaptureInvalidated = 901
cudaErrorStreamCaptureMerge = 902
cudaErrorStreamCaptureUnmatched = 903

LEGACY_STREAMS = (0, 1)          # NULL and cudaStreamLegacy
PER_THREAD_STREAM = 2            # cudaStreamPerThread
STREAM_PRIORITY_LEAST, STREAM_PRIORITY_GREATEST = 0, -5
PITCH_ALIGNMENT = 512

_EXTENT = struct.Struct("<QQQ")                # cudaExtent
_PITCHED_PTR = struct.Struct("<QQQQ")          # cudaPitchedPtr
_POOL_PROPS = struct.Struct("<IIIiQQ")         # allocType, handleTypes, location, win32, maxSize
# cudaMemPoolAttr -> size of its value: the reuse flags are int, the byte counts u64
_POOL_ATTR_SIZE = {1: 4, 2: 4, 3: 4, 4: 8, 5: 8, 6: 8, 7: 8, 8: 8}
_DEFAULT_LIMITS = {0: 1024, 1: 1 << 20, 2: 8 << 20, 3: 2, 4: 2048, 5: 64, 6: 0}
_P2P_ATTRS = {1: 0, 2: 1, 3: 1, 4: 1, 5: 0}
_EVENT_FLAGS = 0x01 | 0x02 | 0x04               # blocking sync, disable timing, interprocess
_EVENT_DISABLE_TIMING, _EVENT_INTERPROCESS = 0x02, 0x04
_MEMCPY_HOST_TO_DEVICE, _MEMCPY_DEVICE_TO_HOST = 1, 2


@dataclass(eq=False)
class Stream:
    handle: int
    device: int
    flags: int
    priority: int
    id: int
    capture: Capture | None = None
    tail: list[int] = field(default_factory=list)   # the capture's last nodes on it


@dataclass(eq=False)
class Event:
    handle: int
    device: int
    flags: int
    recorded_at: float | None = None
    captured: tuple[Capture, tuple[int, ...]] | None = None   # recorded inside a capture


@dataclass(eq=False)
class DeviceState:
    desc: dict
    default_pool: MemPool
    legacy: Stream
    per_thread: Stream
    current_pool: MemPool | None = None
    limits: dict = field(default_factory=lambda: dict(_DEFAULT_LIMITS))
    cache_config: int = 0
    peers: set = field(default_factory=set)


class HostBackend(ArrayCalls, GraphCalls, KernelCalls, HostNvmlCalls, Backend):
    """vgpus: the session's devices; devices: descriptions of the simulated physical
    GPUs, indexed by VGpu.gpu_index (keys of host_device.DEFAULT_DEVICE); launch_log:
    a JSON-lines file that gets one line per kernel launch, flushed at once."""

    def __init__(self, vgpus: list[VGpu], devices: list[dict] | None = None,
                 launch_log: str | None = None):
        super().__init__(vgpus)
        self._handles = itertools.count(0x1000)
        self._stream_ids = itertools.count(1)
        if devices is None:     # every GPU the vGPUs name gets the default description
            devices = [{}] * (max((v.gpu_index for v in vgpus), default=0) + 1)
        self._physical = [host_device.describe(d) for d in devices]
        self.memory = Memory([v.memory_bytes for v in vgpus])
        self.pools: dict[int, MemPool] = {}
        self.streams: dict[int, Stream] = {}
        self.devices = [self._new_device(i) for i in range(len(vgpus))]
        self.events: dict[int, Event] = {}
        self.arrays: dict[int, Array] = {}
        self.textures: dict[int, Resource] = {}
        self.surfaces: dict[int, Resource] = {}
        self.graphs: dict[int, Graph] = {}
        self.node_graph: dict[int, Graph] = {}         # every node handle -> its graph
        self.execs: dict[int, GraphExec] = {}
        self.captures: list[Capture] = []              # the ones in progress
        self.capture_mode = CAPTURE_GLOBAL             # cudaThreadExchangeStreamCaptureMode
        self.modules: dict[int, fatbin.Image] = {}     # by the client's content hash
        self.functions: dict[int, tuple[int, str]] = {}         # -> (module, kernel name)
        self.function_attrs: dict[int, dict[int, int]] = {}      # cudaFuncSetAttribute's
        self._function_handles: dict[tuple[int, str], int] = {}
        self.variables: dict[tuple[int, int, str], int] = {}   # (device, module, name)
        self.launches: list[dict] = []
        self.segments = Segments()                     # the client's page-locked memory
        self.shm: dict[int, list[int]] = {}            # client base -> [address, attaches]
        # one write() per line on an O_APPEND file: whole lines even when the workers of
        # several sessions share the log
        self._launch_log = (os.open(launch_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                            if launch_log else None)

    def _new_device(self, index: int) -> DeviceState:
        vgpu = self.vgpus[index]
        if not 0 <= vgpu.gpu_index < len(self._physical):
            raise ValueError(f"vGPU {index} is on GPU {vgpu.gpu_index}, but "
                             f"{len(self._physical)} device(s) are described")
        desc = self._physical[vgpu.gpu_index]
        if desc["memory"] is not None and vgpu.memory_bytes > desc["memory"]:
            raise ValueError(f"vGPU {index} has {vgpu.memory_bytes} bytes, its GPU "
                             f"{desc['memory']}")
        pool = self.memory.create_pool(self._new_handle(), index)
        self.pools[pool.handle] = pool
        legacy, per_thread = (Stream(h, index, 0, 0, next(self._stream_ids))
                              for h in (LEGACY_STREAMS[0], PER_THREAD_STREAM))
        return DeviceState(desc, pool, legacy, per_thread, current_pool=pool)

    def close(self) -> None:
        self.memory = Memory([0] * len(self.vgpus))
        for table in (self.pools, self.streams, self.events, self.arrays, self.textures,
                      self.surfaces, self.graphs, self.node_graph, self.execs, self.variables):
            table.clear()
        self.captures.clear()
        self.shm.clear()
        self.segments.remove_names()
        self.segments = Segments()
        if self._launch_log is not None:
            os.close(self._launch_log)
            self._launch_log = None

    # ---- lookups: every handle is checked, stale ones included ----
    def _check_device(self, device: int) -> None:
        if not 0 <= device < len(self.vgpus):
            raise CudaError(B.cudaErrorInvalidDevice, f"no device {device}")

    def _stream(self, handle: int) -> Stream:
        if handle in LEGACY_STREAMS:
            return self.devices[self.device].legacy
        if handle == PER_THREAD_STREAM:
            return self.devices[self.device].per_thread
        return self._lookup(self.streams, handle, "stream", B.cudaErrorInvalidResourceHandle)

    def _event(self, handle: int) -> Event:
        return self._lookup(self.events, handle, "event", B.cudaErrorInvalidResourceHandle)

    def _pool(self, handle: int) -> MemPool:
        return self._lookup(self.pools, handle, "memory pool", B.cudaErrorInvalidValue)

    @staticmethod
    def _lookup(table: dict, handle: int, what: str, status: int):
        try:
            return table[handle]
        except KeyError:
            raise CudaError(status, f"no {what} 0x{handle:x}") from None

    def _new_handle(self) -> int:
        return next(self._handles)

    # ---- stream work: run now, or record while the stream is captured ----
    def _submit(self, stream: Stream, type_: int, op) -> None:
        capture = stream.capture
        if capture is None:
            self._run(type_, op, stream)
            return
        if capture.invalidated:
            raise CudaError(cudaErrorStreamCaptureInvalidated, "the capture was invalidated")
        node = capture.graph.add(self._new_handle(), type_, op, stream.tail)
        self.node_graph[node.handle] = capture.graph
        stream.tail = [node.handle]

    def _run(self, type_: int, op, stream: Stream) -> None:
        if type_ == NODE_MEMSET:
            self._memset(op)
        elif type_ == NODE_MEMCPY and isinstance(op, Memcpy3D):
            for copy in self._memcpy_copies(op):     # the client's pointers, as of now
                self._copy(copy)
        elif type_ == NODE_MEMCPY:
            self._copy(op)
        elif type_ == NODE_KERNEL:
            self._record_launch(op, stream)
        elif type_ == NODE_HOST:
            self.run_host_function(op)   # the client runs it; the stream waits
        elif type_ == NODE_GRAPH:
            for node in op.order():
                self._run(node.type, node.op, stream)

    def _copy(self, op: Copy) -> None:
        src, spitch = op.data, op.width          # bytes from the host come packed
        if src is None:
            src, spitch = self.memory.view(op.src, _span(op.spitch, op.width,
                                                         op.height)), op.spitch
        _copy_rows(self.memory.view(op.dst, _span(op.dpitch, op.width, op.height)),
                   op.dpitch, src, spitch, op.width, op.height)

    def _checked_memset(self, m: Memset) -> Memset:
        if m.element_size not in (1, 2, 4):
            raise CudaError(B.cudaErrorInvalidValue, f"memset element size {m.element_size}")
        row = m.width * m.element_size
        if m.height > 1 and m.pitch < row:
            raise CudaError(B.cudaErrorInvalidValue, f"pitch {m.pitch} < row of {row} bytes")
        self.memory.view(m.dst, _span(m.pitch, row, m.height))
        return m

    def _memset(self, m: Memset) -> None:
        row = m.width * m.element_size
        view = self.memory.view(m.dst, _span(m.pitch, row, m.height))
        element = (m.value & ((1 << 8 * m.element_size) - 1)).to_bytes(m.element_size, "little")
        if m.height == 1 or m.pitch == row:
            view[:] = element * (m.width * m.height)
        else:
            pattern = element * m.width
            for y in range(m.height):
                view[y * m.pitch:y * m.pitch + row] = pattern

    def _checked_copy(self, c: Copy) -> Copy:
        if c.width > c.dpitch or (c.data is None and c.width > c.spitch):
            raise CudaError(cudaErrorInvalidPitchValue,
                            f"rows of {c.width} bytes, pitches {c.dpitch} and {c.spitch}")
        if c.data is not None and len(c.data) != c.width * c.height:
            raise CudaError(B.cudaErrorInvalidValue,
                            f"{len(c.data)} bytes sent for {c.height} rows of {c.width}")
        self.memory.view(c.dst, _span(c.dpitch, c.width, c.height))
        if c.data is None:
            self.memory.view(c.src, _span(c.spitch, c.width, c.height))
        return c

    def _copy_on(self, stream: int, c: Copy) -> tuple:
        s = self._stream(stream)
        c = self._checked_copy(c)
        if s.capture is not None and c.data is not None:
            # a captured copy keeps its bytes: the client's buffer is gone by launch time
            c = c._replace(data=bytes(c.data))
        self._submit(s, NODE_MEMCPY, c)
        return (0,)

    def _read(self, stream: int, src: int, spitch: int, width: int, height: int,
              length: int) -> tuple:
        """A copy to the host: its bytes travel in the reply, so it cannot be captured."""
        s = self._stream(stream)
        if length != width * height:
            raise CudaError(B.cudaErrorInvalidValue, f"{length} bytes asked for {height} rows "
                                                     f"of {width}")
        if width > spitch:
            raise CudaError(cudaErrorInvalidPitchValue, f"rows of {width} bytes, pitch {spitch}")
        self._not_capturing(s, "a copy to the host")
        rows = self.memory.view(src, _span(spitch, width, height))
        if height == 1 or spitch == width:
            return 0, bytes(rows)        # one copy, no zero fill: the reply frame
        out = bytearray(length)
        _copy_rows(memoryview(out), width, rows, spitch, width, height)
        return 0, out

    def orionHostFunc(self, stream: int, ident: int):
        self._submit(self._stream(stream), NODE_HOST, ident)
        return (0,)

    def _memset_on(self, stream: int, memsets: list[Memset]) -> tuple:
        s = self._stream(stream)
        for m in [self._checked_memset(m) for m in memsets]:
            self._submit(s, NODE_MEMSET, m)
        return (0,)

    def _record_launch(self, launch: Launch, stream: Stream) -> None:
        record = {"function": self.functions[launch.function][1],
                  "grid": list(launch.grid), "block": list(launch.block),
                  "shared_mem": launch.shared_mem, "stream": stream.handle,
                  "device": stream.device, "flags": launch.flags,
                  "args_hex": launch.args.hex()}
        self.launches.append(record)
        if self._launch_log is not None:
            os.write(self._launch_log, (json.dumps(record) + "\n").encode())

    # ---- what CUDA forbids during stream capture ----
    def _forbid_during_capture(self, what: str) -> None:
        """Potentially unsafe calls (allocation, synchronization) fail while a capture
        that is not relaxed is in progress, unless this thread chose relaxed; the
        capture is invalidated."""
        strict = [c for c in self.captures if c.mode != CAPTURE_RELAXED]
        if strict and self.capture_mode != CAPTURE_RELAXED:
            for capture in strict:
                capture.invalidated = True
            raise CudaError(cudaErrorStreamCaptureUnsupported, f"{what} during stream capture")

    @staticmethod
    def _not_capturing(stream: Stream, what: str) -> None:
        if stream.capture is not None:
            stream.capture.invalidated = True
            raise CudaError(cudaErrorStreamCaptureUnsupported,
                            f"{what} on stream 0x{stream.handle:x} during its capture")

    # ======================= device =======================
    def orionDeviceSnapshot(self, device, snapshot_len, size):
        self._check_device(device)
        if size != B.SNAPSHOT_SIZE or snapshot_len != size:
            raise CudaError(B.cudaErrorInvalidValue,
                            f"snapshot of {size} bytes asked, this server packs {B.SNAPSHOT_SIZE}")
        vgpu, desc = self.vgpus[device], self.devices[device].desc
        attrs = host_device.attributes(desc, host_device.pci_bus(device))
        return 0, B.pack_snapshot(desc["name"], vgpu.vgpu_uuid, vgpu.memory_bytes, attrs)

    def cudaDeviceSynchronize(self):
        self._forbid_during_capture("cudaDeviceSynchronize")
        self.memory.synchronized(self.device)
        return (0,)

    def cudaDeviceReset(self):
        """Frees everything the current device holds and restores its settings."""
        d = self.device
        self.memory.reset(d)
        for table in (self.pools, self.streams, self.events, self.arrays, self.textures,
                      self.surfaces, self.graphs, self.execs):
            for handle in [h for h, obj in table.items() if obj.device == d]:
                del table[handle]
        self.node_graph = {n: g for n, g in self.node_graph.items() if g.device != d}
        self.variables = {k: a for k, a in self.variables.items() if k[0] != d}
        self.captures = [c for c in self.captures if c.graph.device != d]
        for other in self.devices:
            other.peers.discard(d)
        self.devices[d] = self._new_device(d)
        return (0,)

    def cudaDeviceGetLimit(self, limit):
        limits = self.devices[self.device].limits
        if limit not in limits:
            raise CudaError(cudaErrorUnsupportedLimit, f"limit {limit}")
        return 0, limits[limit]

    def cudaDeviceSetLimit(self, limit, value):
        dev = self.devices[self.device]
        if limit not in dev.limits:
            raise CudaError(cudaErrorUnsupportedLimit, f"limit {limit}")
        if limit == 5:      # cudaLimitMaxL2FetchGranularity: a hint of 0..128 bytes
            value = min(value, 128)
        elif limit == 6:    # cudaLimitPersistingL2CacheSize: at most what the device has
            value = min(value, host_device.attributes(dev.desc, 0)[108])
        dev.limits[limit] = value
        return (0,)

    def cudaDeviceGetCacheConfig(self):
        return 0, self.devices[self.device].cache_config

    def cudaDeviceSetCacheConfig(self, cacheConfig):
        if not 0 <= cacheConfig <= 3:
            raise CudaError(B.cudaErrorInvalidValue, f"cache config {cacheConfig}")
        self.devices[self.device].cache_config = cacheConfig
        return (0,)

    def cudaDeviceGetStreamPriorityRange(self):
        return 0, STREAM_PRIORITY_LEAST, STREAM_PRIORITY_GREATEST

    def cudaDeviceCanAccessPeer(self, device, peerDevice):
        self._check_device(device)
        self._check_device(peerDevice)
        return 0, int(device != peerDevice)

    def cudaDeviceEnablePeerAccess(self, peerDevice, flags):
        self._check_device(peerDevice)
        if peerDevice == self.device:
            raise CudaError(B.cudaErrorInvalidDevice, "a device is not its own peer")
        if flags:
            raise CudaError(B.cudaErrorInvalidValue, f"flags {flags:#x}")
        peers = self.devices[self.device].peers
        if peerDevice in peers:
            raise CudaError(cudaErrorPeerAccessAlreadyEnabled, f"peer {peerDevice}")
        peers.add(peerDevice)
        return (0,)

    def cudaDeviceDisablePeerAccess(self, peerDevice):
        self._check_device(peerDevice)
        peers = self.devices[self.device].peers
        if peerDevice not in peers:
            raise CudaError(cudaErrorPeerAccessNotEnabled, f"peer {peerDevice}")
        peers.discard(peerDevice)
        return (0,)

    def cudaDeviceGetP2PAttribute(self, attr, srcDevice, dstDevice):
        self._check_device(srcDevice)
        self._check_device(dstDevice)
        if srcDevice == dstDevice:
            raise CudaError(B.cudaErrorInvalidDevice, "P2P attribute of a device with itself")
        if attr not in _P2P_ATTRS:
            raise CudaError(B.cudaErrorInvalidValue, f"P2P attribute {attr}")
        return 0, _P2P_ATTRS[attr]

    def cudaDeviceGetPCIBusId(self, pciBusId_len, length, device):
        self._check_device(device)
        if length <= 0:
            raise CudaError(B.cudaErrorInvalidValue, f"buffer of {length} bytes")
        text = host_device.pci_bus_id(host_device.pci_bus(device)).encode()[:length - 1]
        return 0, text.ljust(pciBusId_len, b"\0")

    def cudaDeviceGetByPCIBusId(self, pciBusId):
        address = host_device.parse_pci_bus_id(pciBusId)
        if address is None:
            raise CudaError(B.cudaErrorInvalidValue, f"bad PCI bus id {pciBusId!r}")
        for device in range(len(self.vgpus)):
            if address == (0, host_device.pci_bus(device), 0):
                return 0, device
        raise CudaError(B.cudaErrorInvalidDevice, f"no device at {pciBusId}")

    def cudaCtxResetPersistingL2Cache(self):
        return (0,)

    def cudaProfilerStart(self):
        return (0,)

    def cudaProfilerStop(self):
        return (0,)

    # ======================= memory =======================
    def _malloc(self, size: int) -> int:
        return self.memory.allocate(self.device, size, "malloc") if size else 0

    def cudaMalloc(self, size):
        self._forbid_during_capture("cudaMalloc")
        return 0, self._malloc(size)

    def cudaMallocPitch(self, width, height):
        self._forbid_during_capture("cudaMallocPitch")
        pitch = align_up(width, PITCH_ALIGNMENT)
        return 0, self._malloc(pitch * height), pitch

    def cudaMalloc3D(self, extent):
        self._forbid_during_capture("cudaMalloc3D")
        width, height, depth = _EXTENT.unpack(extent)
        pitch = align_up(width, PITCH_ALIGNMENT)
        ptr = self._malloc(pitch * height * depth)
        return 0, _PITCHED_PTR.pack(ptr, pitch, width, height)

    def _free(self, ptr: int) -> None:
        alloc = self.memory.at_base(ptr)
        if alloc.kind not in ("malloc", "async"):
            raise CudaError(B.cudaErrorInvalidValue, f"0x{ptr:x} is not freeable memory")
        self.memory.release(alloc)

    def cudaFree(self, devPtr):
        self._forbid_during_capture("cudaFree")
        if devPtr:
            self._free(devPtr)
        return (0,)

    def cudaMemGetInfo(self):
        return 0, self.memory.free_bytes(self.device), self.memory.capacity[self.device]

    def cudaMemset(self, devPtr, value, count):
        return self.cudaMemsetAsync(devPtr, value, count, LEGACY_STREAMS[0])

    def cudaMemsetAsync(self, devPtr, value, count, stream):
        return self._memset_on(stream, [Memset(devPtr, count, value, 1, count, 1)])

    def cudaMemset2D(self, devPtr, pitch, value, width, height):
        return self.cudaMemset2DAsync(devPtr, pitch, value, width, height, LEGACY_STREAMS[0])

    def cudaMemset2DAsync(self, devPtr, pitch, value, width, height, stream):
        if height > 1 and width > pitch:
            raise CudaError(B.cudaErrorInvalidValue, f"width {width} > pitch {pitch}")
        return self._memset_on(stream, [Memset(devPtr, pitch, value, 1, width, height)])

    def cudaMemset3D(self, pitchedDevPtr, value, extent):
        return self.cudaMemset3DAsync(pitchedDevPtr, value, extent, LEGACY_STREAMS[0])

    def cudaMemset3DAsync(self, pitchedDevPtr, value, extent, stream):
        ptr, pitch, _, ysize = _PITCHED_PTR.unpack(pitchedDevPtr)
        width, height, depth = _EXTENT.unpack(extent)
        if ((height > 1 or depth > 1) and width > pitch) or (depth > 1 and height > ysize):
            raise CudaError(B.cudaErrorInvalidValue,
                            f"extent {width}x{height}x{depth} exceeds pitch {pitch}, "
                            f"slice height {ysize}")
        slices = [Memset(ptr + z * pitch * ysize, pitch, value, 1, width, height)
                  for z in range(depth)]
        return self._memset_on(stream, slices)

    def orionMemcpyHtoD(self, dst, src, count, stream):
        return self._copy_on(stream, Copy(dst, count, 0, count, count, 1, src))

    def orionMemcpyHtoDAsync(self, dst, src, count, stream):
        return self.orionMemcpyHtoD(dst, src, count, stream)

    def orionMemcpyDtoH(self, dst_len, src, count, stream):
        return self._read(stream, src, count, count, 1, dst_len)

    def orionMemcpyDtoD(self, dst, src, count, stream):
        return self._copy_on(stream, Copy(dst, count, src, count, count, 1))

    def orionMemcpyDtoDAsync(self, dst, src, count, stream):
        return self.orionMemcpyDtoD(dst, src, count, stream)

    def orionMemcpy2DHtoD(self, dst, dpitch, src, width, height, stream):
        return self._copy_on(stream, Copy(dst, dpitch, 0, width, width, height, src))

    def orionMemcpy2DHtoDAsync(self, dst, dpitch, src, width, height, stream):
        return self.orionMemcpy2DHtoD(dst, dpitch, src, width, height, stream)

    def orionMemcpy2DDtoH(self, dst_len, src, spitch, width, height, stream):
        return self._read(stream, src, spitch, width, height, dst_len)

    def orionMemcpy2DDtoD(self, dst, dpitch, src, spitch, width, height, stream):
        return self._copy_on(stream, Copy(dst, dpitch, src, spitch, width, height))

    def orionMemcpy2DDtoDAsync(self, dst, dpitch, src, spitch, width, height, stream):
        return self.orionMemcpy2DDtoD(dst, dpitch, src, spitch, width, height, stream)

    def orionPointerType(self, ptr):
        """cudaMemoryType: device (2) for the session's memory, host (1) for the client's
        page-locked memory mapped for the device, unregistered (0) for anything else."""
        try:
            alloc = self.memory.containing(ptr)
        except CudaError:
            return 0, 0
        return 0, {"array": 0, "host": 1}.get(alloc.kind, 2)

    # ---- page-locked memory the client shares with the worker (same host) ----
    # Each segment is mapped into the device address space as well, so copies to and
    # from it are device copies: a captured one reads and writes the client's memory
    # whenever the graph runs, as on a GPU.
    def orionShmAttach(self, name, size, base):
        if base in self.shm:          # attached before, for another device of the session
            seg = self.segments.segment_of(base)
            if (seg.name, seg.size) != (name, size):
                raise CudaError(B.cudaErrorInvalidValue, f"0x{base:x} is {seg.name} already")
        else:
            seg = self.segments.attach(name, size, base)
            self.shm[base] = [self.memory.map(self.device, seg.mapping), 0]
        self.shm[base][1] += 1
        return (0,)

    def orionShmDetach(self, base):
        entry = self._lookup(self.shm, base, "segment", B.cudaErrorInvalidValue)
        entry[1] -= 1
        if not entry[1]:
            self.segments.detach(base)
            self.memory.release(self.memory.at_base(entry[0]))
            del self.shm[base]
        return (0,)

    def _shm_address(self, host: int, count: int) -> int:
        seg = self.segments.segment_of(host, count)
        return self.shm[seg.client_base][0] + host - seg.client_base

    def orionShmDevicePointer(self, host):
        return 0, self._shm_address(host, 1)

    def orionMemcpyShm(self, dst, src, count, kind, stream):
        if kind == _MEMCPY_HOST_TO_DEVICE:
            src = self._shm_address(src, count)
        elif kind == _MEMCPY_DEVICE_TO_HOST:
            dst = self._shm_address(dst, count)
        else:
            raise CudaError(B.cudaErrorInvalidValue, f"copy kind {kind}")
        return self._copy_on(stream, Copy(dst, count, src, count, count, 1))

    def orionMemcpyShmAsync(self, dst, src, count, kind, stream):
        return self.orionMemcpyShm(dst, src, count, kind, stream)

    def cudaMemcpyPeer(self, dst, dstDevice, src, srcDevice, count):
        return self.cudaMemcpyPeerAsync(dst, dstDevice, src, srcDevice, count,
                                        LEGACY_STREAMS[0])

    def cudaMemcpyPeerAsync(self, dst, dstDevice, src, srcDevice, count, stream):
        self._check_device(dstDevice)
        self._check_device(srcDevice)
        if count:
            for ptr, device in ((dst, dstDevice), (src, srcDevice)):
                if self.memory.containing(ptr).device != device:
                    raise CudaError(B.cudaErrorInvalidValue,
                                    f"0x{ptr:x} is not memory of device {device}")
        return self.orionMemcpyDtoD(dst, src, count, stream)

    # ---- stream-ordered allocation and pools ----
    def cudaMallocAsync(self, size, hStream):
        s = self._stream(hStream)
        pool = self.devices[s.device].current_pool
        return 0, self.memory.allocate_from_pool(pool, size) if size else 0

    def cudaMallocFromPoolAsync(self, size, memPool, stream):
        self._stream(stream)
        pool = self._pool(memPool)
        return 0, self.memory.allocate_from_pool(pool, size) if size else 0

    def cudaFreeAsync(self, devPtr, hStream):
        s = self._stream(hStream)
        if devPtr and s.capture is None:
            self._free(devPtr)
        elif devPtr:
            self.memory.at_base(devPtr)     # checked, left allocated (module docstring)
        return (0,)

    def cudaDeviceGetDefaultMemPool(self, device):
        self._check_device(device)
        return 0, self.devices[device].default_pool.handle

    def cudaDeviceGetMemPool(self, device):
        self._check_device(device)
        return 0, self.devices[device].current_pool.handle

    def cudaDeviceSetMemPool(self, device, memPool):
        self._check_device(device)
        pool = self._pool(memPool)
        if pool.device != device:
            raise CudaError(B.cudaErrorInvalidValue, f"pool of device {pool.device}")
        self.devices[device].current_pool = pool
        return (0,)

    def cudaMemPoolCreate(self, poolProps):
        if poolProps is None:
            raise CudaError(B.cudaErrorInvalidValue, "no pool properties")
        alloc_type, _, location_type, device, _, max_size = _POOL_PROPS.unpack_from(poolProps)
        # pinned allocations on a device: the only kind a GPU pool of this runtime holds
        if alloc_type != 1 or location_type != 1 or not 0 <= device < len(self.vgpus):
            raise CudaError(B.cudaErrorInvalidValue,
                            f"pool of type {alloc_type} at location {location_type}:{device}")
        pool = self.memory.create_pool(self._new_handle(), device, max_size)
        self.pools[pool.handle] = pool
        return 0, pool.handle

    def cudaMemPoolDestroy(self, memPool):
        pool = self._pool(memPool)
        dev = self.devices[pool.device]
        if pool is dev.default_pool:
            raise CudaError(B.cudaErrorInvalidValue, "a default pool cannot be destroyed")
        if dev.current_pool is pool:
            dev.current_pool = dev.default_pool
        self.memory.destroy_pool(pool)
        del self.pools[memPool]
        return (0,)

    def cudaMemPoolTrimTo(self, memPool, minBytesToKeep):
        self.memory.trim(self._pool(memPool), minBytesToKeep)
        return (0,)

    def _pool_attr_size(self, attr: int, size: int) -> None:
        if _POOL_ATTR_SIZE.get(attr) != size:
            raise CudaError(B.cudaErrorInvalidValue, f"pool attribute {attr} of {size} bytes")

    def cudaMemPoolGetAttribute(self, memPool, attr, value_len):
        pool = self._pool(memPool)
        self._pool_attr_size(attr, value_len)
        value = pool.reuse[attr] if attr in pool.reuse else {
            4: pool.threshold, 5: pool.reserved, 6: pool.reserved_high,
            7: pool.used, 8: pool.used_high}[attr]
        return 0, value.to_bytes(value_len, "little", signed=value_len == 4)

    def cudaMemPoolSetAttribute(self, memPool, attr, value):
        pool = self._pool(memPool)
        self._pool_attr_size(attr, len(value))
        number = int.from_bytes(value, "little", signed=len(value) == 4)
        if attr in pool.reuse:
            pool.reuse[attr] = number
        elif attr == 4:
            pool.threshold = number
        elif attr in (6, 8) and number == 0:     # the high watermarks reset to current
            if attr == 6:
                pool.reserved_high = pool.reserved
            else:
                pool.used_high = pool.used
        else:
            raise CudaError(B.cudaErrorInvalidValue, f"pool attribute {attr} is read-only "
                                                     "or takes only 0")
        return (0,)

    # ======================= streams =======================
    def _new_stream(self, flags: int, priority: int) -> tuple:
        if flags & ~1:                           # cudaStreamNonBlocking
            raise CudaError(B.cudaErrorInvalidValue, f"stream flags {flags:#x}")
        priority = min(max(priority, STREAM_PRIORITY_GREATEST), STREAM_PRIORITY_LEAST)
        s = Stream(self._new_handle(), self.device, flags, priority, next(self._stream_ids))
        self.streams[s.handle] = s
        return 0, s.handle

    def cudaStreamCreate(self):
        return self._new_stream(0, 0)

    def cudaStreamCreateWithFlags(self, flags):
        return self._new_stream(flags, 0)

    def cudaStreamCreateWithPriority(self, flags, priority):
        return self._new_stream(flags, priority)

    def cudaStreamGetPriority(self, hStream):
        return 0, self._stream(hStream).priority

    def cudaStreamGetFlags(self, hStream):
        return 0, self._stream(hStream).flags

    def cudaStreamGetId(self, hStream):
        return 0, self._stream(hStream).id

    def cudaStreamGetDevice(self, hStream):
        return 0, self._stream(hStream).device

    def cudaStreamDestroy(self, stream):
        if stream in LEGACY_STREAMS or stream == PER_THREAD_STREAM:
            raise CudaError(B.cudaErrorInvalidResourceHandle, "built-in streams live forever")
        s = self._stream(stream)
        if s.capture is not None:
            s.capture.invalidated = True
        del self.streams[stream]
        return (0,)

    def cudaStreamQuery(self, stream):
        self._not_capturing(self._stream(stream), "cudaStreamQuery")
        return (0,)

    def cudaStreamSynchronize(self, stream):
        s = self._stream(stream)
        self._not_capturing(s, "cudaStreamSynchronize")
        self.memory.synchronized(s.device)
        return (0,)

    def cudaStreamWaitEvent(self, stream, event, flags):
        s, ev = self._stream(stream), self._event(event)
        if flags & ~1:                           # cudaEventWaitExternal
            raise CudaError(B.cudaErrorInvalidValue, f"wait flags {flags:#x}")
        if ev.captured is None or ev.captured[0] not in self.captures:
            return (0,)                          # the recorded work is already done
        capture, tail = ev.captured
        if stream in LEGACY_STREAMS:
            raise CudaError(cudaErrorStreamCaptureUnsupported, "the legacy stream cannot capture")
        if s.capture is None:                    # fork: the stream joins the capture
            s.capture, s.tail = capture, list(tail)
        elif s.capture is capture:               # join
            s.tail = list(dict.fromkeys(s.tail + list(tail)))
        else:
            raise CudaError(cudaErrorStreamCaptureMerge, "the event belongs to another capture")
        return (0,)

    def orionStreamBeginCapture(self, stream, mode):
        s = self._stream(stream)
        if stream in LEGACY_STREAMS:
            raise CudaError(cudaErrorStreamCaptureUnsupported, "the legacy stream cannot capture")
        if mode not in (0, 1, 2):
            raise CudaError(B.cudaErrorInvalidValue, f"capture mode {mode}")
        if s.capture is not None:
            raise CudaError(cudaErrorIllegalState, "the stream is already capturing")
        s.capture = Capture(Graph(self._new_handle(), s.device), mode, s.handle)
        s.tail = []
        self.captures.append(s.capture)
        return (0,)

    def orionStreamEndCapture(self, stream):
        s = self._stream(stream)
        capture = s.capture
        if capture is None:
            raise CudaError(cudaErrorIllegalState, "the stream is not capturing")
        if capture.origin != s.handle:
            raise CudaError(cudaErrorStreamCaptureUnmatched, "capture began on another stream")
        for other in [*self.streams.values(), *(d.per_thread for d in self.devices)]:
            if other.capture is capture:
                other.capture, other.tail = None, []
        self.captures.remove(capture)
        if capture.invalidated:
            raise CudaError(cudaErrorStreamCaptureInvalidated, "the capture was invalidated")
        self.graphs[capture.graph.handle] = capture.graph
        return 0, capture.graph.handle

    def cudaStreamIsCapturing(self, stream):
        capture = self._stream(stream).capture
        return 0, 0 if capture is None else 2 if capture.invalidated else 1

    def cudaThreadExchangeStreamCaptureMode(self, mode):
        if mode not in (0, 1, 2):
            raise CudaError(B.cudaErrorInvalidValue, f"capture mode {mode}")
        previous, self.capture_mode = self.capture_mode, mode
        return 0, previous

    # ======================= events =======================
    def _new_event(self, flags: int) -> tuple:
        if flags & ~_EVENT_FLAGS or (flags & _EVENT_INTERPROCESS
                                     and not flags & _EVENT_DISABLE_TIMING):
            raise CudaError(B.cudaErrorInvalidValue, f"event flags {flags:#x}")
        ev = Event(self._new_handle(), self.device, flags)
        self.events[ev.handle] = ev
        return 0, ev.handle

    def cudaEventCreate(self):
        return self._new_event(0)

    def cudaEventCreateWithFlags(self, flags):
        return self._new_event(flags)

    def cudaEventDestroy(self, event):
        self._event(event)
        del self.events[event]
        return (0,)

    def cudaEventRecord(self, event, stream):
        return self.cudaEventRecordWithFlags(event, stream, 0)

    def cudaEventRecordWithFlags(self, event, stream, flags):
        ev, s = self._event(event), self._stream(stream)
        if flags & ~1:                           # cudaEventRecordExternal
            raise CudaError(B.cudaErrorInvalidValue, f"record flags {flags:#x}")
        if s.capture is not None:
            if s.capture.invalidated:
                raise CudaError(cudaErrorStreamCaptureInvalidated, "the capture was invalidated")
            ev.captured = (s.capture, tuple(s.tail))
        else:
            ev.recorded_at, ev.captured = time.perf_counter(), None
        return (0,)

    def cudaEventQuery(self, event):
        self._event(event)                       # recorded or not, nothing is pending
        return (0,)

    def cudaEventSynchronize(self, event):
        self.memory.synchronized(self._event(event).device)
        return (0,)

    def cudaEventElapsedTime(self, start, end):
        first, last = self._event(start), self._event(end)
        for ev in (first, last):
            if ev.flags & _EVENT_DISABLE_TIMING or ev.recorded_at is None:
                raise CudaError(B.cudaErrorInvalidResourceHandle,
                                f"event 0x{ev.handle:x} has no timestamp")
        return 0, (last.recorded_at - first.recorded_at) * 1000.0


def _span(pitch: int, width: int, height: int) -> int:
    """Bytes from the first to the last byte of `height` rows of `width`, pitch apart."""
    return pitch * (height - 1) + width if width and height else 0


def _copy_rows(dst: memoryview, dpitch: int, src, spitch: int, width: int,
               height: int) -> None:
    if height == 1 or dpitch == spitch == width:
        dst[:width * height] = src[:width * height]
    else:
        for y in range(height):
            dst[y * dpitch:y * dpitch + width] = src[y * spitch:y * spitch + width]
