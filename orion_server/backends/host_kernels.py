"""Modules and kernels of the host backend: what the client learns of them, and
launches, which are checked as the driver checks them and then recorded."""
from __future__ import annotations

import struct

from .. import backend as B
from ..backend import CudaError
from . import fatbin, host_device
from .host_graph import NODE_KERNEL, Launch

cudaErrorInvalidConfiguration = 9
cudaErrorInvalidSymbol = 13
cudaErrorInvalidDeviceFunction = 98
cudaErrorLaunchOutOfResources = 701

_DIM3 = struct.Struct("<III")
_FUNCTION_INFO = struct.Struct("<QI")          # handle, parameter count
_PARAM_INFO = struct.Struct("<II")             # offset, size
# cudaFuncAttributes: 3 size_t, 13 int, 16 reserved int, padded to 8
_FUNC_ATTRIBUTES = struct.Struct("<QQQ13i68x")
_FUNC_MAX_DYNAMIC_SHARED = 8                    # cudaFuncAttributeMaxDynamicSharedMemorySize
# the other cudaFuncAttribute values a function keeps, with their defaults, in the order
# of cudaFuncAttributes' fields from preferredShmemCarveout on (10 is read-only)
_FUNC_SETTABLE = {9: -1, 10: 0, 11: 0, 12: 0, 13: 0, 15: 0, 14: 0}


class KernelCalls:
    """The module and kernel handlers of HostBackend, which mixes them in. Modules are
    kept by the client's content hash; a function handle names (module, kernel), whose
    code is picked for the current device at each use."""

    def _module(self, handle: int) -> fatbin.Image:
        return self._lookup(self.modules, handle, "module", B.cudaErrorInvalidResourceHandle)

    def _code(self, module: int) -> fatbin.Cubin:
        """The module's code for the current device, as the driver would pick it."""
        desc = self.devices[self.device].desc
        return self._module(module).for_device(desc["major"], desc["minor"])

    def _function(self, function: int) -> tuple[fatbin.Cubin, fatbin.Kernel]:
        if not function:
            raise CudaError(cudaErrorInvalidDeviceFunction, "null function")
        module, name = self._lookup(self.functions, function, "function",
                                    B.cudaErrorInvalidResourceHandle)
        code = self._code(module)
        return code, code.kernels[name]

    def _max_dynamic_shared(self, function: int, kernel: fatbin.Kernel) -> int:
        default = host_device.DEFAULT_SHARED_PER_BLOCK - kernel.shared
        return self.function_attrs[function].get(_FUNC_MAX_DYNAMIC_SHARED, default)

    def orionModuleLoad(self, module, image, size):
        if module not in self.modules:
            if len(image) != size:
                raise CudaError(B.cudaErrorInvalidValue, f"{len(image)} bytes sent for {size}")
            self.modules[module] = fatbin.parse_fatbin(image)
        # as cuModuleLoadData: fails without code for the device, and allocates (and
        # charges to the vGPU) every device variable of the module
        for name in self._code(module).variables:
            self.orionVarInfo(module, name)
        return (0,)

    def orionFunctionInfo(self, module, name, info_len, infoSize):
        kernel = self._code(module).kernels.get(name)
        if kernel is None:
            raise CudaError(cudaErrorInvalidDeviceFunction, f"no kernel {name}")
        need = _FUNCTION_INFO.size + _PARAM_INFO.size * len(kernel.params)
        if infoSize < need or info_len != infoSize:
            raise CudaError(B.cudaErrorInvalidValue, f"{infoSize} bytes for {need}")
        handle = self._function_handles.get((module, name))
        if handle is None:
            handle = self._function_handles[module, name] = self._new_handle()
            self.functions[handle] = (module, name)
            self.function_attrs[handle] = {}
        info = _FUNCTION_INFO.pack(handle, len(kernel.params)) + b"".join(
            _PARAM_INFO.pack(offset, size) for offset, size in kernel.params)
        return 0, info.ljust(infoSize, b"\0")

    def orionVarInfo(self, module, name):
        var = self._code(module).variables.get(name)
        if var is None:
            raise CudaError(cudaErrorInvalidSymbol, f"no device variable {name}")
        key = (self.device, module, name)
        if key not in self.variables:
            address = self.memory.allocate(self.device, max(var.size, 1), "var")
            self.memory.view(address, len(var.init))[:] = var.init
            self.variables[key] = address
        return 0, self.variables[key], var.size

    def _checked_launch(self, function, grid: bytes, block: bytes, shared: int, flags: int,
                        args, size: int) -> Launch:
        """A launch of `function`, checked as the driver checks it (stream launches and
        kernel nodes alike)."""
        _, kernel = self._function(function)
        grid, block = _DIM3.unpack(grid), _DIM3.unpack(block)
        threads = block[0] * block[1] * block[2]
        if (0 in grid or 0 in block
                or any(g > m for g, m in zip(grid, host_device.MAX_GRID_DIM))
                or any(b > m for b, m in zip(block, host_device.MAX_BLOCK_DIM))
                or threads > host_device.MAX_THREADS_PER_BLOCK):
            raise CudaError(cudaErrorInvalidConfiguration,
                            f"{kernel.name}<<<{grid}, {block}>>>")
        if threads > host_device.max_threads_per_block(kernel):   # registers, launch bounds
            raise CudaError(cudaErrorLaunchOutOfResources,
                            f"{kernel.name} runs at most "
                            f"{host_device.max_threads_per_block(kernel)} threads per block")
        if shared > self._max_dynamic_shared(function, kernel):
            raise CudaError(B.cudaErrorInvalidValue,
                            f"{kernel.name}: {shared} bytes of dynamic shared memory, "
                            f"{self._max_dynamic_shared(function, kernel)} allowed")
        if len(args) != size or size != kernel.param_end:
            raise CudaError(B.cudaErrorInvalidValue, f"{kernel.name} takes {kernel.param_end} "
                                                     f"bytes of arguments, got {len(args)}")
        return Launch(function, grid, block, shared, flags, bytes(args))

    def orionLaunchKernel(self, function, grid, block, sharedMem, stream, flags, args,
                          argsSize):
        launch = self._checked_launch(function, grid, block, sharedMem, flags, args, argsSize)
        self._submit(self._stream(stream), NODE_KERNEL, launch)
        return (0,)

    def fast_args_size(self, function):
        try:
            return self._function(function)[1].param_end
        except CudaError:
            return None

    def fast_stream_known(self, stream):
        try:
            self._stream(stream)
            return True
        except CudaError:
            return False

    def orionFuncGetAttributes(self, function):
        code, kernel = self._function(function)
        attrs = self.function_attrs[function]
        return 0, _FUNC_ATTRIBUTES.pack(
            kernel.shared, 0, kernel.local, host_device.max_threads_per_block(kernel),
            kernel.registers, code.arch, code.arch, 0,
            self._max_dynamic_shared(function, kernel), *(attrs.get(a, d) for a, d in
                                                          _FUNC_SETTABLE.items()))

    def orionFuncSetAttribute(self, function, attr, value):
        _, kernel = self._function(function)
        if attr == _FUNC_MAX_DYNAMIC_SHARED:
            optin = host_device.max_shared_per_block_optin(self.devices[self.device].desc)
            valid = 0 <= value <= optin - kernel.shared
        elif attr == 9:                          # carveout: a percentage, or -1 (default)
            valid = -1 <= value <= 100
        else:
            valid = attr in _FUNC_SETTABLE and attr != 10
        if not valid:
            raise CudaError(B.cudaErrorInvalidValue, f"function attribute {attr} = {value}")
        self.function_attrs[function][attr] = value
        return (0,)

    def orionFuncSetCacheConfig(self, function, cacheConfig):
        self._function(function)
        if not 0 <= cacheConfig <= 3:
            raise CudaError(B.cudaErrorInvalidValue, f"cache config {cacheConfig}")
        return (0,)

    def orionOccupancy(self, function, blockSize, dynamicSMemSize, flags):
        _, kernel = self._function(function)
        if flags & ~1:                           # cudaOccupancyDisableCachingOverride
            raise CudaError(B.cudaErrorInvalidValue, f"occupancy flags {flags:#x}")
        if not 0 < blockSize <= host_device.max_threads_per_block(kernel) or (
                dynamicSMemSize > self._max_dynamic_shared(function, kernel)):
            return 0, 0
        return 0, host_device.blocks_per_sm(kernel, self.devices[self.device].desc, blockSize,
                                            dynamicSMemSize)

    def orionOccupancyAvailableSMem(self, function, numBlocks, blockSize):
        _, kernel = self._function(function)
        if numBlocks <= 0 or not 0 < blockSize <= host_device.max_threads_per_block(kernel):
            raise CudaError(B.cudaErrorInvalidValue, f"{numBlocks} blocks of {blockSize}")
        return 0, host_device.available_dynamic_shared(kernel, self.devices[self.device].desc,
                                                       numBlocks, blockSize)
