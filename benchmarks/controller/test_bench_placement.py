"""The scheduling cost alone (no transport): one grant and its release on a pool of 1000
servers x 8 GPUs filled to half with mixed sizes, for each placement policy.

    python -m pytest benchmarks/controller/test_bench_placement.py --benchmark-only

bench_grants.py measures the same through the real ZeroMQ service.
"""
from __future__ import annotations

import itertools
import random

import pytest

from orion_controller.placement import Policy
from orion_controller.pool import Pool

SERVERS, GPUS, GPU_MIB = 1000, 8, 81559
SHAPES = [{"vgpu": 1}, {"vgpu": 1, "ratio": 10}, {"vgpu": 1, "ratio": 50}, {"vgpu": 2},
          {"vgpu": 2, "ratio": 50}, {"vgpu": 4}]


def half_full(policy: Policy) -> Pool:
    pool = Pool(policy=policy, lease_timeout=1e9, node_timeout=1e9)
    for n in range(SERVERS):
        pool.register(f"node{n:04d}", f"tcp://10.1.{n // 250}.{n % 250}:9960",
                      [{"uuid": f"GPU-{n:04d}-{i}", "name": "NVIDIA H100 80GB HBM3",
                        "index": i, "memory_mib": GPU_MIB} for i in range(GPUS)], 4)
    rnd = random.Random(1)
    taken = 0
    while taken < SERVERS * GPUS * 50:      # half of all compute, in %
        taken += sum(v.ratio for v in pool.allocate(**rnd.choice(SHAPES)).vgpus)
    return pool


@pytest.mark.parametrize("policy", [Policy(), Policy(False, False, False),
                                    Policy(True, False, False)],
                         ids=["pack", "spread", "spread-servers"])
def test_grant_and_release(benchmark, policy: Policy) -> None:
    pool = half_full(policy)
    shapes = itertools.cycle(SHAPES)

    def cycle() -> None:
        pool.release(pool.allocate(client_id="bench", **next(shapes)).lease)

    benchmark.pedantic(cycle, rounds=3000, warmup_rounds=100)
