"""What the GPU backend's modules share: C struct layouts and conversions between the
bytes that travel and cuda-python's objects."""
from __future__ import annotations

import ctypes
import struct

from cuda.bindings import driver as drv
from cuda.bindings import runtime as rt

from ..generated.cudart_table import CALLS

SPECIAL_STREAMS = (0, 1, 2)       # legacy default, cudaStreamLegacy, cudaStreamPerThread
DIM3 = struct.Struct("<III")
FUNC_ATTRS = struct.Struct("<QQQ13i16i")
MAX_ATTR = 148
HOST_FN = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_A = drv.CUfunction_attribute
# cudaFuncAttributes field order, each from the driver's attribute of the same meaning
FUNC_ATTR_ORDER = (
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
PITCHED = struct.Struct("<QQQQ")   # cudaPitchedPtr: ptr, pitch, xsize, ysize
EXTENT = struct.Struct("<QQQ")     # cudaExtent: width, height, depth
CHANNEL = struct.Struct("<iiiii")  # cudaChannelFormatDesc: x, y, z, w, kind


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


SIZES = _struct_sizes()


def from_bytes(cls, raw: bytes):
    """A cuda-python struct holding exactly these C bytes (it wraps the C struct)."""
    obj = cls()
    ctypes.memmove(obj.getPtr(), raw, len(raw))
    return obj


def to_bytes(obj, size: int) -> bytes:
    return ctypes.string_at(obj.getPtr(), size)


def status(err) -> int:
    """A CUresult or cudaError_t as the int that goes on the wire (their codes agree)."""
    return int(err)


def valid_attr(attr: int) -> bool:
    try:
        rt.cudaDeviceAttr(attr)
        return True
    except ValueError:
        return False
