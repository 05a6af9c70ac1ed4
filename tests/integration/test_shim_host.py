"""The whole path on the host backend: a CUDA program compiled with nvcc, our
libcudart.so.13, the controller, oriond and a worker, all real processes. Kernels are
recorded instead of run (there is no GPU), so the programs skip kernel-result checks
and these tests check the recorded launches' argument bytes instead."""
from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import time
from pathlib import Path

import pytest

from conftest import holding, programs, shared_memory_of, shim_env
from orion_controller.client import ControlClient

HOST_INVOCATIONS = programs.all_invocations()


def run(pool, shim_dir, program_dir, tmp_path, name, args=(), **env):
    path = programs.build(name, program_dir)
    return subprocess.run([str(path), *args], env=shim_env(pool, shim_dir, tmp_path, **env),
                          capture_output=True, text=True, timeout=120)


def client_log(home) -> str:
    return "\n".join(p.read_text() for p in sorted((home / ".orion" / "log").glob("*.log")))


@pytest.mark.parametrize("name,args", HOST_INVOCATIONS,
                         ids=[" ".join((n, *a)) for n, a in HOST_INVOCATIONS])
def test_program_passes_through_the_shim(host_pool, shim_dir, program_dir, tmp_path, name, args):
    vgpu = 2 if name == "multi_gpu" else 1
    proc = run(host_pool, shim_dir, program_dir, tmp_path, name, args, ORION_VGPU=vgpu)
    assert programs.passed(proc, name), (
        f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}\nclient log:\n{client_log(tmp_path)}")


def launches(pool) -> list[dict]:
    return [json.loads(line) for line in pool.launch_log.read_text().splitlines()]


def test_kernel_arguments_arrive_byte_exact(host_pool, shim_dir, program_dir, tmp_path):
    proc = run(host_pool, shim_dir, program_dir, tmp_path, "kernels")
    assert programs.passed(proc, "kernels"), proc.stdout + proc.stderr
    by_name = {}
    for launch in launches(host_pool):
        by_name.setdefault(launch["function"], []).append(launch)

    (mixed,) = by_name["_Z10echo_mixed5MixedPS_"]
    args = bytes.fromhex(mixed["args_hex"])
    assert len(args) == 56 and mixed["grid"] == [1, 1, 1] and mixed["block"] == [1, 1, 1]
    assert args[:48] == bytes.fromhex(
        "0100000000000000" "0000000000000440" "78" + "00" * 15 +
        "0000803f" "00000040" "00004040" "00008040")

    (scalars,) = by_name["_Z12echo_scalarscsixfdPKicPx"]
    args = bytes.fromhex(scalars["args_hex"])
    assert args[0] == ord("a") and args[40] == ord("z")
    assert struct.unpack_from("<h", args, 2) == (-2,)
    assert struct.unpack_from("<iqf", args, 4)[:1] == (0x12345678,)
    assert struct.unpack_from("<q", args, 8) == (0x0102030405060708,)
    assert struct.unpack_from("<f", args, 16) == (1.5,)
    assert struct.unpack_from("<d", args, 24) == (-0.25,)

    (big,) = by_name["_Z14copy_big_param8BigParamPi"]
    args = bytes.fromhex(big["args_hex"])
    assert len(args) == 32008 and big["grid"] == [32, 1, 1] and big["block"] == [256, 1, 1]
    assert struct.unpack_from("<8000i", args) == tuple(i * 3 for i in range(8000))

    shared = [l["shared_mem"] for l in by_name["_Z14reverse_chunksPKiPii"]]
    assert shared == [1024, 65536]
    (float_scale,) = by_name["_Z5scaleIfEvPT_S0_i"]
    assert struct.unpack_from("<fi", bytes.fromhex(float_scale["args_hex"]), 8) == (2.0, 4096)


def test_vgpu_memory_is_what_the_program_sees(host_pool, shim_dir, program_dir, tmp_path):
    proc = run(host_pool, shim_dir, program_dir, tmp_path, "device_props", ORION_GMEM=3000)
    assert programs.passed(proc, "device_props"), proc.stdout
    assert "3000 MiB" in proc.stdout


def test_module_variables_count_against_the_vgpu(host_pool, shim_dir, program_dir, tmp_path):
    fits = run(host_pool, shim_dir, program_dir, tmp_path, "module_globals", ORION_GMEM=1024)
    assert programs.passed(fits, "module_globals"), fits.stdout
    assert "USED_GROWTH_MIB 96" in fits.stdout
    too_small = run(host_pool, shim_dir, program_dir, tmp_path, "module_globals",
                    ("expect-oom",), ORION_GMEM=64)
    assert programs.passed(too_small, "module_globals"), too_small.stdout


def test_unreachable_controller_means_no_device_quickly(shim_dir, program_dir, tmp_path):
    class Nowhere:
        controller = "127.0.0.1:1"
    started = time.monotonic()
    proc = run(Nowhere, shim_dir, program_dir, tmp_path, "device_props")
    assert time.monotonic() - started < 10
    assert proc.returncode != 0 and "cudaErrorNoDevice" in proc.stdout
    assert "no vGPU" in client_log(tmp_path)


def test_a_request_that_cannot_fit_is_refused_with_the_reason(host_pool, shim_dir, program_dir,
                                                            tmp_path):
    proc = run(host_pool, shim_dir, program_dir, tmp_path, "device_props", ORION_GMEM=10 ** 7)
    assert proc.returncode != 0 and "cudaErrorNoDevice" in proc.stdout
    assert "refused" in client_log(tmp_path)


def test_bad_settings_are_reported(host_pool, shim_dir, program_dir, tmp_path):
    proc = run(host_pool, shim_dir, program_dir, tmp_path, "device_props", ORION_VGPU="two")
    assert proc.returncode != 0
    assert "ORION_VGPU=two is not a whole number" in client_log(tmp_path)


def server_sessions(pool) -> list:
    with ControlClient(f"127.0.0.1:{pool.server_port}", timeout_s=5) as client:
        return client.request({"op": "status"})["sessions"]


def test_killed_client_is_cleaned_up_within_5_seconds(host_pool, shim_dir, program_dir,
                                                      tmp_path):
    with holding(host_pool, shim_dir, program_dir, tmp_path, 600) as proc:
        assert len(host_pool.status()["leases"]) == 1
        (session,) = server_sessions(host_pool)
        # its page-locked memory and staging buffer are mapped by its one worker: their
        # names are gone already, so nothing is left behind whatever happens next
        assert shared_memory_of(proc.pid) == []
        os.kill(proc.pid, signal.SIGKILL)
        killed = time.monotonic()
        deadline = killed + 5
        while time.monotonic() < deadline and (host_pool.status()["leases"] or
                                               server_sessions(host_pool)):
            time.sleep(0.1)
        assert not host_pool.status()["leases"], "the controller still holds the lease"
        assert not server_sessions(host_pool), "the worker is still running"
        with pytest.raises(ProcessLookupError):
            os.kill(session["pid"], 0)
        assert shared_memory_of(proc.pid) == [], "the worker left the client's names"


def test_shared_memory_names_left_by_a_dead_process_of_the_same_pid_are_skipped(
        host_pool, shim_dir, program_dir, tmp_path):
    """A crashed process can leave /dev/shm/orion-<pid>-<n> behind (a worker of another
    user cannot remove them); a new process given the same pid must make its segments
    under other names, and leave those files alone. `graphs` needs page-locked memory
    in shared memory (its captured copies become plain memcpy nodes only then)."""
    path = programs.build("graphs", program_dir)
    script = ('for n in 0 1 2 3; do echo stale > /dev/shm/orion-$$-$n; done; '
              'exec "$0"')
    child = subprocess.Popen(["sh", "-c", script, str(path)], stdout=subprocess.PIPE,
                             text=True, env=shim_env(host_pool, shim_dir, tmp_path))
    stale = [Path(f"/dev/shm/orion-{child.pid}-{n}") for n in range(4)]
    try:
        out, _ = child.communicate(timeout=120)
        proc = subprocess.CompletedProcess(child.args, child.returncode, out)
        assert programs.passed(proc, "graphs"), out + client_log(tmp_path)
        assert all(p.read_text() == "stale\n" for p in stale)
        assert "no shared memory" not in client_log(tmp_path)
    finally:
        for p in stale:
            p.unlink(missing_ok=True)


def test_a_dead_worker_is_an_error_at_the_next_call_never_a_hang(host_pool, shim_dir,
                                                                 program_dir, tmp_path):
    with holding(host_pool, shim_dir, program_dir, tmp_path, 600) as proc:
        (session,) = server_sessions(host_pool)
        os.kill(session["pid"], signal.SIGKILL)
        out, _ = proc.communicate(timeout=10)   # the program's next call fails at once
        assert proc.returncode == 1
        assert "cudaErrorDevicesUnavailable" in out


def test_placement_settings_reach_the_controller(host_pool, shim_dir, program_dir, tmp_path):
    proc = run(host_pool, shim_dir, program_dir, tmp_path, "device_props",
               ORION_DEVICE_NAME="No Such GPU")
    assert proc.returncode != 0 and "cudaErrorNoDevice" in proc.stdout
    assert "No Such GPU" in client_log(tmp_path)


def test_a_controller_restart_does_not_disturb_running_applications(host_pool, shim_dir,
                                                                    program_dir, tmp_path):
    with holding(host_pool, shim_dir, program_dir, tmp_path, 8) as proc:
        (lease,) = host_pool.status()["leases"]
        host_pool.restart_controller()
        deadline = time.monotonic() + 10
        rebuilt = []
        while time.monotonic() < deadline and not rebuilt:
            time.sleep(0.2)
            try:
                rebuilt = host_pool.status()["leases"]
            except Exception:   # the new controller may not listen yet
                pass
        assert [l["lease"] for l in rebuilt] == [lease["lease"]], "grant not rebuilt"
        out, _ = proc.communicate(timeout=30)   # it kept running to its end
        assert proc.returncode == 0 and out.strip().endswith("PASS hold"), out
        assert shared_memory_of(proc.pid) == [], "its exit left shared memory behind"


def test_after_an_oriond_restart_new_clients_work(host_pool, shim_dir, program_dir, tmp_path):
    host_pool.restart_server()   # waits until the node is registered and up again
    proc = run(host_pool, shim_dir, program_dir, tmp_path, "device_props")
    assert programs.passed(proc, "device_props"), proc.stdout + client_log(tmp_path)


@pytest.mark.parametrize("name", ["memory", "kernels", "streams_events", "textures"])
def test_programs_pass_over_tcp_as_across_hosts(host_pool, shim_dir, program_dir, tmp_path,
                                                name):
    """ORION_ENABLE_NET=1: no shared memory, no call ring; bytes ride the socket, in
    chunks (the 64 MiB copy of `memory` crosses as 64 of them)."""
    proc = run(host_pool, shim_dir, program_dir, tmp_path, name, ORION_ENABLE_NET=1)
    assert programs.passed(proc, name), proc.stdout + client_log(tmp_path)
    assert "through tcp://" in client_log(tmp_path)


@pytest.mark.parametrize("net", ["1", "0"], ids=["tcp", "same-host"])
def test_large_copies_are_byte_exact(host_pool, shim_dir, program_dir, tmp_path, net):
    """64 MiB and odd sizes both ways, sync and async, at offsets that straddle the 1 MiB
    chunks; over tcp:// a download asks for its chunks several at a time, and one that
    fails part-way (it runs past its allocation) must leave no reply behind for the next
    copies. On the same host pageable copies are pipelined through two staging slots,
    their host side split over 3 threads (forced: this machine may have few cores)."""
    proc = run(host_pool, shim_dir, program_dir, tmp_path, "bulk_copies", ORION_ENABLE_NET=net,
               BULK_COPIES_RANGE_ERRORS=1, ORION_COPY_THREADS=3)
    assert programs.passed(proc, "bulk_copies"), proc.stdout + client_log(tmp_path)
    log = client_log(tmp_path)
    assert ("through tcp://" in log) == (net == "1")
    assert ("bulk host copies: 3 threads" in log) == (net == "0")
    assert "dropped a reply" not in log


def test_captured_copies_of_host_memory_across_hosts_fail_clearly(host_pool, shim_dir,
                                                                  program_dir, tmp_path):
    """A graph replays its copies on the server, where only shared memory reaches the
    client's pages: over tcp:// such a capture is refused, and the log says why."""
    proc = run(host_pool, shim_dir, program_dir, tmp_path, "graphs", ORION_ENABLE_NET=1)
    assert proc.returncode == 1 and "cudaErrorStreamCaptureUnsupported" in proc.stdout
    assert "needs memory shared with the worker" in client_log(tmp_path)


def test_another_sessions_memory_is_out_of_reach(host_pool, shim_dir, program_dir, tmp_path):
    exe = programs.build("foreign_pointer", program_dir)
    owner = subprocess.Popen([str(exe), "own", "3"], stdout=subprocess.PIPE, text=True,
                             env=shim_env(host_pool, shim_dir, tmp_path / "a"))
    try:
        pointer = owner.stdout.readline().split()[1]
        assert owner.stdout.readline().strip() == "READY"
        intruder = run(host_pool, shim_dir, program_dir, tmp_path / "b", "foreign_pointer",
                       (pointer,))
        rest = owner.communicate(timeout=60)[0]
    finally:
        owner.kill()
        owner.wait()
    assert programs.passed(intruder, "foreign_pointer"), intruder.stdout
    assert owner.returncode == 0 and "PASS foreign_pointer" in rest, rest
