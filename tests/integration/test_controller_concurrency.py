"""Quotas and overcommit holding while many threads ask a controller process at once,
and durable state coming back after the process restarts."""
from __future__ import annotations

import threading
from pathlib import Path

from orion_controller.client import ControlClient
from test_controller_process import running

THREADS = 16


def node(name: str, count: int, memory_mib: int = 40000, **extra) -> dict:
    return {"op": "register", "node": name, "server": f"tcp://{name}:9960", "vgpu_count": 4,
            "gpus": [{"uuid": f"GPU-{name}{i}", "name": "NVIDIA H100", "index": i,
                      "memory_mib": memory_mib} for i in range(count)], **extra}


def storm(addr: str, requests: list[dict], rounds: int, release: bool) -> list[dict]:
    """THREADS threads, each with its own client, send their request `rounds` times at
    the same moment; returns every grant (released again at once when `release`)."""
    grants: list[dict] = []
    lock = threading.Lock()
    start = threading.Barrier(THREADS)

    def worker(n: int) -> None:
        with ControlClient(addr, timeout_s=10) as client:
            start.wait()
            for _ in range(rounds):
                reply = client.request(requests[n % len(requests)])
                if reply["ok"]:
                    with lock:
                        grants.append(reply)
                    if release:
                        assert client.request({"op": "release", "lease": reply["lease"]})["ok"]
                else:
                    assert reply["retry"] is True, reply

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return grants


def test_a_quota_holds_under_concurrent_requests(tmp_path: Path) -> None:
    with running(tmp_path / "c.log", env={"QUOTA_LIMIT": "enable"}) as controller, \
            ControlClient(controller.addr, timeout_s=10) as admin:
        admin.request(node("a", 8))
        admin.request({"op": "quota_set", "client_id": "alice", "device_type": "GPU",
                       "device_vendor": "NVIDIA", "vdevice_num": 5, "vdevice_mem": 45000})
        alice = {"op": "allocate", "client_id": "alice", "gmem": 9000}
        stop = threading.Event()
        seen: list[int] = []

        def watch() -> None:     # the controller's own count, while the storm goes on
            with ControlClient(controller.addr, timeout_s=10) as watcher:
                while not stop.is_set():
                    seen.append(watcher.request({
                        "op": "quota_info", "client_id": "alice", "device_type": "GPU",
                        "device_vendor": "NVIDIA"})["quota"]["used_num"])

        watcher = threading.Thread(target=watch)
        watcher.start()
        churn = storm(controller.addr, [alice], rounds=20, release=True)
        held = storm(controller.addr, [alice, {**alice, "gmem": 20000}], rounds=3,
                     release=False)
        stop.set()
        watcher.join(10)
        assert len(churn) > 5 and seen and max(seen) <= 5
        quota = admin.request({"op": "quota_info", "client_id": "alice", "device_type": "GPU",
                               "device_vendor": "NVIDIA"})["quota"]
        assert quota["used_num"] == len(held) <= 5
        assert quota["used_mem"] == sum(v["memory_mib"] for g in held for v in g["vgpus"]) <= 45000
        leases = admin.request({"op": "status"})["leases"]
        assert sorted(lease["lease"] for lease in leases) == sorted(g["lease"] for g in held)


def test_overcommit_holds_under_concurrent_requests(tmp_path: Path) -> None:
    env = {"OC_ENABLE": "true", "OC_CORE_RATIO": "2", "OC_MEM_RATIO": "1"}
    with running(tmp_path / "c.log", env=env) as controller, \
            ControlClient(controller.addr, timeout_s=10) as admin:
        admin.request(node("a", 2))
        shared = {"op": "allocate", "ratio": 40, "gmem": 1000, "qos": "shared_core"}
        exclusive = {"op": "allocate", "ratio": 40, "gmem": 1000}
        grants = storm(controller.addr, [shared, exclusive], rounds=4, release=False)
        gpus = admin.request({"op": "status"})["nodes"][0]["gpus"]
        for gpu in gpus:
            # physical 100 % while an exclusive vGPU is on it, 200 % otherwise
            assert gpu["used_ratio"] <= (100 if gpu["exclusive_vgpus"] else 200), gpu
        assert sum(g["used_ratio"] for g in gpus) == 40 * len(grants)
        assert sum(g["vgpus"] for g in gpus) == len(grants) >= 4


def test_durable_state_and_grants_come_back_after_a_restart(tmp_path: Path) -> None:
    db = tmp_path / "controller.db"
    args = ("--db", str(db), "--lease-timeout", "30", "--node-timeout", "60")
    with running(tmp_path / "first.log", *args) as first, \
            ControlClient(first.addr, timeout_s=5) as client:
        client.request(node("a", 2))
        client.request({"op": "custom_device_add", "name": "half", "memory": 20000,
                        "physical_devices": [{"device_name": "NVIDIA H100", "ratio": 50}]})
        client.request({"op": "quota_set", "client_id": "alice", "device_type": "GPU",
                        "device_vendor": "NVIDIA", "vdevice_num": 8})
        plain = client.request({"op": "allocate", "client_id": "alice", "gmem": 5000})
        reserved = client.request({"op": "allocate", "client_id": "alice", "group_id": "pod",
                                   "reserved": True, "device_name": "half"})
        assert plain["ok"] and reserved["ok"]
    # oriond keeps the grants of its live sessions and reports them to the new controller
    grants = {g["lease"]: g["vgpus"] for g in (plain, reserved)}
    with running(tmp_path / "second.log", *args) as second, \
            ControlClient(second.addr, timeout_s=5) as client:
        beat = {"op": "heartbeat", "node": "a", "leases": list(grants), "grants": grants}
        assert client.request(beat)["known"] is False
        assert client.request(node("a", 2))["known"] is False
        assert client.request(beat) == {"ok": True, "known": True, "lost": []}
        status = client.request({"op": "status"})
        assert sorted(lease["lease"] for lease in status["leases"]) == sorted(grants)
        assert sum(g["used_mib"] for g in status["nodes"][0]["gpus"]) == 25000
        assert client.request({"op": "custom_device_info", "name": "half"})["ok"]
        quota = client.request({"op": "quota_info", "client_id": "alice", "device_type": "GPU",
                                "device_vendor": "NVIDIA"})["quota"]
        assert quota["used_num"] == 1     # the reserved vGPU; the rebuilt plain lease is anonymous
        [group] = client.request({"op": "group_list"})["groups"]
        assert (group["group_id"], group["idle"]) == ("pod", 0)
    log = (tmp_path / "second.log").read_text()
    assert f"lease {plain['lease']} rebuilt from node a: gpu0 5000 MiB 25 %" in log
    assert f"lease {reserved['lease']} rebuilt from node a: gpu0 20000 MiB 50 %" in log
