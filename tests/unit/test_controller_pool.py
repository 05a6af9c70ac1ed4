"""The pool's logic with a fake clock: placement, refusals, leases, nodes, rebuilds."""
from __future__ import annotations

import logging
import re

import pytest

from orion_controller.fields import Invalid
from orion_controller.identity import vgpu_uuid
from orion_controller.pool import Busy, Pool


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def gpus(*mibs: int, prefix: str = "GPU-a") -> list[dict]:
    return [{"uuid": f"{prefix}{i}", "name": "NVIDIA H100", "index": i, "memory_mib": mib}
            for i, mib in enumerate(mibs)]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def pool(clock: Clock) -> Pool:
    return Pool(lease_timeout=5, node_timeout=10, clock=clock)


def used(pool: Pool) -> dict[str, tuple[int, int]]:
    return {g["uuid"]: (g["used_mib"], g["used_ratio"])
            for node in pool.status()["nodes"] for g in node["gpus"]}


def placed(grant) -> list[str]:
    return [f"{v.node}/{v.gpu_index}" for v in grant.vgpus]


# -- defaults and placement ------------------------------------------------------------

def test_defaults_come_from_the_node_vgpu_count(pool: Pool) -> None:
    pool.register("a", "tcp://a:9960", gpus(40000), vgpu_count=4)
    grant = pool.allocate()
    [vgpu] = grant.vgpus
    assert (vgpu.memory_mib, vgpu.ratio) == (10000, 25)
    assert vgpu.server == "tcp://a:9960" and vgpu.gpu_uuid == "GPU-a0"
    assert vgpu.vgpu_id == f"{grant.lease}-0"
    assert len(grant.lease) == 32 and int(grant.lease, 16) >= 0   # uuid4 hex


def test_default_memory_follows_each_gpu(pool: Pool) -> None:
    pool.register("a", "tcp://a:9960", gpus(16000, 80000), vgpu_count=2)
    grant = pool.allocate(vgpu=2)
    assert [v.memory_mib for v in grant.vgpus] == [8000, 40000]
    assert [v.ratio for v in grant.vgpus] == [50, 50]


def test_one_gpu_box_serves_several_vgpus_of_one_request(pool: Pool) -> None:
    pool.register("a", "tcp://a:9960", gpus(40000), vgpu_count=4)
    assert placed(pool.allocate(vgpu=2)) == ["a/0", "a/0"]
    assert placed(pool.allocate(vgpu=2)) == ["a/0", "a/0"]
    with pytest.raises(Busy):
        pool.allocate()


def test_vgpus_of_one_request_spread_over_gpus_first(pool: Pool) -> None:
    pool.register("a", "tcp://a:9960", gpus(40000, 40000), vgpu_count=4)
    assert placed(pool.allocate(vgpu=2)) == ["a/0", "a/1"]
    assert placed(pool.allocate(vgpu=3)) == ["a/0", "a/1", "a/0"]


def test_first_fit_fills_nodes_in_registration_order(pool: Pool) -> None:
    pool.register("a", "tcp://a:9960", gpus(40000), vgpu_count=1)
    pool.register("b", "tcp://b:9960", gpus(40000, prefix="GPU-b"), vgpu_count=1)
    assert placed(pool.allocate()) == ["a/0"]
    assert placed(pool.allocate()) == ["b/0"]


def test_explicit_size_is_used_and_capacity_is_memory_and_ratio(pool: Pool) -> None:
    pool.register("a", "tcp://a:9960", gpus(40000), vgpu_count=4)
    pool.allocate(gmem=30000, ratio=10)
    with pytest.raises(Busy):          # memory is short, ratio is not
        pool.allocate(gmem=20000, ratio=10)
    pool.allocate(gmem=10000, ratio=90)
    with pytest.raises(Busy):          # ratio is used up, memory is not... nor left at all
        pool.allocate(gmem=1, ratio=1)
    assert used(pool) == {"GPU-a0": (40000, 100)}


def test_all_vgpus_come_from_one_node(pool: Pool) -> None:
    pool.register("a", "tcp://a:9960", gpus(40000), vgpu_count=1)
    pool.register("b", "tcp://b:9960", gpus(40000, prefix="GPU-b"), vgpu_count=1)
    # Two whole GPUs exist, but on two nodes: cross-node grants are not offered yet.
    with pytest.raises(Invalid, match="at most 1"):
        pool.allocate(vgpu=2)


def test_grants_are_atomic(pool: Pool) -> None:
    pool.register("a", "tcp://a:9960", gpus(40000, 40000), vgpu_count=2)
    pool.allocate(vgpu=2)                           # a: one half of each GPU left
    pool.register("b", "tcp://b:9960", gpus(40000, 40000, prefix="GPU-b"), vgpu_count=2)
    before = used(pool)
    grant = pool.allocate(vgpu=3)                   # a could take 2 of 3: all go to b
    assert placed(grant) == ["b/0", "b/1", "b/0"]
    pool.release(grant.lease)
    assert used(pool) == before
    pool.allocate(vgpu=4)                           # b full now
    with pytest.raises(Busy):
        pool.allocate(vgpu=3)                       # a has 2: nothing may be taken
    assert used(pool)["GPU-a0"] == before["GPU-a0"]
    assert used(pool)["GPU-a1"] == before["GPU-a1"]


def test_policy_seam_orders_candidates(clock: Clock) -> None:
    class LastGpuFirst:       # a policy ranks each GPU; smaller ranks are placed first
        def rank(self, device) -> tuple:
            return (-device.gpu.index,)

        def describe(self) -> str:
            return "last GPU first"

    pool = Pool(clock=clock, policy=LastGpuFirst())
    pool.register("a", "tcp://a:9960", gpus(40000, 40000), vgpu_count=1)
    assert placed(pool.allocate()) == ["a/1"]


# -- refusals --------------------------------------------------------------------------

@pytest.mark.parametrize("request_, reason", [
    ({"vgpu": 0}, "vgpu must be >= 1"),
    ({"vgpu": "2"}, "vgpu must be an integer"),
    ({"vgpu": True}, "vgpu must be an integer"),
    ({"gmem": 1.5}, "gmem must be an integer"),
    ({"gmem": 0}, "gmem must be >= 1"),
    ({"ratio": 101}, "ratio must be <= 100"),
    ({"ratio": 0}, "ratio must be >= 1"),
    ({"ratio": [50]}, "ratio must be an integer"),
    ({"pid": "x"}, "pid must be an integer"),
    ({"client_id": 7}, "client_id must be a non-empty string"),
    ({"gmem": 50000}, "larger than any GPU in the pool (largest: 40000 MiB)"),
    ({"vgpu": 3, "ratio": 50}, "one node holds at most 2"),
])
def test_requests_that_can_never_fit_are_refused(pool: Pool, request_: dict, reason: str) -> None:
    pool.register("a", "tcp://a:9960", gpus(40000), vgpu_count=4)
    with pytest.raises(Invalid) as refused:
        pool.allocate(**request_)
    assert reason in str(refused.value)
    assert pool.status()["leases"] == []


def test_request_to_an_empty_pool_is_busy_not_invalid(pool: Pool) -> None:
    with pytest.raises(Busy, match="no GPU is registered"):
        pool.allocate()


def test_busy_reason_says_what_is_taken(pool: Pool, clock: Clock) -> None:
    pool.register("a", "tcp://a:9960", gpus(40000), vgpu_count=2)
    pool.register("b", "tcp://b:9960", gpus(40000, prefix="GPU-b"), vgpu_count=2)
    grant = pool.allocate(gmem=30000)
    for step in (4, 4, 3):             # a reports its lease; b has gone silent
        clock.advance(step)
        pool.heartbeat("a", [grant.lease])
    with pytest.raises(Busy) as busy:
        pool.allocate(gmem=20000)
    assert "no node has room for 1 vGPU(s) of 20000 MiB, default ratio now" in str(busy.value)
    assert "a: gpu0 10000 MiB 50 %" in str(busy.value)
    assert "b is down" in str(busy.value)


# -- leases ----------------------------------------------------------------------------

def test_release_gives_capacity_back(pool: Pool) -> None:
    pool.register("a", "tcp://a:9960", gpus(40000), vgpu_count=1)
    grant = pool.allocate()
    pool.release(grant.lease)
    assert used(pool) == {"GPU-a0": (0, 0)}
    with pytest.raises(Invalid, match="unknown lease"):
        pool.release(grant.lease)
    pool.allocate()


def test_lease_lives_while_reported_and_expires_when_not(pool: Pool, clock: Clock) -> None:
    pool.register("a", "tcp://a:9960", gpus(40000), vgpu_count=1)
    grant = pool.allocate()
    for _ in range(4):                 # 16 s alive, renewed by each report
        clock.advance(4)
        assert pool.heartbeat("a", [grant.lease]).lost == ()
    clock.advance(4)
    pool.heartbeat("a", [])
    assert pool.expire() == []         # 4 s since the last report: still held
    clock.advance(1.5)
    assert pool.expire() == [grant.lease]
    assert used(pool) == {"GPU-a0": (0, 0)}


def test_lease_never_opened_expires_after_grant(pool: Pool, clock: Clock) -> None:
    pool.register("a", "tcp://a:9960", gpus(40000), vgpu_count=1)
    grant = pool.allocate()
    clock.advance(5.5)
    pool.heartbeat("a", [])
    assert pool.status()["leases"] == []
    with pytest.raises(Invalid, match="unknown lease"):
        pool.release(grant.lease)


def test_lease_reported_by_another_node_is_not_renewed(pool: Pool) -> None:
    pool.register("a", "tcp://a:9960", gpus(40000), vgpu_count=1)
    pool.register("b", "tcp://b:9960", gpus(40000, prefix="GPU-b"), vgpu_count=1)
    grant = pool.allocate()
    assert pool.heartbeat("b", [grant.lease]).lost == (grant.lease,)


# -- nodes -----------------------------------------------------------------------------

def test_silent_node_goes_down_and_loses_its_leases(clock: Clock) -> None:
    # Leases outlive the node timeout here, so only the node going down can end this one.
    pool = Pool(lease_timeout=30, node_timeout=10, clock=clock)
    pool.register("a", "tcp://a:9960", gpus(40000), vgpu_count=1)
    pool.register("b", "tcp://b:9960", gpus(40000, prefix="GPU-b"), vgpu_count=1)
    grant = pool.allocate()
    clock.advance(4)
    pool.heartbeat("a", [grant.lease])
    for _ in range(3):                 # only b heartbeats now
        clock.advance(3)
        pool.heartbeat("b", [])
        assert pool.expire() == []
    clock.advance(1.5)                 # 10.5 s since a's last heartbeat
    assert pool.expire() == [grant.lease]
    states = {n["node"]: n["state"] for n in pool.status()["nodes"]}
    assert states == {"a": "down", "b": "up"}
    assert placed(pool.allocate()) == ["b/0"]    # a's GPU is not offered
    assert pool.heartbeat("a", []).known is True
    assert pool.status()["nodes"][0]["state"] == "up"


def test_register_again_keeps_identity_and_leases(pool: Pool) -> None:
    pool.register("a", "tcp://a:9960", gpus(40000, 40000), vgpu_count=1)
    pool.register("b", "tcp://b:9960", gpus(40000, prefix="GPU-b"), vgpu_count=1)
    grant = pool.allocate(vgpu=2)
    assert pool.register("a", "tcp://a:9961", gpus(40000, 40000), vgpu_count=1) is True
    assert [n["node"] for n in pool.status()["nodes"]] == ["a", "b"]
    assert [lease["lease"] for lease in pool.status()["leases"]] == [grant.lease]
    # A GPU that left the node takes its leases with it.
    pool.register("a", "tcp://a:9961", gpus(40000), vgpu_count=1)
    assert pool.status()["leases"] == []


def test_register_refuses_bad_gpu_lists(pool: Pool) -> None:
    pool.register("a", "tcp://a:9960", gpus(40000), vgpu_count=1)
    with pytest.raises(Invalid, match="already registered by node a"):
        pool.register("b", "tcp://b:9960", gpus(40000), vgpu_count=1)
    with pytest.raises(Invalid, match="repeat uuid GPU-b0"):
        pool.register("b", "tcp://b:9960", gpus(1, prefix="GPU-b") * 2)
    with pytest.raises(Invalid, match=r"gpus\[0\].memory_mib must be an integer"):
        pool.register("b", "tcp://b:9960", [{"uuid": "u", "name": "n", "index": 0}])
    with pytest.raises(Invalid, match="vgpu_count must be <= 100"):
        pool.register("b", "tcp://b:9960", [], vgpu_count=101)
    with pytest.raises(Invalid, match="node must be a non-empty string"):
        pool.register("", "tcp://b:9960", [])
    assert [n["node"] for n in pool.status()["nodes"]] == ["a"]


def test_unregister_releases_the_node_leases(pool: Pool) -> None:
    pool.register("a", "tcp://a:9960", gpus(40000), vgpu_count=1)
    pool.allocate()
    pool.unregister("a")
    assert pool.status() == {"nodes": [], "leases": []}
    with pytest.raises(Invalid, match="unknown node 'a'"):
        pool.unregister("a")


def test_heartbeat_of_unknown_node_asks_it_to_register(pool: Pool) -> None:
    assert pool.heartbeat("ghost", ["x"]).known is False
    with pytest.raises(Invalid, match=r"leases\[0\] must be a non-empty string"):
        pool.heartbeat("ghost", [3])


# -- the vGPUs' own UUIDs --------------------------------------------------------------

def test_vgpus_sharing_a_gpu_have_their_own_uuids(pool: Pool) -> None:
    pool.register("a", "tcp://a:9960", gpus(40000), vgpu_count=4)
    grant = pool.allocate(vgpu=2)
    first, second = [v.wire() for v in grant.vgpus]
    assert first["gpu_uuid"] == second["gpu_uuid"] == "GPU-a0"   # one physical GPU
    assert len({first["vgpu_uuid"], second["vgpu_uuid"], "GPU-a0"}) == 3
    for entry in (first, second):
        assert re.fullmatch(r"GPU-[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", entry["vgpu_uuid"])
        assert entry["vgpu_uuid"] == vgpu_uuid("GPU-a0", entry["vgpu_id"])   # anyone derives it
    assert pool.status()["leases"][0]["vgpus"] == [first, second]
    preview = {v.wire()["vgpu_uuid"] for v in pool.preview(vgpu=2).vgpus}
    later = {v.wire()["vgpu_uuid"] for v in pool.allocate(vgpu=2).vgpus}
    assert len(preview) == len(later) == 2
    assert not later & {first["vgpu_uuid"], second["vgpu_uuid"]}   # another lease, others


def test_a_vgpu_uuid_depends_on_gpu_lease_and_position() -> None:
    one = vgpu_uuid("GPU-a0", "l1-0")
    assert one == vgpu_uuid("GPU-a0", "l1-0")
    assert len({one, vgpu_uuid("GPU-a1", "l1-0"), vgpu_uuid("GPU-a0", "l2-0"),
                vgpu_uuid("GPU-a0", "l1-1")}) == 4


# -- rebuilding after a controller restart --------------------------------------------

def test_restarted_controller_rebuilds_leases_from_heartbeats(clock: Clock) -> None:
    before = Pool(clock=clock)
    before.register("a", "tcp://a:9960", gpus(40000, 40000), vgpu_count=4)
    grant = before.allocate(vgpu=2, gmem=30000, ratio=60)
    reported = {grant.lease: [v.wire() for v in grant.vgpus]}

    after = Pool(clock=clock)                   # the controller restarted
    assert after.heartbeat("a", [grant.lease], reported).known is False
    assert after.register("a", "tcp://a:9960", gpus(40000, 40000), vgpu_count=4) is False
    assert after.heartbeat("a", [grant.lease], reported).lost == ()
    [lease] = after.status()["leases"]
    assert lease["lease"] == grant.lease
    assert lease["vgpus"] == reported[grant.lease]   # vgpu_uuid included: it is kept
    assert used(after) == {"GPU-a0": (30000, 60), "GPU-a1": (30000, 60)}
    with pytest.raises(Busy):                   # the rebuilt grant holds its capacity
        after.allocate(gmem=20000)
    clock.advance(4)                            # and lives on by later reports
    after.heartbeat("a", [grant.lease])
    clock.advance(4)
    assert after.expire() == []


def test_rebuild_refused_when_capacity_was_granted_meanwhile(pool: Pool) -> None:
    pool.register("a", "tcp://a:9960", gpus(40000), vgpu_count=1)
    old = {"stale": [{"vgpu_id": "stale-0", "node": "a", "gpu_uuid": "GPU-a0",
                      "memory_mib": 40000, "ratio": 100}]}
    pool.allocate()
    assert pool.heartbeat("a", ["stale"], old).lost == ("stale",)
    assert len(pool.status()["leases"]) == 1


@pytest.mark.parametrize("entries", [
    [{"vgpu_id": "x-0", "node": "a", "gpu_uuid": "GPU-zz", "memory_mib": 1, "ratio": 1}],
    [{"vgpu_id": "x-0", "node": "a", "gpu_uuid": "GPU-a0", "memory_mib": "1", "ratio": 1}],
    [{"vgpu_id": "x-0", "node": "b", "gpu_uuid": "GPU-b0", "memory_mib": 1, "ratio": 1}],
    "garbage",
    [],
])
def test_bad_reported_grants_mean_the_lease_is_lost(pool: Pool, entries) -> None:
    pool.register("a", "tcp://a:9960", gpus(40000), vgpu_count=1)
    assert pool.heartbeat("a", ["x"], {"x": entries}).lost == ("x",)
    assert pool.status()["leases"] == []


def test_unknown_lease_without_grants_is_lost(pool: Pool) -> None:
    pool.register("a", "tcp://a:9960", gpus(40000), vgpu_count=1)
    assert pool.heartbeat("a", ["nobody-knows"]).lost == ("nobody-knows",)


# -- logging ---------------------------------------------------------------------------

def test_scheduling_decisions_are_logged(pool: Pool, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="orion_controller.pool")
    pool.register("a", "tcp://a:9960", gpus(40000), vgpu_count=2)
    grant = pool.allocate(client_id="alice", host="h1", pid=42)
    decision = [r.getMessage() for r in caplog.records if "allocate" in r.getMessage()][-1]
    assert "client_id=alice host=h1 pid=42" in decision
    assert "candidates [a/gpu0 (free 40000 MiB, 100 %, fits 2)]" in decision
    assert f"chose [a/gpu0 20000 MiB 50 %]: lease {grant.lease}" in decision
    assert any("node a registered" in r.getMessage() for r in caplog.records)


def test_a_released_lease_is_not_rebuilt_by_a_late_heartbeat():
    """oriond's heartbeat may still list a session whose client just released its lease."""
    clock = [0.0]
    pool = Pool(clock=lambda: clock[0])
    pool.register("n1", "tcp://n1:9960", [{"uuid": "GPU-1", "name": "T", "index": 0,
                                            "memory_mib": 1000}], vgpu_count=1)
    grant = pool.allocate(vgpu=1)
    entries = [v.wire() for v in grant.vgpus]
    pool.release(grant.lease)
    result = pool.heartbeat("n1", [grant.lease], {grant.lease: entries})
    assert result.lost == (grant.lease,)
    pool.allocate(vgpu=1)   # the GPU is free for the next client


def test_a_preview_holds_nothing():
    pool = Pool()
    pool.register("n1", "tcp://n1:9960", [{"uuid": "GPU-1", "name": "T", "index": 0,
                                            "memory_mib": 1000}], vgpu_count=1)
    preview = pool.preview(vgpu=1)
    assert preview.lease == "" and [v.memory_mib for v in preview.vgpus] == [1000]
    assert pool.preview(vgpu=1).vgpus == preview.vgpus   # nothing was taken
    grant = pool.allocate(vgpu=1)
    assert grant.lease and grant.vgpus[0].gpu_uuid == "GPU-1"
    with pytest.raises(Busy):
        pool.preview(vgpu=1)    # a preview is refused as allocate would be
