"""The controller process: the pool behind a ZeroMQ ROUTER socket (docs/protocol.md).

One thread: the loop polls the socket with a short timeout, answers each request in
arrival order and applies the pool's timeouts between requests. A request is one JSON
frame; whatever arrives, the sender gets `{"ok": false, "error": ...}` rather than the
service stopping.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from typing import Any, Callable

import zmq

from orion_controller.client import DEFAULT_PORT
from orion_controller.fields import Invalid
from orion_controller.pool import (DEFAULT_LEASE_TIMEOUT_S, DEFAULT_NODE_TIMEOUT_S,
                                   DEFAULT_VGPU_COUNT, Busy, Pool)

log = logging.getLogger(__name__)

POLL_MS = 250                      # timeouts are applied at least this often
MAX_MESSAGE_BYTES = 1 << 20        # a control message is small; refuse floods at the socket


class Service:
    """Turns request payloads into reply objects; `serve` runs it on a socket."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self._ops: dict[str, Callable[[dict], dict]] = {
            "register": self._register, "heartbeat": self._heartbeat,
            "unregister": self._unregister, "allocate": self._allocate,
            "release": self._release, "status": self._status,
        }

    def handle(self, payload: bytes) -> dict[str, Any]:
        try:
            message = json.loads(payload)
        except (ValueError, RecursionError):   # bad UTF-8 is a ValueError too
            return _error("request is not JSON")
        if not isinstance(message, dict):
            return _error("request must be a JSON object")
        op = message.get("op")
        handler = self._ops.get(op) if isinstance(op, str) else None
        if handler is None:
            return _error(f"unknown op {op!r}; known: {', '.join(self._ops)}")
        try:
            return handler(message)
        except Invalid as why:
            return _error(f"{op}: {why}")
        except Exception:   # a bug must cost one request, not the pool
            log.exception("op %s failed on %.200r", op, message)
            return _error(f"{op}: internal error of the controller (see its log)")

    def serve(self, socket: zmq.Socket, stopping: Callable[[], bool]) -> None:
        poller = zmq.Poller()
        poller.register(socket, zmq.POLLIN)
        while not stopping():
            if poller.poll(POLL_MS):
                self._answer(socket)
            self.pool.expire()

    def _answer(self, socket: zmq.Socket) -> None:
        frames = socket.recv_multipart(zmq.NOBLOCK)
        # REQ peers send [identity, b"", payload]; DEALER peers may leave out the empty
        # delimiter. The reply goes back with the same envelope.
        identity, rest = frames[0], frames[1:]
        envelope = [identity]
        if rest and rest[0] == b"":
            envelope.append(b"")
            rest = rest[1:]
        reply = self.handle(rest[0]) if len(rest) == 1 else _error(
            f"request must be one frame, not {len(rest)}")
        socket.send_multipart(envelope + [json.dumps(reply).encode()])

    def _register(self, m: dict) -> dict:
        known = self.pool.register(m.get("node"), m.get("server"), m.get("gpus"),
                                   m.get("vgpu_count", DEFAULT_VGPU_COUNT))
        return {"ok": True, "known": known}

    def _heartbeat(self, m: dict) -> dict:
        result = self.pool.heartbeat(m.get("node"), m.get("leases", []), m.get("grants"))
        return {"ok": True, "known": result.known, "lost": list(result.lost)}

    def _unregister(self, m: dict) -> dict:
        self.pool.unregister(m.get("node"))
        return {"ok": True}

    def _allocate(self, m: dict) -> dict:
        vgpu = m.get("vgpu")
        try:
            grant = self.pool.allocate(1 if vgpu is None else vgpu, m.get("gmem"), m.get("ratio"),
                                       client_id=m.get("client_id"), host=m.get("host"),
                                       pid=m.get("pid"))
        except Invalid as why:
            return {**_error(f"allocate: {why}"), "retry": False}
        except Busy as why:
            return {**_error(f"allocate: {why}"), "retry": True}
        return {"ok": True, "lease": grant.lease, "vgpus": [v.wire() for v in grant.vgpus]}

    def _release(self, m: dict) -> dict:
        self.pool.release(m.get("lease"))
        return {"ok": True}

    def _status(self, m: dict) -> dict:
        return {"ok": True, **self.pool.status()}


def _error(reason: str) -> dict[str, Any]:
    return {"ok": False, "error": reason}


def main(argv: list[str] | None = None) -> int:
    """Entry point of `orion-controller` and `python -m orion_controller`."""
    args = _arguments(argv)
    try:
        logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(),
                            filename=args.log_file,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    except (ValueError, OSError) as error:   # unknown LOG_LEVEL, log file not writable
        print(f"orion-controller: {error}", file=sys.stderr)
        return 2
    pool = Pool(lease_timeout=args.lease_timeout, node_timeout=args.node_timeout)
    context = zmq.Context()
    socket = context.socket(zmq.ROUTER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
    host = args.listen
    if ":" in host:
        socket.setsockopt(zmq.IPV6, 1)
        host = f"[{host}]"
    url = f"tcp://{host}:{args.port}"
    stop = threading.Event()
    try:
        socket.bind(url)
    except zmq.ZMQError as error:
        log.error("cannot listen on %s: %s", url, error)
        socket.close()
        context.term()
        return 1
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, frame: stop.set())
    log.info("listening on %s (lease timeout %g s, node timeout %g s)", url,
             args.lease_timeout, args.node_timeout)
    try:
        Service(pool).serve(socket, stop.is_set)
    finally:
        socket.close()
        context.term()
    log.info("stopped")
    return 0


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="orion-controller",
                                     description="Orion controller: the GPU pool's manager.")
    parser.add_argument("--listen", default=os.environ.get("LISTEN_IP", "0.0.0.0"),
                        help="address to listen on (env LISTEN_IP, default 0.0.0.0)")
    parser.add_argument("--port", type=_port, default=os.environ.get("LISTEN_PORT", DEFAULT_PORT),
                        help=f"port to listen on (env LISTEN_PORT, default {DEFAULT_PORT})")
    parser.add_argument("--lease-timeout", type=_seconds, default=DEFAULT_LEASE_TIMEOUT_S,
                        help="seconds a lease lives without being reported (default %(default)g)")
    parser.add_argument("--node-timeout", type=_seconds, default=DEFAULT_NODE_TIMEOUT_S,
                        help="seconds without heartbeat before a node is down (default %(default)g)")
    parser.add_argument("--log-file", help="log here instead of stderr (level: env LOG_LEVEL)")
    return parser.parse_args(argv)


def _port(text: str) -> int:
    # argparse also runs the env default through here, so LISTEN_PORT is checked too.
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text!r}")
    return int(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r}")
    return value
