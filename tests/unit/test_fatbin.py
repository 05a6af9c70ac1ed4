"""Fat binary parsing, and the host backend's kernel calls, on binaries nvcc builds now.

The layouts the parser relies on are nvcc's, not ours: every test here compiles real
CUDA code (skipped without nvcc) and checks what the parser reads against what the
source declares.
"""
import json
import os
import random
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from orion_server.backend import CudaError, VGpu
from orion_server.backends import fatbin
from orion_server.backends.host import HostBackend

NVCC = os.environ.get("NVCC") or shutil.which("nvcc") or "/usr/local/cuda/bin/nvcc"
GENCODE = ["-gencode", "arch=compute_75,code=sm_75",
           "-gencode", "arch=compute_90,code=[sm_90,compute_90]"]
needs_nvcc = pytest.mark.skipif(not Path(NVCC).exists() and not shutil.which(NVCC),
                                reason="nvcc is not installed")

SOURCE = r"""
struct S { int a; double b; char c; };                  // 24 bytes, align 8
struct Big { int v[8000]; };                             // 32000 bytes
namespace ns { struct Pair { float x; float y; }; }

__device__ int d_table[4] = {11, 22, 33, 44};
__device__ double d_zeros[10];
__constant__ float c_coeffs[3] = {1.5f, 2.5f, 3.5f};
namespace ns { __device__ long long counter = 42; }

__device__ __noinline__ int helper(int x) { return x * 3; }

__global__ void k(int* p, S s, float f) { p[0] = helper(s.a) + f + s.b + s.c; }
__global__ void no_params() {}
__global__ void scalars(char a, short b, int c, long long d, float e, double f, char g,
                        void* h, bool i, unsigned char j, short2 k2, float4 l, double2 m) {}
__global__ void big_param(Big b, int* out) { out[0] = b.v[7999] + d_table[1] + c_coeffs[2]; }
template <typename T> __global__ void tmpl(T* x, T v) { x[0] = v; }
template __global__ void tmpl<double>(double*, double);
template __global__ void tmpl<ns::Pair>(ns::Pair*, ns::Pair);
extern "C" __global__ void c_linkage(float x, int* out) { out[0] = (int)x + ns::counter; }
__global__ void __launch_bounds__(256) bounded(float* x) {
  __shared__ float tile[1000];
  tile[threadIdx.x] = x[threadIdx.x];
  __syncthreads();
  x[threadIdx.x] = tile[999 - threadIdx.x] + d_zeros[threadIdx.x % 10];
}
int main() { return 0; }
"""

# mangled name -> (offset, size) of each parameter, in order
EXPECTED_PARAMS = {
    "_Z1kPi1Sf": [(0, 8), (8, 24), (32, 4)],
    "_Z9no_paramsv": [],
    "_Z7scalarscsixfdcPvbh6short26float47double2": [
        (0, 1), (2, 2), (4, 4), (8, 8), (16, 4), (24, 8), (32, 1), (40, 8), (48, 1),
        (49, 1), (52, 4), (64, 16), (80, 16)],
    "_Z9big_param3BigPi": [(0, 32000), (32000, 8)],
    "_Z4tmplIdEvPT_S0_": [(0, 8), (8, 8)],
    "_Z4tmplIN2ns4PairEEvPT_S2_": [(0, 8), (8, 8)],
    "c_linkage": [(0, 4), (8, 8)],
    "_Z7boundedPf": [(0, 8)],
}


def _sections(elf: bytes) -> dict[str, bytes]:
    """Section name -> bytes of a 64-bit little-endian ELF (a host executable)."""
    (shoff,) = struct.unpack_from("<Q", elf, 0x28)
    entsize, count, strndx = struct.unpack_from("<HHH", elf, 0x3A)
    headers = [struct.unpack_from("<IIQQQQ", elf, shoff + i * entsize) for i in range(count)]
    names = headers[strndx][4]
    return {elf[names + h[0]:elf.index(b"\0", names + h[0])].decode(): elf[h[4]:h[4] + h[5]]
            for h in headers}


def _split(section: bytes) -> list[bytes]:
    """The fat binaries one .nv_fatbin section holds back to back."""
    found, pos = [], 0
    while pos + 16 <= len(section):
        magic, _, header_size, size = struct.unpack_from("<IHHQ", section, pos)
        if magic != fatbin.FATBIN_MAGIC:
            break
        found.append(section[pos:pos + header_size + size])
        pos += header_size + size
    return found


def build(tmp: Path, source: str, *flags: str) -> list[bytes]:
    """The fat binaries nvcc embeds in the executable it builds from `source`."""
    (tmp / "k.cu").write_text(source)
    subprocess.run([NVCC, "-cudart", "shared", *GENCODE, *flags, "-o", str(tmp / "k"),
                    str(tmp / "k.cu")], check=True, capture_output=True)
    return _split(_sections((tmp / "k").read_bytes())[".nv_fatbin"])


def build_fatbin(tmp: Path, source: str, *flags: str) -> bytes:
    """The fat binary of `source`'s kernels: of the executable's fat binaries, the one
    whose cubins have .nv.info.<kernel> sections."""
    candidates = build(tmp, source, *flags)
    with_kernels = [fb for fb in candidates if b".nv.info._Z" in fb or b".nv.info.c_" in fb]
    assert len(with_kernels) == 1, f"{len(candidates)} fat binaries, " \
                                   f"{len(with_kernels)} with kernels"
    return with_kernels[0]


@pytest.fixture(scope="module")
def image_bytes(tmp_path_factory) -> bytes:
    if not (Path(NVCC).exists() or shutil.which(NVCC)):
        pytest.skip("nvcc is not installed")
    return build_fatbin(tmp_path_factory.mktemp("fatbin"), SOURCE)


@pytest.fixture(scope="module")
def image(image_bytes) -> fatbin.Image:
    return fatbin.parse_fatbin(image_bytes)


# ---------------------------------------------------------------- parsing
@needs_nvcc
def test_cubins_of_every_architecture_and_the_ptx_are_seen(image):
    assert sorted(c.arch for c in image.cubins) == [75, 90]
    assert image.ptx == (90,)
    assert image.for_device(9, 0).arch == 90
    assert image.for_device(7, 5).arch == 75
    assert image.for_device(10, 0).arch == 100        # from the compute_90 PTX
    with pytest.raises(CudaError) as e:               # sm_75 does not run on 8.0, PTX 90 either
        image.for_device(8, 0)
    assert e.value.status == fatbin.cudaErrorNoKernelImageForDevice


@needs_nvcc
@pytest.mark.parametrize("arch", [75, 90])
def test_parameter_layouts_match_the_source(image, arch):
    cubin = next(c for c in image.cubins if c.arch == arch)
    assert {name: list(k.params) for name, k in cubin.kernels.items()} == EXPECTED_PARAMS
    assert cubin.kernels["_Z1kPi1Sf"].param_end == 36
    assert cubin.kernels["_Z9no_paramsv"].param_end == 0
    assert cubin.kernels["_Z9big_param3BigPi"].param_end == 32008


@needs_nvcc
def test_device_functions_are_not_kernels(tmp_path):
    # with -rdc the helper keeps its own .nv.info section; it is still no kernel
    cubin = fatbin.parse_fatbin(build_fatbin(tmp_path, SOURCE, "-rdc=true")).for_device(9, 0)
    assert "_Z6helperi" not in cubin.kernels
    assert set(cubin.kernels) == set(EXPECTED_PARAMS)


@needs_nvcc
def test_kernel_resources(image):
    bounded = image.for_device(9, 0).kernels["_Z7boundedPf"]
    assert bounded.max_threads == 256
    assert bounded.shared == 4000          # without sm_90's reserved 1 KiB
    assert bounded.registers > 0
    assert next(c for c in image.cubins if c.arch == 75).kernels["_Z7boundedPf"].shared == 4000
    assert image.for_device(9, 0).kernels["_Z9no_paramsv"].max_threads == 0


@needs_nvcc
def test_variables_with_their_sizes_and_initial_bytes(image):
    for cubin in image.cubins:
        v = cubin.variables
        assert v["d_table"].size == 16 and v["d_table"].init == struct.pack("<4i", 11, 22, 33, 44)
        assert v["c_coeffs"].size == 12 and v["c_coeffs"].init == struct.pack("<3f", 1.5, 2.5, 3.5)
        assert v["d_zeros"].size == 80 and v["d_zeros"].init == b""
        assert v["_ZN2ns7counterE"].size == 8
        assert v["_ZN2ns7counterE"].init == struct.pack("<q", 42)


@needs_nvcc
def test_compressed_cubins_are_refused_clearly(tmp_path):
    for fat_binary in build(tmp_path, SOURCE, "-Xfatbin", "-compress-all"):
        with pytest.raises(CudaError) as e:
            fatbin.parse_fatbin(fat_binary)
        assert e.value.status == fatbin.cudaErrorNotSupported
        assert "compressed" in str(e.value)


@needs_nvcc
def test_only_the_first_fat_binary_of_the_buffer_counts(image_bytes):
    doubled = fatbin.parse_fatbin(image_bytes + b"\0" * 7 + image_bytes)
    assert set(doubled.for_device(9, 0).kernels) == set(EXPECTED_PARAMS)


def test_garbage_is_an_invalid_kernel_image():
    for data in (b"", b"\x50\xed\x55\xba", b"\0" * 64, b"hello world" * 10):
        with pytest.raises(CudaError) as e:
            fatbin.parse_fatbin(data)
        assert e.value.status == fatbin.cudaErrorInvalidKernelImage


def _only_cuda_errors(data: bytes) -> None:
    try:
        fatbin.parse_fatbin(data)
    except CudaError:
        pass


def test_random_bytes_never_raise_anything_else():
    rng = random.Random(1234)
    header = struct.pack("<IHHQ", fatbin.FATBIN_MAGIC, 1, 16, 200)
    for _ in range(2000):
        body = bytes(rng.getrandbits(8) for _ in range(rng.randrange(0, 300)))
        _only_cuda_errors(body)
        _only_cuda_errors(header + body)


@needs_nvcc
def test_truncated_and_corrupted_real_images_never_raise_anything_else(image_bytes):
    rng = random.Random(99)
    for cut in range(0, len(image_bytes), max(1, len(image_bytes) // 300)):
        _only_cuda_errors(image_bytes[:cut])
    for _ in range(400):
        damaged = bytearray(image_bytes)
        for _ in range(rng.randrange(1, 16)):
            damaged[rng.randrange(len(damaged))] = rng.getrandbits(8)
        _only_cuda_errors(bytes(damaged))


# ------------------------------------------------- the host backend's kernel calls
MODULE = 0x1234_5678_9ABC_DEF0
INFO_SIZE = 4096


@pytest.fixture
def loaded(image_bytes, tmp_path):
    log = tmp_path / "launches.jsonl"
    b = HostBackend([VGpu(0, 0, 256 << 20, 100, "GPU-test")], launch_log=str(log))
    assert b.orionModuleLoad(MODULE, memoryview(image_bytes), len(image_bytes)) == (0,)
    yield b, log
    b.close()


def _info(b: HostBackend, name: str) -> tuple[int, list[tuple[int, int]]]:
    status, info = b.orionFunctionInfo(MODULE, name, INFO_SIZE, INFO_SIZE)
    assert status == 0 and len(info) == INFO_SIZE
    handle, count = struct.unpack_from("<QI", info)
    params = [struct.unpack_from("<II", info, 12 + 8 * i) for i in range(count)]
    assert not any(info[12 + 8 * count:])
    return handle, params


def _dim3(x, y=1, z=1) -> bytes:
    return struct.pack("<III", x, y, z)


def _launch(b, handle, args: bytes, grid=_dim3(1), block=_dim3(32), shared=0, stream=0):
    return b.orionLaunchKernel(handle, grid, block, shared, stream, 0, memoryview(args),
                               len(args))


@needs_nvcc
def test_function_info_gives_every_layout(loaded):
    b, _ = loaded
    handles = set()
    for name, params in EXPECTED_PARAMS.items():
        handle, got = _info(b, name)
        assert got == params, name
        handles.add(handle)
        assert _info(b, name)[0] == handle            # stable
    assert len(handles) == len(EXPECTED_PARAMS) and 0 not in handles


@needs_nvcc
def test_function_info_errors(loaded, image_bytes):
    b, _ = loaded
    with pytest.raises(CudaError) as e:
        b.orionFunctionInfo(MODULE + 1, "_Z1kPi1Sf", INFO_SIZE, INFO_SIZE)
    assert e.value.status == 400
    with pytest.raises(CudaError) as e:
        b.orionFunctionInfo(MODULE, "_Z6helperi", INFO_SIZE, INFO_SIZE)
    assert e.value.status == 98
    with pytest.raises(CudaError) as e:
        b.orionFunctionInfo(MODULE, "_Z1kPi1Sf", 12 + 8 * 3 - 1, 12 + 8 * 3 - 1)
    assert e.value.status == 1
    assert b.orionFunctionInfo(MODULE, "_Z1kPi1Sf", 36, 36)[0] == 0   # exactly enough
    # a module id already loaded is not parsed again
    assert b.orionModuleLoad(MODULE, memoryview(b"garbage"), 7) == (0,)
    with pytest.raises(CudaError) as e:
        b.orionModuleLoad(MODULE + 2, memoryview(b"garbage"), 7)
    assert e.value.status == 200


@needs_nvcc
def test_launches_are_validated_and_recorded(loaded):
    b, log = loaded
    handle, _ = _info(b, "_Z1kPi1Sf")
    args = struct.pack("<Q", 0xDEAD) + bytes(range(24)) + struct.pack("<f", 2.5)
    status, stream = b.cudaStreamCreate()
    assert _launch(b, handle, args, grid=_dim3(4, 2), block=_dim3(128), shared=256,
                   stream=stream) == (0,)
    record = {"function": "_Z1kPi1Sf", "grid": [4, 2, 1], "block": [128, 1, 1],
              "shared_mem": 256, "stream": stream, "args_hex": args.hex()}
    assert b.launches[-1].items() >= record.items()
    assert json.loads(log.read_text().splitlines()[-1]).items() >= record.items()

    def status_of(**kw):
        try:
            return _launch(b, **{"handle": handle, "args": args, **kw})[0]
        except CudaError as e:
            return e.status
    assert status_of(args=args[:-1]) == 1                     # argument bytes != layout
    assert status_of(block=_dim3(0)) == 9
    assert status_of(block=_dim3(1025)) == 9
    assert status_of(block=_dim3(32, 32, 2)) == 9             # 2048 threads
    assert status_of(block=_dim3(1, 1, 65)) == 9
    assert status_of(grid=_dim3(1, 65536)) == 9
    assert status_of(shared=48 * 1024 + 1) == 1               # over the default limit
    assert status_of(stream=0xBAD) == 400
    assert status_of(handle=0xBAD) == 400
    assert status_of(handle=0) == 98
    assert len(b.launches) == 1 and len(log.read_text().splitlines()) == 1

    no_params, _ = _info(b, "_Z9no_paramsv")
    assert _launch(b, no_params, b"") == (0,)
    big, _ = _info(b, "_Z9big_param3BigPi")
    assert _launch(b, big, bytes(32008)) == (0,)
    assert len(b.launches) == 3


@needs_nvcc
def test_function_attributes_and_occupancy(loaded):
    b, _ = loaded
    bounded, _ = _info(b, "_Z7boundedPf")
    status, raw = b.orionFuncGetAttributes(bounded)
    assert status == 0 and len(raw) == 144
    shared, const, local, max_threads, regs, ptx, binary, _, max_dynamic = \
        struct.unpack_from("<QQQ6i", raw)
    assert (shared, max_threads, binary) == (4000, 256, 90)
    assert regs > 0 and max_dynamic == 49152 - 4000
    with pytest.raises(CudaError) as e:            # over __launch_bounds__
        _launch(b, bounded, bytes(8), block=_dim3(512))
    assert e.value.status == 701

    k, _ = _info(b, "_Z1kPi1Sf")
    args = bytes(36)
    with pytest.raises(CudaError):
        _launch(b, k, args, shared=64 * 1024)
    assert b.orionFuncSetAttribute(k, 8, 64 * 1024) == (0,)   # MaxDynamicSharedMemorySize
    assert struct.unpack_from("<QQQ6i", b.orionFuncGetAttributes(k)[1])[8] == 64 * 1024
    assert _launch(b, k, args, shared=64 * 1024) == (0,)
    with pytest.raises(CudaError):
        b.orionFuncSetAttribute(k, 8, 232448 + 1)
    assert b.orionFuncSetCacheConfig(k, 1) == (0,)

    status, blocks = b.orionOccupancy(k, 256, 0, 0)
    assert status == 0 and 1 <= blocks <= 32
    assert b.orionOccupancy(k, 2048, 0, 0) == (0, 0)
    status, available = b.orionOccupancyAvailableSMem(k, 2, 256)
    assert status == 0 and 0 < available <= 232448


@needs_nvcc
def test_variables_are_device_memory_with_their_initial_bytes(loaded):
    b, _ = loaded
    status, address, size = b.orionVarInfo(MODULE, "d_table")
    assert (status, size) == (0, 16)
    assert b.orionVarInfo(MODULE, "d_table") == (0, address, 16)           # allocated once
    assert b.orionMemcpyDtoH(16, address, 16, 0)[1] == struct.pack("<4i", 11, 22, 33, 44)
    b.orionMemcpyHtoD(address + 4, memoryview(struct.pack("<i", -7)), 4, 0)
    assert b.orionMemcpyDtoH(8, address, 8, 0)[1] == struct.pack("<2i", 11, -7)
    assert b.orionPointerType(address + 8) == (0, 2)

    _, c_address, c_size = b.orionVarInfo(MODULE, "c_coeffs")
    assert b.orionMemcpyDtoH(12, c_address, 12, 0)[1] == struct.pack("<3f", 1.5, 2.5, 3.5)
    _, z_address, z_size = b.orionVarInfo(MODULE, "d_zeros")
    assert b.orionMemcpyDtoH(80, z_address, 80, 0)[1] == bytes(80)
    with pytest.raises(CudaError) as e:
        b.orionVarInfo(MODULE, "no_such_symbol")
    assert e.value.status == 13
    with pytest.raises(CudaError) as e:
        b.cudaFree(address)                   # a symbol is not an allocation
    assert e.value.status == 1


@needs_nvcc
def test_captured_launches_are_recorded_when_the_graph_runs(loaded):
    b, log = loaded
    handle, _ = _info(b, "_Z9no_paramsv")
    _, stream = b.cudaStreamCreate()
    b.orionStreamBeginCapture(stream, 0)
    _launch(b, handle, b"", stream=stream)
    _launch(b, handle, b"", grid=_dim3(2), stream=stream)
    _, graph = b.orionStreamEndCapture(stream)
    assert b.launches == []
    _, graph_exec = b.cudaGraphInstantiate(graph, 0)
    for _ in range(3):
        b.cudaGraphLaunch(graph_exec, stream)
    assert [r["grid"][0] for r in b.launches] == [1, 2] * 3
    assert len(log.read_text().splitlines()) == 6
