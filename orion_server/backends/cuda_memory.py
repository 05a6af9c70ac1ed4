"""GPU backend: allocations, copies, arrays, pools and the client's page-locked memory.

Every device address and handle is checked against the session's own (CudaBackend's
_check_* methods) before it reaches the driver."""
from __future__ import annotations

import struct

import numpy as np
from cuda.bindings import driver as drv
from cuda.bindings import runtime as rt

from .. import backend as B
from .cuda_common import CHANNEL, EXTENT, PITCHED, from_bytes, status, to_bytes


class MemoryCalls:
    # ---- memory ----
    def cudaMalloc(self, size: int):
        self._reserve(size)
        err, ptr = rt.cudaMalloc(size)
        if err:
            return (status(err),)
        self._record(int(ptr), size)
        return (0, int(ptr))

    def cudaMallocPitch(self, width: int, height: int):
        err, ptr, pitch = rt.cudaMallocPitch(width, height)
        if err:
            return (status(err),)
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
        return (status(err),)

    def cudaMallocAsync(self, size: int, stream: int):
        self._check_stream(stream)
        self._reserve(size)
        err, ptr = rt.cudaMallocAsync(size, stream)
        if err:
            return (status(err),)
        self._record(int(ptr), size)
        return (0, int(ptr))

    def cudaFreeAsync(self, ptr: int, stream: int):
        self._check_stream(stream)
        if ptr not in self.allocations:
            return (B.cudaErrorInvalidValue,)
        (err,) = rt.cudaFreeAsync(ptr, stream)
        if not err:
            self._forget(ptr)
        return (status(err),)

    def cudaMemGetInfo(self):
        err, free, total = rt.cudaMemGetInfo()
        if err:
            return (status(err),)
        limit = self.vgpus[self.device].memory_bytes
        return (0, min(free, limit - self.used[self.device]), limit)

    def cudaMemset(self, ptr: int, value: int, count: int):
        self._check_range(ptr, count)
        return (status(rt.cudaMemset(ptr, value, count)[0]),)

    def cudaMemsetAsync(self, ptr: int, value: int, count: int, stream: int):
        self._check_range(ptr, count)
        self._check_stream(stream)
        return (status(rt.cudaMemsetAsync(ptr, value, count, stream)[0]),)

    def cudaMemset2D(self, ptr: int, pitch: int, value: int, width: int, height: int):
        self._check_range(ptr, pitch * max(height - 1, 0) + width)
        return (status(rt.cudaMemset2D(ptr, pitch, value, width, height)[0]),)

    def cudaMemset2DAsync(self, ptr, pitch, value, width, height, stream):
        self._check_range(ptr, pitch * max(height - 1, 0) + width)
        self._check_stream(stream)
        return (status(rt.cudaMemset2DAsync(ptr, pitch, value, width, height, stream)[0]),)

    def orionPointerType(self, ptr: int):
        try:
            self._check_range(ptr, 1)
            return (0, rt.cudaMemoryType.cudaMemoryTypeDevice.value)
        except B.CudaError:
            return (0, 0)

    def _on_stream(self, copy, stream: int, sync: bool) -> int:
        """Issue `copy` (an async call, returning `(status,)` as the runtime's do) on a
        checked stream; with `sync`, wait for the stream as the synchronous form of the
        call would."""
        self._check_stream(stream)
        (err,) = copy()
        if not err and sync:
            err = self.driver.stream_synchronize(stream)
        return status(err)

    def _copy(self, dst: int, src: int, count: int, stream: int, sync: bool):
        """A copy between checked pointers (device ranges, the session's segments, frames
        of this request), straight to the driver (cuda_driver.py)."""
        return self._on_stream(lambda: (self.driver.memcpy_async(dst, src, count, stream),),
                               stream, sync)

    def _peer_copy(self, dst: int, src: int, count: int, stream: int, sync: bool):
        """Between two vGPUs' memory (unified addressing: the pointers say which)."""
        return self._on_stream(lambda: rt.cudaMemcpyAsync(
            dst, src, count, rt.cudaMemcpyKind.cudaMemcpyDefault, stream), stream, sync)

    def orionMemcpyHtoD(self, dst: int, src, count: int, stream: int, sync: bool = True):
        self._check_range(dst, count)
        host = np.frombuffer(src, dtype=np.uint8)
        # The frame is freed when the handler returns; a pageable-source copy has
        # consumed it by then (CUDA stages pageable memory before returning).
        return (self._copy(dst, host.ctypes.data, count, stream, sync),)

    def orionMemcpyHtoDAsync(self, dst: int, src, count: int, stream: int):
        return self.orionMemcpyHtoD(dst, src, count, stream, sync=False)

    def orionMemcpyDtoH(self, count: int, src: int, _count: int, stream: int):
        self._check_range(src, count)
        # the reply frame itself (sent without a copy): page-locked where one is free
        # (cuda_reply_buffers.py); the copy writes every byte, so no zero fill (a
        # bytearray's cost ~30 us per MiB, on every chunk of a download)
        out = self.reply_buffers.take(count)
        if out is None:
            out = np.empty(count, dtype=np.uint8)
        err = self._copy(out.ctypes.data, src, count, stream, True)
        return (err,) if err else (0, out)

    def orionMemcpyDtoD(self, dst: int, src: int, count: int, stream: int, sync: bool = True):
        self._check_range(dst, count)
        self._check_range(src, count)
        return (self._copy(dst, src, count, stream, sync),)

    def orionMemcpyDtoDAsync(self, dst: int, src: int, count: int, stream: int):
        return self.orionMemcpyDtoD(dst, src, count, stream, sync=False)

    def cudaMemcpyPeer(self, dst: int, dst_device: int, src: int, src_device: int, count: int):
        self._check_range(dst, count)
        self._check_range(src, count)
        return (self._peer_copy(dst, src, count, 0, True),)

    def cudaMemcpyPeerAsync(self, dst, dst_device, src, src_device, count, stream):
        self._check_range(dst, count)
        self._check_range(src, count)
        return (self._peer_copy(dst, src, count, stream, False),)

    def _memcpy2d(self, dst, dpitch, src, spitch, width, height, kind, stream, sync):
        return self._on_stream(lambda: rt.cudaMemcpy2DAsync(dst, dpitch, src, spitch, width,
                                                            height, kind, stream), stream, sync)

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
            return (status(err),)
        self.arrays[int(array)] = (size, self.device)
        self.used[self.device] += size
        return (0, int(array))

    def cudaMallocArray(self, desc: bytes, width: int, height: int, flags: int):
        x, y, z, w, _ = CHANNEL.unpack(desc)
        size = (x + y + z + w) // 8 * width * max(height, 1)
        self._reserve(size)
        return self._new_array(rt.cudaMallocArray(from_bytes(rt.cudaChannelFormatDesc, desc),
                                                  width, height, flags), size)

    def cudaMalloc3DArray(self, desc: bytes, extent: bytes, flags: int):
        x, y, z, w, _ = CHANNEL.unpack(desc)
        width, height, depth = EXTENT.unpack(extent)
        size = (x + y + z + w) // 8 * width * max(height, 1) * max(depth, 1)
        self._reserve(size)
        return self._new_array(rt.cudaMalloc3DArray(
            from_bytes(rt.cudaChannelFormatDesc, desc), from_bytes(rt.cudaExtent, extent),
            flags), size)

    def cudaFreeArray(self, array: int):
        if array == 0:
            return (0,)
        self._check_array(array)
        (err,) = rt.cudaFreeArray(array)
        if not err:
            size, vgpu = self.arrays.pop(array)
            self.used[vgpu] -= size
        return (status(err),)

    def cudaArrayGetInfo(self, array: int):
        self._check_array(array)
        err, desc, extent, flags = rt.cudaArrayGetInfo(array)
        if err:
            return (status(err),)
        return (0, to_bytes(desc, CHANNEL.size), to_bytes(extent, EXTENT.size), flags)

    def cudaGetChannelDesc(self, array: int):
        self._check_array(array)
        err, desc = rt.cudaGetChannelDesc(array)
        return (status(err),) if err else (0, to_bytes(desc, CHANNEL.size))

    def orionMemcpy2DToArray(self, array, w, h, src, width, height, stream):
        self._check_array(array)
        host = np.frombuffer(src, dtype=np.uint8).ctypes.data
        return (self._on_stream(lambda: rt.cudaMemcpy2DToArrayAsync(
            array, w, h, host, width, width, height, rt.cudaMemcpyKind.cudaMemcpyHostToDevice,
            stream), stream, True),)

    def orionMemcpy2DFromArray(self, length, array, w, h, width, height, stream):
        self._check_array(array)
        out = bytearray(length)
        host = np.frombuffer(out, dtype=np.uint8).ctypes.data
        err = self._on_stream(lambda: rt.cudaMemcpy2DFromArrayAsync(
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
        return (self._on_stream(copy, stream, True),)

    def cudaMalloc3D(self, extent: bytes):
        width, height, depth = EXTENT.unpack(extent)
        err, pitched = rt.cudaMalloc3D(from_bytes(rt.cudaExtent, extent))
        if err:
            return (status(err),)
        ptr, pitch = int(pitched.ptr), pitched.pitch
        size = pitch * max(height, 1) * max(depth, 1)
        try:
            self._reserve(size)
        except B.CudaError:
            rt.cudaFree(ptr)
            raise
        self._record(ptr, size)
        return (0, PITCHED.pack(ptr, pitch, pitched.xsize, pitched.ysize))

    def cudaMemset3D(self, pitched: bytes, value: int, extent: bytes):
        ptr, pitch, _, ysize = PITCHED.unpack(pitched)
        width, height, depth = EXTENT.unpack(extent)
        if width and height and depth:
            self._check_range(ptr, pitch * (ysize * (depth - 1) + height - 1) + width)
        return (status(rt.cudaMemset3D(from_bytes(rt.cudaPitchedPtr, pitched), value,
                                        from_bytes(rt.cudaExtent, extent))[0]),)

    def cudaDeviceGetPCIBusId(self, length: int, size: int, device: int):
        if not 0 <= device < len(self.vgpus) or length <= 0:
            return (B.cudaErrorInvalidValue if length <= 0 else B.cudaErrorInvalidDevice,)
        err, bus = rt.cudaDeviceGetPCIBusId(length, self.vgpus[device].gpu_index)
        if err:
            return (status(err),)
        return (0, bytes(bus)[:length].ljust(length, b"\0"))

    def cudaDeviceGetByPCIBusId(self, bus_id: str):
        err, gpu = rt.cudaDeviceGetByPCIBusId(bus_id.encode())
        if err:
            return (status(err),)
        # the first vGPU of this session on that physical GPU
        for v in self.vgpus:
            if v.gpu_index == gpu:
                return (0, v.index)
        return (B.cudaErrorInvalidDevice,)

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
        return (status(rt.cudaDeviceSetMemPool(self.vgpus[device].gpu_index, pool)[0]),)

    def cudaMemPoolCreate(self, props: bytes | None):
        if props is None:
            return (B.cudaErrorInvalidValue,)
        return self._graph_out("pool", rt.cudaMemPoolCreate(from_bytes(rt.cudaMemPoolProps,
                                                                        props)))

    def cudaMemPoolDestroy(self, pool: int):
        self._check_pool(pool)
        self.handles["pool"].discard(pool)
        return (status(rt.cudaMemPoolDestroy(pool)[0]),)

    def cudaMemPoolTrimTo(self, pool: int, keep: int):
        self._check_pool(pool)
        return (status(rt.cudaMemPoolTrimTo(pool, keep)[0]),)

    def cudaMemPoolSetAttribute(self, pool: int, attr: int, value):
        self._check_pool(pool)
        raw = bytes(value)
        number = struct.unpack("<Q" if len(raw) == 8 else "<i", raw)[0]
        if len(raw) == 8:
            number = drv.cuuint64_t(number)
        return (status(rt.cudaMemPoolSetAttribute(pool, rt.cudaMemPoolAttr(attr), number)[0]),)

    def cudaMemPoolGetAttribute(self, pool: int, attr: int, length: int):
        self._check_pool(pool)
        err, value = rt.cudaMemPoolGetAttribute(pool, rt.cudaMemPoolAttr(attr))
        if err:
            return (status(err),)
        return (0, struct.pack("<Q" if length == 8 else "<i", int(value)))

    def cudaMallocFromPoolAsync(self, size: int, pool: int, stream: int):
        self._check_pool(pool)
        self._check_stream(stream)
        self._reserve(size)
        err, ptr = rt.cudaMallocFromPoolAsync(size, pool, stream)
        if err:
            return (status(err),)
        self._record(int(ptr), size)
        return (0, int(ptr))

    # ---- page-locked memory shared with the client ----
    def orionShmAttach(self, name: str, size: int, base: int):
        seg = self.segments.attach(name, size, base)
        flags = drv.CU_MEMHOSTREGISTER_PORTABLE | drv.CU_MEMHOSTREGISTER_DEVICEMAP
        (err,) = drv.cuMemHostRegister(seg.local_base, size, flags)
        if err:
            self.segments.detach(base)
            return (status(err),)
        return (0,)

    def orionShmDetach(self, base: int):
        seg = self.segments.detach(base)
        (err,) = drv.cuMemHostUnregister(seg.local_base)
        seg.mapping.close()
        return (status(err),)

    def orionShmDevicePointer(self, host: int):
        seg = self.segments.segment_of(host)
        err, base = drv.cuMemHostGetDevicePointer(seg.local_base, 0)
        if err:
            return (status(err),)
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
        return (self._copy(dst, src, count, stream, sync),)

    def orionMemcpyShmAsync(self, dst: int, src: int, count: int, kind: int, stream: int):
        return self.orionMemcpyShm(dst, src, count, kind, stream, sync=False)
