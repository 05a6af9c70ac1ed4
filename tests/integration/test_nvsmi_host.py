"""orion-nv-smi against a real controller and oriond on the host backend: the vGPUs a
user holds (a running program's), else what a new run would get, in nvidia-smi's
formats; and standing in for nvidia-smi on PATH."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import holding

QUERY = ("index,name,uuid,memory.total,memory.used,memory.free,utilization.gpu,"
         "temperature.gpu,power.draw,driver_version")
HEADER = ("index, name, uuid, memory.total [MiB], memory.used [MiB], memory.free [MiB], "
          "utilization.gpu [%], temperature.gpu, power.draw [W], driver_version")


def nvsmi(pool, home, *args, **env) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ORION_")}
    environ.update({"ORION_CONTROLLER": pool.controller, "HOME": str(home)})
    environ.update({k: str(v) for k, v in env.items()})
    return subprocess.run([sys.executable, "-m", "orion_client.nvsmi", *args], env=environ,
                          capture_output=True, text=True, timeout=60)


def alice_holding(pool, shim_dir, program_dir, home):
    """alice's program holding two vGPUs of 2048 MiB (64 MiB allocated on the first)."""
    return holding(pool, shim_dir, program_dir, home, 600, ORION_VGPU=2, ORION_GMEM=2048,
                   ORION_CLIENT_ID="alice")


@pytest.fixture
def held(host_pool, shim_dir, program_dir, tmp_path):
    with alice_holding(host_pool, shim_dir, program_dir, tmp_path) as proc:
        yield proc


def test_held_vgpus_in_csv(host_pool, held, tmp_path):
    out = nvsmi(host_pool, tmp_path, f"--query-gpu={QUERY}", "--format=csv",
                ORION_CLIENT_ID="alice")
    assert out.returncode == 0, out.stderr
    header, *rows = out.stdout.splitlines()
    assert header == HEADER and len(rows) == 2 and out.stderr == ""
    for i, row in enumerate(rows):
        cells = row.split(", ")
        assert cells[0] == str(i) and cells[1] == "Orion Host Test Device"
        assert cells[2].startswith("GPU-") and cells[3] == "2048 MiB"
        # the host backend cannot say what a worker holds: nvidia-smi's [N/A]
        assert cells[4:] == ["[N/A]", "[N/A]", "0 %", "33", "71.00 W", "580.65.06"]
    bare = nvsmi(host_pool, tmp_path, "--query-gpu=index,memory.total,power.draw",
                 "--format=csv,noheader,nounits", ORION_CLIENT_ID="alice")
    assert bare.stdout.splitlines() == ["0, 2048, 71.00", "1, 2048, 71.00"]


def test_held_vgpus_in_the_table_list_and_details(host_pool, held, tmp_path):
    table = nvsmi(host_pool, tmp_path, ORION_CLIENT_ID="alice").stdout
    assert "Driver Version: 580.65.06" in table and "CUDA Version: 13.0" in table
    assert table.count("/ 2048MiB") == 2 and str(held.pid) in table
    assert "No vGPU is held" not in table
    listing = nvsmi(host_pool, tmp_path, "-L", "-i", "1", ORION_CLIENT_ID="alice").stdout
    assert listing.startswith("GPU 1: Orion Host Test Device (UUID: GPU-")
    assert len(listing.splitlines()) == 1
    details = nvsmi(host_pool, tmp_path, "-q", ORION_CLIENT_ID="alice").stdout
    assert "Attached GPUs                             : 2" in details
    assert "GPU Current Temp                  : 33 C" in details
    assert f"Process ID                        : {held.pid}" in details


def test_nothing_held_shows_what_a_new_run_would_get(host_pool, held, tmp_path):
    out = nvsmi(host_pool, tmp_path, "-L", ORION_CLIENT_ID="bob", ORION_VGPU=3)
    assert out.returncode == 0, out.stderr
    assert len(out.stdout.splitlines()) == 3 and "No vGPU is held by bob" in out.stderr
    assert len(host_pool.status()["leases"]) == 1   # alice's; the preview was given back
    table = nvsmi(host_pool, tmp_path, ORION_CLIENT_ID="bob", ORION_GMEM=1000).stdout
    assert table.startswith("No vGPU is held by bob") and "/ 1000MiB" in table
    assert "No running processes found" in table


def test_vgpus_sharing_a_gpu_have_their_own_uuids(one_gpu_pool, shim_dir, program_dir,
                                                  tmp_path):
    physical = one_gpu_pool.status()["nodes"][0]["gpus"][0]["uuid"]
    with alice_holding(one_gpu_pool, shim_dir, program_dir, tmp_path):
        rows = nvsmi(one_gpu_pool, tmp_path, "--query-gpu=index,uuid", "--format=csv,noheader",
                     ORION_CLIENT_ID="alice").stdout.splitlines()
        uuids = [row.split(", ")[1] for row in rows]
        assert len(set(uuids)) == 2 and physical not in uuids
        for i, uuid in enumerate(uuids):   # -i takes them, as nvidia-smi takes a GPU's
            listing = nvsmi(one_gpu_pool, tmp_path, "-L", "-i", uuid, ORION_CLIENT_ID="alice")
            assert listing.stdout == f"GPU {i}: Orion Host Test Device (UUID: {uuid})\n"
        both = nvsmi(one_gpu_pool, tmp_path, "--query-gpu=uuid", "--format=csv,noheader",
                     "-i", f"{uuids[1]},0", ORION_CLIENT_ID="alice")
        assert both.stdout.split() == uuids
        preview = nvsmi(one_gpu_pool, tmp_path, "--query-gpu=uuid", "--format=csv,noheader",
                        ORION_CLIENT_ID="bob", ORION_VGPU=2, ORION_GMEM=1024)
        previewed = preview.stdout.split()
        assert len(set(previewed)) == 2 and not set(previewed) & {physical, *uuids}


def test_no_controller_is_an_error(tmp_path):
    class Nowhere:
        controller = "127.0.0.1:1"
    out = nvsmi(Nowhere, tmp_path, "-L")
    assert out.returncode == 9 and "controller" in out.stderr


def test_standing_in_for_nvidia_smi(host_pool, tmp_path):
    bin_dir = tmp_path / "bin"
    out = nvsmi(host_pool, tmp_path, "--install-as-nvidia-smi", str(bin_dir))
    assert out.returncode == 0 and f"export PATH={bin_dir}:$PATH" in out.stderr
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORION_")}
    env.update(PATH=f"{bin_dir}:{env['PATH']}", ORION_CONTROLLER=host_pool.controller,
               HOME=str(tmp_path))
    listing = subprocess.run(["nvidia-smi", "-L"], env=env, capture_output=True, text=True,
                             timeout=60)
    assert listing.stdout.startswith("GPU 0: Orion Host Test Device"), listing.stderr
    # ORION_SIM_NVSMI=1: the same wrapper in ~/.orion/bin, said once
    first = nvsmi(host_pool, tmp_path, "-L", ORION_SIM_NVSMI=1)
    again = nvsmi(host_pool, tmp_path, "-L", ORION_SIM_NVSMI=1)
    assert (tmp_path / ".orion/bin/nvidia-smi").read_text() == (bin_dir / "nvidia-smi").read_text()
    assert "export PATH" in first.stderr and "export PATH" not in again.stderr
