"""Reserved groups, and what survives a controller restart through SQLite."""
from __future__ import annotations

from pathlib import Path

import pytest

from orion_controller import admin, config
from orion_controller.fields import Invalid, NotFound
from orion_controller.pool import Busy, Pool
from orion_controller.store import Store, StoreError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


GPUS = [{"uuid": f"GPU-{i}", "name": "NVIDIA H100", "index": i, "memory_mib": 40000}
        for i in range(2)]


def make(clock: Clock, store: Store | None = None, **options) -> Pool:
    pool = Pool(clock=clock, lease_timeout=5, node_timeout=10, store=store, **options)
    pool.register("a", "tcp://a:9960", GPUS, 2)
    return pool


def used(pool: Pool) -> list[tuple[int, int]]:
    return [(g["used_mib"], g["used_ratio"]) for g in pool.status()["nodes"][0]["gpus"]]


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_a_reserved_group_keeps_its_vgpus_between_runs(clock: Clock) -> None:
    pool = make(clock)
    first = pool.allocate(group_id="job", reserved=True, client_id="alice")
    assert first.reserved and first.group_id == "job"
    where = first.vgpus[0].gpu_uuid
    pool.release(first.lease)
    assert used(pool) == [(20000, 50), (0, 0)]          # still held for the group
    pool.allocate(gmem=20000)                           # the rest of GPU-0 goes to another
    again = pool.allocate(group_id="job", client_id="alice")
    assert again.reserved and again.lease != first.lease
    assert again.vgpus[0].gpu_uuid == where             # the same GPU, its own place
    assert used(pool) == [(40000, 100), (0, 0)]
    [group] = pool.group_list()
    assert (group["group_id"], group["vgpus"], group["idle"]) == ("job", 1, 0)


def test_an_expired_lease_leaves_its_reservation_idle(clock: Clock) -> None:
    pool = make(clock)
    pool.allocate(group_id="job", reserved=True)
    clock.now += 6
    pool.expire()
    assert pool.status()["leases"] == [] and used(pool)[0] == (20000, 50)
    assert pool.group_list()[0]["idle"] == 1


def test_reserved_capacity_is_not_given_to_others(clock: Clock) -> None:
    pool = make(clock)
    pool.allocate(group_id="job", reserved=True, vgpu=2, ratio=100, gmem=40000)
    pool.release(pool.status()["leases"][0]["lease"])
    with pytest.raises(Busy):
        pool.allocate()
    pool.allocate(group_id="job", vgpu=2, ratio=100)    # the group's own request fits


def test_a_request_the_idle_slots_cannot_serve_reserves_more(clock: Clock) -> None:
    pool = make(clock)
    pool.allocate(group_id="job", reserved=True, gmem=10000, ratio=25)
    bigger = pool.allocate(group_id="job", reserved=True, gmem=20000)
    assert bigger.reserved
    assert pool.group_list()[0]["vgpus"] == 2


def test_release_group(clock: Clock) -> None:
    pool = make(clock)
    running = pool.allocate(group_id="job", reserved=True)
    idle = pool.allocate(group_id="job", reserved=True)
    pool.release(idle.lease)
    assert pool.release_group("job") == {"freed": 1, "in_use": 1}
    assert pool.group_list() == []
    assert sorted(used(pool)) == [(0, 0), (20000, 50)]  # the running one holds on
    pool.release(running.lease)
    assert used(pool) == [(0, 0), (0, 0)]
    with pytest.raises(NotFound, match="no reserved group job"):
        pool.release_group("job")
    with pytest.raises(Invalid, match="reserved needs a group_id"):
        pool.allocate(reserved=True)


def test_reserved_vgpus_count_in_the_quota_until_released(clock: Clock) -> None:
    pool = make(clock, quota_limit=True)
    admin.quota_set(pool, {"client_id": "alice", "device_type": "GPU",
                           "device_vendor": "NVIDIA", "vdevice_num": 1})
    lease = pool.allocate(client_id="alice", group_id="job", reserved=True).lease
    pool.release(lease)
    with pytest.raises(Busy, match="has 0 vGPUs left of 1"):
        pool.allocate(client_id="alice")
    pool.allocate(client_id="alice", group_id="job")    # its own reservation is fine
    pool.release_group("job")
    assert admin.quota_info(pool, {"client_id": "alice", "device_type": "GPU",
                                   "device_vendor": "NVIDIA"})["quota"]["left_num"] == 0
    pool.release(pool.status()["leases"][0]["lease"])
    pool.allocate(client_id="alice")


# -- restarts --------------------------------------------------------------------------

def test_durable_state_survives_a_restart(clock: Clock, tmp_path: Path) -> None:
    db = str(tmp_path / "controller.db")
    before = make(clock, Store(db), quota_limit=True)
    admin.custom_device_add(before, {"name": "half", "memory": 20000,
                                     "physical_devices": [{"device_name": "NVIDIA H100",
                                                           "ratio": 50}]})
    admin.quota_set(before, {"client_id": "alice", "device_type": "GPU",
                             "device_vendor": "NVIDIA", "vdevice_num": 3})
    running = before.allocate(client_id="alice", group_id="job", reserved=True,
                              device_name="half")
    idle = before.allocate(client_id="alice", group_id="job", reserved=True,
                           device_name="half")
    before.release(idle.lease)
    reported = {running.lease: [v.wire() for v in running.vgpus]}
    before.store.close()

    after = Pool(clock=clock, lease_timeout=5, node_timeout=10, store=Store(db),
                 quota_limit=True)
    assert admin.custom_device_info(after, {"name": "half"})["custom_device"]["memory"] == 20000
    quota = admin.quota_info(after, {"client_id": "alice", "device_type": "GPU",
                                     "device_vendor": "NVIDIA"})["quota"]
    assert (quota["vdevice_num"], quota["left_num"]) == (3, 1)   # the group's 2 vGPUs count
    assert after.heartbeat("a", [running.lease], reported).known is False
    after.register("a", "tcp://a:9960", GPUS, 2)
    assert sorted(used(after)) == [(0, 0), (40000, 100)]           # the reservation is back
    assert after.heartbeat("a", [running.lease], reported).lost == ()
    assert sorted(used(after)) == [(0, 0), (40000, 100)]           # not counted twice
    [lease] = after.status()["leases"]
    assert (lease["lease"], lease["reserved"], lease["group_id"]) == (running.lease, True, "job")
    again = after.allocate(client_id="alice", group_id="job", device_name="half")
    assert again.vgpus[0].gpu_uuid == idle.vgpus[0].gpu_uuid


def test_a_claim_that_does_not_come_back_goes_idle(clock: Clock, tmp_path: Path) -> None:
    db = str(tmp_path / "controller.db")
    before = make(clock, Store(db))
    before.allocate(group_id="job", reserved=True)
    before.store.close()
    after = make(clock, Store(db))           # nobody reports the lease after the restart
    assert after.group_list()[0]["idle"] == 0
    clock.now += 16                          # node timeout + lease timeout
    after.heartbeat("a", [])
    assert after.group_list()[0]["idle"] == 1
    assert after.allocate(group_id="job").reserved


def test_a_database_of_another_schema_is_refused(tmp_path: Path) -> None:
    db = tmp_path / "other.db"
    Store(str(db)).close()
    import sqlite3
    with sqlite3.connect(db) as raw:
        raw.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="has schema version 99; this controller knows 1"):
        Store(str(db))


def test_the_default_database_falls_back_to_memory(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("")
    settings = config.parse([], env={})
    default = config.open_store(settings.__class__(**{**settings.__dict__,
                                                      "db": str(blocked / "x.db")}))
    assert default.path == ":memory:"
    given = config.parse(["--db", str(blocked / "x.db")], env={})
    with pytest.raises(StoreError, match="cannot open the database"):
        config.open_store(given)
