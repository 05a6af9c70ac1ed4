"""Quotas per client, device type and vendor: limits, left figures, enforcement."""
from __future__ import annotations

import pytest

from orion_controller import admin
from orion_controller.fields import Invalid, NotFound
from orion_controller.pool import Busy, Pool


def gpus(node: str, *mibs: int, **extra) -> list[dict]:
    return [{"uuid": f"GPU-{node}{i}", "name": "NVIDIA H100", "index": i, "memory_mib": mib,
             **extra} for i, mib in enumerate(mibs)]


@pytest.fixture
def pool() -> Pool:
    pool = Pool(quota_limit=True)
    pool.register("a", "tcp://a:9960", gpus("a", 40000, 40000, 40000, 40000), 4)
    return pool


def quota(pool: Pool, **limits) -> dict:
    return admin.quota_set(pool, {"client_id": "alice", "device_type": "gpu",
                                  "device_vendor": "nvidia", **limits})["quota"]


def left(pool: Pool) -> tuple:
    view = admin.quota_info(pool, {"client_id": "alice", "device_type": "GPU",
                                   "device_vendor": "NVIDIA"})["quota"]
    return view["left_num"], view["left_mem"], view["left_ratio"]


def test_totals_hold_and_come_back(pool: Pool) -> None:
    assert quota(pool, vdevice_num=3, vdevice_mem=25000)["device_type"] == "GPU"
    first = pool.allocate(client_id="alice")               # 10000 MiB, 25 %
    assert left(pool) == (2, 15000, None)
    pool.allocate(client_id="alice")
    with pytest.raises(Busy, match="quota of alice for GPU NVIDIA has 5000 MiB left of "
                                   "25000; this request needs 10000"):
        pool.allocate(client_id="alice")
    pool.allocate(client_id="alice", gmem=5000)             # what is left still fits
    with pytest.raises(Busy, match="has 0 vGPUs left of 3"):
        pool.allocate(client_id="alice", gmem=1)
    pool.allocate(client_id="bob")                          # others are not limited
    pool.allocate()                                         # nor anonymous requests
    pool.release(first.lease)
    assert left(pool) == (1, 10000, None)
    pool.allocate(client_id="alice")


def test_request_larger_than_the_quota_never_fits(pool: Pool) -> None:
    quota(pool, vdevice_num=2, vdevice_ratio=60, single_vdevice_mem=12000)
    with pytest.raises(Invalid, match="allows 2 vGPUs in all; this request alone needs 3"):
        pool.allocate(client_id="alice", vgpu=3)
    with pytest.raises(Invalid, match="allows 60 % in all; this request alone needs 70"):
        pool.allocate(client_id="alice", vgpu=2, ratio=35)
    with pytest.raises(Invalid, match="the quota of alice allows no vGPU this large"):
        pool.allocate(client_id="alice", gmem=20000)
    assert pool.status()["leases"] == []


def test_single_vdevice_limit_steers_default_sizes_to_smaller_gpus() -> None:
    pool = Pool(quota_limit=True)
    pool.register("big", "tcp://big:9960", gpus("big", 80000), 2)      # default 40000 MiB
    pool.register("small", "tcp://small:9960", gpus("small", 16000), 2)  # default 8000 MiB
    quota(pool, single_vdevice_mem=10000)
    [vgpu] = pool.allocate(client_id="alice").vgpus
    assert (vgpu.node, vgpu.memory_mib) == ("small", 8000)
    with pytest.raises(Invalid, match="the quota of alice allows no vGPU this large"):
        pool.allocate(client_id="alice", gmem=40000)
    assert pool.allocate(client_id="bob", gmem=40000).vgpus[0].node == "big"


def test_quotas_are_kept_per_device_type_and_vendor(pool: Pool) -> None:
    pool.register("m", "tcp://m:9960", [{"uuid": "MLU-0", "name": "MLU370", "index": 0,
                                         "memory_mib": 24000, "type": "MLU",
                                         "vendor": "Cambricon"}], 4)
    quota(pool, vdevice_num=1)
    pool.allocate(client_id="alice")
    pool.allocate(client_id="alice", device_type="MLU")     # another type: not limited
    with pytest.raises(Busy, match="has 0 vGPUs left of 1"):
        pool.allocate(client_id="alice", device_type="GPU")


def test_not_enforced_quotas_still_count(pool: Pool) -> None:
    relaxed = Pool()
    relaxed.register("a", "tcp://a:9960", gpus("a", 40000), 4)
    quota(relaxed, vdevice_num=1)
    relaxed.allocate(client_id="alice")
    relaxed.allocate(client_id="alice")
    assert left(relaxed) == (-1, None, None)
    assert admin.quota_list(relaxed, {})["enforced"] is False


def test_set_merges_limits_and_minus_one_is_none(pool: Pool) -> None:
    quota(pool, vdevice_num=4)
    assert quota(pool, vdevice_mem=1000)["vdevice_num"] == 4
    assert quota(pool, vdevice_num=None)["vdevice_num"] is None
    with pytest.raises(Invalid, match="give at least one limit"):
        quota(pool)
    with pytest.raises(Invalid, match="vdevice_mem must be >= 0"):
        quota(pool, vdevice_mem=-5)
    with pytest.raises(Invalid, match="client_id must be a non-empty string"):
        admin.quota_set(pool, {"device_type": "GPU", "device_vendor": "NVIDIA", "vdevice_num": 1})


def test_delete(pool: Pool) -> None:
    quota(pool, vdevice_num=4)
    admin.quota_set(pool, {"client_id": "alice", "device_type": "MLU",
                           "device_vendor": "Cambricon", "vdevice_num": 1})
    assert len(admin.quota_list(pool, {})["quotas"]) == 2
    deleted = admin.quota_del(pool, {"client_id": "alice", "device_type": "mlu",
                                     "device_vendor": "cambricon"})["deleted"]
    assert [q["device_type"] for q in deleted] == ["MLU"]
    assert len(admin.quota_del(pool, {"client_id": "alice"})["deleted"]) == 1
    with pytest.raises(NotFound, match="no quota for client alice"):
        admin.quota_del(pool, {"client_id": "alice"})
    with pytest.raises(NotFound, match="no quota for client alice GPU NVIDIA"):
        admin.quota_info(pool, {"client_id": "alice", "device_type": "GPU",
                                "device_vendor": "NVIDIA"})


def test_quota_change_lifts_a_cached_refusal(pool: Pool) -> None:
    quota(pool, single_vdevice_mem=5000)
    with pytest.raises(Invalid):
        pool.allocate(client_id="alice")
    quota(pool, single_vdevice_mem=None)
    pool.allocate(client_id="alice")
