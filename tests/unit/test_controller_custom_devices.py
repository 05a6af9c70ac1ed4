"""Custom device types: administration, and requests that name one."""
from __future__ import annotations

import pytest

from orion_controller import admin
from orion_controller.fields import Invalid, NotFound
from orion_controller.pool import Busy, Pool

SMALL = {"name": "small-gpu-4", "display_name": "Small GPU 4G", "memory": 4000,
         "physical_devices": [{"device_name": "Tesla T4", "ratio": 20},
                              {"device_name": "Tesla P4", "ratio": 10}]}


def gpus(node: str, name: str, *mibs: int) -> list[dict]:
    return [{"uuid": f"GPU-{node}{i}", "name": name, "index": i, "memory_mib": mib}
            for i, mib in enumerate(mibs)]


@pytest.fixture
def pool() -> Pool:
    pool = Pool()
    pool.register("t4", "tcp://t4:9960", gpus("t", "Tesla T4", 15360), 4)
    pool.register("p4", "tcp://p4:9960", gpus("p", "Tesla P4", 7680), 4)
    pool.register("h", "tcp://h:9960", gpus("h", "NVIDIA H100", 81559), 4)
    admin.custom_device_add(pool, SMALL)
    return pool


def test_a_custom_type_sizes_the_vgpu_per_model(pool: Pool) -> None:
    sizes = [(v.gpu_name, v.memory_mib, v.ratio)
             for _ in range(4) for v in pool.allocate(device_name="small-gpu-4").vgpus]
    # 3 x 4000 MiB fit the T4's 15360 MiB, then 1 fits the P4's 7680; never the H100.
    assert sizes == [("Tesla T4", 4000, 20)] * 3 + [("Tesla P4", 4000, 10)]
    with pytest.raises(Busy):
        pool.allocate(device_name="small-gpu-4")
    h100 = [n for n in pool.status()["nodes"] if n["node"] == "h"][0]["gpus"][0]
    assert h100["used_mib"] == 0


def test_requests_naming_a_custom_type_may_not_size_it(pool: Pool) -> None:
    with pytest.raises(Invalid, match="it sets gmem and ratio, leave them out"):
        pool.allocate(device_name="small-gpu-4", gmem=4000)
    with pytest.raises(Invalid, match="cross_node grants whole GPUs; custom device type"):
        pool.allocate(device_name="small-gpu-4", cross_node=True)


def test_a_type_no_gpu_in_the_pool_offers(pool: Pool) -> None:
    admin.custom_device_add(pool, {"name": "a100-half", "memory": 40000,
                                   "physical_devices": [{"device_name": "A100", "ratio": 50}]})
    with pytest.raises(Invalid, match="no GPU in the pool matches device_name 'a100-half'"):
        pool.allocate(device_name="a100-half")
    admin.custom_device_update(pool, {"name": "a100-half", "physical_devices": [
        {"device_name": "nvidia h100", "ratio": 50}]})
    assert pool.allocate(device_name="a100-half").vgpus[0].ratio == 50


def test_administration(pool: Pool) -> None:
    assert admin.custom_device_list(pool, {})["custom_devices"] == [
        {"name": "small-gpu-4", "display_name": "Small GPU 4G", "memory": 4000}]
    assert admin.custom_device_list(pool, {"full_fields": True})["custom_devices"] == [SMALL]
    assert admin.custom_device_info(pool, {"name": "small-gpu-4"})["custom_device"] == SMALL
    updated = admin.custom_device_update(pool, {"name": "small-gpu-4", "memory": 5000})
    assert updated["custom_device"]["memory"] == 5000
    assert updated["custom_device"]["display_name"] == "Small GPU 4G"
    admin.custom_device_del(pool, {"name": "small-gpu-4"})
    assert admin.custom_device_list(pool, {})["custom_devices"] == []
    with pytest.raises(NotFound, match="no custom device small-gpu-4"):
        admin.custom_device_info(pool, {"name": "small-gpu-4"})
    # Without the type the name is a model name again, which no GPU has.
    with pytest.raises(Invalid, match="no GPU in the pool matches device_name"):
        pool.allocate(device_name="small-gpu-4")


@pytest.mark.parametrize("change, error", [
    ({"memory": None}, "memory is missing"),
    ({"physical_devices": None}, "physical_devices is missing"),
    ({"memory": "4G"}, "memory must be an integer"),
    ({"physical_devices": []}, "physical_devices must name at least one GPU model"),
    ({"physical_devices": [{"device_name": "T4", "ratio": 120}]},
     r"physical_devices\[0\].ratio must be <= 100"),
    ({"physical_devices": [{"ratio": 10}]}, r"physical_devices\[0\].device_name must be"),
    ({"physical_devices": [{"device_name": "T4", "ratio": 10},
                           {"device_name": "t4", "ratio": 20}]}, "physical_devices repeat t4"),
    ({"name": "small-gpu-4"}, "custom device small-gpu-4 exists already"),
])
def test_bad_types_are_refused(pool: Pool, change: dict, error: str) -> None:
    with pytest.raises(Invalid, match=error):
        admin.custom_device_add(pool, {**SMALL, "name": "other", **change})
    with pytest.raises(Invalid, match="nothing to update"):
        admin.custom_device_update(pool, {"name": "small-gpu-4"})
