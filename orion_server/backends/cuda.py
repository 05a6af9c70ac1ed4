"""The GPU backend: replays a session's calls on real GPUs through cuda-python.

Most runtime calls are replayed 1:1 with `cuda.bindings.runtime` (it shares the
primary context with the driver API); modules and kernels go through
`cuda.bindings.driver`; launches, copies and the stream and event calls of synchronous
round trips go to the driver through cffi (cuda_driver.py: cheaper per call).
Everything the client names (device pointers, streams, events, graphs, pools, kernels)
is checked against what this session created before it reaches
the driver, so a bogus or foreign handle gets an error, never another session's memory
and never a crashed worker. The vGPU's memory size is enforced in one place
(`_reserve`), before the real allocation.
"""
from __future__ import annotations

import bisect

from cuda.bindings import driver as drv
from cuda.bindings import runtime as rt

from .. import backend as B
from ..generated.cudart_table import CALLS
from ..shm import Segments
from .cuda_common import MAX_ATTR, SPECIAL_STREAMS, status, valid_attr
from .cuda_graphs import GraphCalls
from .cuda_kernels import KernelCalls
from .cuda_driver import Driver
from .cuda_reply_buffers import ReplyBuffers
from .cuda_memory import MemoryCalls
from .cuda_nvml import NvmlCalls
from .cuda_objects import ObjectCalls


class CudaBackend(MemoryCalls, KernelCalls, GraphCalls, ObjectCalls, NvmlCalls, B.Backend):
    def __init__(self, vgpus: list[B.VGpu]):
        super().__init__(vgpus)
        (err,) = drv.cuInit(0)
        if err:
            raise RuntimeError(f"cuInit failed: {err}")
        self.used = [0] * len(vgpus)                 # bytes allocated per vGPU
        self.allocations: dict[int, tuple[int, int]] = {}   # ptr -> (size, vGPU)
        self.starts: list[int] = []                  # sorted allocation starts
        self.globals: dict[int, int] = {}            # module variables: ptr -> size
        self.streams: set[int] = set()
        self.capturing: set[int] = set()             # streams being captured
        self.events: set[int] = set()
        self.handles: dict[str, set[int]] = {k: set() for k in (
            "graph", "exec", "pool", "node", "texture", "surface")}
        self.arrays: dict[int, tuple[int, int]] = {}  # cudaArray -> (bytes, vGPU)
        self.images: dict[int, bytes] = {}           # module hash -> fat binary
        self.modules: dict[tuple[int, int], object] = {}   # (hash, gpu) -> CUmodule
        self.functions: dict[int, object] = {}       # handle -> CUfunction
        self.segments = Segments()                   # the client's page-locked memory
        self._stub = None                            # C entry of host functions
        self._launch_host_func = None                # the driver's, loaded on first use
        self.driver = Driver()                       # the hot calls, through cffi
        self.reply_buffers = ReplyBuffers()          # downloads over the socket
        self._activate()

    # ---- device selection ----
    def _activate(self) -> None:
        (err,) = rt.cudaSetDevice(self.vgpus[self.device].gpu_index)
        if not err:
            # cudaFree(0) makes the primary context current now, so driver-API calls
            # (module loads, host registration) never meet a missing context
            (err,) = rt.cudaFree(0)
        if err:
            raise B.CudaError(int(err), "cannot make the GPU current")

    def set_device(self, index: int) -> None:
        super().set_device(index)
        self._activate()
    # ---- memory accounting and pointer checks ----
    def _reserve(self, size: int) -> None:
        limit = self.vgpus[self.device].memory_bytes
        if self.used[self.device] + size > limit:
            raise B.CudaError(B.cudaErrorMemoryAllocation,
                              f"vGPU {self.device}: {size} bytes past its {limit >> 20} MiB")

    def _record(self, ptr: int, size: int) -> None:
        self.allocations[ptr] = (size, self.device)
        bisect.insort(self.starts, ptr)
        self.used[self.device] += size

    def _forget(self, ptr: int) -> None:
        size, vgpu = self.allocations.pop(ptr)
        self.starts.remove(ptr)
        self.used[vgpu] -= size

    def _check_range(self, ptr: int, size: int) -> None:
        """ptr..ptr+size must lie inside one allocation or module variable of ours."""
        if self.fast_device_range(ptr, size) is None:
            raise B.CudaError(B.cudaErrorInvalidValue, f"0x{ptr:x}+{size} is not this session's")

    def _check_stream(self, stream: int) -> None:
        if not self.fast_stream_known(stream):
            raise B.CudaError(B.cudaErrorInvalidResourceHandle, f"unknown stream 0x{stream:x}")

    def _check_event(self, event: int) -> None:
        if not self.fast_event_known(event):
            raise B.CudaError(B.cudaErrorInvalidResourceHandle, f"unknown event 0x{event:x}")

    def _check(self, kind: str, handle: int) -> None:
        if handle not in self.handles[kind]:
            raise B.CudaError(B.cudaErrorInvalidResourceHandle, f"unknown {kind} 0x{handle:x}")
    # ---- snapshot ----
    def orionDeviceSnapshot(self, device: int, length: int, size: int):
        if length != B.SNAPSHOT_SIZE or not 0 <= device < len(self.vgpus):
            return (B.cudaErrorInvalidValue,)
        v = self.vgpus[device]
        err, dev = drv.cuDeviceGet(v.gpu_index)
        err, name = drv.cuDeviceGetName(256, dev)
        attrs = {}
        for attr in range(1, MAX_ATTR):
            err, value = rt.cudaDeviceGetAttribute(attr, v.gpu_index) if valid_attr(attr) \
                else (1, 0)
            if not err:
                attrs[attr] = value
        name = name.split(b"\0")[0].decode()
        return (0, B.pack_snapshot(name, v.vgpu_uuid, v.memory_bytes, attrs))

    def drain(self, gpu_index: int) -> None:
        # While a stream is captured (nothing of it runs), the capturing thread may not
        # synchronise the device: the capture would end invalidated. The turn then ends
        # without the wait; the work of other streams is charged to the next turn.
        if self.capturing:
            return
        current = self.vgpus[self.device].gpu_index
        if gpu_index != current:
            rt.cudaSetDevice(gpu_index)
        rt.cudaDeviceSynchronize()   # sticky errors stay for the client's next call
        if gpu_index != current:
            rt.cudaSetDevice(current)

    # ---- the fast path's (fast_path.py: the C loop calls the driver itself) ----
    def fast_functions(self) -> dict[str, int]:
        return self.driver.addresses

    def fast_stream_known(self, stream: int) -> bool:
        return stream in SPECIAL_STREAMS or stream in self.streams

    def fast_event_known(self, event: int) -> bool:
        return event in self.events

    def fast_device_range(self, ptr: int, count: int) -> tuple[int, int] | None:
        i = bisect.bisect_right(self.starts, ptr) - 1
        if i >= 0:
            base = self.starts[i]
            size = self.allocations[base][0]
            if ptr + count <= base + size:
                return base, size
        for base, size in self.globals.items():
            if base <= ptr and ptr + count <= base + size:
                return base, size
        return None

    def fast_segment(self, ptr: int, count: int) -> tuple[int, int, int] | None:
        try:
            seg = self.segments.segment_of(ptr, count)
        except B.CudaError:
            return None
        return seg.client_base, seg.size, seg.local_base

    # ---- the calls of every synchronous round trip: straight to the driver ----
    def cudaStreamSynchronize(self, stream: int):
        self._check_stream(stream)
        return (self.driver.stream_synchronize(stream),)

    def cudaStreamQuery(self, stream: int):
        self._check_stream(stream)
        return (self.driver.stream_query(stream),)

    def cudaEventRecord(self, event: int, stream: int):
        self._check_event(event)
        self._check_stream(stream)
        return (self.driver.event_record(event, stream),)

    def cudaEventRecordWithFlags(self, event: int, stream: int, flags: int):
        self._check_event(event)
        self._check_stream(stream)
        return (self.driver.event_record_with_flags(event, stream, flags),)

    def cudaEventQuery(self, event: int):
        self._check_event(event)
        return (self.driver.event_query(event),)

    def cudaEventSynchronize(self, event: int):
        self._check_event(event)
        return (self.driver.event_synchronize(event),)

    # ---- teardown ----
    def cudaDeviceReset(self):
        return (0,)   # the session's resources are freed when it ends (close)

    def close(self) -> None:
        rt.cudaDeviceSynchronize()
        self.segments.remove_names()
        for seg in self.segments.all():
            drv.cuMemHostUnregister(seg.local_base)
        for ptr in list(self.allocations):
            rt.cudaFree(ptr)
        for stream in self.streams:
            rt.cudaStreamDestroy(stream)
        for event in self.events:
            rt.cudaEventDestroy(event)
        for mod in self.modules.values():
            drv.cuModuleUnload(mod)
        self.allocations.clear()
        rt.cudaDeviceSynchronize()


# Calls whose arguments are all plain values or handles this session created: replayed
# by name, with handle outputs turned into the integers the client holds.
_CHECKED = {"stream": "_check_stream", "hStream": "_check_stream", "event": "_check_event"}


def _forwarder(name: str):
    call = next(c for c in CALLS.values() if c.name == name)
    real = getattr(rt, name)
    inputs = [p for p in call.params if p.kind != "out"]

    def handler(self, *args):
        for p, value in zip(inputs, args):
            check = _CHECKED.get(p.name)
            if check:
                getattr(self, check)(value)
        err, *outs = real(*args)
        if err:
            return (status(err),)
        return (0, *(int(o) if not isinstance(o, (float, bytes, bytearray)) else o
                     for o in outs))
    handler.__name__ = name
    return handler


for _name in ("cudaDeviceSynchronize", "cudaDeviceSetLimit", "cudaDeviceGetLimit",
              "cudaDeviceGetCacheConfig", "cudaDeviceSetCacheConfig",
              "cudaDeviceGetStreamPriorityRange", "cudaCtxResetPersistingL2Cache",
              "cudaStreamGetPriority", "cudaStreamGetFlags", "cudaStreamGetId",
              "cudaStreamWaitEvent", "cudaStreamIsCapturing",
              "cudaProfilerStart", "cudaProfilerStop"):
    setattr(CudaBackend, _name, _forwarder(_name))
