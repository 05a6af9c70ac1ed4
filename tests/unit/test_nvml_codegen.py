"""The NVML shim's spec: every nvml.h function exported unversioned, hand-written ones
really written, the wire layout agreed on both sides, and the built libraries."""
import re
import subprocess
from pathlib import Path

import pytest

from orion_client.codegen import spec
from orion_server.backends.cuda_nvml import NA, NVML_INFO, pack_info
from orion_server.generated import cudart_table, nvml_table

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lib():
    return spec.load(spec.SPEC_DIR / "nvml.toml")


def test_every_function_of_the_header_is_exported_without_a_version(lib):
    script = (ROOT / "native/generated/libnvml.map").read_text()
    assert re.search(r"\*/\n\{\n  global:", script), "the node must be anonymous"
    names = {f.name for f in lib.exported}
    assert len(names) > 390   # nvml.h of CUDA 13.0 declares 398
    for name in names | {"nvmlInit", "nvmlInit_v2", "nvmlDeviceGetCount",
                         "nvmlDeviceGetTemperature", "nvmlErrorString"}:
        assert f"    {name};" in script, name


def test_manual_functions_are_written_by_hand(lib):
    sources = "".join(p.read_text() for p in (ROOT / "native/src/nvml").glob("*.c"))
    for f in lib.functions:
        if f.manual:
            assert re.search(rf"^\S[^\n]*\b{f.name}\(", sources, re.M), f.name


def test_unserved_functions_answer_not_supported():
    stubs = (ROOT / "native/generated/nvml_stubs.c").read_text()
    assert 'return orion_nvml_unsupported("nvmlDeviceGetBAR1MemoryInfo");' in stubs


def test_call_ids_do_not_clash_with_the_runtime():
    assert not set(cudart_table.CALLS) & set(nvml_table.CALLS)


def test_the_info_layout_matches_the_c_struct():
    header = (ROOT / "native/src/nvml/nvml_shim.h").read_text()
    size = int(re.search(r"sizeof\(struct orion_nvml_info\) == (\d+)", header).group(1))
    assert NVML_INFO.size == size
    (call,) = nvml_table.CALLS.values()
    assert [p.kind for p in call.params] == ["val", "out_buf", "val"]
    fields = NVML_INFO.unpack(pack_info(5 << 20, {"temperature": 40, "clocks": [1, 2],
                                                  "driver_version": "580.1"}))
    assert fields[:3] == (1, 0, 5 << 20)
    assert fields[5] == 40 and fields[3] == NA                # temperature; gpu_util unknown
    assert fields[11:15] == (1, 2, NA, NA)
    assert fields[19].rstrip(b"\0") == b"580.1"


def test_the_built_shim_exports_and_needs_the_runtime(shim_dir):
    nvml = shim_dir / "libnvidia-ml.so.1"
    dynamic = subprocess.run(["readelf", "-d", "-W", str(nvml)], capture_output=True,
                             text=True, check=True).stdout
    assert "[libcudart.so.13]" in dynamic and "[libnvidia-ml.so.1]" in dynamic
    exported = subprocess.run(["nm", "-D", "--defined-only", str(nvml)], capture_output=True,
                              text=True, check=True).stdout
    assert " nvmlInit_v2\n" in exported and "@" not in exported   # unversioned
    runtime = subprocess.run(["nm", "-D", "--defined-only", str(shim_dir / "libcudart.so.13")],
                             capture_output=True, text=True, check=True).stdout
    assert "orion_init@@ORION_PRIVATE" in runtime and "cudaMalloc@@libcudart.so.13" in runtime
