"""The one client a worker serves, told apart from anyone else who connects.

A worker's address is no secret (a tcp:// port, an ipc:// path), so oriond gives each
session a random token, to the worker and, in the open_session reply, to the client,
which makes it the ZeroMQ routing id of its sockets. The worker serves requests of that
routing id only; anyone else gets `cudaErrorNotPermitted` and their disconnect is not the
client's (the monitor's events carry the connection's fd, compared with the client's).

On this host the connection also says which user the client runs as (SO_PEERCRED,
which libzmq reports in a message's Peer-Address as "…:uid:gid:pid"): shared segments
and call rings must be that user's files, so a worker running as root maps no other
user's memory for this client.
"""
from __future__ import annotations

import logging

import zmq
import zmq.utils.monitor

from . import wire

log = logging.getLogger("orion.worker")

cudaErrorNotPermitted = 800


class Peer:
    def __init__(self, token: str):
        self.token = token.encode()
        self.fd: int | None = None      # the client's connection, once it has spoken
        self.uid: int | None = None     # its user, where the transport tells (ipc://)
        self.refused = 0                # requests of others

    @property
    def admitted(self) -> bool:
        return self.fd is not None

    def admit(self, frames: list, sock) -> bool:
        """Whether `frames` (routing id first, as a ROUTER receives them) come from the
        client; anyone else's request is answered with an error here."""
        identity = frames[0].bytes
        if identity == self.token:
            if self.fd is None:
                self._learn(frames[-1])
            return True
        self.refused += 1
        if self.refused == 1:
            log.warning("refused a request of a peer that is not this session's client")
        try:
            seq = wire.parse_request_header(frames[1].buffer).seq
        except (IndexError, wire.WireError):
            return False
        sock.send_multipart([identity, wire.pack_reply_header(cudaErrorNotPermitted, seq)])
        return False

    def _learn(self, frame) -> None:
        try:
            self.fd = frame.get(zmq.SRCFD)
        except zmq.ZMQError:
            self.fd = -1            # unknown: any disconnect is then taken as the client's
        address = frame.get("Peer-Address") or ""
        fields = address.rsplit(":", 3)
        if len(fields) == 4 and fields[1].isdigit():
            self.uid = int(fields[1])

    def gone(self, monitor) -> bool:
        """Whether the pending events of the socket's monitor say the client left."""
        gone = False
        while monitor.poll(0):
            event = zmq.utils.monitor.recv_monitor_message(monitor)
            if event["event"] == zmq.EVENT_DISCONNECTED:
                gone |= self.fd is not None and self.fd in (-1, event["value"])
        return gone
