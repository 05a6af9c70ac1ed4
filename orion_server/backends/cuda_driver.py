"""The driver calls on the worker's hot paths, straight into libcuda through cffi.

cuda-python's wrappers cost microseconds of argument conversion per call (DESIGN.md:
1.4-2.9 µs for a `cudaStreamQuery`), which a synchronous round trip pays on top of
everything else. The calls every round trip or launch makes go to the driver through
cffi instead (~0.3 µs): launches, the copies of the memcpy handlers, stream and event
synchronisation (the current context's too), queries and records. The runtime's handles are the driver's (a
cudaStream_t is a CUstream, cudaStreamLegacy and cudaStreamPerThread are
CU_STREAM_LEGACY and CU_STREAM_PER_THREAD) and so are the status codes.

Handles are declared as integers (the same registers and stack slots as pointers in the
64-bit ABIs the worker runs on), so a call passes the handles it decoded as they are,
with no cffi cast per call.

A launch: the client already packed the arguments at the driver's offsets, so the packed
buffer goes to the driver as is (`CU_LAUNCH_PARAM_BUFFER_POINTER` in `extra`): no
pointer array, no copy.
"""
from __future__ import annotations

import cffi

_ffi = cffi.FFI()
_ffi.cdef("""
int cuLaunchKernel(uintptr_t f, unsigned int gridX, unsigned int gridY, unsigned int gridZ,
                   unsigned int blockX, unsigned int blockY, unsigned int blockZ,
                   unsigned int sharedMemBytes, uintptr_t stream, void **kernelParams,
                   uintptr_t *extra);
int cuMemcpyAsync(uintptr_t dst, uintptr_t src, size_t count, uintptr_t stream);
int cuStreamSynchronize(uintptr_t stream);
int cuStreamQuery(uintptr_t stream);
int cuEventRecord(uintptr_t event, uintptr_t stream);
int cuEventRecordWithFlags(uintptr_t event, uintptr_t stream, unsigned int flags);
int cuEventQuery(uintptr_t event);
int cuEventSynchronize(uintptr_t event);
int cuCtxSynchronize(void);
""")
_BUFFER_POINTER, _BUFFER_SIZE = 1, 2      # CU_LAUNCH_PARAM_BUFFER_POINTER, _SIZE
NULL = _ffi.NULL


class Driver:
    def __init__(self, library: str = "libcuda.so.1"):
        self._lib = lib = _ffi.dlopen(library)    # another library: the tests' stub driver
        self.cu_launch_kernel = lib.cuLaunchKernel
        # unified addressing: the direction follows from the pointers, which the
        # handlers have checked (device ranges, the session's shared segments)
        self.memcpy_async = lib.cuMemcpyAsync
        self.stream_synchronize = lib.cuStreamSynchronize
        self.stream_query = lib.cuStreamQuery
        self.event_record = lib.cuEventRecord
        self.event_record_with_flags = lib.cuEventRecordWithFlags
        self.event_query = lib.cuEventQuery
        self.event_synchronize = lib.cuEventSynchronize
        # what fast_path.py's C loop calls (Backend.fast_functions)
        self.addresses = {name: int(_ffi.cast("uintptr_t", function)) for name, function in (
            ("launch", lib.cuLaunchKernel), ("stream_synchronize", lib.cuStreamSynchronize),
            ("event_query", lib.cuEventQuery), ("event_synchronize", lib.cuEventSynchronize),
            ("memcpy_async", lib.cuMemcpyAsync),
            ("context_synchronize", lib.cuCtxSynchronize))}
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
