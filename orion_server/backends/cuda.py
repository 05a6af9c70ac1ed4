"""The GPU backend: replays a session's calls on real GPUs through cuda-python.

Most runtime calls are replayed 1:1 with `cuda.bindings.runtime` (it shares the
primary context with the driver API); modules, kernels and launches go through
`cuda.bindings.driver`. Everything the client names (device pointers, streams, events,
graphs, pools, kernels) is checked against what this session created before it reaches
the driver, so a bogus or foreign handle gets an error, never another session's memory
and never a crashed worker. The vGPU's memory size is enforced in one place
(`_reserve`), before the real allocation.
"""
from __future__ import annotations

import bisect
import ctypes
import struct

import numpy as np
from cuda.bindings import driver as drv
from cuda.bindings import runtime as rt

from .. import backend as B
from ..shm import Segments
from ..generated.cudart_table import CALLS

_SPECIAL_STREAMS = (0, 1, 2)       # legacy default, cudaStreamLegacy, cudaStreamPerThread
_DIM3 = struct.Struct("<III")
_FUNC_ATTRS = struct.Struct("<QQQ13i16i")
_MAX_ATTR = 148
_HOST_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_A = drv.CUfunction_attribute
# cudaFuncAttributes field order, each from the driver's attribute of the same meaning
_FUNC_ATTR_ORDER = (
    _A.CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, _A.CU_FUNC_ATTRIBUTE_CONST_SIZE_BYTES,
    _A.CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES, _A.CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK,
    _A.CU_FUNC_ATTRIBUTE_NUM_REGS, _A.CU_FUNC_ATTRIBUTE_PTX_VERSION,
    _A.CU_FUNC_ATTRIBUTE_BINARY_VERSION, _A.CU_FUNC_ATTRIBUTE_CACHE_MODE_CA,
    _A.CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
    _A.CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT,
    _A.CU_FUNC_ATTRIBUTE_CLUSTER_SIZE_MUST_BE_SET, _A.CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_WIDTH,
    _A.CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_HEIGHT, _A.CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_DEPTH,
    _A.CU_FUNC_ATTRIBUTE_CLUSTER_SCHEDULING_POLICY_PREFERENCE,
    _A.CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED)
_PITCHED = struct.Struct("<QQQQ")   # cudaPitchedPtr: ptr, pitch, xsize, ysize
_EXTENT = struct.Struct("<QQQ")     # cudaExtent: width, height, depth
_CHANNEL = struct.Struct("<iiiii")  # cudaChannelFormatDesc: x, y, z, w, kind


def _struct_sizes() -> dict[str, int]:
    """Sizes of the structs that travel, from the generated table's formats."""
    sizes = {}
    for call in CALLS.values():
        for p in call.params:
            if p.fmt.endswith("s"):
                sizes.setdefault((call.name, p.name), int(p.fmt[:-1]))
    return {"cudaResourceDesc": sizes[("cudaCreateSurfaceObject", "pResDesc")],
            "cudaTextureDesc": sizes[("cudaCreateTextureObject", "pTexDesc")],
            "cudaResourceViewDesc": sizes[("cudaCreateTextureObject", "pResViewDesc")]}


_SIZES = _struct_sizes()


def _from_bytes(cls, raw: bytes):
    """A cuda-python struct holding exactly these C bytes (it wraps the C struct)."""
    obj = cls()
    ctypes.memmove(obj.getPtr(), raw, len(raw))
    return obj


def _to_bytes(obj, size: int) -> bytes:
    return ctypes.string_at(obj.getPtr(), size)


def _status(err) -> int:
    return int(err)


class CudaBackend(B.Backend):
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
        self.events: set[int] = set()
        self.handles: dict[str, set[int]] = {k: set() for k in (
            "graph", "exec", "pool", "node", "texture", "surface")}
        self.arrays: dict[int, tuple[int, int]] = {}  # cudaArray -> (bytes, vGPU)
        self.images: dict[int, bytes] = {}           # module hash -> fat binary
        self.modules: dict[tuple[int, int], object] = {}   # (hash, gpu) -> CUmodule
        self.functions: dict[int, object] = {}       # handle -> CUfunction
        self.segments = Segments()                   # the client's page-locked memory
        self._stub = None                            # C entry of host functions
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
        i = bisect.bisect_right(self.starts, ptr) - 1
        if i >= 0:
            base = self.starts[i]
            if ptr + size <= base + self.allocations[base][0]:
                return
        for base, length in self.globals.items():
            if base <= ptr and ptr + size <= base + length:
                return
        raise B.CudaError(B.cudaErrorInvalidValue, f"0x{ptr:x}+{size} is not this session's")

    def _check_stream(self, stream: int) -> None:
        if stream not in _SPECIAL_STREAMS and stream not in self.streams:
            raise B.CudaError(B.cudaErrorInvalidResourceHandle, f"unknown stream 0x{stream:x}")

    def _check_event(self, event: int) -> None:
        if event not in self.events:
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
        err, uuid = drv.cuDeviceGetUuid(dev)
        attrs = {}
        for attr in range(1, _MAX_ATTR):
            err, value = rt.cudaDeviceGetAttribute(attr, v.gpu_index) if _valid_attr(attr) \
                else (1, 0)
            if not err:
                attrs[attr] = value
        name = name.split(b"\0")[0].decode()
        return (0, B.pack_snapshot(name, bytes(uuid.bytes), v.memory_bytes, attrs))

    # ---- memory ----
    def cudaMalloc(self, size: int):
        self._reserve(size)
        err, ptr = rt.cudaMalloc(size)
        if err:
            return (_status(err),)
        self._record(int(ptr), size)
        return (0, int(ptr))

    def cudaMallocPitch(self, width: int, height: int):
        err, ptr, pitch = rt.cudaMallocPitch(width, height)
        if err:
            return (_status(err),)
        try:
            self._reserve(pitch * height)
        except B.CudaError:
            rt.cudaFree(ptr)
            raise
        self._record(int(ptr), pitch * height)
        return (0, int(ptr), pitch)

    def cudaFree(self, ptr: int):
        if ptr == 0:
            return (0,)
        if ptr not in self.allocations:
            return (B.cudaErrorInvalidValue,)
        (err,) = rt.cudaFree(ptr)
        if not err:
            self._forget(ptr)
        return (_status(err),)

    def cudaMallocAsync(self, size: int, stream: int):
        self._check_stream(stream)
        self._reserve(size)
        err, ptr = rt.cudaMallocAsync(size, stream)
        if err:
            return (_status(err),)
        self._record(int(ptr), size)
        return (0, int(ptr))

    def cudaFreeAsync(self, ptr: int, stream: int):
        self._check_stream(stream)
        if ptr not in self.allocations:
            return (B.cudaErrorInvalidValue,)
        (err,) = rt.cudaFreeAsync(ptr, stream)
        if not err:
            self._forget(ptr)
        return (_status(err),)

    def cudaMemGetInfo(self):
        err, free, total = rt.cudaMemGetInfo()
        if err:
            return (_status(err),)
        limit = self.vgpus[self.device].memory_bytes
        return (0, min(free, limit - self.used[self.device]), limit)

    def cudaMemset(self, ptr: int, value: int, count: int):
        self._check_range(ptr, count)
        return (_status(rt.cudaMemset(ptr, value, count)[0]),)

    def cudaMemsetAsync(self, ptr: int, value: int, count: int, stream: int):
        self._check_range(ptr, count)
        self._check_stream(stream)
        return (_status(rt.cudaMemsetAsync(ptr, value, count, stream)[0]),)

    def cudaMemset2D(self, ptr: int, pitch: int, value: int, width: int, height: int):
        self._check_range(ptr, pitch * max(height - 1, 0) + width)
        return (_status(rt.cudaMemset2D(ptr, pitch, value, width, height)[0]),)

    def cudaMemset2DAsync(self, ptr, pitch, value, width, height, stream):
        self._check_range(ptr, pitch * max(height - 1, 0) + width)
        self._check_stream(stream)
        return (_status(rt.cudaMemset2DAsync(ptr, pitch, value, width, height, stream)[0]),)

    def orionPointerType(self, ptr: int):
        try:
            self._check_range(ptr, 1)
            return (0, rt.cudaMemoryType.cudaMemoryTypeDevice.value)
        except B.CudaError:
            return (0, 0)

    def _copy(self, dst: int, src: int, count: int, kind, stream: int, sync: bool):
        self._check_stream(stream)
        if sync:
            (err,) = rt.cudaMemcpyAsync(dst, src, count, kind, stream)
            if not err:
                (err,) = rt.cudaStreamSynchronize(stream)
        else:
            (err,) = rt.cudaMemcpyAsync(dst, src, count, kind, stream)
        return _status(err)

    def orionMemcpyHtoD(self, dst: int, src, count: int, stream: int, sync: bool = True):
        self._check_range(dst, count)
        host = np.frombuffer(src, dtype=np.uint8)
        # The frame is freed when the handler returns; a pageable-source copy has
        # consumed it by then (CUDA stages pageable memory before returning).
        return (self._copy(dst, host.ctypes.data, count,
                           rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream, sync),)

    def orionMemcpyHtoDAsync(self, dst: int, src, count: int, stream: int):
        return self.orionMemcpyHtoD(dst, src, count, stream, sync=False)

    def orionMemcpyDtoH(self, count: int, src: int, _count: int, stream: int):
        self._check_range(src, count)
        out = bytearray(count)
        host = np.frombuffer(out, dtype=np.uint8)
        err = self._copy(host.ctypes.data, src, count, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost,
                         stream, True)
        return (err,) if err else (0, out)

    def orionMemcpyDtoD(self, dst: int, src: int, count: int, stream: int, sync: bool = True):
        self._check_range(dst, count)
        self._check_range(src, count)
        return (self._copy(dst, src, count, rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, stream,
                           sync),)

    def orionMemcpyDtoDAsync(self, dst: int, src: int, count: int, stream: int):
        return self.orionMemcpyDtoD(dst, src, count, stream, sync=False)

    def cudaMemcpyPeer(self, dst: int, dst_device: int, src: int, src_device: int, count: int):
        self._check_range(dst, count)
        self._check_range(src, count)
        return (self._copy(dst, src, count, rt.cudaMemcpyKind.cudaMemcpyDefault, 0, True),)

    def cudaMemcpyPeerAsync(self, dst, dst_device, src, src_device, count, stream):
        self._check_range(dst, count)
        self._check_range(src, count)
        return (self._copy(dst, src, count, rt.cudaMemcpyKind.cudaMemcpyDefault, stream, False),)

    def _memcpy2d(self, dst, dpitch, src, spitch, width, height, kind, stream, sync):
        self._check_stream(stream)
        (err,) = rt.cudaMemcpy2DAsync(dst, dpitch, src, spitch, width, height, kind, stream)
        if not err and sync:
            (err,) = rt.cudaStreamSynchronize(stream)
        return _status(err)

    def _check_2d(self, ptr: int, pitch: int, width: int, height: int) -> None:
        if width > pitch:
            raise B.CudaError(12, "width larger than pitch")   # cudaErrorInvalidPitchValue
        self._check_range(ptr, pitch * (height - 1) + width)

    def orionMemcpy2DHtoD(self, dst, dpitch, src, width, height, stream, sync=True):
        self._check_2d(dst, dpitch, width, height)
        host = np.frombuffer(src, dtype=np.uint8).ctypes.data
        return (self._memcpy2d(dst, dpitch, host, width, width, height,
                               rt.cudaMemcpyKind.cudaMemcpyHostToDevice, stream, sync),)

    def orionMemcpy2DHtoDAsync(self, dst, dpitch, src, width, height, stream):
        return self.orionMemcpy2DHtoD(dst, dpitch, src, width, height, stream, sync=False)

    def orionMemcpy2DDtoH(self, length, src, spitch, width, height, stream):
        self._check_2d(src, spitch, width, height)
        out = bytearray(length)
        host = np.frombuffer(out, dtype=np.uint8).ctypes.data
        err = self._memcpy2d(host, width, src, spitch, width, height,
                             rt.cudaMemcpyKind.cudaMemcpyDeviceToHost, stream, True)
        return (err,) if err else (0, out)

    def orionMemcpy2DDtoD(self, dst, dpitch, src, spitch, width, height, stream, sync=True):
        self._check_2d(dst, dpitch, width, height)
        self._check_2d(src, spitch, width, height)
        return (self._memcpy2d(dst, dpitch, src, spitch, width, height,
                               rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice, stream, sync),)

    def orionMemcpy2DDtoDAsync(self, dst, dpitch, src, spitch, width, height, stream):
        return self.orionMemcpy2DDtoD(dst, dpitch, src, spitch, width, height, stream, False)

    # ---- arrays ----
    def _check_array(self, array: int) -> None:
        if array not in self.arrays:
            raise B.CudaError(B.cudaErrorInvalidResourceHandle, f"unknown array 0x{array:x}")

    def _new_array(self, result, size: int):
        err, array = result
        if err:
            return (_status(err),)
        self.arrays[int(array)] = (size, self.device)
        self.used[self.device] += size
        return (0, int(array))

    def cudaMallocArray(self, desc: bytes, width: int, height: int, flags: int):
        x, y, z, w, _ = _CHANNEL.unpack(desc)
        size = (x + y + z + w) // 8 * width * max(height, 1)
        self._reserve(size)
        return self._new_array(rt.cudaMallocArray(_from_bytes(rt.cudaChannelFormatDesc, desc),
                                                  width, height, flags), size)

    def cudaMalloc3DArray(self, desc: bytes, extent: bytes, flags: int):
        x, y, z, w, _ = _CHANNEL.unpack(desc)
        width, height, depth = _EXTENT.unpack(extent)
        size = (x + y + z + w) // 8 * width * max(height, 1) * max(depth, 1)
        self._reserve(size)
        return self._new_array(rt.cudaMalloc3DArray(
            _from_bytes(rt.cudaChannelFormatDesc, desc), _from_bytes(rt.cudaExtent, extent),
            flags), size)

    def cudaFreeArray(self, array: int):
        if array == 0:
            return (0,)
        self._check_array(array)
        (err,) = rt.cudaFreeArray(array)
        if not err:
            size, vgpu = self.arrays.pop(array)
            self.used[vgpu] -= size
        return (_status(err),)

    def cudaArrayGetInfo(self, array: int):
        self._check_array(array)
        err, desc, extent, flags = rt.cudaArrayGetInfo(array)
        if err:
            return (_status(err),)
        return (0, _to_bytes(desc, _CHANNEL.size), _to_bytes(extent, _EXTENT.size), flags)

    def cudaGetChannelDesc(self, array: int):
        self._check_array(array)
        err, desc = rt.cudaGetChannelDesc(array)
        return (_status(err),) if err else (0, _to_bytes(desc, _CHANNEL.size))

    def _array_copy(self, copy, stream: int, sync: bool) -> int:
        self._check_stream(stream)
        (err,) = copy()
        if not err and sync:
            (err,) = rt.cudaStreamSynchronize(stream)
        return _status(err)

    def orionMemcpy2DToArray(self, array, w, h, src, width, height, stream):
        self._check_array(array)
        host = np.frombuffer(src, dtype=np.uint8).ctypes.data
        return (self._array_copy(lambda: rt.cudaMemcpy2DToArrayAsync(
            array, w, h, host, width, width, height, rt.cudaMemcpyKind.cudaMemcpyHostToDevice,
            stream), stream, True),)

    def orionMemcpy2DFromArray(self, length, array, w, h, width, height, stream):
        self._check_array(array)
        out = bytearray(length)
        host = np.frombuffer(out, dtype=np.uint8).ctypes.data
        err = self._array_copy(lambda: rt.cudaMemcpy2DFromArrayAsync(
            host, width, array, w, h, width, height, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost,
            stream), stream, True)
        return (err,) if err else (0, out)

    def orionMemcpy2DArrayDtoD(self, array, w, h, ptr, pitch, width, height, to_array, stream):
        self._check_array(array)
        self._check_2d(ptr, pitch, width, height)
        kind = rt.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        if to_array:
            copy = lambda: rt.cudaMemcpy2DToArrayAsync(array, w, h, ptr, pitch, width, height,
                                                       kind, stream)
        else:
            copy = lambda: rt.cudaMemcpy2DFromArrayAsync(ptr, pitch, array, w, h, width, height,
                                                         kind, stream)
        return (self._array_copy(copy, stream, True),)

    def cudaMalloc3D(self, extent: bytes):
        width, height, depth = _EXTENT.unpack(extent)
        err, pitched = rt.cudaMalloc3D(_from_bytes(rt.cudaExtent, extent))
        if err:
            return (_status(err),)
        ptr, pitch = int(pitched.ptr), pitched.pitch
        size = pitch * max(height, 1) * max(depth, 1)
        try:
            self._reserve(size)
        except B.CudaError:
            rt.cudaFree(ptr)
            raise
        self._record(ptr, size)
        return (0, _PITCHED.pack(ptr, pitch, pitched.xsize, pitched.ysize))

    def cudaMemset3D(self, pitched: bytes, value: int, extent: bytes):
        ptr, pitch, _, ysize = _PITCHED.unpack(pitched)
        width, height, depth = _EXTENT.unpack(extent)
        if width and height and depth:
            self._check_range(ptr, pitch * (ysize * (depth - 1) + height - 1) + width)
        return (_status(rt.cudaMemset3D(_from_bytes(rt.cudaPitchedPtr, pitched), value,
                                        _from_bytes(rt.cudaExtent, extent))[0]),)

    def cudaDeviceGetPCIBusId(self, length: int, size: int, device: int):
        if not 0 <= device < len(self.vgpus) or length <= 0:
            return (B.cudaErrorInvalidValue if length <= 0 else B.cudaErrorInvalidDevice,)
        err, bus = rt.cudaDeviceGetPCIBusId(length, self.vgpus[device].gpu_index)
        if err:
            return (_status(err),)
        return (0, bytes(bus)[:length].ljust(length, b"\0"))

    def cudaDeviceGetByPCIBusId(self, bus_id: str):
        err, gpu = rt.cudaDeviceGetByPCIBusId(bus_id.encode())
        if err:
            return (_status(err),)
        # the first vGPU of this session on that physical GPU
        for v in self.vgpus:
            if v.gpu_index == gpu:
                return (0, v.index)
        return (B.cudaErrorInvalidDevice,)

    # ---- peers: vGPU numbers in, physical GPUs underneath ----
    def _gpu(self, device: int) -> int:
        if not 0 <= device < len(self.vgpus):
            raise B.CudaError(B.cudaErrorInvalidDevice, f"no vGPU {device}")
        return self.vgpus[device].gpu_index

    def cudaDeviceCanAccessPeer(self, device: int, peer: int):
        gpu, peer_gpu = self._gpu(device), self._gpu(peer)
        if device == peer:
            return (0, 0)
        if gpu == peer_gpu:    # two vGPUs of one GPU share its memory and context
            return (0, 1)
        err, can = rt.cudaDeviceCanAccessPeer(gpu, peer_gpu)
        return (_status(err),) if err else (0, can)

    def cudaDeviceEnablePeerAccess(self, peer: int, flags: int):
        if self._gpu(peer) == self._gpu(self.device):
            return (0 if peer != self.device else B.cudaErrorInvalidDevice,)
        return (_status(rt.cudaDeviceEnablePeerAccess(self._gpu(peer), flags)[0]),)

    def cudaDeviceDisablePeerAccess(self, peer: int):
        if self._gpu(peer) == self._gpu(self.device):
            return (0 if peer != self.device else B.cudaErrorInvalidDevice,)
        return (_status(rt.cudaDeviceDisablePeerAccess(self._gpu(peer))[0]),)

    def cudaDeviceGetP2PAttribute(self, attr: int, src: int, dst: int):
        if src == dst:
            return (B.cudaErrorInvalidDevice,)
        if self._gpu(src) == self._gpu(dst):
            return (0, 1)
        err, value = rt.cudaDeviceGetP2PAttribute(attr, self._gpu(src), self._gpu(dst))
        return (_status(err),) if err else (0, value)

    def cudaStreamGetDevice(self, stream: int):
        self._check_stream(stream)
        err, gpu = rt.cudaStreamGetDevice(stream)
        if err:
            return (_status(err),)
        if self.vgpus[self.device].gpu_index == gpu:
            return (0, self.device)
        return (0, next(v.index for v in self.vgpus if v.gpu_index == gpu))

    # ---- texture and surface objects ----
    def _check_resource(self, res: bytes) -> None:
        # cudaResourceDesc: int resType, then at offset 8 the array handle or devPtr
        (kind,), (handle,) = struct.unpack_from("<i", res, 0), struct.unpack_from("<Q", res, 8)
        if kind in (0, 1):       # cudaResourceTypeArray, MipmappedArray
            if kind == 1:
                raise B.CudaError(B.cudaErrorNotSupported, "mipmapped arrays")
            self._check_array(handle)
        else:                    # linear and pitch2D: a device pointer of ours
            self._check_range(handle, 1)

    def cudaCreateTextureObject(self, res, tex, view):
        if res is None or tex is None:
            return (B.cudaErrorInvalidValue,)
        self._check_resource(res)
        err, obj = rt.cudaCreateTextureObject(
            _from_bytes(rt.cudaResourceDesc, res), _from_bytes(rt.cudaTextureDesc, tex),
            _from_bytes(rt.cudaResourceViewDesc, view) if view else None)
        if err:
            return (_status(err),)
        self.handles["texture"].add(int(obj))
        return (0, int(obj))

    def cudaDestroyTextureObject(self, obj: int):
        self._check("texture", obj)
        self.handles["texture"].discard(obj)
        return (_status(rt.cudaDestroyTextureObject(obj)[0]),)

    def _describe(self, kind: str, obj: int, query, cls_size: int):
        self._check(kind, obj)
        err, desc = query(obj)
        return (_status(err),) if err else (0, _to_bytes(desc, cls_size))

    def cudaGetTextureObjectResourceDesc(self, obj: int):
        return self._describe("texture", obj, rt.cudaGetTextureObjectResourceDesc,
                              _SIZES["cudaResourceDesc"])

    def cudaGetTextureObjectTextureDesc(self, obj: int):
        return self._describe("texture", obj, rt.cudaGetTextureObjectTextureDesc,
                              _SIZES["cudaTextureDesc"])

    def cudaGetTextureObjectResourceViewDesc(self, obj: int):
        return self._describe("texture", obj, rt.cudaGetTextureObjectResourceViewDesc,
                              _SIZES["cudaResourceViewDesc"])

    def cudaGetSurfaceObjectResourceDesc(self, obj: int):
        return self._describe("surface", obj, rt.cudaGetSurfaceObjectResourceDesc,
                              _SIZES["cudaResourceDesc"])

    def cudaCreateSurfaceObject(self, res):
        if res is None:
            return (B.cudaErrorInvalidValue,)
        self._check_resource(res)
        err, obj = rt.cudaCreateSurfaceObject(_from_bytes(rt.cudaResourceDesc, res))
        if err:
            return (_status(err),)
        self.handles["surface"].add(int(obj))
        return (0, int(obj))

    def cudaDestroySurfaceObject(self, obj: int):
        self._check("surface", obj)
        self.handles["surface"].discard(obj)
        return (_status(rt.cudaDestroySurfaceObject(obj)[0]),)

    # ---- graphs ----
    def _graph_out(self, kind: str, result):
        err, handle = result
        if err:
            return (_status(err),)
        self.handles[kind].add(int(handle))
        return (0, int(handle))

    def _nodes(self, raw, count: int) -> list:
        handles = struct.unpack(f"<{count}Q", raw) if count else ()
        for h in handles:
            self._check("node", h)
        return [rt.cudaGraphNode_t(h) for h in handles]

    def cudaStreamBeginCapture(self, stream: int, mode: int):
        self._check_stream(stream)
        return (_status(rt.cudaStreamBeginCapture(stream, mode)[0]),)

    def cudaStreamEndCapture(self, stream: int):
        self._check_stream(stream)
        return self._graph_out("graph", rt.cudaStreamEndCapture(stream))

    def cudaGraphCreate(self, flags: int):
        return self._graph_out("graph", rt.cudaGraphCreate(flags))

    def cudaGraphClone(self, graph: int):
        self._check("graph", graph)
        return self._graph_out("graph", rt.cudaGraphClone(graph))

    def cudaGraphInstantiate(self, graph: int, flags: int):
        self._check("graph", graph)
        return self._graph_out("exec", rt.cudaGraphInstantiate(graph, flags))

    cudaGraphInstantiateWithFlags = cudaGraphInstantiate

    def cudaGraphLaunch(self, exec_: int, stream: int):
        self._check("exec", exec_)
        self._check_stream(stream)
        return (_status(rt.cudaGraphLaunch(exec_, stream)[0]),)

    def cudaGraphUpload(self, exec_: int, stream: int):
        self._check("exec", exec_)
        self._check_stream(stream)
        return (_status(rt.cudaGraphUpload(exec_, stream)[0]),)

    def cudaGraphExecDestroy(self, exec_: int):
        self._check("exec", exec_)
        self.handles["exec"].discard(exec_)
        return (_status(rt.cudaGraphExecDestroy(exec_)[0]),)

    def cudaGraphDestroy(self, graph: int):
        self._check("graph", graph)
        self.handles["graph"].discard(graph)
        return (_status(rt.cudaGraphDestroy(graph)[0]),)

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
            graph, self._nodes(deps, count), count, _from_bytes(rt.cudaMemsetParams, params)))

    def cudaGraphAddDependencies(self, graph: int, from_, to, edges, count: int):
        self._check("graph", graph)
        if edges is not None:
            return (B.cudaErrorNotSupported,)   # edge data: not forwarded yet
        return (_status(rt.cudaGraphAddDependencies(graph, self._nodes(from_, count),
                                                    self._nodes(to, count), None, count)[0]),)

    def cudaGraphNodeGetType(self, node: int):
        self._check("node", node)
        err, kind = rt.cudaGraphNodeGetType(node)
        return (_status(err),) if err else (0, int(kind))

    def cudaGraphDestroyNode(self, node: int):
        self._check("node", node)
        self.handles["node"].discard(node)
        return (_status(rt.cudaGraphDestroyNode(node)[0]),)

    # ---- memory pools ----
    def _check_pool(self, pool: int) -> None:
        self._check("pool", pool)

    def cudaDeviceGetDefaultMemPool(self, device: int):
        if not 0 <= device < len(self.vgpus):
            return (B.cudaErrorInvalidDevice,)
        return self._graph_out("pool", rt.cudaDeviceGetDefaultMemPool(
            self.vgpus[device].gpu_index))

    def cudaDeviceGetMemPool(self, device: int):
        if not 0 <= device < len(self.vgpus):
            return (B.cudaErrorInvalidDevice,)
        return self._graph_out("pool", rt.cudaDeviceGetMemPool(self.vgpus[device].gpu_index))

    def cudaDeviceSetMemPool(self, device: int, pool: int):
        if not 0 <= device < len(self.vgpus):
            return (B.cudaErrorInvalidDevice,)
        self._check_pool(pool)
        return (_status(rt.cudaDeviceSetMemPool(self.vgpus[device].gpu_index, pool)[0]),)

    def cudaMemPoolCreate(self, props: bytes | None):
        if props is None:
            return (B.cudaErrorInvalidValue,)
        return self._graph_out("pool", rt.cudaMemPoolCreate(_from_bytes(rt.cudaMemPoolProps,
                                                                        props)))

    def cudaMemPoolDestroy(self, pool: int):
        self._check_pool(pool)
        self.handles["pool"].discard(pool)
        return (_status(rt.cudaMemPoolDestroy(pool)[0]),)

    def cudaMemPoolTrimTo(self, pool: int, keep: int):
        self._check_pool(pool)
        return (_status(rt.cudaMemPoolTrimTo(pool, keep)[0]),)

    def cudaMemPoolSetAttribute(self, pool: int, attr: int, value):
        self._check_pool(pool)
        raw = bytes(value)
        number = struct.unpack("<Q" if len(raw) == 8 else "<i", raw)[0]
        if len(raw) == 8:
            number = drv.cuuint64_t(number)
        return (_status(rt.cudaMemPoolSetAttribute(pool, rt.cudaMemPoolAttr(attr), number)[0]),)

    def cudaMemPoolGetAttribute(self, pool: int, attr: int, length: int):
        self._check_pool(pool)
        err, value = rt.cudaMemPoolGetAttribute(pool, rt.cudaMemPoolAttr(attr))
        if err:
            return (_status(err),)
        return (0, struct.pack("<Q" if length == 8 else "<i", int(value)))

    def cudaMallocFromPoolAsync(self, size: int, pool: int, stream: int):
        self._check_pool(pool)
        self._check_stream(stream)
        self._reserve(size)
        err, ptr = rt.cudaMallocFromPoolAsync(size, pool, stream)
        if err:
            return (_status(err),)
        self._record(int(ptr), size)
        return (0, int(ptr))

    # ---- page-locked memory shared with the client ----
    def orionShmAttach(self, name: str, size: int, base: int):
        seg = self.segments.attach(name, size, base)
        flags = drv.CU_MEMHOSTREGISTER_PORTABLE | drv.CU_MEMHOSTREGISTER_DEVICEMAP
        (err,) = drv.cuMemHostRegister(seg.local_base, size, flags)
        if err:
            self.segments.detach(base)
            return (_status(err),)
        return (0,)

    def orionShmDetach(self, base: int):
        seg = self.segments.detach(base)
        (err,) = drv.cuMemHostUnregister(seg.local_base)
        seg.mapping.close()
        return (_status(err),)

    def orionShmDevicePointer(self, host: int):
        seg = self.segments.segment_of(host)
        err, base = drv.cuMemHostGetDevicePointer(seg.local_base, 0)
        if err:
            return (_status(err),)
        self.globals[int(base)] = seg.size    # the mapped range is this session's too
        return (0, int(base) + host - seg.client_base)

    def orionMemcpyShm(self, dst: int, src: int, count: int, kind: int, stream: int,
                       sync: bool = True):
        if kind == rt.cudaMemcpyKind.cudaMemcpyHostToDevice:
            self._check_range(dst, count)
            src = self.segments.translate(src, count)
        elif kind == rt.cudaMemcpyKind.cudaMemcpyDeviceToHost:
            self._check_range(src, count)
            dst = self.segments.translate(dst, count)
        else:
            return (B.cudaErrorInvalidValue,)
        return (self._copy(dst, src, count, rt.cudaMemcpyKind(kind), stream, sync),)

    def orionMemcpyShmAsync(self, dst: int, src: int, count: int, kind: int, stream: int):
        return self.orionMemcpyShm(dst, src, count, kind, stream, sync=False)

    # ---- host functions: run in the client, in stream order ----
    def orionHostFunc(self, stream: int, ident: int):
        self._check_stream(stream)
        # the driver calls this on its own thread when the stream reaches it; the
        # stream waits until the client has run the function
        (err,) = drv.cuLaunchHostFunc(stream, self._host_fn_stub, ident)
        return (_status(err),)

    @property
    def _host_fn_stub(self):
        if self._stub is None:
            run = self.run_host_function
            self._stub_keepalive = _HOST_FN(lambda data: run(data or 0))
            self._stub = drv.CUhostFn(ctypes.cast(self._stub_keepalive, ctypes.c_void_p).value)
        return self._stub

    # ---- streams and events ----
    def _new_stream(self, result):
        err, stream = result
        if err:
            return (_status(err),)
        self.streams.add(int(stream))
        return (0, int(stream))

    def cudaStreamCreate(self):
        return self._new_stream(rt.cudaStreamCreate())

    def cudaStreamCreateWithFlags(self, flags: int):
        return self._new_stream(rt.cudaStreamCreateWithFlags(flags))

    def cudaStreamCreateWithPriority(self, flags: int, priority: int):
        return self._new_stream(rt.cudaStreamCreateWithPriority(flags, priority))

    def cudaStreamDestroy(self, stream: int):
        if stream not in self.streams:
            return (B.cudaErrorInvalidResourceHandle,)
        self.streams.discard(stream)
        return (_status(rt.cudaStreamDestroy(stream)[0]),)

    def _new_event(self, result):
        err, event = result
        if err:
            return (_status(err),)
        self.events.add(int(event))
        return (0, int(event))

    def cudaEventCreate(self):
        return self._new_event(rt.cudaEventCreate())

    def cudaEventCreateWithFlags(self, flags: int):
        return self._new_event(rt.cudaEventCreateWithFlags(flags))

    def cudaEventDestroy(self, event: int):
        self._check_event(event)
        self.events.discard(event)
        return (_status(rt.cudaEventDestroy(event)[0]),)

    def cudaEventElapsedTime(self, start: int, end: int):
        self._check_event(start)
        self._check_event(end)
        err, ms = rt.cudaEventElapsedTime(start, end)
        return (_status(err),) if err else (0, ms)

    # ---- modules and kernels ----
    def orionModuleLoad(self, module: int, image, size: int):
        self.images.setdefault(module, bytes(image))
        return (_status(self._module(module)[0]),)

    def _module(self, module: int):
        key = (module, self.vgpus[self.device].gpu_index)
        if key in self.modules:
            return 0, self.modules[key]
        if module not in self.images:
            return B.cudaErrorInvalidResourceHandle, None
        err, mod = drv.cuModuleLoadData(self.images[module])
        if err:
            return _status(err), None
        self.modules[key] = mod
        return 0, mod

    def orionFunctionInfo(self, module: int, name: str, size: int, _size: int):
        err, mod = self._module(module)
        if err:
            return (err,)
        err, func = drv.cuModuleGetFunction(mod, name.encode())
        if err:
            return (B.cudaErrorInvalidDeviceFunction,)
        params = []
        while True:
            err, offset, psize = drv.cuFuncGetParamInfo(func, len(params))
            if err:
                break
            params.append((offset, psize))
        info = struct.pack("<QI", int(func), len(params)) + b"".join(
            struct.pack("<II", o, s) for o, s in params)
        if len(info) > size:
            return (B.cudaErrorInvalidValue,)
        self.functions[int(func)] = (func, np.array([o for o, _ in params], dtype=np.uint64))
        return (0, info.ljust(size, b"\0"))

    def orionVarInfo(self, module: int, name: str):
        err, mod = self._module(module)
        if err:
            return (err,)
        err, ptr, size = drv.cuModuleGetGlobal(mod, name.encode())
        if err:
            return (13,)   # cudaErrorInvalidSymbol
        self.globals[int(ptr)] = size
        return (0, int(ptr), size)

    def orionLaunchKernel(self, function: int, grid: bytes, block: bytes, shared: int,
                          stream: int, flags: int, args, size: int):
        entry = self.functions.get(function)
        if entry is None:
            return (B.cudaErrorInvalidResourceHandle,)
        self._check_stream(stream)
        func, offsets = entry
        buf = np.frombuffer(args, dtype=np.uint8)
        pointers = offsets + np.uint64(buf.ctypes.data) if len(offsets) else offsets
        params = pointers.ctypes.data if len(offsets) else 0
        gx, gy, gz = _DIM3.unpack(grid)
        bx, by, bz = _DIM3.unpack(block)
        launch = drv.cuLaunchCooperativeKernel if flags & 1 else drv.cuLaunchKernel
        if flags & 1:
            (err,) = launch(func, gx, gy, gz, bx, by, bz, shared, stream, params)
        else:
            (err,) = launch(func, gx, gy, gz, bx, by, bz, shared, stream, params, 0)
        return (_status(err),)

    def orionFuncGetAttributes(self, function: int):
        entry = self.functions.get(function)
        if entry is None:
            return (B.cudaErrorInvalidResourceHandle,)
        values = []
        for attr in _FUNC_ATTR_ORDER:
            err, value = drv.cuFuncGetAttribute(attr, entry[0])
            values.append(0 if err else value)
        shared, const, local, *ints = values
        return (0, _FUNC_ATTRS.pack(shared, const, local, *ints, *([0] * 16)))

    def orionFuncSetAttribute(self, function: int, attr: int, value: int):
        entry = self.functions.get(function)
        if entry is None:
            return (B.cudaErrorInvalidResourceHandle,)
        return (_status(drv.cuFuncSetAttribute(entry[0], drv.CUfunction_attribute(attr),
                                               value)[0]),)

    def orionFuncSetCacheConfig(self, function: int, config: int):
        entry = self.functions.get(function)
        if entry is None:
            return (B.cudaErrorInvalidResourceHandle,)
        return (_status(drv.cuFuncSetCacheConfig(entry[0], drv.CUfunc_cache(config))[0]),)

    def orionOccupancy(self, function: int, block: int, smem: int, flags: int):
        entry = self.functions.get(function)
        if entry is None:
            return (B.cudaErrorInvalidResourceHandle,)
        err, n = drv.cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(entry[0], block,
                                                                          smem, flags)
        return (_status(err),) if err else (0, n)

    def orionOccupancyAvailableSMem(self, function: int, blocks: int, block: int):
        entry = self.functions.get(function)
        if entry is None:
            return (B.cudaErrorInvalidResourceHandle,)
        err, n = drv.cuOccupancyAvailableDynamicSMemPerBlock(entry[0], blocks, block)
        return (_status(err),) if err else (0, n)

    # ---- teardown ----
    def cudaDeviceReset(self):
        return (0,)   # the session's resources are freed when it ends (close)

    def close(self) -> None:
        rt.cudaDeviceSynchronize()
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


def _valid_attr(attr: int) -> bool:
    try:
        rt.cudaDeviceAttr(attr)
        return True
    except ValueError:
        return False


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
            return (_status(err),)
        return (0, *(int(o) if not isinstance(o, (float, bytes, bytearray)) else o
                     for o in outs))
    handler.__name__ = name
    return handler


for _name in ("cudaDeviceSynchronize", "cudaDeviceSetLimit", "cudaDeviceGetLimit",
              "cudaDeviceGetCacheConfig", "cudaDeviceSetCacheConfig",
              "cudaDeviceGetStreamPriorityRange", "cudaCtxResetPersistingL2Cache",
              "cudaStreamGetPriority", "cudaStreamGetFlags", "cudaStreamGetId",
              "cudaStreamQuery", "cudaStreamSynchronize",
              "cudaStreamWaitEvent", "cudaStreamIsCapturing",
              "cudaEventRecord", "cudaEventRecordWithFlags", "cudaEventQuery",
              "cudaEventSynchronize", "cudaProfilerStart", "cudaProfilerStop"):
    setattr(CudaBackend, _name, _forwarder(_name))
