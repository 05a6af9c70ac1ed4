"""Host functions of a client's streams (cudaLaunchHostFunc, cudaStreamAddCallback)
run in the client, where their code and data live, at the point of the stream where
the application put them.

The backend places a stub in the stream; when the GPU reaches it the stub calls
`run(id)`, which tells the client "host function <id> is due" over this session's
events socket and blocks the stream until the client answers "done <id>". A thread of
the worker owns the socket, so the worker's call loop never waits on it.

Events socket (ROUTER, bound by the worker; the client connects a DEALER whose routing
id is the session's token, peer.py; anyone else's messages are dropped):
  client -> worker: b"hello" once, then u64 id for each host function it finished
  worker -> client: u64 id of each host function that is due
"""
from __future__ import annotations

import logging
import os
import queue
import struct
import threading

import zmq

log = logging.getLogger("orion.worker")
_ID = struct.Struct("<Q")


class HostFunctions:
    def __init__(self, address: str, client: bytes):
        self._client = client           # the routing id of the session's client
        self._ctx = zmq.Context.instance()
        self._sock = self._ctx.socket(zmq.ROUTER)
        self._sock.setsockopt(zmq.LINGER, 0)
        self._sock.bind(address)
        self.address = self._sock.getsockopt(zmq.LAST_ENDPOINT).decode()
        self._due: queue.Queue[int] = queue.Queue()
        self._waiting: dict[int, threading.Event] = {}
        self._lock = threading.Lock()
        self._wake_read, self._wake_write = os.pipe()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True, name="host-functions")
        self._thread.start()

    def run(self, ident: int) -> None:
        """Called where the stream reaches host function `ident`; returns when the client
        has run it (or the session is closing)."""
        done = threading.Event()
        with self._lock:
            self._waiting[ident] = done
        self._due.put(ident)
        os.write(self._wake_write, b"x")
        while not done.wait(1.0):
            if self._closed.is_set():
                return

    def _serve(self) -> None:
        client = None
        poller = zmq.Poller()
        poller.register(self._sock, zmq.POLLIN)
        poller.register(self._wake_read, zmq.POLLIN)
        while not self._closed.is_set():
            events = dict(poller.poll(500))
            if self._wake_read in events:
                os.read(self._wake_read, 4096)
            if self._sock in events:
                identity, body = (self._sock.recv_multipart() + [b""])[:2]
                if identity != self._client:
                    log.warning("events socket: dropped a message of another peer")
                elif body == b"hello":
                    client = identity
                elif len(body) == _ID.size:
                    with self._lock:
                        done = self._waiting.pop(_ID.unpack(body)[0], None)
                    if done:
                        done.set()
                else:
                    log.warning("events socket: unexpected %d-byte message", len(body))
            while client is not None and not self._due.empty():
                self._sock.send_multipart([client, _ID.pack(self._due.get())])

    def close(self) -> None:
        """Release every stream still waiting: the client is gone."""
        self._closed.set()
        with self._lock:
            for done in self._waiting.values():
                done.set()
        self._thread.join(2)
        self._sock.close(0)
        os.close(self._wake_read)
        os.close(self._wake_write)
