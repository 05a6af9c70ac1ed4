"""GPU backend: streams, events, peers, texture and surface objects."""
from __future__ import annotations

import struct

from cuda.bindings import runtime as rt

from .. import backend as B
from .cuda_common import SIZES, from_bytes, status, to_bytes


class ObjectCalls:
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
        return (status(err),) if err else (0, can)

    def cudaDeviceEnablePeerAccess(self, peer: int, flags: int):
        if self._gpu(peer) == self._gpu(self.device):
            return (0 if peer != self.device else B.cudaErrorInvalidDevice,)
        return (status(rt.cudaDeviceEnablePeerAccess(self._gpu(peer), flags)[0]),)

    def cudaDeviceDisablePeerAccess(self, peer: int):
        if self._gpu(peer) == self._gpu(self.device):
            return (0 if peer != self.device else B.cudaErrorInvalidDevice,)
        return (status(rt.cudaDeviceDisablePeerAccess(self._gpu(peer))[0]),)

    def cudaDeviceGetP2PAttribute(self, attr: int, src: int, dst: int):
        if src == dst:
            return (B.cudaErrorInvalidDevice,)
        if self._gpu(src) == self._gpu(dst):
            return (0, 1)
        err, value = rt.cudaDeviceGetP2PAttribute(attr, self._gpu(src), self._gpu(dst))
        return (status(err),) if err else (0, value)

    def cudaStreamGetDevice(self, stream: int):
        self._check_stream(stream)
        err, gpu = rt.cudaStreamGetDevice(stream)
        if err:
            return (status(err),)
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
            from_bytes(rt.cudaResourceDesc, res), from_bytes(rt.cudaTextureDesc, tex),
            from_bytes(rt.cudaResourceViewDesc, view) if view else None)
        if err:
            return (status(err),)
        self.handles["texture"].add(int(obj))
        return (0, int(obj))

    def cudaDestroyTextureObject(self, obj: int):
        self._check("texture", obj)
        self.handles["texture"].discard(obj)
        return (status(rt.cudaDestroyTextureObject(obj)[0]),)

    def _describe(self, kind: str, obj: int, query, cls_size: int):
        self._check(kind, obj)
        err, desc = query(obj)
        return (status(err),) if err else (0, to_bytes(desc, cls_size))

    def cudaGetTextureObjectResourceDesc(self, obj: int):
        return self._describe("texture", obj, rt.cudaGetTextureObjectResourceDesc,
                              SIZES["cudaResourceDesc"])

    def cudaGetTextureObjectTextureDesc(self, obj: int):
        return self._describe("texture", obj, rt.cudaGetTextureObjectTextureDesc,
                              SIZES["cudaTextureDesc"])

    def cudaGetTextureObjectResourceViewDesc(self, obj: int):
        return self._describe("texture", obj, rt.cudaGetTextureObjectResourceViewDesc,
                              SIZES["cudaResourceViewDesc"])

    def cudaGetSurfaceObjectResourceDesc(self, obj: int):
        return self._describe("surface", obj, rt.cudaGetSurfaceObjectResourceDesc,
                              SIZES["cudaResourceDesc"])

    def cudaCreateSurfaceObject(self, res):
        if res is None:
            return (B.cudaErrorInvalidValue,)
        self._check_resource(res)
        err, obj = rt.cudaCreateSurfaceObject(from_bytes(rt.cudaResourceDesc, res))
        if err:
            return (status(err),)
        self.handles["surface"].add(int(obj))
        return (0, int(obj))

    def cudaDestroySurfaceObject(self, obj: int):
        self._check("surface", obj)
        self.handles["surface"].discard(obj)
        return (status(rt.cudaDestroySurfaceObject(obj)[0]),)

    # ---- streams and events ----
    def _new_stream(self, result):
        err, stream = result
        if err:
            return (status(err),)
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
        self.capturing.discard(stream)
        return (status(rt.cudaStreamDestroy(stream)[0]),)

    def _new_event(self, result):
        err, event = result
        if err:
            return (status(err),)
        self.events.add(int(event))
        return (0, int(event))

    def cudaEventCreate(self):
        return self._new_event(rt.cudaEventCreate())

    def cudaEventCreateWithFlags(self, flags: int):
        return self._new_event(rt.cudaEventCreateWithFlags(flags))

    def cudaEventDestroy(self, event: int):
        self._check_event(event)
        self.events.discard(event)
        return (status(rt.cudaEventDestroy(event)[0]),)

    def cudaEventElapsedTime(self, start: int, end: int):
        self._check_event(start)
        self._check_event(end)
        err, ms = rt.cudaEventElapsedTime(start, end)
        return (status(err),) if err else (0, ms)
