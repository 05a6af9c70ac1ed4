"""Placement: every policy on a known pool, the request's filters, and the rank index
agreeing with a brute-force walk over the whole pool."""
from __future__ import annotations

import logging
import random
import re

import pytest

from orion_controller.candidates import Search
from orion_controller.fields import Invalid
from orion_controller.placement import Policy, Trace, choose
from orion_controller.pool import Busy, Pool
from orion_controller.request import parse


def gpus(node: str, *mibs: int, name: str = "NVIDIA H100") -> list[dict]:
    return [{"uuid": f"GPU-{node}{i}", "name": name, "index": i, "memory_mib": mib}
            for i, mib in enumerate(mibs)]


def two_by_two(policy: Policy, vgpu_count: int = 4) -> Pool:
    pool = Pool(policy=policy)
    for node in "ab":
        pool.register(node, f"tcp://{node}:9960", gpus(node, 40000, 40000), vgpu_count)
    return pool


def placed(grant) -> list[str]:
    return [f"{v.node}{v.gpu_index}" for v in grant.vgpus]


# -- policies --------------------------------------------------------------------------

@pytest.mark.parametrize("device_compact, server_compact, device_prefered, expected", [
    # pack everything: fill a GPU, then the other GPU of the same server, then the next server
    (True, True, True, "a0 a0 a0 a0 a1 a1 a1 a1 b0 b0"),
    # spread everything: one vGPU per server in turn, and over each server's GPUs
    (False, False, False, "a0 b0 a1 b1 a0 b0 a1 b1 a0 b0"),
    # spread servers, pack GPUs within a server
    (True, False, False, "a0 b0 a0 b0 a0 b0 a0 b0 a1 b1"),
    # spread GPUs first, prefer loaded servers among equally loaded GPUs
    (False, True, True, "a0 a1 b0 b1 a0 a1 b0 b1 a0 a1"),
    # pack servers first, spread over the GPUs of the server
    (False, True, False, "a0 a1 a0 a1 a0 a1 a0 a1 b0 b1"),
    # spread GPUs first, and among empty GPUs prefer empty servers
    (False, False, True, "a0 b0 a1 b1 a0 b0 a1 b1 a0 b0"),
])
def test_policies_on_a_known_pool(device_compact: bool, server_compact: bool,
                                  device_prefered: bool, expected: str) -> None:
    pool = two_by_two(Policy(device_compact, server_compact, device_prefered))
    assert [placed(pool.allocate())[0] for _ in range(10)] == expected.split()


@pytest.mark.parametrize("policy", [Policy(), Policy(False, False, False), Policy(True, False, False)])
def test_vgpus_of_one_request_land_on_distinct_gpus(policy: Policy) -> None:
    pool = Pool(policy=policy)
    pool.register("a", "tcp://a:9960", gpus("a", 40000, 40000, 40000, 40000), 4)
    pool.allocate()                                   # one GPU is loaded a little
    grant = pool.allocate(vgpu=3)
    assert len(set(placed(grant))) == 3


def test_whole_node_request_goes_where_the_policy_says() -> None:
    pool = two_by_two(Policy())                       # pack: the loaded node first
    pool.allocate()
    assert placed(pool.allocate(vgpu=2)) == ["a0", "a1"]
    spread = two_by_two(Policy(False, False, False))  # spread: the empty node
    spread.allocate()
    assert placed(spread.allocate(vgpu=2)) == ["b0", "b1"]


# -- cross_node ------------------------------------------------------------------------

def test_cross_node_grants_whole_gpus_from_several_nodes() -> None:
    pool = two_by_two(Policy())
    with pytest.raises(Invalid, match="one node holds at most 2"):
        pool.allocate(vgpu=3, ratio=100)
    grant = pool.allocate(vgpu=3, cross_node=True)
    assert placed(grant) == ["a0", "a1", "b0"]
    assert {v.ratio for v in grant.vgpus} == {100}
    with pytest.raises(Invalid, match="cross_node grants whole GPUs: ratio must be 100"):
        pool.allocate(vgpu=2, ratio=50, cross_node=True)
    with pytest.raises(Invalid, match="the pool could ever hold only 4"):
        pool.allocate(vgpu=5, cross_node=True)
    with pytest.raises(Busy):
        pool.allocate(vgpu=2, cross_node=True)        # one whole GPU is left


# -- filters ---------------------------------------------------------------------------

def test_local_first_and_local_only_follow_the_client_host() -> None:
    pool = two_by_two(Policy())
    pool.register("c", "tcp://10.0.0.7:9960", gpus("c", 40000), 4, host="gpu-box-7")
    assert placed(pool.allocate(host="b")) == ["b0"]            # local first: b's own GPU
    assert placed(pool.allocate(host="nowhere")) == ["b0"]      # no local node: pack onto b0
    assert placed(pool.allocate(host="gpu-box-7",
                                schedule_rule="local-only")) == ["c0"]   # registered host
    assert placed(pool.allocate(host="10.0.0.7",
                                schedule_rule="local-only")) == ["c0"]   # server address
    pool.allocate(host="c", schedule_rule="local-only", vgpu=2)
    with pytest.raises(Busy, match="no node has room"):
        pool.allocate(host="c", schedule_rule="local-only")
    assert placed(pool.allocate(host="c"))[0] != "c0"           # local first falls back
    with pytest.raises(Invalid, match="no GPU in the pool matches local-only on host 'x'"):
        pool.allocate(host="x", schedule_rule="local-only")
    with pytest.raises(Invalid, match="schedule_rule local-only needs the client's host"):
        pool.allocate(schedule_rule="local-only")


def test_k8s_node_device_ids_device_name_and_type_filter() -> None:
    pool = Pool()
    pool.register("a", "tcp://a:9960", gpus("a", 15360, 15360, name="Tesla T4"), 4)
    pool.register("b", "tcp://b:9960", gpus("b", 7680, 7680, name="Tesla P4"), 4,
                  k8s_node="worker-2")
    pool.register("m", "tcp://m:9960", [{"uuid": "MLU-0", "name": "MLU370", "index": 0,
                                         "memory_mib": 24000, "type": "MLU",
                                         "vendor": "Cambricon"}], 4)
    assert placed(pool.allocate(k8s_node="worker-2")) == ["b0"]
    assert placed(pool.allocate(device_ids=["GPU-a1", "GPU-b1"])) == ["b1"]   # b is loaded
    assert placed(pool.allocate(device_ids=["GPU-a1"])) == ["a1"]
    assert placed(pool.allocate(device_name="tesla p4")) == ["b0"]    # case does not matter
    assert placed(pool.allocate(device_type="mlu")) == ["m0"]
    grant = pool.allocate(device_type="GPU", device_name="Tesla T4", vgpu=2)
    assert placed(grant) == ["a1", "a0"]                   # a1 is the loaded one
    for request_, reason in [
        ({"device_name": "A100"}, "no GPU in the pool matches device_name 'A100'"),
        ({"device_ids": ["GPU-zz"]}, "no GPU in the pool matches device_ids [GPU-zz]"),
        ({"k8s_node": "worker-9"}, "no GPU in the pool matches k8s_node 'worker-9'"),
        ({"device_type": "DCU"}, "no GPU in the pool matches device_type 'DCU'"),
        ({"device_name": "Tesla P4", "gmem": 10000},
         "gmem 10000 MiB is larger than any GPU in the pool (largest: 7680 MiB)"),
    ]:
        with pytest.raises(Invalid, match=re.escape(reason)):
            pool.allocate(**request_)


# -- the index -------------------------------------------------------------------------

@pytest.mark.parametrize("policy", [Policy(), Policy(False, False, False),
                                   Policy(True, False, False), Policy(False, True, False)])
def test_index_order_agrees_with_brute_force(policy: Policy) -> None:
    """The shelved index must offer the same first choice as a walk over every GPU."""
    rnd = random.Random(7)
    pool = Pool(policy=policy, lease_timeout=1e9, node_timeout=1e9)
    for n in range(12):
        pool.register(f"n{n}", f"tcp://n{n}:9960",
                      gpus(f"n{n}-", *[rnd.choice([16000, 40000, 81559])] * 4,
                           name=rnd.choice(["NVIDIA H100", "Tesla T4"])),
                      rnd.choice([1, 2, 4, 7]))
    leases = []
    for step in range(600):
        fields = {"vgpu": rnd.choice([1, 1, 2, 3]), "gmem": rnd.choice([None, None, 1, 3000]),
                  "ratio": rnd.choice([None, 5, 33, 100]),
                  "device_name": rnd.choice([None, None, "Tesla T4"])}
        demand, owner, _ = parse(fields)
        search = Search(pool.inventory, demand, owner, None, pool.quotas)
        everything = sorted((d for d in pool.inventory.all_devices() if d.key is not None),
                            key=lambda d: d.key)
        expected = choose(everything, demand.vgpu, search.fits,
                          lambda node: sorted((d for d in node.devices if d.key), key=lambda d: d.key),
                          cross_node=False, trace=Trace(demand.qos))
        try:
            grant = pool.allocate(**fields)
        except Busy:
            assert expected is None, f"step {step}: brute force found {expected}"
        else:
            assert [f"{v.node}/gpu{v.gpu_index}" for v in grant.vgpus] == [
                d.label for d in expected], f"step {step}"
            leases.append(grant.lease)
        if leases and rnd.random() < 0.45:
            pool.release(leases.pop(rnd.randrange(len(leases))))


def test_dust_left_by_default_sizes_is_not_walked_past() -> None:
    # 81559 // 4 leaves 3 MiB on a full GPU: a compact policy ranks those first.
    pool = Pool()
    for n in range(50):
        pool.register(f"n{n}", f"tcp://n{n}:9960", gpus(f"n{n}-", *[81559] * 8), 4)
    for _ in range(50 * 8 * 4 - 8):
        pool.allocate()
    demand, owner, _ = parse({})
    trace = Trace(demand.qos)
    assert Search(pool.inventory, demand, owner, None, pool.quotas).run(trace)
    assert trace.examined <= 2


def test_each_decision_is_logged_with_scores(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="orion_controller.pool")
    pool = two_by_two(Policy())
    pool.allocate()
    grant = pool.allocate(client_id="alice", group_id="job-1")
    line = caplog.records[-1].getMessage()
    assert line.startswith("allocate 1 vGPU(s) of default memory, default ratio for "
                           "client_id=alice group_id=job-1: 4 GPU(s) in scope, examined 1, "
                           "0 filtered out; candidates [a/gpu0 (free 30000 MiB, 75 %, fits 3)")
    assert "top scores (load) [a/gpu0 device 25 % server 12.5 %" in line
    assert line.endswith(f"chose [a/gpu0 10000 MiB 25 %]: lease {grant.lease}")
