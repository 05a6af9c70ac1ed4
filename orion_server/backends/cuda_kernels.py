"""GPU backend: modules, kernels, launches, function attributes and occupancy."""
from __future__ import annotations

import struct

import numpy as np
from cuda.bindings import driver as drv
from cuda.bindings import runtime as rt

from .. import backend as B
from . import fatbin
from .cuda_common import DIM3, FUNC_ATTR_ORDER, FUNC_ATTRS, status


class KernelCalls:
    # ---- modules and kernels ----
    def orionModuleLoad(self, module: int, image, size: int):
        self.images.setdefault(module, bytes(image))
        return (status(self._module(module)[0]),)

    def _module(self, module: int):
        key = (module, self.vgpus[self.device].gpu_index)
        if key in self.modules:
            return 0, self.modules[key]
        if module not in self.images:
            return B.cudaErrorInvalidResourceHandle, None
        variables = self._variables_size(module)
        try:
            self._reserve(variables)
        except B.CudaError as e:
            return e.status, None
        err, mod = drv.cuModuleLoadData(self.images[module])
        if err:
            return status(err), None
        self.modules[key] = mod
        self.used[self.device] += variables   # the module's variables live as long as it
        return 0, mod

    def _variables_size(self, module: int) -> int:
        """Bytes of the device variables that loading `module` on the current GPU
        allocates (read from its fat binary: the driver does not say)."""
        gpu = self.vgpus[self.device].gpu_index
        _, major = rt.cudaDeviceGetAttribute(rt.cudaDeviceAttr.cudaDevAttrComputeCapabilityMajor,
                                             gpu)
        _, minor = rt.cudaDeviceGetAttribute(rt.cudaDeviceAttr.cudaDevAttrComputeCapabilityMinor,
                                             gpu)
        try:
            code = fatbin.parse_fatbin(self.images[module]).for_device(major, minor)
        except B.CudaError:
            return 0   # compressed or unknown code: the driver's load below says if it fails
        return sum(v.size for v in code.variables.values())

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
        # (CUfunction, parameter offsets, bytes of packed arguments: what the client sends)
        self.functions[int(func)] = (func, np.array([o for o, _ in params], dtype=np.uint64),
                                     max((o + s for o, s in params), default=0))
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
        if not self.fast_stream_known(stream):
            return (B.cudaErrorInvalidResourceHandle,)
        if len(args) != size or size != entry[2]:    # the driver would read past them
            return (B.cudaErrorInvalidValue,)
        if not flags & 1:
            return (self.driver.launch(function, DIM3.unpack(grid), DIM3.unpack(block),
                                         shared, stream, args),)
        # cooperative launches take no packed buffer: one pointer per parameter
        func, offsets, _ = entry
        buf = np.frombuffer(args, dtype=np.uint8)
        pointers = offsets + np.uint64(buf.ctypes.data) if len(offsets) else offsets
        (err,) = drv.cuLaunchCooperativeKernel(func, *DIM3.unpack(grid), *DIM3.unpack(block),
                                               shared, stream,
                                               pointers.ctypes.data if len(offsets) else 0)
        return (status(err),)

    def fast_args_size(self, function: int):
        entry = self.functions.get(function)
        return None if entry is None else entry[2]

    def orionFuncGetAttributes(self, function: int):
        entry = self.functions.get(function)
        if entry is None:
            return (B.cudaErrorInvalidResourceHandle,)
        values = []
        for attr in FUNC_ATTR_ORDER:
            err, value = drv.cuFuncGetAttribute(attr, entry[0])
            values.append(0 if err else value)
        shared, const, local, *ints = values
        return (0, FUNC_ATTRS.pack(shared, const, local, *ints, *([0] * 16)))

    def orionFuncSetAttribute(self, function: int, attr: int, value: int):
        entry = self.functions.get(function)
        if entry is None:
            return (B.cudaErrorInvalidResourceHandle,)
        return (status(drv.cuFuncSetAttribute(entry[0], drv.CUfunction_attribute(attr),
                                               value)[0]),)

    def orionFuncSetCacheConfig(self, function: int, config: int):
        entry = self.functions.get(function)
        if entry is None:
            return (B.cudaErrorInvalidResourceHandle,)
        return (status(drv.cuFuncSetCacheConfig(entry[0], drv.CUfunc_cache(config))[0]),)

    def orionOccupancy(self, function: int, block: int, smem: int, flags: int):
        entry = self.functions.get(function)
        if entry is None:
            return (B.cudaErrorInvalidResourceHandle,)
        err, n = drv.cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(entry[0], block,
                                                                          smem, flags)
        return (status(err),) if err else (0, n)

    def orionOccupancyAvailableSMem(self, function: int, blocks: int, block: int):
        entry = self.functions.get(function)
        if entry is None:
            return (B.cudaErrorInvalidResourceHandle,)
        err, n = drv.cuOccupancyAvailableDynamicSMemPerBlock(entry[0], blocks, block)
        return (status(err),) if err else (0, n)
