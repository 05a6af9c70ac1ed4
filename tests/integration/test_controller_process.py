"""The controller as a real process on a free port: a fake node and client talk to it."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import zmq

from orion_controller.client import ControlClient, ControllerUnreachable

REPO = Path(__file__).resolve().parents[2]
GPUS = [{"uuid": "GPU-0", "name": "Fake GPU", "index": 0, "memory_mib": 16000},
        {"uuid": "GPU-1", "name": "Fake GPU", "index": 1, "memory_mib": 16000}]


@dataclass
class Controller:
    process: subprocess.Popen
    addr: str          # host:port, as users write it
    log: Path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start(port: int, log: Path, *extra: str, env: dict | None = None) -> subprocess.Popen:
    """A controller process; it keeps no state on disk and serves no REST API unless
    `extra` says otherwise (later flags win)."""
    return subprocess.Popen(
        [sys.executable, "-m", "orion_controller", "--listen", "127.0.0.1", "--port", str(port),
         "--log-file", str(log), "--db", ":memory:", "--http-port", "0", *extra],
        cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def running(log: Path, *extra: str, env: dict | None = None) -> Iterator[Controller]:
    """A controller process that answers, stopped at the end."""
    port = free_port()
    process = start(port, log, *extra, env=env)
    try:
        addr = f"127.0.0.1:{port}"
        deadline = time.monotonic() + 15
        with ControlClient(addr, timeout_s=0.5) as client:
            while True:
                assert process.poll() is None, process.communicate()
                try:
                    if client.request({"op": "status"})["ok"]:
                        break
                except ControllerUnreachable:
                    assert time.monotonic() < deadline, "controller did not answer in 15 s"
        yield Controller(process, addr, log)
    finally:
        stop(process)


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[Controller]:
    with running(tmp_path / "controller.log", "--lease-timeout", "1",
                 "--node-timeout", "30") as started:
        yield started


def raw(addr: str, *frames: bytes) -> dict:
    """Sends frames as they are from a DEALER (as a REQ would, with the empty delimiter)."""
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.setsockopt(zmq.RCVTIMEO, 5000)
    dealer.connect(f"tcp://{addr}")
    try:
        dealer.send_multipart([b"", *frames])
        empty, reply = dealer.recv_multipart()
        return json.loads(reply)
    finally:
        dealer.close()


def test_node_and_client_session(controller: Controller) -> None:
    with ControlClient(controller.addr, timeout_s=5) as client:
        node = {"op": "register", "node": "fake", "server": "tcp://127.0.0.1:9960",
                "gpus": GPUS, "vgpu_count": 4}
        assert client.request(node) == {"ok": True, "known": False}

        grant = client.request({"op": "allocate", "vgpu": 2, "client_id": "t", "host": "h",
                                "pid": os.getpid()})
        assert grant["ok"] is True, grant
        assert [(v["gpu_index"], v["memory_mib"], v["ratio"]) for v in grant["vgpus"]] == [
            (0, 4000, 25), (1, 4000, 25)]
        for _ in range(5):          # 1.5 s, past the 1 s lease timeout, kept by heartbeats
            time.sleep(0.3)
            beat = client.request({"op": "heartbeat", "node": "fake", "leases": [grant["lease"]]})
            assert beat == {"ok": True, "known": True, "lost": []}
        status = client.request({"op": "status"})
        assert [g["used_mib"] for g in status["nodes"][0]["gpus"]] == [4000, 4000]
        assert status["leases"][0]["lease"] == grant["lease"]

        for frames, error in [
            ((b"\x00\xffnot json",), "request is not JSON"),
            ((b"[]",), "request must be a JSON object"),
            ((b'{"op": "reboot"}',), "unknown op 'reboot'"),
            ((b'{"op": "allocate", "vgpu": "lots"}',), "allocate: vgpu must be an integer"),
            ((b'{"op": "status"}', b"more"), "request must be one frame, not 2"),
        ]:
            reply = raw(controller.addr, *frames)
            assert reply["ok"] is False and reply["error"].startswith(error), reply
        assert controller.process.poll() is None

        assert client.request({"op": "release", "lease": grant["lease"]}) == {"ok": True}
        assert client.request({"op": "status"})["leases"] == []

        # A client that never reaches its server: the lease ends by itself.
        lonely = client.request({"op": "allocate"})
        assert lonely["ok"] is True
        time.sleep(1.6)
        assert client.request({"op": "status"})["leases"] == []
        assert client.request({"op": "unregister", "node": "fake"}) == {"ok": True}

    log = controller.log.read_text()
    assert "node fake registered" in log
    assert "chose [fake/gpu0 4000 MiB 25 %, fake/gpu1 4000 MiB 25 %]" in log
    assert f"lease {lonely['lease']} expired" in log


def test_sigterm_stops_it_cleanly(controller: Controller) -> None:
    controller.process.send_signal(signal.SIGTERM)
    assert controller.process.wait(5) == 0
    assert "stopped" in controller.log.read_text()


def test_busy_port_is_reported(controller: Controller, tmp_path: Path) -> None:
    second = start(int(controller.addr.rsplit(":", 1)[1]), tmp_path / "second.log")
    try:
        assert second.wait(10) == 1
        assert "cannot listen on tcp://127.0.0.1:" in (tmp_path / "second.log").read_text()
    finally:
        stop(second)
