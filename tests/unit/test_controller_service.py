"""The service's message handling, and round trips over inproc:// with the client."""
from __future__ import annotations

import json
import threading

import pytest
import zmq

from orion_controller.client import (ControlClient, ControlError, ControllerUnreachable,
                                     control_url)
from orion_controller.identity import vgpu_uuid
from orion_controller.pool import Pool
from orion_controller.service import Service

NODE = {"op": "register", "node": "a", "server": "tcp://10.0.0.5:9960", "vgpu_count": 4,
        "gpus": [{"uuid": "GPU-1", "name": "NVIDIA H100", "index": 0, "memory_mib": 40000}]}


def ask(service: Service, message) -> dict:
    return service.handle(json.dumps(message).encode())


@pytest.fixture
def service() -> Service:
    return Service(Pool())


@pytest.mark.parametrize("payload, error", [
    (b"\xff\xfe not json", "request is not JSON"),
    (b"{", "request is not JSON"),
    (b"[" * 100000, "request is not JSON"),
    (b"[1, 2]", "request must be a JSON object"),
    (b'"register"', "request must be a JSON object"),
    (b"{}", "unknown op None"),
    (b'{"op": "format_disk"}', "unknown op 'format_disk'; known: register,"),
    (b'{"op": 3}', "unknown op 3"),
    (b'{"op": "register", "node": "a", "server": "s", "gpus": {}}',
     "register: gpus must be a list"),
    (b'{"op": "heartbeat", "node": "a", "leases": "x"}', "heartbeat: leases must be a list"),
    (b'{"op": "heartbeat", "node": "a", "leases": [], "grants": []}',
     "heartbeat: grants must be an object"),
    (b'{"op": "release"}', "release: lease must be a non-empty string"),
    (b'{"op": "unregister", "node": null}', "unregister: node must be a non-empty string"),
])
def test_malformed_requests_get_a_reason(service: Service, payload: bytes, error: str) -> None:
    reply = service.handle(payload)
    assert reply["ok"] is False
    assert reply["error"].startswith(error)


def test_allocate_refusals_say_whether_to_retry(service: Service) -> None:
    assert ask(service, {"op": "allocate"}) == {
        "ok": False, "error": "allocate: no GPU is registered in the pool", "retry": True}
    ask(service, NODE)
    reply = ask(service, {"op": "allocate", "gmem": 50000})
    assert reply["ok"] is False and reply["retry"] is False
    assert "larger than any GPU" in reply["error"]


def test_a_bug_costs_one_request_not_the_service(service: Service, monkeypatch) -> None:
    monkeypatch.setattr(service.pool, "status", lambda: 1 / 0)
    assert ask(service, {"op": "status"}) == {
        "ok": False, "error": "status: internal error of the controller (see its log)"}
    monkeypatch.undo()
    assert ask(service, {"op": "status"})["ok"] is True


def test_message_flow(service: Service) -> None:
    assert ask(service, NODE) == {"ok": True, "known": False}
    grant = ask(service, {"op": "allocate", "vgpu": 2, "gmem": None, "ratio": None,
                          "client_id": "alice", "host": "h1", "pid": 7})
    assert grant["ok"] is True
    assert grant["vgpus"][0] == {
        "vgpu_id": f"{grant['lease']}-0", "server": "tcp://10.0.0.5:9960", "node": "a",
        "gpu_uuid": "GPU-1", "vgpu_uuid": vgpu_uuid("GPU-1", f"{grant['lease']}-0"),
        "gpu_index": 0, "gpu_name": "NVIDIA H100", "memory_mib": 10000, "ratio": 25}
    assert ask(service, {"op": "heartbeat", "node": "a", "leases": [grant["lease"]]}) == {
        "ok": True, "known": True, "lost": []}
    status = ask(service, {"op": "status"})
    assert status["nodes"][0]["gpus"][0]["used_mib"] == 20000
    assert status["leases"][0]["client_id"] == "alice"
    assert status["leases"][0]["vgpus"] == grant["vgpus"]
    assert ask(service, {"op": "release", "lease": grant["lease"]}) == {"ok": True}
    assert ask(service, {"op": "unregister", "node": "a"}) == {"ok": True}
    assert ask(service, {"op": "status"}) == {"ok": True, "nodes": [], "leases": []}


# -- over sockets ----------------------------------------------------------------------

def test_client_round_trip(served) -> None:
    context, url = served
    with ControlClient(url, timeout_s=2, context=context) as client:
        assert client.request(NODE) == {"ok": True, "known": False}
        assert client.request({"op": "status"})["nodes"][0]["node"] == "a"


def test_dealer_without_delimiter_and_multiframe_requests(served) -> None:
    context, url = served
    dealer = context.socket(zmq.DEALER)
    dealer.connect(url)
    try:
        dealer.send(b'{"op": "status"}')
        assert json.loads(dealer.recv())["ok"] is True
        dealer.send_multipart([b"", b'{"op": "status"}', b"extra"])
        empty, reply = dealer.recv_multipart()
        assert json.loads(reply) == {"ok": False, "error": "request must be one frame, not 2"}
    finally:
        dealer.close(linger=0)


def test_client_times_out_then_recovers(served) -> None:
    context, url = served
    silent = context.socket(zmq.ROUTER)      # reads requests and never answers
    silent.bind("inproc://silent")
    try:
        client = ControlClient("inproc://silent", timeout_s=0.2, context=context)
        with pytest.raises(ControllerUnreachable, match="no reply from the controller at "
                                                        "inproc://silent within 0.2 s"):
            client.request({"op": "status"})
        client.url = url                     # the next request opens a fresh socket
        assert client.request({"op": "status"})["ok"] is True
        client.close()
    finally:
        silent.close(linger=0)


def test_client_refuses_a_reply_that_is_not_one(served) -> None:
    context, _ = served
    liar = context.socket(zmq.ROUTER)
    liar.bind("inproc://liar")
    try:
        client = ControlClient("inproc://liar", timeout_s=2, context=context)
        answer = threading.Thread(target=lambda: liar.send_multipart(
            liar.recv_multipart()[:2] + [b"[]"]))
        answer.start()
        with pytest.raises(ControlError, match="without 'ok'"):
            client.request({"op": "status"})
        answer.join()
        client.close()
    finally:
        liar.close(linger=0)


@pytest.mark.parametrize("addr, url", [
    ("127.0.0.1:9123", "tcp://127.0.0.1:9123"),
    ("controller", "tcp://controller:9123"),
    (" orion-controller.orion:9000 ", "tcp://orion-controller.orion:9000"),
    ("[::1]:9123", "tcp://[::1]:9123"),
    ("[::1]", "tcp://[::1]:9123"),
    ("tcp://10.0.0.1:9123", "tcp://10.0.0.1:9123"),
    ("ipc:///tmp/orion", "ipc:///tmp/orion"),
])
def test_control_url(addr: str, url: str) -> None:
    assert control_url(addr) == url


@pytest.mark.parametrize("addr", ["", "host:", ":9123", "host:port", "::1"])
def test_control_url_refuses(addr: str) -> None:
    with pytest.raises(ValueError):
        control_url(addr)
