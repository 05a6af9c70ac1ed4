"""Kernel launches straight into the driver, through cffi.

A launch is the most frequent call there is, and cuda-python's `cuLaunchKernel`
wrapper costs several microseconds of argument conversion. The client already packed
the arguments at the driver's offsets, so the packed buffer goes to the driver as is
(`CU_LAUNCH_PARAM_BUFFER_POINTER` in `extra`): no pointer array, no copy.

The function, the stream and the words of `extra` are declared as integers (the same
registers and stack slots as pointers in the 64-bit ABIs the worker runs on), so a
launch passes the handles it decoded as they are, with no cffi cast per launch.
"""
from __future__ import annotations

import cffi

_ffi = cffi.FFI()
_ffi.cdef("""
int cuLaunchKernel(uintptr_t f, unsigned int gridX, unsigned int gridY, unsigned int gridZ,
                   unsigned int blockX, unsigned int blockY, unsigned int blockZ,
                   unsigned int sharedMemBytes, uintptr_t stream, void **kernelParams,
                   uintptr_t *extra);
""")
_BUFFER_POINTER, _BUFFER_SIZE = 1, 2      # CU_LAUNCH_PARAM_BUFFER_POINTER, _SIZE
NULL = _ffi.NULL


class Launcher:
    def __init__(self, library: str = "libcuda.so.1"):
        self._lib = _ffi.dlopen(library)      # another library: the tests' stub driver
        self.cu_launch_kernel = self._lib.cuLaunchKernel
        self.address = int(_ffi.cast("uintptr_t", self.cu_launch_kernel))
        self.size = _ffi.new("size_t *")
        # {BUFFER_POINTER, <args>, BUFFER_SIZE, &size, END}, reused by every launch:
        # a launch stores its argument bytes' address in extra[1], their length in size[0]
        self.extra = _ffi.new("uintptr_t[5]", [_BUFFER_POINTER, 0, _BUFFER_SIZE,
                                               int(_ffi.cast("uintptr_t", self.size)), 0])

    def launch(self, function: int, grid: tuple, block: tuple, shared: int, stream: int,
               args) -> int:
        """cuLaunchKernel with the packed argument bytes (a buffer); the CUresult."""
        if not len(args):
            return self.cu_launch_kernel(function, *grid, *block, shared, stream, NULL, NULL)
        buf = _ffi.from_buffer(args)   # alive until the driver has copied the bytes
        self.extra[1] = int(_ffi.cast("uintptr_t", buf))
        self.size[0] = len(args)
        return self.cu_launch_kernel(function, *grid, *block, shared, stream, NULL,
                                     self.extra)
