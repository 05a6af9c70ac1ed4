"""oriond: serves this node's GPUs to the pool.

It registers the GPUs with the controller and heartbeats the leases that have a live
session here; clients come to its front door (a ROUTER socket, port 9960) to open a
session, and each session gets a worker process of its own (orion_server.worker). The
parent never initialises CUDA, so workers start clean. When a worker ends (its client
exited or was killed) the lease is released at once, not only when it times out.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import secrets
import socket
import subprocess
import sys
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import zmq

from orion_controller.client import ControlClient, ControlError
from orion_controller.identity import vgpu_uuid
from . import config as configuration
from .compute_scheduler import ComputeScheduler
from .gpus import Gpu, discover_nvml, simulated

log = logging.getLogger("orion.server")
HEARTBEAT_S = 1.0
WORKER_START_TIMEOUT_S = 60.0
MAX_REQUEST_BYTES = 1 << 20


@dataclass
class WorkerProcess:
    session: str
    lease: str
    grants: list
    process: subprocess.Popen
    address: str = ""
    events: str = ""
    log_path: Path = field(default_factory=Path)


class Server:
    def __init__(self, cfg: configuration.ServerConfig, gpus: list[Gpu]):
        self.cfg = cfg
        self.gpus = {g.index: g for g in gpus}
        self.workers: dict[str, WorkerProcess] = {}
        self.standby: subprocess.Popen | None = None
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.server_url = f"tcp://{cfg.bind_addr}:{cfg.listen_port}"
        self.session_dir = cfg.log_dir / "session"
        self.session_dir.mkdir(parents=True, exist_ok=True)
        self.ipc_dir = Path(os.environ.get("XDG_RUNTIME_DIR", "/tmp")) / f"orion-{os.getpid()}"
        self.ipc_dir.mkdir(parents=True, exist_ok=True)
        self.compute = (ComputeScheduler(f"ipc://{self.ipc_dir}/compute.sock",
                                         cfg.throttle_level)
                        if cfg.enable_computation_throttle else None)

    # ---- controller ----
    def registration(self) -> dict:
        return {"op": "register", "node": self.cfg.node, "server": self.server_url,
                "vgpu_count": self.cfg.vgpu_count,
                "gpus": [{"uuid": g.uuid, "name": g.name, "index": g.index,
                          "memory_mib": self.offered_mib(g)} for g in self.gpus.values()]}

    def offered_mib(self, gpu: Gpu) -> int:
        """What the pool may grant of a GPU: its memory less the workers' own contexts
        (not charged to vGPUs), reckoned for vgpu_count sessions."""
        if self.cfg.backend != "cuda":
            return gpu.memory_mib
        return max(1, gpu.memory_mib - self.cfg.vgpu_count * self.cfg.context_reserve_mib)

    def heartbeat_loop(self) -> None:
        client = ControlClient(self.cfg.controller, timeout_s=2.0)
        registered = False
        while not self.stopping.is_set():
            try:
                if not registered:
                    client.request(self.registration())
                    registered = True
                    log.info("registered %d GPU(s) with %s", len(self.gpus), self.cfg.controller)
                with self.lock:
                    live = {w.lease: w.grants for w in self.workers.values()}
                reply = client.request({"op": "heartbeat", "node": self.cfg.node,
                                        "leases": list(live), "grants": live})
                if not reply.get("known", True):
                    registered = False
                for lease in reply.get("lost", []):
                    self.end_lease(lease, "the controller lost it")
            except ControlError as e:
                if registered:
                    log.warning("controller %s: %s", self.cfg.controller, e)
                registered = False
            self.stopping.wait(HEARTBEAT_S)
        try:
            client.request({"op": "unregister", "node": self.cfg.node})
        except ControlError:
            pass
        client.close()

    def release(self, lease: str) -> None:
        with ControlClient(self.cfg.controller, timeout_s=2.0) as client:
            try:
                client.request({"op": "release", "lease": lease})
            except ControlError:
                pass   # already released by the client, or expires by itself

    # ---- sessions ----
    def open_session(self, msg: dict) -> dict:
        lease, grants, client = msg.get("lease"), msg.get("vgpus"), msg.get("client") or {}
        if not isinstance(lease, str) or not isinstance(grants, list) or not grants:
            return {"ok": False, "error": "open_session needs a lease and its vgpus"}
        vgpus = []
        for i, g in enumerate(grants):
            if not isinstance(g, dict) or g.get("gpu_index") not in self.gpus:
                return {"ok": False, "error": f"vGPU {i}: no such GPU on {self.cfg.node}"}
            memory = g.get("memory_mib")
            ratio = g.get("ratio")
            if not isinstance(memory, int) or memory <= 0 or not isinstance(ratio, int):
                return {"ok": False, "error": f"vGPU {i}: bad memory_mib/ratio"}
            # uuid: the physical GPU's (NVML finds its sensors by it); vgpu_uuid: the one
            # the client sees, derived as the controller derives it
            vgpus.append({"index": i, "gpu_index": g["gpu_index"], "memory_bytes": memory << 20,
                          "ratio": ratio, "uuid": self.gpus[g["gpu_index"]].uuid,
                          "vgpu_uuid": vgpu_uuid(self.gpus[g["gpu_index"]].uuid,
                                                 g.get("vgpu_id") or f"{lease}-{i}")})
        session = uuid.uuid4().hex[:12]
        local = msg.get("transport") != "tcp" and client.get("host") == socket.gethostname()
        address = (f"ipc://{self.ipc_dir}/{session}.sock" if local
                   else f"tcp://{self.cfg.bind_addr}:*")
        log_path = self.session_dir / f"{session}.log"
        # the client's routing id on the worker's sockets: only it is served (peer.py)
        token = secrets.token_hex(16)
        worker_cfg = {"address": address, "token": token, "vgpus": vgpus,
                      "backend": self.cfg.backend,
                      "log_file": str(log_path), "log_level": self.cfg.log_level,
                      "backend_options": self.backend_options()}
        shares = self.throttled_shares(vgpus)
        if shares:
            worker_cfg["compute"] = {"address": self.compute.address, "session": session,
                                     "shares": shares}
        proc = self.take_standby()
        try:
            proc.stdin.write((json.dumps(worker_cfg) + "\n").encode())
            proc.stdin.close()
        except OSError:
            pass   # it died: the ready line below will not come, and that is reported
        worker = WorkerProcess(session, lease, grants, proc, log_path=log_path)
        line = self.read_ready_line(proc)
        if not line:
            proc.kill()
            proc.wait()
            return {"ok": False, "error": f"worker for session {session} did not start; "
                                          f"see {log_path}"}
        ready = json.loads(line)
        worker.address, worker.events = ready["worker"], ready["events"]
        with self.lock:
            self.workers[session] = worker
        threading.Thread(target=self.watch, args=(worker,), daemon=True).start()
        log.info("session %s: lease %s, client %s pid %s (%s), %d vGPU(s), worker pid %d at %s",
                 session, lease, client.get("host"), client.get("pid"), client.get("app"),
                 len(vgpus), proc.pid, worker.address)
        return {"ok": True, "session": session, "worker": worker.address,
                "events": worker.events, "token": token}

    def throttled_shares(self, vgpus: list[dict]) -> dict[int, float]:
        """Physical GPU -> the session's share of it, for the GPUs it does not have whole
        (its vGPUs on one GPU add up); empty when throttling is off."""
        if self.compute is None:
            return {}
        shares: dict[int, float] = {}
        for v in vgpus:
            shares[v["gpu_index"]] = shares.get(v["gpu_index"], 0) + v["ratio"] / 100
        return {gpu: share for gpu, share in shares.items() if 0 < share < 1}

    # ---- standby workers: started ahead, so a session does not wait for imports ----
    def spawn_standby(self) -> subprocess.Popen:
        env = dict(os.environ)
        env.pop("LD_LIBRARY_PATH", None)   # never let the client shim into the server
        return subprocess.Popen(
            [sys.executable, "-m", "orion_server.worker", "--backend", self.cfg.backend],
            stdout=subprocess.PIPE, stdin=subprocess.PIPE, env=env, start_new_session=True)

    def take_standby(self) -> subprocess.Popen:
        """The waiting standby worker (or a new one), and another started in its place."""
        with self.lock:
            proc, self.standby = self.standby, None
        if proc is None or proc.poll() is not None:
            proc = self.spawn_standby()
        threading.Thread(target=self.refill_standby, daemon=True).start()
        return proc

    def refill_standby(self) -> None:
        fresh = self.spawn_standby()
        with self.lock:
            if self.standby is None and not self.stopping.is_set():
                self.standby, fresh = fresh, None
        if fresh is not None:
            fresh.kill()
            fresh.wait()

    def backend_options(self) -> dict:
        if self.cfg.backend == "host":
            launch_log = os.environ.get("ORION_HOST_LAUNCH_LOG")
            return {"launch_log": launch_log} if launch_log else {}
        return {}

    @staticmethod
    def read_ready_line(proc: subprocess.Popen) -> str:
        result: list[str] = []
        reader = threading.Thread(target=lambda: result.append(proc.stdout.readline().decode()),
                                  daemon=True)
        reader.start()
        reader.join(WORKER_START_TIMEOUT_S)
        return result[0].strip() if result and result[0].startswith("{") else ""

    def watch(self, worker: WorkerProcess) -> None:
        """Copy the worker's output (device printf) to its log; release when it ends."""
        with open(worker.log_path, "ab") as out:
            for chunk in iter(lambda: worker.process.stdout.read1(65536), b""):
                out.write(chunk)
                out.flush()
        code = worker.process.wait()
        with self.lock:
            self.workers.pop(worker.session, None)
        if self.compute is not None:
            self.compute.leave(worker.session)   # a dead worker never keeps a turn
        log.info("session %s ended (worker exit %s); releasing lease %s", worker.session,
                 code, worker.lease)
        self.release(worker.lease)

    def end_lease(self, lease: str, why: str) -> None:
        with self.lock:
            doomed = [w for w in self.workers.values() if w.lease == lease]
        for w in doomed:
            log.warning("ending session %s: lease %s %s", w.session, lease, why)
            w.process.terminate()

    # ---- front door ----
    def handle(self, payload: bytes) -> dict:
        if len(payload) > MAX_REQUEST_BYTES:
            return {"ok": False, "error": "request too large"}
        try:
            msg = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            return {"ok": False, "error": "request is not JSON"}
        if not isinstance(msg, dict):
            return {"ok": False, "error": "request is not a JSON object"}
        if msg.get("op") == "open_session":
            return self.open_session(msg)
        if msg.get("op") == "status":
            with self.lock:
                sessions = [{"session": w.session, "lease": w.lease, "pid": w.process.pid}
                            for w in self.workers.values()]
            return {"ok": True, "node": self.cfg.node, "sessions": sessions}
        if msg.get("op") == "gpu_info":   # for orion-nv-smi
            from .backends.cuda_nvml import node_gpus
            with self.lock:
                workers = {w.process.pid: w.lease for w in self.workers.values()}
            return {"ok": True, "node": self.cfg.node,
                    "gpus": node_gpus(self.gpus, workers, self.cfg.backend)}
        return {"ok": False, "error": f"unknown op {msg.get('op')!r}"}

    def serve(self) -> None:
        ctx = zmq.Context.instance()
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.bind(f"tcp://{self.cfg.bind_addr}:{self.cfg.listen_port}")
        heartbeat = threading.Thread(target=self.heartbeat_loop, daemon=True)
        heartbeat.start()
        self.refill_standby()
        log.info("oriond %s listening on %s (%s backend)", self.cfg.node, self.server_url,
                 self.cfg.backend)
        try:
            while not self.stopping.is_set():
                if not sock.poll(250):
                    continue
                frames = sock.recv_multipart()
                if len(frames) < 3:
                    continue
                identity, payload = frames[0], frames[-1]
                try:
                    reply = self.handle(payload)
                except Exception as e:   # one bad request never takes the server down
                    log.exception("request failed")
                    reply = {"ok": False, "error": f"internal error: {e}"}
                sock.send_multipart([identity, b"", json.dumps(reply).encode()])
        finally:
            self.stopping.set()
            with self.lock:
                workers = list(self.workers.values())
                if self.standby is not None:
                    self.standby.kill()
                    self.standby.wait()
            for w in workers:
                w.process.terminate()
            for w in workers:
                try:
                    w.process.wait(5)
                except subprocess.TimeoutExpired:
                    w.process.kill()
            heartbeat.join(5)
            if self.compute is not None:
                self.compute.close()
            sock.close(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Orion server: serves this node's GPUs")
    parser.add_argument("--config", type=Path, help="server.toml (default /etc/orion/server.toml)")
    parser.add_argument("--controller", help="controller address host:port")
    parser.add_argument("--bind", help="data-plane address to listen on")
    parser.add_argument("--port", type=int, help="front-door port (default 9960)")
    parser.add_argument("--node", help="node name (default: host name)")
    parser.add_argument("--vgpu-count", type=int, help="default vGPUs per GPU")
    parser.add_argument("--log-dir", type=Path, help="default /var/log/orion")
    parser.add_argument("--backend", choices=["cuda", "host"],
                        help="cuda (default); host = host-memory test backend, for CI only")
    parser.add_argument("--host-devices", type=int, help="simulated GPUs of the host backend")
    parser.add_argument("--host-memory-mib", type=int, help="memory of each simulated GPU")
    args = parser.parse_args(argv)
    try:
        cfg = configuration.load(args.config)
    except configuration.ConfigError as e:
        print(f"oriond: {e}", file=sys.stderr)
        return 2
    for name in ("controller", "node", "backend", "host_devices", "host_memory_mib",
                 "log_dir", "vgpu_count"):
        if getattr(args, name) is not None:
            setattr(cfg, name, getattr(args, name))
    if args.bind:
        cfg.bind_addr = args.bind
    if args.port:
        cfg.listen_port = args.port
    cfg.log_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=cfg.log_level, filename=cfg.log_dir / "server.log",
                        format="%(asctime)s %(levelname)s %(message)s")
    if cfg.backend == "host":
        gpus = simulated(cfg.node, cfg.host_devices, cfg.host_memory_mib)
    else:
        gpus = discover_nvml(cfg.native_gpu_count)
    if not gpus:
        print("oriond: no GPU to serve", file=sys.stderr)
        return 1
    server = Server(cfg, gpus)
    signal.signal(signal.SIGTERM, lambda *_: server.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: server.stopping.set())
    server.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
