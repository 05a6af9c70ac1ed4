"""The same-host call ring with real processes on the host backend: programs use it by
default and not with ORION_SHM_RING=0, and neither side hangs when the other is killed
in the middle of calls (both may be asleep on the ring's futex words)."""
from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import programs, shim_env
from orion_controller.client import ControlClient

# A loop of synchronous calls, as tight as it gets: killed, it dies inside a call.
LOOP = r"""
#include <cstdio>
#include <cuda_runtime.h>
int main() {
  int *d, h = 0;
  if (cudaMalloc(&d, 4) != cudaSuccess) return 2;
  printf("READY\n");
  fflush(stdout);
  for (;;) {
    cudaError_t e = cudaMemcpy(&h, d, 4, cudaMemcpyDeviceToHost);
    if (e != cudaSuccess) { printf("ERROR %s\n", cudaGetErrorName(e)); return 3; }
  }
}
"""


def logs(directory: Path) -> str:
    return "\n".join(p.read_text() for p in sorted(directory.glob("*.log")))


def sessions(pool) -> list:
    with ControlClient(f"127.0.0.1:{pool.server_port}", timeout_s=5) as client:
        return client.request({"op": "status"})["sessions"]


@pytest.fixture(scope="module")
def loop_program(program_dir) -> Path:
    source, exe = program_dir / "ring_loop.cu", program_dir / "ring_loop"
    source.write_text(LOOP)
    subprocess.run([programs.nvcc_path(), *programs.NVCC_FLAGS, "-o", str(exe), str(source)],
                   check=True, capture_output=True)
    return exe


@pytest.mark.parametrize("setting", ["1", "0"])
def test_programs_use_the_ring_unless_told_not_to(host_pool, shim_dir, program_dir, tmp_path,
                                                   setting):
    path = programs.build("streams_events", program_dir)
    proc = subprocess.run([str(path)], env=shim_env(host_pool, shim_dir, tmp_path,
                                                    ORION_SHM_RING=setting),
                          capture_output=True, text=True, timeout=120)
    assert programs.passed(proc, "streams_events"), proc.stdout + proc.stderr
    client, worker = logs(tmp_path / ".orion" / "log"), logs(host_pool.log_dir / "session")
    used = setting == "1"
    assert ("call ring up" in client) == used, client
    assert ("call ring up" in worker) == used, worker
    names = re.findall(r"\((/orion-ring-[0-9-]+)\)", client)
    assert len(names) == used and not any(Path("/dev/shm" + n).exists() for n in names)


def start_loop(pool, shim_dir, home, exe) -> subprocess.Popen:
    proc = subprocess.Popen([str(exe)], env=shim_env(pool, shim_dir, home, ORION_SHM_RING=1),
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "READY"
    time.sleep(0.3)   # well into the loop
    return proc


def test_worker_ends_when_its_client_is_killed_mid_call(host_pool, shim_dir, tmp_path,
                                                        loop_program):
    proc = start_loop(host_pool, shim_dir, tmp_path, loop_program)
    try:
        (session,) = sessions(host_pool)
        os.kill(proc.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and sessions(host_pool):
            time.sleep(0.1)
        assert not sessions(host_pool), "the worker is still running"
        with pytest.raises(ProcessLookupError):
            os.kill(session["pid"], 0)
        assert "call ring up" in logs(host_pool.log_dir / "session")
    finally:
        proc.kill()
        proc.wait()


def test_client_call_fails_when_its_worker_is_killed_mid_call(host_pool, shim_dir, tmp_path,
                                                              loop_program):
    proc = start_loop(host_pool, shim_dir, tmp_path, loop_program)
    try:
        (session,) = sessions(host_pool)
        os.kill(session["pid"], signal.SIGKILL)
        out, _ = proc.communicate(timeout=5)
        assert proc.returncode == 3 and "cudaErrorDevicesUnavailable" in out, out
    finally:
        proc.kill()
        proc.wait()
