"""A throttled session's side of the compute share: a turn before compute work.

Before a call that puts kernels on a GPU (launches, graph launches, memsets) the worker
needs a turn on that GPU from oriond's compute scheduler. A turn lasts one quantum;
once it has passed the worker asks to renew it and goes on at once if nobody else
waits. When it must yield, or once the client has sent nothing for IDLE_S, the worker
waits until the GPU has finished its work (the drain) and reports the time it took.
Copies are not gated: they use the copy engines, not the GPU's SMs.
"""
from __future__ import annotations

import logging
import math
import time
from typing import Callable

import zmq

log = logging.getLogger("orion.worker")

IDLE_S = 0.002          # a turn the client leaves unused this long goes back
# oriond gone or hung: go on unthrottled rather than hang the client. Legitimate waits
# are shorter: a session waits at most for the debt of its own overrun.
GRANT_TIMEOUT_S = 120.0
COMPUTE_CALLS = ("orionLaunchKernel", "cudaGraphLaunch", "cudaMemset", "cudaMemsetAsync",
                 "cudaMemset2D", "cudaMemset2DAsync", "cudaMemset3D", "cudaMemset3DAsync")


class ComputeGate:
    def __init__(self, address: str, session: str, shares: dict[int, float],
                 drain: Callable[[int], None]):
        """`shares`: physical GPU -> share (0..1) of the GPUs this session is throttled
        on; `drain(gpu)` returns once the session's work on that GPU has finished."""
        self.shares, self.drain = shares, drain
        self.turns: dict[int, tuple[float, float]] = {}    # gpu -> (started, ends)
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.IDENTITY, session.encode())
        self.sock.setsockopt(zmq.LINGER, 1000)
        self.sock.connect(address)
        self.unthrottled = False

    def before_compute(self, gpu: int) -> float:
        """Wait for a turn on `gpu` if the session has none; when it ends (monotonic
        time; inf where the session is not throttled)."""
        if gpu not in self.shares or self.unthrottled:
            return math.inf
        turn = self.turns.get(gpu)
        if turn is None or not (time.monotonic() < turn[1] or self._renewed(gpu)):
            self._begin(gpu)
        return self.turns[gpu][1]

    def idle_timeout(self, default: float) -> float:
        """How long the worker may wait for the next call before calling `on_idle`."""
        return min(default, IDLE_S) if self.turns else default

    def on_idle(self) -> None:
        for gpu in list(self.turns):
            self._end(gpu)

    def close(self) -> None:
        self.turns.clear()
        self.sock.send_multipart([b"leave"])
        self.sock.close()

    def _renewed(self, gpu: int) -> bool:
        """Ask to go on after a quantum; on a refusal, drain and report (turn over)."""
        started, _ = self.turns[gpu]
        now = time.monotonic()
        self.sock.send_multipart([b"renew", str(gpu).encode(), repr(now - started).encode()])
        verb, *rest = self._reply(gpu)
        if verb == b"grant":
            self.turns[gpu] = (now, now + float(rest[1]))
            return True
        del self.turns[gpu]
        self._drain_and_report(gpu, now)
        return False

    def _reply(self, gpu: int) -> list[bytes]:
        if not self.sock.poll(int(GRANT_TIMEOUT_S * 1000)):
            log.error("no answer on GPU %d from oriond's compute scheduler in %.0f s: "
                      "going on unthrottled", gpu, GRANT_TIMEOUT_S)
            self.unthrottled = True
            return [b"grant", str(gpu).encode(), b"inf"]
        frames = self.sock.recv_multipart()
        if frames[0] not in (b"grant", b"yield") or int(frames[1]) != gpu:
            raise RuntimeError(f"compute scheduler answered {frames!r}")
        return frames

    def _begin(self, gpu: int) -> None:
        # Never wait for one GPU while holding another: two sessions could each hold
        # what the other waits for.
        for held in list(self.turns):
            self._end(held)
        self.sock.send_multipart([b"want", str(gpu).encode(),
                                  repr(self.shares[gpu]).encode()])
        verb, _, quantum = self._reply(gpu)
        if verb != b"grant":
            raise RuntimeError(f"compute scheduler answered {verb!r} to a request")
        started = time.monotonic()
        self.turns[gpu] = (started, started + float(quantum))

    def _end(self, gpu: int) -> None:
        """Hand a turn back: drain, then report the whole turn."""
        started, _ = self.turns.pop(gpu)
        self._drain_and_report(gpu, started)

    def _drain_and_report(self, gpu: int, since: float) -> None:
        try:
            self.drain(gpu)
        except Exception:   # a faulted context: the error reaches the client at its
            log.exception("draining GPU %d", gpu)   # next call; the turn still ends
        used = time.monotonic() - since
        self.sock.send_multipart([b"done", str(gpu).encode(), repr(used).encode()])
