"""The controller process: the pool behind a ZeroMQ ROUTER socket (docs/protocol.md),
and the REST API in a thread beside it.

The ZeroMQ loop is one thread: it polls the socket with a short timeout, answers each
request in arrival order, applies the pool's timeouts and retries waiting requests
between requests. Every op, from the loop or from the REST thread, runs under one lock,
so a grant (placement, quota check, charge, store write) is atomic against all others.
A request is one JSON frame; whatever arrives, the sender gets `{"ok": false, "error":
...}` rather than the service stopping.
"""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from typing import Any, Callable

import zmq

from orion_controller import admin, config, fields, http_api, request
from orion_controller.fields import Invalid
from orion_controller.pool import Busy, Pool
from orion_controller.store import StoreError

log = logging.getLogger(__name__)

POLL_MS = 250                      # timeouts are applied at least this often
MAX_MESSAGE_BYTES = 1 << 20        # a control message is small; refuse floods at the socket
MAX_WAITING = 10000                # queued allocate requests (wait_s) at most
MAX_BATCH = 256                    # requests answered per wake-up before timeouts run

Answer = Callable[[dict], None]


@dataclass
class Waiting:
    """An allocate request queued by its wait_s, answered when it fits or times out."""

    message: dict
    since: float
    deadline: float
    answer: Answer


class Service:
    """Turns requests into replies; `serve` runs it on a socket."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.lock = threading.Lock()
        self._waiting: deque[Waiting] = deque()
        self._changes_seen = pool.changes
        self._ops: dict[str, Callable[[dict], dict]] = {
            "register": self._register, "heartbeat": self._heartbeat,
            "unregister": self._unregister, "allocate": self._allocate,
            "preview": self._preview,
            "release": self._release, "status": self._status,
            "release_group": self._release_group, "group_list": self._group_list,
            "summary": self._summary,
            **{name: (lambda m, op=op: op(self.pool, m)) for name, op in admin.OPS.items()},
        }

    def handle(self, payload: bytes, later: Answer | None = None) -> dict[str, Any] | None:
        """The reply to one request frame. With `later`, an allocate that asks to wait
        (wait_s) and cannot be served now is queued: the reply is None and `later`
        gets it when the request is served or its time is up."""
        try:
            message = json.loads(payload)
        except (ValueError, RecursionError):   # bad UTF-8 is a ValueError too
            return _error("request is not JSON")
        if not isinstance(message, dict):
            return _error("request must be a JSON object")
        return self.answer(message, later)

    def answer(self, message: dict, later: Answer | None = None) -> dict[str, Any] | None:
        op = message.get("op")
        if not isinstance(op, str) or op not in self._ops:
            return _error(_unknown(op, self._ops))
        try:
            return {"ok": True, **self.dispatch(message)}
        except Busy as why:
            wait_s = _wait_s(message)
            if later is not None and wait_s > 0 and len(self._waiting) < MAX_WAITING:
                now = time.monotonic()
                self._waiting.append(Waiting(message, now, now + wait_s, later))
                return None
            return {**_error(f"{op}: {why}"), "retry": True}
        except Invalid as why:
            reply = _error(f"{op}: {why}")
            return {**reply, "retry": False} if op == "allocate" else reply
        except Exception:   # a bug must cost one request, not the pool
            log.exception("op %s failed on %.200r", op, message)
            return _error(f"{op}: internal error of the controller (see its log)")

    def dispatch(self, message: dict) -> dict[str, Any]:
        """The reply fields of one op; raises Invalid, NotFound or Busy when refused."""
        op = message.get("op")
        handler = self._ops.get(op) if isinstance(op, str) else None
        if handler is None:
            raise Invalid(_unknown(op, self._ops))
        with self.lock:
            return handler(message)

    def serve(self, socket: zmq.Socket, stopping: Callable[[], bool]) -> None:
        poller = zmq.Poller()
        poller.register(socket, zmq.POLLIN)
        while not stopping():
            if poller.poll(self._poll_ms()):
                # Answer everything queued before polling again: under load one wake-up
                # serves many requests, which is what keeps latency flat as rates grow.
                for _ in range(MAX_BATCH):
                    try:
                        frames = socket.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._answer(socket, frames)
            with self.lock:
                self.pool.expire()
            self._retry_waiting()
        for waiting in self._waiting:
            waiting.answer({**_error("allocate: the controller is stopping"), "retry": True})
        self._waiting.clear()

    def _poll_ms(self) -> int:
        if not self._waiting:
            return POLL_MS
        due = min(waiting.deadline for waiting in self._waiting) - time.monotonic()
        return max(0, min(POLL_MS, int(due * 1000) + 1))

    def _answer(self, socket: zmq.Socket, frames: list[bytes]) -> None:
        # REQ peers send [identity, b"", payload]; DEALER peers may leave out the empty
        # delimiter. The reply goes back with the same envelope.
        identity, rest = frames[0], frames[1:]
        envelope = [identity]
        if rest and rest[0] == b"":
            envelope.append(b"")
            rest = rest[1:]

        def send(reply: dict) -> None:
            socket.send_multipart(envelope + [json.dumps(reply).encode()])

        if len(rest) != 1:
            send(_error(f"request must be one frame, not {len(rest)}"))
            return
        reply = self.handle(rest[0], later=send)
        if reply is not None:
            send(reply)

    def _retry_waiting(self) -> None:
        """Tries queued requests again, oldest first, when capacity or rules changed or
        one's time is up. Newer requests are not held back behind them."""
        if not self._waiting:
            return
        now = time.monotonic()
        if self.pool.changes == self._changes_seen and all(
                waiting.deadline > now for waiting in self._waiting):
            return
        self._changes_seen = self.pool.changes
        still = deque()
        for waiting in self._waiting:
            reply = self.answer(waiting.message)
            if reply is None:       # answer() without `later` never queues
                continue
            if not reply["ok"] and reply.get("retry") and waiting.deadline > now:
                still.append(waiting)
                continue
            if not reply["ok"] and reply.get("retry"):
                reply["error"] += f" (waited {now - waiting.since:.1f} s)"
            waiting.answer(reply)
        self._waiting = still

    # -- ops --------------------------------------------------------------------------

    def _register(self, m: dict) -> dict:
        known = self.pool.register(m.get("node"), m.get("server"), m.get("gpus"),
                                   m.get("vgpu_count"), overcommit=m.get("overcommit"),
                                   host=m.get("host"), k8s_node=m.get("k8s_node"))
        return {"known": known}

    def _heartbeat(self, m: dict) -> dict:
        result = self.pool.heartbeat(m.get("node"), m.get("leases", []), m.get("grants"))
        return {"known": result.known, "lost": list(result.lost)}

    def _unregister(self, m: dict) -> dict:
        self.pool.unregister(m.get("node"))
        return {}

    def _allocate(self, m: dict) -> dict:
        grant = self.pool.allocate(**request.pick(m))
        return {"lease": grant.lease, "vgpus": [v.wire() for v in grant.vgpus],
                "qos": grant.qos, "group_id": grant.group_id, "reserved": grant.reserved}

    def _preview(self, m: dict) -> dict:
        grant = self.pool.preview(**request.pick(m))
        return {"vgpus": [v.wire() for v in grant.vgpus], "qos": grant.qos}

    def _release(self, m: dict) -> dict:
        self.pool.release(m.get("lease"))
        return {}

    def _release_group(self, m: dict) -> dict:
        return self.pool.release_group(m.get("group_id"))

    def _group_list(self, m: dict) -> dict:
        return {"groups": self.pool.group_list()}

    def _status(self, m: dict) -> dict:
        return self.pool.status()

    def _summary(self, m: dict) -> dict:
        return self.pool.summary()


def _wait_s(message: dict) -> float:
    try:
        return fields.seconds("wait_s", message.get("wait_s") or 0, high=request.MAX_WAIT_S)
    except Invalid:
        return 0.0      # the pool refused it already if it was given badly


def _unknown(op: Any, ops: dict) -> str:
    return f"unknown op {op!r}; known: {', '.join(ops)}"


def _error(reason: str) -> dict[str, Any]:
    return {"ok": False, "error": reason}


def main(argv: list[str] | None = None) -> int:
    """Entry point of `orion-controller` and `python -m orion_controller`."""
    settings = config.parse(argv)
    try:
        # Decision lines are written by the serving thread itself: a logging thread
        # (QueueHandler) competes for the GIL and measured a third fewer grants per second.
        logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(),
                            filename=settings.log_file,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    except (ValueError, OSError) as error:   # unknown LOG_LEVEL, log file not writable
        print(f"orion-controller: {error}", file=sys.stderr)
        return 2
    return _run(settings)


def _run(settings: config.Settings) -> int:
    try:
        store = config.open_store(settings)
    except StoreError as error:
        log.error("%s", error)
        return 1
    pool = Pool(lease_timeout=settings.lease_timeout, node_timeout=settings.node_timeout,
                policy=settings.policy, overcommit=settings.overcommit,
                quota_limit=settings.quota_limit, default_vgpu_count=settings.vgpu_num,
                store=store)
    service = Service(pool)
    context = zmq.Context()
    socket = context.socket(zmq.ROUTER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.setsockopt(zmq.MAXMSGSIZE, MAX_MESSAGE_BYTES)
    host = settings.listen
    if ":" in host:
        socket.setsockopt(zmq.IPV6, 1)
        host = f"[{host}]"
    url = f"tcp://{host}:{settings.port}"
    stop = threading.Event()
    try:
        socket.bind(url)
    except zmq.ZMQError as error:
        log.error("cannot listen on %s: %s", url, error)
        socket.close()
        context.term()
        return 1
    try:
        rest = _start_rest(service, settings)
    except OSError:
        socket.close()
        context.term()
        return 1
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda number, frame: stop.set())
    log.info("listening on %s (lease timeout %g s, node timeout %g s; policy: %s; "
             "overcommit: memory x%g, compute x%g; quotas %s; database %s)", url,
             settings.lease_timeout, settings.node_timeout, settings.policy.describe(),
             settings.overcommit.mem, settings.overcommit.core,
             "enforced" if settings.quota_limit else "not enforced", store.path)
    try:
        service.serve(socket, stop.is_set)
    finally:
        if rest:
            rest.shutdown()
        socket.close()
        context.term()
        store.close()
    log.info("stopped")
    return 0


def _start_rest(service: Service, settings: config.Settings) -> ThreadingHTTPServer | None:
    """The REST server, or None when off. Raises OSError if it cannot listen on a port
    one asked for."""
    if not settings.http_port:
        return None
    try:
        return http_api.start(service, settings.listen, settings.http_port)
    except OSError as error:
        where = f"{settings.listen}:{settings.http_port}"
        if settings.http_port_given:
            log.error("cannot listen for the REST API on %s: %s", where, error)
            raise
        # The default port may be taken by another controller on this host; the pool
        # itself still works, so say so loudly rather than refuse to run.
        log.error("no REST API: cannot listen on %s: %s (set --http-port or HTTP_PORT)",
                  where, error)
        return None
