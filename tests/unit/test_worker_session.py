"""The worker's request handling: decoding, replies, async error order, bad input."""
import random
import struct

import zmq

from orion_server import backend as B
from orion_server import wire
from orion_server.generated.cudart_table import CALLS
from orion_server.worker import Session

ID = {c.name: i for i, c in CALLS.items()}


class Frame:
    """What zmq hands the worker with copy=False."""
    def __init__(self, data: bytes):
        self.buffer = memoryview(data)


class FakeBackend(B.Backend):
    def __init__(self):
        super().__init__([B.VGpu(0, 0, 1 << 30, 100), B.VGpu(1, 0, 1 << 30, 100)])
        self.calls = []

    def cudaMalloc(self, size):
        self.calls.append(("cudaMalloc", size))
        return (B.cudaErrorMemoryAllocation,) if size > 1 << 30 else (0, 0x1000)

    def cudaMemsetAsync(self, ptr, value, count, stream):
        self.calls.append(("cudaMemsetAsync", ptr, value, count, stream))
        return (B.cudaErrorInvalidValue if ptr == 0 else 0,)

    def orionMemcpyDtoH(self, size, src, count, stream):
        return (0, bytes(range(size)))

    def orionMemcpyHtoD(self, dst, src, count, stream):
        self.calls.append(("htod", bytes(src)))
        return (0,)

    def cudaEventElapsedTime(self, start, end):
        return (0, 1.5)


def request(name, args=b"", bulk=(), flags=0, seq=1, device=0):
    head = wire.pack_request_header(ID[name], seq, flags, device) + args
    return [Frame(head), *(Frame(b) for b in bulk)]


def status_of(reply):
    return wire.parse_reply_header(reply[0])[0]


def test_sync_call_returns_outputs():
    s = Session(FakeBackend())
    reply = s.handle(request("cudaMalloc", struct.pack("<Q", 64)))
    assert status_of(reply) == 0
    assert struct.unpack_from("<Q", reply[0], 24) == (0x1000,)


def test_error_carries_no_outputs():
    reply = Session(FakeBackend()).handle(request("cudaMalloc", struct.pack("<Q", 1 << 40)))
    assert status_of(reply) == B.cudaErrorMemoryAllocation and len(reply[0]) == 24


def test_async_error_surfaces_at_next_sync_call():
    s = Session(FakeBackend())
    args = struct.pack("<QiQQ", 0, 0, 16, 0)
    assert s.handle(request("cudaMemsetAsync", args, flags=wire.FLAG_ASYNC)) is None
    reply = s.handle(request("cudaMalloc", struct.pack("<Q", 64), seq=2))
    assert status_of(reply) == B.cudaErrorInvalidValue
    assert status_of(s.handle(request("cudaMalloc", struct.pack("<Q", 64), seq=3))) == 0


def test_buffers_travel_as_frames():
    s = Session(FakeBackend())
    reply = s.handle(request("orionMemcpyDtoH", struct.pack("<QQQQ", 8, 0x1000, 8, 0)))
    assert status_of(reply) == 0 and bytes(reply[1]) == bytes(range(8))
    reply = s.handle(request("orionMemcpyHtoD", struct.pack("<QQQQ", 0x1000, 3, 3, 0),
                             bulk=[b"abc"]))
    assert status_of(reply) == 0 and s.backend.calls[-1] == ("htod", b"abc")


def test_float_outputs():
    reply = Session(FakeBackend()).handle(request("cudaEventElapsedTime",
                                                  struct.pack("<QQ", 1, 2)))
    assert struct.unpack_from("<f", reply[0], 24) == (1.5,)


def test_missing_buffer_and_truncation_are_errors():
    s = Session(FakeBackend())
    reply = s.handle(request("orionMemcpyHtoD", struct.pack("<QQQQ", 0x1000, 3, 3, 0)))
    assert status_of(reply) == B.cudaErrorInvalidValue
    assert status_of(s.handle(request("cudaMalloc", b"\x01\x02"))) == B.cudaErrorInvalidValue


def test_unknown_and_unsupported_calls():
    s = Session(FakeBackend())
    head = wire.pack_request_header(0x7FFFFFFF, 1)
    assert status_of(s.handle([Frame(head)])) == B.cudaErrorInvalidValue
    assert status_of(s.handle(request("cudaStreamCreate"))) == B.cudaErrorNotSupported


def test_bad_device_is_an_error_not_a_crash():
    s = Session(FakeBackend())
    reply = s.handle(request("cudaMalloc", struct.pack("<Q", 64), device=7))
    assert status_of(reply) == B.cudaErrorInvalidDevice


def test_fuzzed_requests_never_raise():
    rng = random.Random(1234)
    s = Session(FakeBackend())
    ids = list(CALLS)
    for _ in range(3000):
        head = wire.pack_request_header(rng.choice(ids), rng.randrange(1 << 32))
        body = bytes(rng.randrange(256) for _ in range(rng.randrange(64)))
        frames = [Frame((head + body)[: rng.randrange(len(head) + len(body) + 1)])]
        frames += [Frame(bytes(rng.randrange(8))) for _ in range(rng.randrange(3))]
        s.handle(frames)


def test_round_trip_over_inproc_sockets():
    """The same bytes through real ZeroMQ sockets, as the client and worker use them."""
    ctx = zmq.Context.instance()
    server, client = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    server.bind("inproc://worker-test")
    client.connect("inproc://worker-test")
    try:
        client.send_multipart([wire.pack_request_header(ID["cudaMalloc"], 9) +
                               struct.pack("<Q", 64)])
        identity, *frames = server.recv_multipart(copy=False)
        server.send_multipart([identity.bytes, *Session(FakeBackend()).handle(frames)])
        reply = client.recv_multipart()
        assert wire.parse_reply_header(reply[0]) == (0, 9)
    finally:
        server.close(0)
        client.close(0)


class FakeOutputs:
    """What DeviceOutputs.take gives: flags and texts, once."""

    def __init__(self, *printed):
        self.printed = printed

    def take(self):
        printed, self.printed = self.printed, ()
        return sum(flag for flag, _ in printed), [text for _, text in printed]


def test_device_output_rides_on_the_next_reply_stdout_then_stderr():
    s = Session(FakeBackend(), outputs=FakeOutputs((wire.FLAG_OUTPUT, b"printf\n"),
                                                   (wire.FLAG_ERRORS, b"assert\n")))
    reply = s.handle(request("orionMemcpyDtoH", struct.pack("<QQQQ", 4, 0x1000, 4, 0)))
    flags = struct.unpack_from("<H", reply[0], 6)[0]
    assert flags == wire.FLAG_OUTPUT | wire.FLAG_ERRORS
    assert [bytes(f) for f in reply[1:]] == [bytes(range(4)), b"printf\n", b"assert\n"]
    reply = s.handle(request("cudaMalloc", struct.pack("<Q", 64), seq=2))
    assert struct.unpack_from("<H", reply[0], 6)[0] == 0 and len(reply) == 1
