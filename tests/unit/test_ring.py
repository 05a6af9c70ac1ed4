"""The same-host call ring: the client's C side (native/src/ring.c, built here on its own
and driven through ctypes) against the worker's Python side (orion_server/ring.py), then
the worker's serve loop with a client that offers a ring."""
from __future__ import annotations

import ctypes
import struct
import threading
import time
from pathlib import Path

import pytest
import zmq

from orion_server import backend as B
from orion_server import ring, wire
from orion_server.generated.cudart_table import CALLS
from orion_server.peer import Peer
from orion_server.worker import Session, serve
from ring_client import CFrame, RingClient, build_ring_lib, ring_pair

ROOT = Path(__file__).resolve().parents[2]
ID = {c.name: i for i, c in CALLS.items()}
OK, BUSY, TOO_BIG = 0, 1, 2


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    return build_ring_lib(tmp_path_factory.mktemp("ring"))


class Client(RingClient):
    def wait(self, seq, timeout_us=2_000_000):
        return self.lib.orion_ring_wait_reply(self.r, seq, timeout_us)

    def reply(self):
        arr, flags = (CFrame * 8)(), ctypes.c_uint()
        n = self.lib.orion_ring_reply(self.r, arr, 8, ctypes.byref(flags))
        assert n >= 0
        return [ctypes.string_at(arr[i].data, arr[i].len) for i in range(n)], flags.value


@pytest.fixture
def pair(lib):
    yield from ring_pair(Client(lib))


def take(worker, timeout_s=1.0):
    frames = worker.next_request(timeout_s)
    got = frames if frames is None or frames is ring.ON_SOCKET else [
        bytes(f.buffer) for f in frames]
    if frames is not None:
        worker.finish()
    return got


def test_requests_arrive_framed_as_sent(pair):
    client, worker = pair
    messages = [[b"h" * 24 + b"args"], [b"x" * 29, b"", b"bulk" * 1000, b"z"], [b"y" * 8]]
    for frames in messages:
        assert client.put(frames) == OK
    assert [take(worker) for _ in messages] == messages
    assert worker.next_request(0.01) is None


def test_records_wrap_around_the_ring(pair):
    """Records of odd sizes, many times round: padding at the end, never a split record;
    a full ring answers BUSY until the worker catches up."""
    client, worker = pair
    sent, got = [], []
    for i in range(300):
        frames = [bytes([i % 251]) * (1000 + 37 * i), bytes([i % 7]) * (i * 911 % 70000)]
        while client.put(frames, timeout_us=0) == BUSY:
            got.append(take(worker))
        sent.append(frames)
    while len(got) < len(sent):
        got.append(take(worker))
    assert got == sent


def test_oversized_requests_go_on_the_socket(pair):
    client, worker = pair
    assert client.put([b"h" * 24, bytes(worker.request_size // 2)]) == TOO_BIG
    assert client.put([], flags=ring.FLAG_ON_SOCKET) == OK
    assert take(worker) is ring.ON_SOCKET


def test_replies_and_oversized_replies(pair):
    client, worker = pair
    assert client.wait(7, timeout_us=1000) == 0
    assert worker.reply(7, [b"r" * 30, bytearray(b"out"), memoryview(b"printed")])
    assert client.wait(7) == 1
    assert client.reply() == ([b"r" * 30, b"out", b"printed"], 0)
    assert not worker.reply(8, [b"r" * 24, bytes(worker.reply_size)])
    worker.reply_on_socket(8)
    assert client.wait(8) == 1 and client.reply() == ([], ring.FLAG_ON_SOCKET)


def test_sleeping_sides_are_woken(pair):
    """Both sides poll briefly, then sleep on a futex: a message wakes the sleeper at once
    (the sleeps here would last seconds otherwise)."""
    client, worker = pair
    result = {}

    def worker_side():
        started = time.monotonic()
        result["frames"] = take(worker, timeout_s=10)
        result["worker_s"] = time.monotonic() - started
        time.sleep(0.2)   # the client is asleep by now
        worker.reply(1, [b"answer"])

    thread = threading.Thread(target=worker_side)
    thread.start()
    time.sleep(0.2)       # the worker is asleep by now
    assert client.put([b"call"]) == OK
    started = time.monotonic()
    assert client.wait(1, timeout_us=10_000_000) == 1   # ctypes lets the GIL go meanwhile
    client_s = time.monotonic() - started
    thread.join()
    assert result["frames"] == [b"call"] and 0.15 < result["worker_s"] < 2
    assert 0.15 < client_s < 2 and client.reply()[0] == [b"answer"]


def test_broken_records_end_the_ring(pair):
    client, worker = pair
    assert client.put([b"good"]) == OK
    worker._request[4:6] = struct.pack("<H", 200)     # more frames than allowed
    with pytest.raises(ring.RingError):
        worker.next_request(0.01)


def test_only_ring_names_are_opened(lib):
    for name in ("/orion-1-2", "/../etc/passwd", "/orion-ring-1-2/x"):
        with pytest.raises(ring.RingError):
            ring.CallRing(name)
    with pytest.raises(ring.RingError, match="cannot open"):
        ring.CallRing("/orion-ring-999999999-0")


# ---- the worker's serve loop, with a client that offers a ring ----

class RecordingBackend(B.Backend):
    def __init__(self):
        super().__init__([B.VGpu(0, 0, 1 << 30, 100)])
        self.calls = []

    def cudaMalloc(self, size):
        self.calls.append("malloc")
        return (0, 0x1000)

    def cudaMemsetAsync(self, ptr, value, count, stream):
        self.calls.append("memset")
        return (0,)

    def orionMemcpyHtoD(self, dst, src, count, stream):
        self.calls.append(("htod", len(src), bytes(src[:2])))
        return (0,)

    def orionMemcpyDtoH(self, size, src, count, stream):
        self.calls.append("dtoh")
        return (0, b"\x07" * size)


def call(name, seq, args, flags=0):
    return wire.pack_request_header(ID[name], seq, flags) + args


def test_worker_serves_calls_in_order_through_ring_and_socket(lib, tmp_path):
    backend = RecordingBackend()
    bound = []
    server = threading.Thread(target=serve, args=(f"ipc://{tmp_path}/w.sock", Session(backend),
                                                  Peer("token"), bound.append), daemon=True)
    server.start()
    while not bound:
        time.sleep(0.01)
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.ROUTING_ID, b"token")
    sock.connect(bound[0])
    client = Client(lib)
    try:
        offer = struct.pack("<I", len(client.name)) + client.name.encode()
        sock.send(wire.pack_request_header(ring.CALL_ID, 1) + offer)
        assert wire.parse_reply_header(sock.recv()) == (0, 1)

        assert client.put([call("cudaMalloc", 2, struct.pack("<Q", 64))]) == OK
        assert client.wait(2) == 1
        (head,), _ = client.reply()
        assert wire.parse_reply_header(head) == (0, 2) and head[24:] == struct.pack("<Q", 0x1000)

        # an async call in the ring, then a request too big for it: its frames on the
        # socket, its place in the ring; the worker keeps the order
        memset = call("cudaMemsetAsync", 3, struct.pack("<QiQQ", 0x1000, 0, 16, 0),
                      wire.FLAG_ASYNC)
        assert client.put([memset]) == OK
        big = b"\x01\x02" * 400_000
        htod = [call("orionMemcpyHtoD", 4, struct.pack("<QQQQ", 0x1000, len(big), len(big), 0)),
                big]
        assert client.put(htod) == TOO_BIG
        sock.send_multipart(htod)
        assert client.put([], flags=ring.FLAG_ON_SOCKET) == OK
        assert client.wait(4) == 1 and wire.parse_reply_header(client.reply()[0][0]) == (0, 4)

        # a reply too big for the reply area comes on the socket
        size = 2 << 20
        assert client.put([call("orionMemcpyDtoH", 5, struct.pack("<QQQQ", size, 0x1000,
                                                                  size, 0))]) == OK
        assert client.wait(5) == 1 and client.reply() == ([], ring.FLAG_ON_SOCKET)
        head, data = sock.recv_multipart()
        assert wire.parse_reply_header(head) == (0, 5) and data == b"\x07" * size
        assert backend.calls == ["malloc", "memset", ("htod", len(big), b"\x01\x02"), "dtoh"]
    finally:
        sock.close(0)          # the client goes: the worker's monitor ends the session
        server.join(5)
        client.close()
    assert not server.is_alive()
