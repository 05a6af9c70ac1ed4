"""The REST API of a controller process: every route, and its error statuses."""
from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from orion_controller.client import ControlClient
from test_controller_process import Controller, free_port, running

SMALL = {"name": "small-gpu-4", "display_name": "Small GPU 4G", "memory": 4000,
         "physical_devices": [{"device_name": "Tesla T4", "ratio": 20},
                              {"device_name": "Tesla P4", "ratio": 10}]}


@pytest.fixture
def rest(tmp_path: Path) -> Iterator[tuple[Controller, str]]:
    port = free_port()
    with running(tmp_path / "controller.log", "--http-port", str(port),
                 "--db", str(tmp_path / "controller.db")) as controller:
        yield controller, f"http://127.0.0.1:{port}/v2"


def call(method: str, url: str, body: dict | None = None) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_custom_devices_and_quotas(rest) -> None:
    _, base = rest
    assert call("POST", f"{base}/custom_devices", SMALL) == (201, {"ok": True,
                                                                   "custom_device": SMALL})
    assert call("GET", f"{base}/custom_devices?full_fields=true")[1]["custom_devices"] == [SMALL]
    assert call("GET", f"{base}/custom_devices")[1]["custom_devices"] == [
        {"name": "small-gpu-4", "display_name": "Small GPU 4G", "memory": 4000}]
    status, reply = call("PUT", f"{base}/custom_devices/small-gpu-4", {"memory": 5000})
    assert (status, reply["custom_device"]["memory"]) == (200, 5000)
    assert call("GET", f"{base}/custom_devices/small-gpu-4")[1]["custom_device"]["memory"] == 5000
    assert call("DELETE", f"{base}/custom_devices/small-gpu-4")[0] == 200
    assert call("GET", f"{base}/custom_devices/small-gpu-4") == (
        404, {"ok": False, "error": "no custom device small-gpu-4"})
    assert call("POST", f"{base}/custom_devices", {"name": "x", "memory": 1}) == (
        400, {"ok": False, "error": "physical_devices is missing"})

    status, reply = call("PUT", f"{base}/quotas/team%20a/gpu/nvidia",
                         {"vdevice_num": 4, "vdevice_mem": 32000})
    assert status == 200
    assert (reply["quota"]["client_id"], reply["quota"]["left_mem"]) == ("team a", 32000)
    assert call("GET", f"{base}/quotas/team%20a/GPU/NVIDIA")[1]["quota"]["vdevice_num"] == 4
    assert len(call("GET", f"{base}/quotas")[1]["quotas"]) == 1
    assert call("DELETE", f"{base}/quotas/team%20a")[1]["deleted"][0]["client_id"] == "team a"
    assert call("GET", f"{base}/quotas/team%20a/GPU/NVIDIA")[0] == 404


def test_nodes_tasks_groups_and_errors(rest) -> None:
    controller, base = rest
    with ControlClient(controller.addr, timeout_s=5) as client:
        client.request({"op": "register", "node": "n1", "server": "tcp://127.0.0.1:9960",
                        "gpus": [{"uuid": "GPU-0", "name": "Tesla T4", "index": 0,
                                  "memory_mib": 15360}]})
        grant = client.request({"op": "allocate", "client_id": "alice", "group_id": "pod-1",
                                "reserved": True})
    [node] = call("GET", f"{base}/nodes")[1]["nodes"]
    assert (node["node"], node["gpus"][0]["used_mib"]) == ("n1", 3840)
    [task] = call("GET", f"{base}/tasks")[1]["tasks"]
    assert (task["lease"], task["client_id"], task["vgpus"]) == (
        grant["lease"], "alice", grant["vgpus"])
    assert call("GET", f"{base}/summary")[1]["vgpus"] == 1
    assert call("GET", f"{base}/groups")[1]["groups"][0]["group_id"] == "pod-1"
    assert call("DELETE", f"{base}/groups/pod-1") == (200, {"ok": True, "freed": 0,
                                                           "in_use": 1})
    assert call("GET", f"{base}/nowhere")[0] == 404
    assert call("POST", f"{base}/nodes", {})[0] == 405
    request = urllib.request.Request(f"{base}/custom_devices", data=b"{not json",
                                     method="POST")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    assert refused.value.code == 400
