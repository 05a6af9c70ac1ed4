"""A worker serves its session's client only (orion_server/peer.py): others who connect
to its address get an error and cannot end the session, and the client's shared memory
must be its own user's files."""
from __future__ import annotations

import os
import struct
import threading
import time

import pytest
import zmq

from orion_server import backend as B
from orion_server import wire
from orion_server.generated.cudart_table import CALLS
from orion_server.host_functions import HostFunctions
from orion_server.peer import Peer, cudaErrorNotPermitted
from orion_server.shm import Segments
from orion_server.worker import Session, serve

MALLOC = next(i for i, c in CALLS.items() if c.name == "cudaMalloc")


class MallocBackend(B.Backend):
    def __init__(self):
        super().__init__([B.VGpu(0, 0, 1 << 30, 100)])
        self.sizes = []

    def cudaMalloc(self, size):
        self.sizes.append(size)
        return (0, 0x1000 + size)


def dealer(address: str, routing_id: bytes | None):
    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.setsockopt(zmq.RCVTIMEO, 5000)
    if routing_id:
        sock.setsockopt(zmq.ROUTING_ID, routing_id)
    sock.connect(address)
    return sock


def malloc(sock, seq: int, size: int) -> tuple[int, int]:
    sock.send(wire.pack_request_header(MALLOC, seq) + struct.pack("<Q", size))
    return wire.parse_reply_header(sock.recv())


@pytest.fixture
def worker(tmp_path):
    backend, bound = MallocBackend(), []
    session = Session(backend)
    thread = threading.Thread(target=serve, args=(f"ipc://{tmp_path}/w.sock", session,
                                                  Peer("secret"), bound.append), daemon=True)
    thread.start()
    while not bound:
        time.sleep(0.01)
    yield bound[0], backend, thread
    thread.join(5)


def test_only_the_token_holder_is_served_and_only_its_leaving_ends_the_session(worker):
    address, backend, thread = worker
    client = dealer(address, b"secret")
    try:
        assert malloc(client, 1, 64) == (0, 1)
        for routing_id in (b"guess", None):        # a wrong token, or none at all
            stranger = dealer(address, routing_id)
            assert malloc(stranger, 7, 128) == (cudaErrorNotPermitted, 7)
            stranger.send(b"not even a request")   # dropped, unanswered
            stranger.close(0)
        time.sleep(0.3)                            # the strangers' disconnects arrive
        assert thread.is_alive(), "a stranger's disconnect ended the session"
        assert malloc(client, 2, 256) == (0, 2)
        assert backend.sizes == [64, 256]
    finally:
        client.close(0)
    thread.join(5)
    assert not thread.is_alive(), "the client's disconnect did not end the session"


def test_the_client_user_is_learned_from_its_connection(tmp_path):
    peer, bound = Peer("secret"), []
    session = Session(MallocBackend())
    thread = threading.Thread(target=serve, args=(f"ipc://{tmp_path}/w.sock", session, peer,
                                                  bound.append), daemon=True)
    thread.start()
    while not bound:
        time.sleep(0.01)
    client = dealer(bound[0], b"secret")
    try:
        assert malloc(client, 1, 64) == (0, 1)
        assert peer.uid == os.getuid() and peer.fd is not None and peer.fd >= 0
    finally:
        client.close(0)
        thread.join(5)


@pytest.fixture
def segment_file():
    name = f"/orion-{os.getpid()}-990"
    path = "/dev/shm" + name
    with open(path, "wb") as f:
        f.truncate(4096)
    yield name, path
    os.unlink(path)


def test_segments_of_another_user_are_refused(segment_file):
    name, _ = segment_file
    segments = Segments()
    segments.owner_uid = os.getuid() + 1
    with pytest.raises(B.CudaError, match="not a file of the client's user"):
        segments.attach(name, 4096, 0x10000)
    segments.owner_uid = os.getuid()
    assert segments.attach(name, 4096, 0x10000).size == 4096


def test_a_segment_name_that_is_a_link_is_refused(segment_file):
    _, target = segment_file
    link = f"/dev/shm/orion-{os.getpid()}-991"
    os.symlink(target, link)
    try:
        with pytest.raises(B.CudaError, match="cannot open"):
            Segments().attach(link[len("/dev/shm"):], 4096, 0x10000)
    finally:
        os.unlink(link)


def test_host_function_messages_of_others_are_dropped(tmp_path):
    functions = HostFunctions(f"ipc://{tmp_path}/events.sock", b"secret")
    stranger, client = dealer(functions.address, b"guess"), dealer(functions.address, b"secret")
    try:
        client.send(b"hello")
        stranger.send(b"hello")       # would take the notices, if it were believed
        stranger.send(b"")            # one-frame, empty: dropped without harm
        done = threading.Thread(target=functions.run, args=(5,), daemon=True)
        done.start()
        assert struct.unpack("<Q", client.recv())[0] == 5
        stranger.send(struct.pack("<Q", 5))   # a stranger cannot finish it
        time.sleep(0.2)
        assert done.is_alive()
        client.send(struct.pack("<Q", 5))
        done.join(5)
        assert not done.is_alive()
    finally:
        stranger.close(0)
        client.close(0)
        functions.close()


def test_the_names_a_dead_client_left_are_removed_if_still_its_own(segment_file):
    name, path = segment_file
    segments = Segments()
    segments.attach(name, 4096, 0x10000)
    segments.remove_names()
    assert not os.path.exists(path)
    with open(path, "wb") as f:     # the name again, now another process's object
        f.truncate(4096)
    segments.remove_names()
    assert os.path.exists(path), "removed a name that no longer meant its segment"
