"""One worker process per client application: replays its calls on a backend.

The worker binds one ROUTER socket, serves exactly one client (its session: peer.py
tells it from anyone else who connects), and exits when that client disconnects, is
killed, or never shows up; the backend then frees everything the session held. It runs
in its own process so that a crash or a sticky CUDA error harms this client only. A
client on this host moves its calls from the socket to a shared-memory call ring
(orion_server/ring.py) once it has connected.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import math
import struct
import sys
import time
from pathlib import Path

import zmq

from . import backend as B
from . import fast_path
from . import ring
from . import wire
from .compute_gate import COMPUTE_CALLS, ComputeGate
from .device_output import DeviceOutputs
from .host_functions import HostFunctions
from .peer import Peer
from .generated import cudart_table, nvml_table

log = logging.getLogger("orion.worker")

# A client must connect this soon after the session is opened, or the worker gives up.
CONNECT_TIMEOUT_S = 15.0
# While the call ring is idle, look at the socket monitor this often (client gone?).
RING_IDLE_S = 0.1
_SEQ = struct.Struct("<Q")
# Errors that poison the context: every later call returns them (CUDA's sticky errors:
# illegal address, launch timeout, device assert, hardware stack error, illegal
# instruction, misaligned address, invalid address space, invalid PC, launch failure).
STICKY_ERRORS = {700, 702, 710, 714, 715, 716, 717, 718, 719}
# The calls of both client libraries. NVML's are queries about the vGPUs, not CUDA
# calls: they neither report nor consume the errors owed to the application's next call.
CALLS = {**cudart_table.CALLS, **nvml_table.CALLS}
QUERIES = frozenset(nvml_table.CALLS)
# Where the driver prints what kernels wrote (device printf, assert messages): at the
# calls that wait for the GPU. Only their replies (and errors) collect device output,
# which spares every other reply a flush and two reads.
_SYNCING_NAMES = {"cudaDeviceSynchronize", "cudaStreamSynchronize", "cudaEventSynchronize",
                  "cudaDeviceReset", "cudaMemset", "cudaMemset2D", "cudaMemset3D",
                  "cudaMemcpyPeer", "orionMemcpyHtoD", "orionMemcpyDtoH", "orionMemcpyDtoD",
                  "orionMemcpyShm", "orionMemcpy2DHtoD", "orionMemcpy2DDtoH",
                  "orionMemcpy2DDtoD", "orionMemcpy2DToArray", "orionMemcpy2DFromArray",
                  "orionMemcpy2DArrayDtoD"}
SYNCING = frozenset(i for i, c in CALLS.items() if c.name in _SYNCING_NAMES)
COMPUTE = frozenset(i for i, c in CALLS.items() if c.name in COMPUTE_CALLS)


class Session:
    """Decodes requests, calls the backend, encodes replies; keeps CUDA error order."""

    def __init__(self, backend: B.Backend, outputs: DeviceOutputs | None = None):
        self.backend = backend
        self.outputs = outputs     # stdout's and stderr's, where they are captured
        self._handlers: dict[int, tuple] = {}
        self.pending_error = 0     # first error of an async call, owed to the next sync call
        self.sticky_error = 0
        self.calls = 0
        self.gate: ComputeGate | None = None    # set when the session's compute is shared
        self.handles_version = 0   # changes when handles may have ended (fast_path.FORGETS)

    def handle(self, frames: list) -> list | None:
        """Frames of one request -> frames of its reply (None for async calls)."""
        head = frames[0].buffer
        try:
            req = wire.parse_request_header(head)
        except wire.WireError as e:
            log.warning("dropped malformed request: %s", e)
            return [wire.pack_reply_header(B.cudaErrorInvalidValue, 0)]
        self.calls += 1
        if req.call_id in fast_path.FORGETS:
            self.handles_version += 1
        if self.gate is not None and req.call_id in COMPUTE:
            self.before_compute(req.device)
        status, payload, bulk_out = self._execute(req, head, [f.buffer for f in frames[1:]])
        if req.flags & wire.FLAG_ASYNC:
            if status and not self.pending_error:
                self.pending_error = status
            return None
        if status == 0 and self.pending_error and req.call_id not in QUERIES:
            status, payload, bulk_out = self.pending_error, b"", []
            self.pending_error = 0
        return self._reply(req.call_id, req.seq, status, payload, bulk_out)

    def answer(self, call_id: int, seq: int, status: int) -> list:
        """The reply to a synchronous call the fast path made (fast_path.py), which
        returned `status`: as `handle` replies (the status reported, device output
        taken); no error was owed before it."""
        if status:
            self.report_error(CALLS[call_id].name, status)
        return self._reply(call_id, seq, status)

    def report_error(self, name: str, status: int) -> None:
        """Report a call's error status; a sticky one ends the session's calls."""
        if status != B.cudaErrorNotReady:
            log.info("%s returned %d", name, status)
        if status in STICKY_ERRORS:
            self.sticky_error = status

    def _reply(self, call_id: int, seq: int, status: int, payload: bytes = b"",
               bulk_out=()) -> list:
        """A reply's frames, with the device output an error or a sync call takes."""
        flags, printed = 0, []
        if self.outputs is not None and (status or call_id in SYNCING):
            flags, printed = self.outputs.take()
        return [wire.pack_reply_header(status, seq, flags) + payload, *bulk_out, *printed]

    def before_compute(self, device: int) -> float:
        """A compute turn on vGPU `device`'s GPU; when it ends (ComputeGate.before_compute)."""
        vgpus = self.backend.vgpus
        if not 0 <= device < len(vgpus):     # a bad index is _execute's to report
            return math.inf
        return self.gate.before_compute(vgpus[device].gpu_index)

    def wait_s(self, default: float) -> float:
        """How long to wait for the next request before calling `idle`."""
        return default if self.gate is None else self.gate.idle_timeout(default)

    def idle(self) -> None:
        """No request came for `wait_s`: a compute turn the client does not use goes back."""
        if self.gate is not None:
            self.gate.on_idle()

    def _dispatch(self, call_id: int) -> tuple:
        """The call and the backend's bound handler for an id, looked up once."""
        found = self._handlers.get(call_id)
        if found is None:
            call = CALLS.get(call_id)
            found = (call, getattr(self.backend, call.name, None) if call else None)
            self._handlers[call_id] = found
        return found

    def _execute(self, req: wire.Request, head, bulk) -> tuple[int, bytes, list]:
        if self.sticky_error and req.call_id not in QUERIES:
            return self.sticky_error, b"", []
        call, handler = self._dispatch(req.call_id)
        if call is None:
            log.warning("unknown call id 0x%08x", req.call_id)
            return B.cudaErrorInvalidValue, b"", []
        if handler is None:
            log.info("%s is not supported by this backend", call.name)
            return B.cudaErrorNotSupported, b"", []
        try:
            args = wire.decode_args(call, head, bulk)
            if req.device != self.backend.device:
                self.backend.set_device(req.device)
            status, *outs = handler(*args)
            status = int(status)
            if status:
                self.report_error(call.name, status)
                return status, b"", []
            if call.is_async:    # nothing goes back: skip the reply's encoding
                return 0, b"", []
            sizes = [args[i] for i in wire.out_buf_positions(call)]
            payload, bulk_out = wire.encode_outs(call, tuple(outs), sizes)
            return 0, payload, bulk_out
        except wire.WireError as e:
            log.warning("bad request: %s", e)
            return B.cudaErrorInvalidValue, b"", []
        except B.CudaError as e:
            log.info("%s: %s", call.name, e)
            if e.status in STICKY_ERRORS:
                self.sticky_error = e.status
            return e.status, b"", []
        except Exception:
            log.exception("%s failed in the backend", call.name)
            return B.cudaErrorUnknown, b"", []


def make_backend(kind: str, vgpus: list[B.VGpu], options: dict) -> B.Backend:
    if kind == "host":
        from .backends.host import HostBackend
        return HostBackend(vgpus, **options)
    from .backends.cuda import CudaBackend
    return CudaBackend(vgpus, **options)


def serve(address: str, session: Session, peer: Peer, ready=None) -> None:
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    # ZMTP heartbeats notice a client whose host or network went away (no TCP reset).
    sock.setsockopt(zmq.HEARTBEAT_IVL, 1000)
    sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, 3000)
    sock.bind(address)
    bound = sock.getsockopt(zmq.LAST_ENDPOINT).decode()
    monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    if ready:
        ready(bound)
    poller = zmq.Poller()
    poller.register(sock, zmq.POLLIN)
    poller.register(monitor, zmq.POLLIN)
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    try:
        while True:
            events = dict(poller.poll(max(1, int(session.wait_s(1.0) * 1000))))
            if not events:
                session.idle()
            if monitor in events and peer.gone(monitor):
                log.info("client disconnected after %d calls", session.calls)
                return
            if sock in events:
                while True:
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
                    except zmq.Again:
                        break
                    if len(frames) < 2 or not _admit(peer, frames, sock, session):
                        continue
                    rest = frames[1:]
                    name = ring.offered_name(rest[0].buffer)
                    if name is not None:
                        call_ring = _take_ring(name, sock, peer, rest[0].buffer)
                        if call_ring is not None:
                            _serve_ring(call_ring, sock, poller, monitor, session, peer)
                            return
                        continue
                    reply = session.handle(rest)
                    if reply is not None:
                        sock.send_multipart([peer.token, *reply], copy=False)
            if not peer.admitted and time.monotonic() > deadline:
                log.warning("no client connected within %.0f s", CONNECT_TIMEOUT_S)
                return
    finally:
        sock.disable_monitor()
        monitor.close(0)
        sock.close(0)


def _admit(peer: Peer, frames: list, sock, session: Session) -> bool:
    """Whether the request comes from the session's client (peer.py); on its first, the
    shared segments it may map become its user's only."""
    first = not peer.admitted
    if not peer.admit(frames, sock):
        return False
    if first and peer.uid is not None:
        session.backend.set_client_user(peer.uid)
    return True


def _take_ring(name: str, sock, peer: Peer, head) -> ring.CallRing | None:
    """Answer a ring offer: status 0 and the ring, or an error status and None."""
    try:
        call_ring, status = ring.CallRing(name, peer.uid), 0
        log.info("call ring up: %s, %d KiB of requests, %d KiB of replies", name,
                 call_ring.request_size >> 10, call_ring.reply_size >> 10)
    except ring.RingError as e:
        log.warning("call ring refused, calls stay on the socket: %s", e)
        call_ring, status = None, B.cudaErrorNotSupported
    seq = _SEQ.unpack_from(head, 16)[0]
    sock.send_multipart([peer.token, wire.pack_reply_header(status, seq)])
    return call_ring


def _serve_ring(call_ring: ring.CallRing, sock, poller, monitor, session: Session,
                peer: Peer) -> None:
    """Every call of the session from now on, in the ring's order, until the client
    disconnects (the socket's monitor still says so) or breaks the ring."""
    def deliver(reply: list) -> None:
        seq = _SEQ.unpack_from(reply[0], 16)[0]
        if not call_ring.reply(seq, reply):
            sock.send_multipart([peer.token, *reply], copy=False)
            call_ring.reply_on_socket(seq)

    # the calls of a training step skip Session.handle (fast_path.py does what it does)
    fast_path.attach(session, call_ring, deliver)
    try:
        while True:
            frames = call_ring.next_request(session.wait_s(RING_IDLE_S))
            if frames is None:            # idle: is the client still there?
                session.idle()
                if peer.gone(monitor):
                    break
                continue
            if frames is ring.ON_SOCKET:
                frames = _next_on_socket(sock, poller, monitor, peer)
                if frames is None:
                    break
            reply = session.handle(frames)
            call_ring.finish()
            if reply is not None:
                deliver(reply)
        log.info("client disconnected after %d calls", session.calls)
    except ring.RingError as e:
        log.error("the client broke the call ring after %d calls: %s", session.calls, e)
    finally:
        call_ring.close()


def _next_on_socket(sock, poller, monitor, peer: Peer) -> list | None:
    """The request frames the ring said the socket carries; None if the client is gone."""
    while True:
        try:
            frames = sock.recv_multipart(zmq.NOBLOCK, copy=False)
            if len(frames) > 1 and peer.admit(frames, sock):
                return frames[1:]
            continue
        except zmq.Again:
            pass
        if monitor in dict(poller.poll(1000)) and peer.gone(monitor):
            return None


def prewarm(backend: str) -> None:
    """What a standby worker does before it has a session: import the backend and, for
    GPUs, initialise the driver, so a client's first call does not wait for them."""
    importlib.import_module(f"orion_server.backends.{backend}")
    if backend == "cuda":
        from cuda.bindings import driver
        driver.cuInit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Orion session worker (started by oriond)")
    parser.add_argument("--config", help="session description, JSON (default: read one "
                                         "line from stdin, after warming up)")
    parser.add_argument("--backend", default="cuda", help="backend to warm up while waiting")
    args = parser.parse_args(argv)
    if args.config:
        config = json.loads(args.config)
    else:
        prewarm(args.backend)
        line = sys.stdin.readline()
        if not line:
            return 0    # oriond stopped before this standby got a session
        config = json.loads(line)
    log_file = config.get("log_file")
    logging.basicConfig(
        level=config.get("log_level", "INFO"),
        format="%(asctime)s %(levelname)s worker[%(process)d] %(message)s",
        filename=log_file if log_file else None)
    vgpus = [B.VGpu(**v) for v in config["vgpus"]]
    backend = make_backend(config.get("backend", "cuda"), vgpus, config.get("backend_options", {}))
    session = Session(backend)
    address = config["address"]
    peer = Peer(config["token"])
    host_functions = HostFunctions(address.replace(".sock", "-events.sock")
                                   if address.startswith("ipc://") else
                                   address.rsplit(":", 1)[0] + ":*", peer.token)
    backend.run_host_function = host_functions.run
    compute = config.get("compute")
    if compute:
        shares = {int(gpu): float(share) for gpu, share in compute["shares"].items()}
        session.gate = ComputeGate(compute["address"], compute["session"], shares,
                                   backend.drain)
        log.info("compute shares enforced by turns: %s", shares)

    def ready(bound: str) -> None:
        # oriond reads this one line to learn where the client should connect; after it,
        # stdout carries device printf, which goes to the client instead
        sys.stdout.write(json.dumps({"worker": bound, "events": host_functions.address}) +
                         "\n")
        sys.stdout.flush()
        session.outputs = DeviceOutputs(((wire.FLAG_OUTPUT, 1), (wire.FLAG_ERRORS, 2)))

    try:
        serve(address, session, peer, ready)
    finally:
        host_functions.close()   # first: streams blocked on the client's functions go on
        if session.gate is not None:
            session.gate.close()
        backend.close()
        for endpoint in (address, host_functions.address):
            if endpoint.startswith("ipc://"):
                Path(endpoint[len("ipc://"):]).unlink(missing_ok=True)
        log.info("session closed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
