"""Page-locked reply buffers of the GPU backend (orion_server/backends/cuda_reply_buffers.py):
a buffer is reused only once nothing refers to it, ZeroMQ's zero-copy sends included.
The driver's allocator is replaced by host memory of the test's own."""
from __future__ import annotations

import ctypes

import pytest
import zmq

pytest.importorskip("cuda.bindings")

from orion_server.backends import cuda_reply_buffers as rb  # noqa: E402


@pytest.fixture
def buffers(monkeypatch):
    kept = []

    class FakeDriver:
        @staticmethod
        def cuMemHostAlloc(size, flags):
            assert flags == rb._PORTABLE
            kept.append((ctypes.c_ubyte * size)())
            return 0, ctypes.addressof(kept[-1])

    monkeypatch.setattr(rb, "drv", FakeDriver)
    return rb.ReplyBuffers(), kept


def test_a_buffer_is_reused_once_nothing_refers_to_it(buffers):
    pool, allocated = buffers
    first = pool.take(100)
    second = pool.take(rb.SIZE)
    assert len(first) == 100 and len(second) == rb.SIZE and len(allocated) == 2
    assert first.ctypes.data == ctypes.addressof(allocated[0])
    del first
    again = pool.take(10)
    assert again.ctypes.data == ctypes.addressof(allocated[0]) and len(allocated) == 2
    assert pool.take(rb.SIZE + 1) is None          # larger than a chunk: pageable


def test_a_buffer_zeromq_still_sends_is_not_reused(buffers):
    pool, allocated = buffers
    ctx = zmq.Context.instance()
    out, into = ctx.socket(zmq.PAIR), ctx.socket(zmq.PAIR)
    out.bind("inproc://reply-buffers")
    into.connect("inproc://reply-buffers")
    try:
        chunk = pool.take(rb.SIZE)
        chunk[:] = 7
        out.send_multipart([b"head", chunk], copy=False)
        del chunk
        other = pool.take(rb.SIZE)                 # the first is still ZeroMQ's
        assert other.ctypes.data == ctypes.addressof(allocated[1])
        assert bytes(into.recv_multipart()[1][:3]) == b"\x07\x07\x07"
        del other
    finally:
        out.close(0)
        into.close(0)


def test_at_most_max_buffers(buffers, monkeypatch):
    pool, allocated = buffers
    monkeypatch.setattr(rb, "MAX_BUFFERS", 2)
    held = [pool.take(8), pool.take(8)]
    assert pool.take(8) is None and len(allocated) == 2
    held.pop()
    assert pool.take(8) is not None
