"""Allocate fields as the client sends them, the service's new ops, and wait_s queueing
over inproc:// sockets."""
from __future__ import annotations

import json
import threading
import time

import pytest

from orion_controller.client import ControlClient
from orion_controller.fields import Invalid
from orion_controller.pool import Pool
from orion_controller.request import parse
from orion_controller.service import Service

NODE = {"op": "register", "node": "a", "server": "tcp://10.0.0.5:9960", "vgpu_count": 1,
        "gpus": [{"uuid": "GPU-1", "name": "NVIDIA H100", "index": 0, "memory_mib": 40000}]}


def ask(service: Service, message: dict) -> dict:
    return service.handle(json.dumps(message).encode())


def test_every_field_of_a_full_request() -> None:
    demand, owner, wait_s = parse({
        "vgpu": 2, "gmem": 4096, "ratio": None, "cross_node": False,
        "device_ids": ["GPU-1", "GPU-2"], "device_name": "Tesla T4", "device_type": "GPU",
        "k8s_node": "worker-1", "schedule_rule": "local-only", "qos": "shared_all",
        "client_id": "alice", "host": "h1", "pid": 7, "group_id": "pod-uid",
        "reserved": True, "wait_s": 2.5})
    assert (demand.vgpu, demand.gmem, demand.ratio, demand.device_ids) == (
        2, 4096, None, ("GPU-1", "GPU-2"))
    assert (demand.schedule_rule, demand.qos, demand.host) == ("local-only", "shared_all", "h1")
    assert (owner.group_id, owner.reserved, wait_s) == ("pod-uid", True, 2.5)
    defaults, anonymous, no_wait = parse({"vgpu": None, "device_ids": None, "qos": None})
    assert (defaults.vgpu, defaults.schedule_rule, defaults.qos) == (1, "local-first", "exclusive")
    assert (anonymous.reserved, no_wait) == (False, 0.0)


@pytest.mark.parametrize("fields, error", [
    ({"cross_node": 1}, "cross_node must be true or false, not 1"),
    ({"reserved": "true"}, "reserved must be true or false"),
    ({"device_ids": "GPU-1,GPU-2"}, "device_ids must be a list"),
    ({"device_ids": ["GPU-1", ""]}, r"device_ids\[1\] must be a non-empty string"),
    ({"device_name": ""}, "device_name must be a non-empty string"),
    ({"schedule_rule": "local-last"}, "schedule_rule must be one of local-first, local-only"),
    ({"qos": "EXCLUSIVE"}, "qos must be one of exclusive, shared_core, shared_all"),
    ({"wait_s": -1}, r"wait_s must be a number of seconds in \[0, 600\]"),
    ({"wait_s": 601}, "wait_s must be a number of seconds"),
    ({"group_id": 5}, "group_id must be a non-empty string"),
    ({"cross_node": True, "ratio": 50}, "cross_node grants whole GPUs: ratio must be 100"),
])
def test_bad_fields_are_refused_for_good(fields: dict, error: str) -> None:
    with pytest.raises(Invalid, match=error):
        parse(fields)
    service = Service(Pool())
    reply = ask(service, {"op": "allocate", **fields})
    assert (reply["ok"], reply["retry"]) == (False, False)


def test_new_ops_over_the_service() -> None:
    service = Service(Pool())
    ask(service, NODE)
    grant = ask(service, {"op": "allocate", "group_id": "job", "reserved": True,
                          "qos": "shared_core"})
    assert (grant["qos"], grant["group_id"], grant["reserved"]) == ("shared_core", "job", True)
    assert ask(service, {"op": "group_list"})["groups"][0]["group_id"] == "job"
    summary = ask(service, {"op": "summary"})
    assert (summary["gpus"], summary["vgpus"], summary["tasks"]) == (1, 1, 1)
    assert summary["policy"] == "device compact, server compact, device first"
    assert ask(service, {"op": "release_group", "group_id": "job"}) == {
        "ok": True, "freed": 0, "in_use": 1}
    assert ask(service, {"op": "release_group", "group_id": "job"}) == {
        "ok": False, "error": "release_group: no reserved group job"}
    assert ask(service, {"op": "quota_list"}) == {"ok": True, "quotas": [], "enforced": False}
    unknown = ask(service, {"op": "nope"})["error"]
    assert unknown.startswith("unknown op 'nope'; known: register, heartbeat, unregister, "
                              "allocate, preview, release, status, release_group, group_list, "
                              "summary, custom_device_add")
    preview = ask(service, {"op": "preview"})   # the only GPU is still in use: refused
    assert not preview["ok"] and preview["retry"] and "no node has room" in preview["error"]


# -- wait_s ----------------------------------------------------------------------------

def test_a_request_may_wait_for_capacity(served) -> None:
    context, url = served
    with ControlClient(url, timeout_s=5, context=context) as first, \
            ControlClient(url, timeout_s=5, context=context) as second:
        first.request(NODE)
        holder = first.request({"op": "allocate"})
        busy = first.request({"op": "allocate"})
        assert (busy["ok"], busy["retry"]) == (False, True)        # no wait_s: at once
        started = time.monotonic()
        timed_out = first.request({"op": "allocate", "wait_s": 0.3})
        assert 0.3 <= time.monotonic() - started < 1.5
        assert timed_out["retry"] is True and "(waited 0." in timed_out["error"]

        waited: dict = {}
        waiter = threading.Thread(target=lambda: waited.update(
            second.request({"op": "allocate", "wait_s": 4})))
        waiter.start()
        time.sleep(0.3)
        assert waited == {}                                        # queued, not refused
        assert first.request({"op": "status"})["ok"] is True       # others are still served
        first.request({"op": "release", "lease": holder["lease"]})
        waiter.join(3)
        assert waited["ok"] is True and waited["vgpus"][0]["gpu_uuid"] == "GPU-1"
        never = first.request({"op": "allocate", "gmem": 50000, "wait_s": 3})
        assert never["retry"] is False                             # never fits: no waiting
