"""Kernel launches straight into the driver, through cffi.

A launch is the most frequent call there is, and cuda-python's `cuLaunchKernel`
wrapper costs several microseconds of argument conversion. The client already packed
the arguments at the driver's offsets, so the packed buffer goes to the driver as is
(`CU_LAUNCH_PARAM_BUFFER_POINTER` in `extra`): no pointer array, no copy.
"""
from __future__ import annotations

import cffi

_ffi = cffi.FFI()
_ffi.cdef("""
int cuLaunchKernel(void *f, unsigned int gridX, unsigned int gridY, unsigned int gridZ,
                   unsigned int blockX, unsigned int blockY, unsigned int blockZ,
                   unsigned int sharedMemBytes, void *stream, void **kernelParams,
                   void **extra);
""")
_BUFFER_POINTER, _BUFFER_SIZE = _ffi.cast("void *", 1), _ffi.cast("void *", 2)


class Launcher:
    def __init__(self):
        self._lib = _ffi.dlopen("libcuda.so.1")
        self._size = _ffi.new("size_t *")
        # {BUFFER_POINTER, <args>, BUFFER_SIZE, &size, END}, reused by every launch
        self._extra = _ffi.new("void *[5]", [_BUFFER_POINTER, _ffi.NULL, _BUFFER_SIZE,
                                             self._size, _ffi.NULL])

    def launch(self, function: int, grid: tuple, block: tuple, shared: int, stream: int,
               args) -> int:
        """cuLaunchKernel with the packed argument bytes; the CUresult."""
        extra = _ffi.NULL
        if len(args):
            # the driver copies the bytes before returning, so the frame may go after
            self._extra[1] = _ffi.from_buffer(args)
            self._size[0] = len(args)
            extra = self._extra
        return self._lib.cuLaunchKernel(_ffi.cast("void *", function), *grid, *block, shared,
                                        _ffi.cast("void *", stream), _ffi.NULL, extra)
