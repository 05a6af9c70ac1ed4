"""A small synchronous client of the controller, for oriond and the command-line tools.

One request, one reply, over a REQ socket (docs/protocol.md, "Socket roles"). A REQ
socket that missed its reply is stuck waiting for it, so on a timeout the socket is
closed (LINGER 0: nothing queued is kept) and the next request opens a fresh one.
"""
from __future__ import annotations

import json
from typing import Any

import zmq

DEFAULT_PORT = 9123


class ControlError(Exception):
    """The controller answered something that is not a reply of the protocol."""


class ControllerUnreachable(ControlError):
    """No reply from the controller within the timeout."""


def control_url(addr: str, default_port: int = DEFAULT_PORT) -> str:
    """The ZeroMQ URL of a controller address.

    Accepts the reference style `host:port` (`127.0.0.1:9123`, `[::1]:9123`), a bare
    host (the default port is added) or a full URL (`tcp://...`, `ipc://...`) unchanged.
    """
    addr = addr.strip()
    if not addr:
        raise ValueError("empty controller address")
    if "://" in addr:
        return addr
    if addr.endswith("]") or ":" not in addr:
        host, port = addr, str(default_port)
    else:
        host, _, port = addr.rpartition(":")
        if not port.isdigit() or not host:
            raise ValueError(f"controller address {addr!r} is not host:port")
    if ":" in host and not host.startswith("["):
        raise ValueError(f"write the IPv6 address {host} in brackets: [{host}]:{port}")
    return f"tcp://{host}:{port}"


class ControlClient:
    """`request` sends one message and returns the controller's reply (`ok` may be false).

    Not thread-safe: give each thread its own client, as ZeroMQ sockets require.
    """

    def __init__(self, addr: str, timeout_s: float = 5.0,
                 context: zmq.Context | None = None) -> None:
        self.url = control_url(addr)
        self.timeout_s = timeout_s
        self._context = context or zmq.Context.instance()
        self._socket: zmq.Socket | None = None

    def request(self, message: dict[str, Any]) -> dict[str, Any]:
        payload = json.dumps(message).encode()
        socket = self._connected()
        timeout_ms = max(1, int(self.timeout_s * 1000))
        try:
            socket.send(payload)
            if not socket.poll(timeout_ms, zmq.POLLIN):
                raise ControllerUnreachable(
                    f"no reply from the controller at {self.url} within {self.timeout_s:g} s")
            raw = socket.recv()
        except zmq.ZMQError as error:
            self.close()
            raise ControllerUnreachable(f"controller at {self.url}: {error}") from error
        except ControllerUnreachable:
            self.close()
            raise
        try:
            reply = json.loads(raw)
        except ValueError as error:
            raise ControlError(f"controller at {self.url} sent a reply that is not JSON") from error
        if not isinstance(reply, dict) or not isinstance(reply.get("ok"), bool):
            raise ControlError(f"controller at {self.url} sent a reply without 'ok': {raw[:80]!r}")
        return reply

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _connected(self) -> zmq.Socket:
        if self._socket is None:
            socket = self._context.socket(zmq.REQ)
            socket.setsockopt(zmq.LINGER, 0)
            socket.setsockopt(zmq.SNDTIMEO, max(1, int(self.timeout_s * 1000)))
            if self.url.startswith("tcp://["):
                socket.setsockopt(zmq.IPV6, 1)
            socket.connect(self.url)
            self._socket = socket
        return self._socket
