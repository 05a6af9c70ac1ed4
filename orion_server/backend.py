"""What a worker replays calls on: the contract every backend keeps.

A backend has one method per call it implements, named exactly as the call
(`cudaMalloc`, `orionLaunchKernel`, ...). The worker passes every parameter that is not
an `out` (see `wire.decode_args`) and expects `(status, *outs)`: the CUDA status as an
int, then one value per `out`/`inout`/`out_buf` parameter in declaration order, and no
outputs when the status is not 0. That is cuda-python's own convention, so many
handlers of the GPU backend are a call and a conversion.

A call the backend lacks is answered with cudaErrorNotSupported. Limits (the vGPU's
memory and compute share) belong to the backend's allocation layer, checked before the
real call and recorded after it, never scattered over handlers.
"""
from __future__ import annotations

import struct
import uuid as uuidlib
from dataclasses import dataclass

cudaSuccess = 0
cudaErrorInvalidValue = 1
cudaErrorMemoryAllocation = 2
cudaErrorInvalidDevice = 101
cudaErrorInvalidResourceHandle = 400
cudaErrorNotReady = 600
cudaErrorNotSupported = 801
cudaErrorUnknown = 999

# orionDeviceSnapshot: what the client needs to answer device queries locally.
# u32 version, u32 attr count, char name[256], u8 uuid[16] (the vGPU's), u64 total
# memory, i32 attrs[SNAPSHOT_ATTRS] indexed by cudaDeviceAttr. native/src/device.c reads it.
SNAPSHOT_VERSION = 1
SNAPSHOT_ATTRS = 256
_SNAPSHOT = struct.Struct(f"<II256s16sQ{SNAPSHOT_ATTRS}i")
SNAPSHOT_SIZE = _SNAPSHOT.size


def pack_snapshot(name: str, uuid: str, total_mem: int, attrs: dict[int, int]) -> bytes:
    """`uuid` as NVIDIA writes it, `GPU-xxxxxxxx-...`: the client shows these 16 bytes."""
    values = [0] * SNAPSHOT_ATTRS
    for attr, value in attrs.items():
        if 0 <= attr < SNAPSHOT_ATTRS:
            values[attr] = value
    return _SNAPSHOT.pack(SNAPSHOT_VERSION, SNAPSHOT_ATTRS, name.encode()[:255],
                          uuidlib.UUID(uuid.removeprefix("GPU-")).bytes, total_mem, *values)


@dataclass(frozen=True)
class VGpu:
    """One vGPU of the session, as the controller granted it."""

    index: int            # device number the client sees (0..n-1)
    gpu_index: int        # physical GPU on this server
    memory_bytes: int
    ratio: int            # % of the physical GPU's compute
    uuid: str = ""        # the physical GPU's: NVML finds its sensors by it
    vgpu_uuid: str = ""   # the vGPU's own (orion_controller.identity): the client shows it


class CudaError(Exception):
    """Raised inside a backend to answer a call with a specific CUDA status."""

    def __init__(self, status: int, message: str = ""):
        super().__init__(message or f"CUDA error {status}")
        self.status = status


class Backend:
    """Base of the backends; `vgpus` are the session's devices, in client order."""

    def __init__(self, vgpus: list[VGpu]):
        self.vgpus = vgpus
        self.device = 0
        # set by the worker: runs host function <id> in the client, blocking until done
        self.run_host_function = lambda ident: None

    def set_device(self, index: int) -> None:
        """Make vGPU `index` current for the calls that follow (header's device field)."""
        if not 0 <= index < len(self.vgpus):
            raise CudaError(cudaErrorInvalidDevice, f"no vGPU {index} in this session")
        self.device = index

    def set_client_user(self, uid: int) -> None:
        """The client runs as user `uid` (known on its host only): the shared segments
        it asks this backend to map must be that user's files."""
        segments = getattr(self, "segments", None)
        if segments is not None:
            segments.owner_uid = uid

    def close(self) -> None:
        """Free everything the session holds; called once when the client goes away."""

    # ---- the fast path (orion_server/fast_path.py): the C loop's functions and checks ----
    def fast_functions(self) -> dict[str, int]:
        """The C functions the call loop calls, by name in `struct
        orion_call_loop_setup`: `launch` (cuLaunchKernel's signature, the argument bytes
        as CU_LAUNCH_PARAM_BUFFER_POINTER), `stream_synchronize`, `event_query`,
        `event_synchronize` (a handle -> a status), `context_synchronize` (the current
        device's: -> a status) and `memcpy_async` (cuMemcpyAsync's: dst, src, count,
        stream, unified addresses of this process). A call without its
        function takes the generic path. This one launches through `orionLaunchKernel`,
        so a backend's checks and errors hold for both paths."""
        if getattr(self, "orionLaunchKernel", None) is None:
            return {}
        if getattr(self, "_handler_launch", None) is None:
            from .fast_path import HandlerLaunch
            self._handler_launch = HandlerLaunch(self.orionLaunchKernel)
        return {"launch": self._handler_launch.address}

    def fast_args_size(self, function: int) -> int | None:
        """The argument bytes kernel `function` of this session takes; None when it is
        not one (the generic path answers its launches)."""
        return None

    def fast_stream_known(self, stream: int) -> bool:
        """Whether `stream` is the session's (or a special one)."""
        return False

    def fast_event_known(self, event: int) -> bool:
        return False

    def fast_device_range(self, ptr: int, count: int) -> tuple[int, int] | None:
        """(base, size) of the session's device memory holding ptr..ptr+count."""
        return None

    def fast_segment(self, ptr: int, count: int) -> tuple[int, int, int] | None:
        """(client base, size, base in this process) of the session's shared memory
        holding the client's ptr..ptr+count."""
        return None

    def drain(self, gpu_index: int) -> None:
        """Return once the session's work on physical GPU `gpu_index` has finished (the
        end of a compute-share turn)."""

    # Wire calls that exist because the client wraps the CUDA call (to track captures,
    # to mirror pageable memory); on the server they are the CUDA call itself.
    def orionStreamBeginCapture(self, *args):
        return self.cudaStreamBeginCapture(*args)

    def orionStreamEndCapture(self, *args):
        return self.cudaStreamEndCapture(*args)

    def orionGraphAddMemcpyNode(self, *args):
        return self.cudaGraphAddMemcpyNode(*args)

    def orionGraphAddMemcpyNode1D(self, *args):
        return self.cudaGraphAddMemcpyNode1D(*args)
