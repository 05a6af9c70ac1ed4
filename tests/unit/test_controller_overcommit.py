"""Overcommit: controller and server factors, and which QoS may use them."""
from __future__ import annotations

import pytest

from orion_controller.fields import Invalid
from orion_controller.overcommit import Overcommit
from orion_controller.pool import Busy, Pool


def gpus(*mibs: int) -> list[dict]:
    return [{"uuid": f"GPU-{i}", "name": "NVIDIA H100", "index": i, "memory_mib": mib}
            for i, mib in enumerate(mibs)]


def count(pool: Pool, **request) -> int:
    """How many such vGPUs the pool grants before it is busy."""
    granted = 0
    while True:
        try:
            pool.allocate(**request)
        except Busy:
            return granted
        granted += 1


def test_only_shared_qos_uses_the_controller_factors() -> None:
    def fresh() -> Pool:
        pool = Pool(overcommit=Overcommit(mem=1.5, core=2))
        pool.register("a", "tcp://a:9960", gpus(40000), 4)
        return pool

    assert count(fresh(), gmem=5000, ratio=50) == 2                        # exclusive
    assert count(fresh(), gmem=5000, ratio=50, qos="shared_core") == 4     # 200 % compute
    assert count(fresh(), gmem=20000, ratio=50, qos="shared_core") == 2    # memory is not
    assert count(fresh(), gmem=20000, ratio=50, qos="shared_all") == 3     # 60000 MiB


def test_exclusive_vgpus_are_never_overbooked() -> None:
    pool = Pool(overcommit=Overcommit(core=2))
    pool.register("a", "tcp://a:9960", gpus(40000, 40000), 4)
    pool.allocate(ratio=50, gmem=1000, device_ids=["GPU-0"])               # exclusive on GPU-0
    # GPU-0 holds an exclusive vGPU: shared requests get its physical rest only.
    assert count(pool, ratio=25, gmem=1000, qos="shared_core", device_ids=["GPU-0"]) == 2
    # GPU-1 is overbooked by shared vGPUs: an exclusive vGPU does not go there.
    assert count(pool, ratio=50, gmem=1000, qos="shared_core", device_ids=["GPU-1"]) == 4
    with pytest.raises(Busy):
        pool.allocate(ratio=1, gmem=1, device_ids=["GPU-1"])
    status = {g["uuid"]: g for g in pool.status()["nodes"][0]["gpus"]}
    assert (status["GPU-0"]["used_ratio"], status["GPU-0"]["exclusive_vgpus"]) == (100, 1)
    assert status["GPU-1"]["used_ratio"] == 200


def test_server_factors_from_registration() -> None:
    pool = Pool(overcommit=Overcommit(core=3))            # the controller's default: x3
    pool.register("a", "tcp://a:9960", gpus(40000, 40000, 40000), 4,
                  overcommit={"core_ratio": 2, "mem_ratio": 0,
                              "devices": {"1": {"core_ratio": 1}, "2": {"core_ratio": 0}}})
    factors = [g["overcommit"] for g in pool.status()["nodes"][0]["gpus"]]
    assert factors == [{"mem_ratio": 1.0, "core_ratio": 2.0},     # the server's
                       {"mem_ratio": 1.0, "core_ratio": 1.0},     # the device's: off
                       {"mem_ratio": 1.0, "core_ratio": 2.0}]     # 0 sets nothing
    shared = {"ratio": 100, "gmem": 1, "qos": "shared_core"}
    assert count(pool, device_ids=["GPU-0"], **shared) == 2
    assert count(pool, device_ids=["GPU-1"], **shared) == 1


@pytest.mark.parametrize("overcommit, error", [
    ({"core_ratio": 0.5}, "overcommit.core_ratio must be a number >= 1"),
    ({"mem_ratio": "2"}, "overcommit.mem_ratio must be a number >= 1"),
    ({"devices": {"7": {"core_ratio": 2}}}, "overcommit.devices names GPU index 7"),
    ({"devices": {"0": 2}}, "overcommit.devices[0] must be an object"),
    ([], "overcommit must be an object"),
])
def test_bad_overcommit_is_refused(overcommit, error: str) -> None:
    pool = Pool()
    with pytest.raises(Invalid, match=error.replace("[", r"\[").replace("]", r"\]")):
        pool.register("a", "tcp://a:9960", gpus(40000), 4, overcommit=overcommit)
    assert pool.status()["nodes"] == []


def test_overcommit_never_makes_one_vgpu_larger_than_its_gpu() -> None:
    pool = Pool(overcommit=Overcommit(mem=2))
    pool.register("a", "tcp://a:9960", gpus(40000), 4)
    with pytest.raises(Invalid, match="larger than any GPU in the pool"):
        pool.allocate(gmem=50000, qos="shared_all")
    assert count(pool, gmem=30000, qos="shared_all") == 2
