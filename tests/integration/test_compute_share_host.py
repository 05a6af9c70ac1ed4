"""Compute shares on the host backend: sessions that saturate one simulated GPU take
turns as their ORION_RATIO says. Kernels do not run here and the client queues launches
while its worker waits, so work counts say little: the figures are the shares of turn
time oriond's scheduler logs for each session (tests/gpu/test_compute_share_gpu.py
measures real GPU work)."""
from __future__ import annotations

import re

import pytest

from benchmarks import compute_share
from conftest import programs


@pytest.fixture(scope="module")
def spin(tmp_path_factory):
    if not programs.available():
        pytest.skip("nvcc not found")
    return programs.build("spin", tmp_path_factory.mktemp("spin"))


def turn_time(pool_dir) -> list[float]:
    """Each throttled session's share of wall time in turns, as oriond logged it."""
    text = (pool_dir / "server.log").read_text()
    return [float(p) / 100 for p in re.findall(r"s of GPU in [\d.]+ s \(([\d.]+) %\)", text)]


def test_two_saturating_sessions_split_the_gpu_30_70(spin, shim_dir, tmp_path):
    compute_share.scenario(spin, shim_dir, [30, 70], 100, 6, "host", tmp_path)
    shares = sorted(turn_time(tmp_path / "pool"))
    assert len(shares) == 2
    # hand-overs between processes cost a 2-core machine more than a GPU host: the split
    # is compared, not the absolute figures
    assert [s / sum(shares) for s in shares] == pytest.approx([0.3, 0.7], abs=0.05)


def test_a_session_alone_is_capped_at_its_share_with_throttle_level_0(spin, shim_dir,
                                                                       tmp_path):
    compute_share.scenario(spin, shim_dir, [50], 0, 4, "host", tmp_path)
    (share,) = turn_time(tmp_path / "pool")
    assert 0.40 <= share <= 0.55


def test_a_killed_neighbour_gives_its_turns_back(spin, shim_dir, tmp_path):
    """B is killed mid-run (perhaps holding a turn): A goes on and gets the whole GPU."""
    import subprocess
    import time
    from orion_client.local_pool import LocalPool
    pool_dir = tmp_path / "pool"
    with LocalPool(backend="host", host_devices=1, log_dir=pool_dir) as pool:
        a, b = (subprocess.Popen([str(spin), "8"], stdout=subprocess.PIPE, text=True,
                                 env=compute_share.orion_env(pool.controller, shim_dir,
                                                             tmp_path, 50, True))
                for _ in range(2))
        time.sleep(3)
        b.kill()
        b.wait()
        out, _ = a.communicate(timeout=60)
        deadline = time.monotonic() + 10
        while len(turn_time(pool_dir)) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)    # each session's line is logged when its worker ends
    assert "PASS spin" in out
    killed, survivor = turn_time(pool_dir)
    # A: about half the time for 3 s, then all of it for the rest
    assert killed < 0.6 and survivor > 0.65, (killed, survivor)
