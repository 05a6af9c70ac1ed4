"""The worker's per-launch cost, measured on the CPU alone (no GPU needed).

Asynchronous kernel launches through Orion are bound by the worker's Python: ring read,
header parse, dispatch, argument decode, the backend's checks, the driver call. This
fills a real call ring (the client side is native/src/ring.c, built here with gcc) with
`orionLaunchKernel` records laid out byte for byte as the shim's generated stub writes
them (native/generated/cudart_stubs.c), then times the worker's own ring loop
(`worker._serve_ring`: the launch fast path, or `Session.handle`) draining them into

  cuda   the GPU backend (CudaBackend, its checks and the cffi launch path) with the
         driver stubbed: cuInit / cudaSetDevice / cudaFree answer success, and
         cuLaunchKernel is a C function of a stub library that returns 0 at once. So
         everything but the driver's own work is measured.
  host   the host-memory test backend (a kernel of a fat binary nvcc builds here; skipped
         without nvcc).

    python3 benchmarks/worker_launch.py [--backend cuda,host] [--args 0,32] [--streams 1]
                    [--launches 6000] [--rounds 15] [--profile] [--generic] [--root DIR]

`--generic` turns the fast path off (orion_server/fast_path.py: every launch
through Session.handle); `--root` measures the orion_server of another tree (e.g. an
older commit's, from `git archive`), whose cffi driver finds the stub driver because it is
loaded first under the soname libcuda.so.1.

Prints µs per launch (median and best round; each round drains --launches records that
were queued before it started, so the client's cost is not in the figure) and
launches/s. `--profile` prints cProfile's top entries of one round instead. The figures
are this machine's CPU's: compare before/after on the same machine only.
"""
from __future__ import annotations

import argparse
import cProfile
import ctypes
import logging
import os
import pstats
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if "--root" in sys.argv:
    sys.path.insert(0, sys.argv[sys.argv.index("--root") + 1])
else:
    sys.path.insert(0, str(ROOT))

import zmq  # noqa: E402

from orion_server import backend as B  # noqa: E402
from orion_server import ring, wire, worker  # noqa: E402
from orion_server.peer import Peer  # noqa: E402
from orion_server.generated.cudart_table import CALLS  # noqa: E402

LAUNCH_ID = next(i for i, c in CALLS.items() if c.name == "orionLaunchKernel")
# orionLaunchKernel's arguments as the generated C stub packs them: function, grid,
# block, sharedMem, stream, flags, then the in_buf's u64 length, then argsSize
LAUNCH_ARGS = struct.Struct("<Q12s12sQQIQQ")
DIM3 = struct.Struct("<III")
FUNCTION = 0x7F00_0000_1000
STREAMS = [0x5555_0000_0000 + 0x100 * i for i in range(8)]

STUB_CUDA = r"""
int cuLaunchKernel(void *f, unsigned gx, unsigned gy, unsigned gz, unsigned bx,
                   unsigned by, unsigned bz, unsigned shared, void *stream, void **params,
                   void **extra) { return 0; }
int cuMemcpyAsync(unsigned long long dst, unsigned long long src, unsigned long count,
                  void *stream) { return 0; }
int cuStreamSynchronize(void *stream) { return 0; }
int cuStreamQuery(void *stream) { return 0; }
int cuEventRecord(void *event, void *stream) { return 0; }
int cuEventRecordWithFlags(void *event, void *stream, unsigned flags) { return 0; }
int cuEventQuery(void *event) { return 0; }
int cuEventSynchronize(void *event) { return 0; }
int cuCtxSynchronize(void) { return 0; }
"""
KERNEL_SOURCE = r"""
__global__ void empty_kernel() {}
__global__ void layer(float *x, const float *w, float *y, float *z)
{ int i = blockIdx.x * blockDim.x + threadIdx.x; y[i] = x[i] * w[i] + z[i]; }
"""


class CFrame(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def gcc_shared(source_path: Path, out: Path, *extra: str) -> Path:
    """A shared library of a C file and any further sources or flags (for the ring's
    client side and the stub driver)."""
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(out), str(source_path),
                    *extra], check=True)
    return out


class Client:
    """The client's half of the ring (native/src/ring.c through ctypes)."""

    def __init__(self, tmp: Path):
        src = ROOT / "native" / "src"
        lib = ctypes.CDLL(str(gcc_shared(src / "ring.c", tmp / "libring.so",
                                         str(src / "shm_object.c"), "-lrt")))
        lib.orion_ring_create.restype = ctypes.c_void_p
        lib.orion_ring_name.restype = ctypes.c_char_p
        lib.orion_ring_name.argtypes = [ctypes.c_void_p]
        lib.orion_ring_destroy.argtypes = [ctypes.c_void_p]
        lib.orion_ring_put.argtypes = [ctypes.c_void_p, ctypes.POINTER(CFrame),
                                       ctypes.c_int, ctypes.c_uint, ctypes.c_int]
        self.lib, self.r = lib, lib.orion_ring_create()
        self.name = lib.orion_ring_name(self.r).decode()
        self.seq = 0

    def put_launch(self, function: int, stream: int, args: bytes) -> None:
        self.put(LAUNCH_ID, LAUNCH_ARGS.pack(function, DIM3.pack(1, 1, 1), DIM3.pack(1, 1, 1),
                                             0, stream, 0, len(args), len(args)),
                 wire.FLAG_ASYNC, [args])

    def put(self, call_id: int, args: bytes, flags: int = 0, bulk=()) -> None:
        """A request as the shim's ring.c writes it: header and arguments, then bulk frames."""
        self.seq += 1
        frames = [wire.pack_request_header(call_id, self.seq, flags) + args, *bulk]
        bufs = [ctypes.create_string_buffer(f, max(len(f), 1)) for f in frames]
        array = (CFrame * len(frames))(*(CFrame(ctypes.addressof(b), len(f))
                                         for b, f in zip(bufs, frames)))
        if self.lib.orion_ring_put(self.r, array, len(frames), 0, 1000) != 0:
            raise RuntimeError("the ring is full: fewer requests per round")

    def close(self) -> None:
        self.lib.orion_ring_destroy(self.r)


class GoneMonitor:
    """A socket monitor that says the client disconnected: ends _serve_ring once the
    ring has been drained."""

    def __init__(self):
        self.events = 1

    def poll(self, timeout=0):
        return self.events > 0

    def recv_multipart(self, flags=0):
        self.events -= 1
        return [struct.pack("=hi", zmq.EVENT_DISCONNECTED, 0), b"ipc://bench"]


def cuda_backend(tmp: Path, args_size: int):
    """CudaBackend with the driver stubbed out; a kernel handle and streams of its own."""
    import numpy as np
    from cuda.bindings import driver as drv
    from cuda.bindings import runtime as rt

    from orion_server.backends import cuda

    drv.cuInit = lambda flags: (0,)
    rt.cudaSetDevice = lambda device: (0,)
    rt.cudaFree = lambda ptr: (0,)
    stub_c = tmp / "stub_cuda.c"
    stub_c.write_text(STUB_CUDA)
    # loaded first under the driver's soname: cuda_driver's dlopen("libcuda.so.1") finds it
    ctypes.CDLL(str(gcc_shared(stub_c, tmp / "libcuda_stub.so", "-Wl,-soname,libcuda.so.1")),
                mode=ctypes.RTLD_GLOBAL)
    backend = cuda.CudaBackend([B.VGpu(0, 0, 1 << 30, 100)])
    # as orionFunctionInfo records a kernel: CUfunction, parameter offsets, argument bytes
    offsets = np.array(range(0, args_size, 8), dtype=np.uint64)
    backend.functions[FUNCTION] = (object(), offsets, args_size)
    backend.streams.update(STREAMS)
    return backend, FUNCTION, STREAMS


def host_backend(tmp: Path, args_size: int):
    """HostBackend with a module nvcc builds now: (backend, function, streams)."""
    nvcc = shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
    if not Path(nvcc).exists():
        return None
    from orion_server.backends.host import HostBackend
    src = tmp / "kernels.cu"
    src.write_text(KERNEL_SOURCE)
    fatbin = tmp / "kernels.fatbin"
    subprocess.run([nvcc, "-fatbin", "-gencode", "arch=compute_90,code=sm_90", "-o",
                    str(fatbin), str(src)], check=True)
    image = fatbin.read_bytes()
    backend = HostBackend([B.VGpu(0, 0, 1 << 30, 100)])
    assert backend.orionModuleLoad(1, memoryview(image), len(image)) == (0,)
    if args_size not in (0, 32):
        raise SystemExit("the host backend's kernels take 0 or 32 bytes of arguments")
    name = "_Z12empty_kernelv" if args_size == 0 else "_Z5layerPfPKfS_S_"
    status, info = backend.orionFunctionInfo(1, name, 4096, 4096)
    assert status == 0
    function, count = struct.unpack_from("<QI", info)
    streams = []
    for _ in range(8):
        status, stream = backend.cudaStreamCreateWithFlags(1)
        streams.append(stream)
    return backend, function, streams


def measure(backend, function, streams, args_size, launches, rounds, tmp, profile):
    logging.disable(logging.WARNING)
    worker.RING_IDLE_S = 0.0     # an empty ring ends the round at once (GoneMonitor)
    client = Client(tmp)
    session = worker.Session(backend)
    args = bytes(range(args_size))
    times = []
    try:
        for r in range(rounds + 1):
            for i in range(launches):
                client.put_launch(function, streams[i % len(streams)], args)
            call_ring = ring.CallRing(client.name)
            profiler = cProfile.Profile() if profile and r == rounds else None
            t0 = time.perf_counter()
            if profiler:
                profiler.enable()
            peer = Peer("bench")
            peer.fd = 0                # the client spoke on the connection GoneMonitor ends
            worker._serve_ring(call_ring, None, None, GoneMonitor(), session, peer)
            if profiler:
                profiler.disable()
            elapsed = time.perf_counter() - t0
            if r:                            # round 0 warms up
                times.append(elapsed / launches * 1e6)
            if session.pending_error or session.sticky_error:
                raise RuntimeError(f"launches failed: {session.pending_error} "
                                   f"{session.sticky_error}")
            if profiler:
                pstats.Stats(profiler).sort_stats("tottime").print_stats(18)
    finally:
        client.close()
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="cuda,host")
    parser.add_argument("--args", default="0,32", help="kernel argument bytes, a list")
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--launches", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--generic", action="store_true",
                        help="no launch fast path: every launch through Session.handle")
    parser.add_argument("--root", help="the tree whose orion_server is measured")
    opts = parser.parse_args(argv)
    if opts.generic:
        try:
            from orion_server import fast_path
            fast_path.attach = lambda *args: None
        except ImportError:
            pass                  # a tree from before the fast path
    print(f"# {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, no GPU (CPU only); "
          f"orion_server of {Path(worker.__file__).parents[1]}"
          f"{', fast path off' if opts.generic else ''}")
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        for kind in opts.backend.split(","):
            for args_size in (int(a) for a in opts.args.split(",")):
                made = (cuda_backend if kind == "cuda" else host_backend)(tmp, args_size)
                if made is None:
                    print(f"{kind}: skipped (no nvcc)")
                    continue
                backend, function, streams = made
                times = measure(backend, function, streams[:opts.streams], args_size,
                                opts.launches, opts.rounds, tmp, opts.profile)
                med = statistics.median(times)
                print(f"{kind:5s} args={args_size:3d}B streams={opts.streams}: "
                      f"{med:6.2f} us/launch median, {min(times):6.2f} best "
                      f"({1e6 / min(times):,.0f} launches/s at best)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
