"""The server side of orionNvmlDeviceInfo: handler signatures match the call table,
and the host backend answers with its session's own memory accounting."""
import inspect

import pytest

from orion_server import backend as B
from orion_server.backends.cuda_nvml import NVML_INFO, NvmlCalls
from orion_server.backends.host_nvml import HostNvmlCalls
from orion_server.generated.nvml_table import CALLS


@pytest.mark.parametrize("mixin", [NvmlCalls, HostNvmlCalls])
def test_handlers_take_what_the_wire_gives(mixin):
    for call in CALLS.values():
        params = list(inspect.signature(getattr(mixin, call.name)).parameters)[1:]
        assert len(params) == len([p for p in call.params if p.kind != "out"]), call.name


class FakeHostSession(HostNvmlCalls):
    def __init__(self):
        self.vgpus = [B.VGpu(0, 0, 1 << 30, 50), B.VGpu(1, 1, 1 << 30, 50)]
        self.memory = type("Memory", (), {"used": [0, 5 << 20]})()


def test_the_host_backend_reports_the_sessions_memory():
    session = FakeHostSession()
    status, info = session.orionNvmlDeviceInfo(1, NVML_INFO.size, NVML_INFO.size)
    fields = NVML_INFO.unpack(info)
    assert status == 0 and fields[2] == 5 << 20
    assert fields[19].rstrip(b"\0") == b"580.65.06" and fields[20].startswith(b"16520")


def test_bad_requests_are_invalid_values():
    session = FakeHostSession()
    assert session.orionNvmlDeviceInfo(2, NVML_INFO.size, NVML_INFO.size) == (B.cudaErrorInvalidValue,)
    assert session.orionNvmlDeviceInfo(0, 8, 8) == (B.cudaErrorInvalidValue,)
