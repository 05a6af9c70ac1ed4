"""The compute-share service inside oriond: hands out turns on each physical GPU.

Workers of throttled sessions (ORION_RATIO under 100 with enable_computation_throttle)
connect a DEALER whose identity is their session id and say, as multipart messages:

    want  <gpu> <share>      may I submit kernels to <gpu>?   -> grant <gpu> <quantum_s>
    renew <gpu> <used_s>     my quantum has passed, may I go on?
                             -> grant <gpu> <quantum_s>, or yield <gpu> (drain, then done)
    done  <gpu> <used_s>     my turn is over (or my drain after yielding): charge it
    leave                    the session is closing

oriond also calls `leave` itself when a worker process ends, so a crashed holder
never keeps the GPU. The decisions are compute_share.ShareLedger's.
"""
from __future__ import annotations

import logging
import threading
import time

import zmq

from .compute_share import ShareLedger

log = logging.getLogger("orion.compute")
# While sessions wait, look again at least this often (a turn handed back by `leave`).
RECHECK_S = 0.02


class ComputeScheduler:
    def __init__(self, address: str, throttle_level: int):
        self.address, self.level = address, throttle_level
        self.ledgers: dict[int, ShareLedger] = {}
        self.usage: dict[str, list[float]] = {}   # session -> [first want, turns, used s]
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.sock = zmq.Context.instance().socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind(address)
        self.thread = threading.Thread(target=self._serve, name="compute-scheduler",
                                       daemon=True)
        self.thread.start()

    def leave(self, session: str) -> None:
        with self.lock:
            self._leave(session)

    def _leave(self, session: str) -> None:
        for ledger in self.ledgers.values():
            ledger.leave(session)
        usage = self.usage.pop(session, None)
        if usage:
            first, turns, used = usage
            span = max(1e-9, time.monotonic() - first)
            log.info("session %s: %d turn(s), %.3f s of GPU in %.3f s (%.1f %%)", session,
                     turns, used, span, 100 * used / span)

    def close(self) -> None:
        self.stopping.set()
        self.thread.join(2)
        self.sock.close(0)

    def _ledger(self, gpu: int) -> ShareLedger:
        ledger = self.ledgers.get(gpu)
        if ledger is None:
            ledger = self.ledgers[gpu] = ShareLedger(self.level)
        return ledger

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        while not self.stopping.is_set():
            timeout_ms = self._grant_turns()
            if poller.poll(timeout_ms):
                while True:
                    try:
                        frames = self.sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._on_message(frames)

    def _on_message(self, frames: list[bytes]) -> None:
        identity, verb, args = frames[0], frames[1] if len(frames) > 1 else b"", frames[2:]
        session, now = identity.decode(errors="replace"), time.monotonic()
        try:
            with self.lock:
                if verb == b"want" and len(args) == 2:
                    self._ledger(int(args[0])).want(session, float(args[1]), now)
                    self.usage.setdefault(session, [now, 0, 0.0])
                elif verb in (b"done", b"renew") and len(args) == 2:
                    gpu, used = int(args[0]), float(args[1])
                    ledger = self._ledger(gpu)
                    self.usage.setdefault(session, [now, 0, 0.0])[2] += used
                    if verb == b"done":
                        ledger.done(session, used, now)
                    elif ledger.renew(session, used, now):
                        self._grant(session, gpu, ledger)
                    else:
                        self.sock.send_multipart([identity, b"yield", args[0]])
                elif verb == b"leave":
                    self._leave(session)
                else:
                    raise ValueError(f"unknown message {verb!r} with {len(args)} argument(s)")
        except ValueError as e:
            log.warning("compute scheduler: session %s: %s", session, e)

    def _grant(self, session: str, gpu: int, ledger: ShareLedger) -> None:
        self.usage.setdefault(session, [time.monotonic(), 0, 0.0])[1] += 1
        self.sock.send_multipart([session.encode(), b"grant", str(gpu).encode(),
                                  repr(ledger.quantum).encode()])

    def _grant_turns(self) -> int:
        """Grant every turn that is due; the poll timeout (ms) until the next may be."""
        now, wake = time.monotonic(), None
        with self.lock:
            for gpu, ledger in self.ledgers.items():
                session = ledger.next_turn(now)
                if session is not None:
                    self._grant(session, gpu, ledger)
                if ledger.waiting:
                    at = ledger.wake_at(now)
                    due = RECHECK_S if at is None else min(RECHECK_S, max(0.0, at - now))
                    wake = due if wake is None else min(wake, due)
        return 1000 if wake is None else max(1, int(wake * 1000 + 0.5))
