"""A throttled session's side of the compute share: a turn before compute work.

Before a call that puts kernels on a GPU (launches, graph launches, memsets) the worker
needs a turn on that GPU from oriond's compute scheduler. A turn lasts one quantum;
once it has passed, or once the client has sent nothing for IDLE_S, the worker waits
until the GPU has finished its work (the drain) and hands the turn back with the time
it really took. Copies are not gated: they use the copy engines, not the GPU's SMs.
"""
from __future__ import annotations

import logging
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

    def before_compute(self, gpu: int) -> None:
        if gpu not in self.shares or self.unthrottled:
            return
        turn = self.turns.get(gpu)
        if turn is not None:
            if time.monotonic() < turn[1]:
                return
            self._end(gpu)
        self._begin(gpu)

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

    def _begin(self, gpu: int) -> None:
        # Never wait for one GPU while holding another: two sessions could each hold
        # what the other waits for.
        for held in list(self.turns):
            self._end(held)
        self.sock.send_multipart([b"want", str(gpu).encode(),
                                  repr(self.shares[gpu]).encode()])
        if not self.sock.poll(int(GRANT_TIMEOUT_S * 1000)):
            log.error("no turn on GPU %d from oriond's compute scheduler in %.0f s: "
                      "going on unthrottled", gpu, GRANT_TIMEOUT_S)
            self.unthrottled = True
            return
        verb, granted, quantum = self.sock.recv_multipart()
        if verb != b"grant" or int(granted) != gpu:
            raise RuntimeError(f"compute scheduler answered {verb!r} {granted!r}")
        started = time.monotonic()
        self.turns[gpu] = (started, started + float(quantum))

    def _end(self, gpu: int) -> None:
        started, _ = self.turns.pop(gpu)
        try:
            self.drain(gpu)
        except Exception:   # a faulted context: the error reaches the client at its
            log.exception("draining GPU %d", gpu)   # next call; the turn still ends
        used = time.monotonic() - started
        self.sock.send_multipart([b"done", str(gpu).encode(), repr(used).encode()])
