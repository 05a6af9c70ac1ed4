"""CUDA arrays, texture and surface objects of the host backend.

An array is an allocation of packed rows (not addressable by the client); its 2D
copies are device copies of a rectangle of those rows. Texture and surface objects keep
the descriptors they were made from; only what they name has to exist.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from .. import backend as B
from ..backend import CudaError
from .host_graph import Copy

cudaErrorInvalidChannelDescriptor = 20

_EXTENT = struct.Struct("<QQQ")                # cudaExtent
_CHANNEL_DESC = struct.Struct("<iiiii")        # cudaChannelFormatDesc
_ARRAY_FLAGS = 0x01 | 0x02 | 0x04 | 0x08 | 0x20 | 0x40 | 0x80
_ARRAY_SURFACE_LOAD_STORE = 0x02
_RESOURCE_VIEW_DESC_SIZE = 112


@dataclass(eq=False)
class Array:
    handle: int
    device: int
    desc: bytes
    extent: bytes
    flags: int
    base: int                                       # its backing allocation
    pitch: int                                      # bytes of a row
    rows: int                                       # of its first 2D slice


@dataclass(eq=False)
class Resource:
    """A texture or surface object: its descriptors, as created."""
    device: int
    res: bytes
    tex: bytes | None = None
    view: bytes | None = None


class ArrayCalls:
    """The array, texture and surface handlers of HostBackend, which mixes them in."""

    @staticmethod
    def _element_size(desc: bytes | None) -> int:
        if desc is None:
            raise CudaError(B.cudaErrorInvalidValue, "no channel descriptor")
        *bits, kind = _CHANNEL_DESC.unpack(desc)
        if any(b not in (0, 8, 16, 32) for b in bits) or not any(bits) or not 0 <= kind <= 31:
            raise CudaError(cudaErrorInvalidChannelDescriptor, f"channel {bits} kind {kind}")
        return sum(bits) // 8

    def _new_array(self, desc, width, height, depth, flags) -> int:
        self._forbid_during_capture("array allocation")
        element = self._element_size(desc)
        if not width or flags & ~_ARRAY_FLAGS:
            raise CudaError(B.cudaErrorInvalidValue, f"array of width {width}, flags {flags:#x}")
        pitch, rows = width * element, max(height, 1)
        base = self.memory.allocate(self.device, pitch * rows * max(depth, 1), "array")
        handle = self._new_handle()
        self.arrays[handle] = Array(handle, self.device, desc,
                                    _EXTENT.pack(width, height, depth), flags, base, pitch, rows)
        return handle

    def cudaMallocArray(self, desc, width, height, flags):
        return 0, self._new_array(desc, width, height, 0, flags)

    def cudaMalloc3DArray(self, desc, extent, flags):
        return 0, self._new_array(desc, *_EXTENT.unpack(extent), flags)

    def _array(self, handle: int) -> Array:
        return self._lookup(self.arrays, handle, "array", B.cudaErrorInvalidResourceHandle)

    def cudaFreeArray(self, array):
        self._forbid_during_capture("cudaFreeArray")
        if array:
            self.memory.release(self.memory.at_base(self._array(array).base))
            del self.arrays[array]
        return (0,)

    def cudaArrayGetInfo(self, array):
        a = self._array(array)
        return 0, a.desc, a.extent, a.flags

    def cudaGetChannelDesc(self, array):
        return 0, self._array(array).desc

    def _array_region(self, array: int, w_offset: int, h_offset: int, width: int,
                      height: int) -> tuple[int, int]:
        """Address and pitch of a rectangle (offsets in bytes and rows) of an array."""
        a = self._array(array)
        if w_offset + width > a.pitch or h_offset + height > a.rows:
            raise CudaError(B.cudaErrorInvalidValue,
                            f"{width}x{height} at ({w_offset}, {h_offset}) exceeds the array's "
                            f"{a.pitch}x{a.rows}")
        return a.base + h_offset * a.pitch + w_offset, a.pitch

    def orionMemcpy2DToArray(self, dst, wOffset, hOffset, src, width, height, stream):
        address, pitch = self._array_region(dst, wOffset, hOffset, width, height)
        return self._copy_on(stream, Copy(address, pitch, 0, width, width, height, src))

    def orionMemcpy2DFromArray(self, dst_len, src, wOffset, hOffset, width, height, stream):
        address, pitch = self._array_region(src, wOffset, hOffset, width, height)
        return self._read(stream, address, pitch, width, height, dst_len)

    def orionMemcpy2DArrayDtoD(self, array, wOffset, hOffset, ptr, pitch, width, height,
                               toArray, stream):
        address, array_pitch = self._array_region(array, wOffset, hOffset, width, height)
        if toArray:
            return self._copy_on(stream, Copy(address, array_pitch, ptr, pitch, width, height))
        return self._copy_on(stream, Copy(ptr, pitch, address, array_pitch, width, height))

    # ---- texture and surface objects ----
    def _check_resource(self, res: bytes | None, surface: bool) -> None:
        """The memory a cudaResourceDesc names must exist (array, linear, pitch 2D)."""
        if res is None:
            raise CudaError(B.cudaErrorInvalidValue, "no resource descriptor")
        res_type, handle = struct.unpack_from("<I4xQ", res)
        if res_type == 0:
            array = self._array(handle)
            if surface and not array.flags & _ARRAY_SURFACE_LOAD_STORE:
                raise CudaError(B.cudaErrorInvalidValue,
                                "surfaces need an array made with cudaArraySurfaceLoadStore")
        elif surface:
            raise CudaError(B.cudaErrorInvalidValue, f"surface over resource type {res_type}")
        elif res_type == 2:
            (size,) = struct.unpack_from("<Q", res, 40)
            if not size:
                raise CudaError(B.cudaErrorInvalidValue, "linear texture of 0 bytes")
            self.memory.view(handle, size)
        elif res_type == 3:
            width, height, pitch = struct.unpack_from("<QQQ", res, 40)
            row = width * self._element_size(res[16:36])
            if not (row and height) or pitch < row:
                raise CudaError(B.cudaErrorInvalidValue, "bad pitch 2D texture shape")
            self.memory.view(handle, pitch * (height - 1) + row)
        else:
            raise CudaError(B.cudaErrorInvalidValue, f"resource type {res_type}")

    def cudaCreateTextureObject(self, pResDesc, pTexDesc, pResViewDesc):
        self._check_resource(pResDesc, surface=False)
        if pTexDesc is None:
            raise CudaError(B.cudaErrorInvalidValue, "no texture descriptor")
        handle = self._new_handle()
        self.textures[handle] = Resource(self.device, pResDesc, pTexDesc, pResViewDesc)
        return 0, handle

    def _texture(self, handle: int) -> Resource:
        return self._lookup(self.textures, handle, "texture object",
                            B.cudaErrorInvalidResourceHandle)

    def cudaGetTextureObjectResourceDesc(self, texObject):
        return 0, self._texture(texObject).res

    def cudaGetTextureObjectTextureDesc(self, texObject):
        return 0, self._texture(texObject).tex

    def cudaGetTextureObjectResourceViewDesc(self, texObject):
        view = self._texture(texObject).view
        return 0, view if view is not None else bytes(_RESOURCE_VIEW_DESC_SIZE)

    def cudaDestroyTextureObject(self, texObject):
        self._texture(texObject)
        del self.textures[texObject]
        return (0,)

    def cudaCreateSurfaceObject(self, pResDesc):
        self._check_resource(pResDesc, surface=True)
        handle = self._new_handle()
        self.surfaces[handle] = Resource(self.device, pResDesc)
        return 0, handle

    def _surface(self, handle: int) -> Resource:
        return self._lookup(self.surfaces, handle, "surface object",
                            B.cudaErrorInvalidResourceHandle)

    def cudaGetSurfaceObjectResourceDesc(self, surfObject):
        return 0, self._surface(surfObject).res

    def cudaDestroySurfaceObject(self, surfObject):
        self._surface(surfObject)
        del self.surfaces[surfObject]
        return (0,)
