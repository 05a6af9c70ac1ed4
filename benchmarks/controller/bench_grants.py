"""Grant latency and throughput of the controller through its real ZeroMQ service.

    python benchmarks/controller/bench_grants.py            # 1000 servers x 8 GPUs, 100 clients
    python benchmarks/controller/bench_grants.py --quick    # a smaller pool, for a smoke run

A controller process (python -m orion_controller, INFO logging to a file, as deployed)
gets 1000 simulated servers of 8 GPUs that heartbeat once a second each, as oriond
does. The pool is first filled to half with vGPUs of mixed sizes, so placement works on
a fragmented pool. Then 100 clients, spread over worker processes, each loop: allocate
(a mix of 1/2/4 vGPUs, default/10 %/50 % compute), release. Two phases:
- saturated: no pause between requests (closed loop): the grant rate the controller
  sustains, and latencies that include queueing behind the 99 other clients;
- paced: each client starts a cycle every clients/rate seconds (a fixed schedule, so
  all together offer --rate grants per second whatever the latency): the latency a
  client sees at that load. Several rates may be given.
Latency is measured at the client, from sending allocate to its reply. The same clients
then run the paced phases against a null server (a ROUTER that answers at once, no
controller logic): the floor of this harness, transport and machine. Results go to
benchmarks/results/controller-<date>.json and .md.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import multiprocessing
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import zmq

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from orion_controller.client import ControlClient, ControllerUnreachable  # noqa: E402

SHAPES = [  # (weight, request fields)
    (50, {"vgpu": 1}), (15, {"vgpu": 1, "ratio": 10}), (10, {"vgpu": 1, "ratio": 50}),
    (15, {"vgpu": 2}), (5, {"vgpu": 2, "ratio": 50}), (5, {"vgpu": 4}),
]
GPU_MIB = 81559     # an H100 80GB as NVML reports it: default sizes leave dust


def main() -> int:
    args = _arguments()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="orion-bench-"))
    port = _free_port()
    addr = f"127.0.0.1:{port}"
    controller = subprocess.Popen(
        [sys.executable, "-m", "orion_controller", "--listen", "127.0.0.1", "--port", str(port),
         "--http-port", "0", "--db", ":memory:", "--lease-timeout", "3600",
         "--node-timeout", "30", "--log-file", str(work / "controller.log")],
        cwd=REPO, env={**os.environ, "LOG_LEVEL": args.log_level,
                       "PYTHONPATH": os.pathsep.join([str(REPO), *sys.path[1:]])})
    spawn = multiprocessing.get_context("spawn")
    stop_beats = spawn.Event()
    beats = None
    try:
        _wait(addr)
        started = time.perf_counter()
        _register(addr, args.servers, args.gpus)
        register_s = time.perf_counter() - started
        if args.heartbeat_hz:
            beats = spawn.Process(target=_heartbeats,
                                  args=(addr, args.servers, args.heartbeat_hz, stop_beats))
            beats.start()
        prefilled = _prefill(addr, args.prefill, args.servers * args.gpus)
        cpu_before = _cpu_s(controller.pid)
        saturated = _phase(spawn, addr, args, period_s=0.0)
        cpu_saturated = _cpu_s(controller.pid) - cpu_before
        paced = []
        for rate in args.rate:
            cpu_before = _cpu_s(controller.pid)
            paced.append({**_phase(spawn, addr, args, period_s=args.clients / rate),
                          "offered_grants_per_s": rate,
                          "controller_cpu_s": round(_cpu_s(controller.pid) - cpu_before, 2)})
    finally:
        stop_beats.set()
        if beats is not None:
            beats.join(10)
        controller.terminate()
        controller.wait(10)
    floor = _floor(spawn, args)
    result = {
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(),
                 "python": platform.python_version(), "pyzmq": zmq.__version__,
                 "libzmq": zmq.zmq_version(), "cpu": _cpu_model()},
        "pool": {"servers": args.servers, "gpus_per_server": args.gpus,
                 "gpus": args.servers * args.gpus, "gpu_mib": GPU_MIB, "vgpu_count": 4,
                 "heartbeats_per_s": args.servers * args.heartbeat_hz, "prefill_leases": prefilled,
                 "register_all_s": round(register_s, 2)},
        "log_level": args.log_level, "clients": args.clients, "worker_processes": args.workers, "duration_s": args.duration,
        "request_mix": [{"weight": w, **shape} for w, shape in SHAPES],
        "saturated": {**saturated, "controller_cpu_s": round(cpu_saturated, 2)},
        "paced": paced,
        "floor_null_server": floor,
        "target": {"grant_p99_ms": 5.0},
    }
    stamp = dt.date.today().isoformat()
    (out / f"controller-{stamp}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"controller-{stamp}.md").write_text(_markdown(result))
    print(_markdown(result))
    return 0


# -- the pool ----------------------------------------------------------------------------

def _register(addr: str, servers: int, gpus: int) -> None:
    with ControlClient(addr, timeout_s=30) as client:
        for n in range(servers):
            reply = client.request({
                "op": "register", "node": f"node{n:04d}", "server": f"tcp://10.1.{n // 250}."
                f"{n % 250}:9960", "vgpu_count": 4,
                "gpus": [{"uuid": f"GPU-{n:04d}-{i}", "name": "NVIDIA H100 80GB HBM3",
                          "index": i, "memory_mib": GPU_MIB} for i in range(gpus)]})
            assert reply["ok"], reply


def _heartbeats(addr: str, servers: int, hz: float, stop) -> None:
    """Every server heartbeats `hz` times a second, spread evenly."""
    context = zmq.Context()
    dealer = context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(f"tcp://{addr}")
    beat = [json.dumps({"op": "heartbeat", "node": f"node{n:04d}", "leases": []}).encode()
            for n in range(servers)]
    step = 1.0 / (servers * hz)
    due = time.perf_counter()
    n = 0
    while not stop.is_set():
        dealer.send_multipart([b"", beat[n % servers]])
        n += 1
        due += step
        while dealer.poll(0):
            dealer.recv_multipart()
        delay = due - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
    dealer.close()
    context.term()


def _prefill(addr: str, fraction: float, gpus: int) -> int:
    """Fills the pool to about `fraction` of its compute with mixed, long-lived grants."""
    rnd = random.Random(1)
    target = fraction * gpus * 100
    taken = count = 0
    with ControlClient(addr, timeout_s=30) as client:
        while taken < target:
            reply = client.request({"op": "allocate", "client_id": "background",
                                    **_shape(rnd)})
            if not reply["ok"]:
                break
            taken += sum(v["ratio"] for v in reply["vgpus"])
            count += 1
    return count


# -- the floor ---------------------------------------------------------------------------

def _floor(spawn, args: argparse.Namespace) -> list[dict]:
    port = _free_port()
    stop = spawn.Event()
    server = spawn.Process(target=_null_server, args=(port, stop))
    server.start()
    try:
        return [{**_phase(spawn, f"127.0.0.1:{port}", args, period_s=args.clients / rate),
                 "offered_grants_per_s": rate} for rate in args.rate]
    finally:
        stop.set()
        server.join(10)


def _null_server(port: int, stop) -> None:
    """Answers allocate with an empty grant and release with ok, at once."""
    context = zmq.Context()
    router = context.socket(zmq.ROUTER)
    router.bind(f"tcp://127.0.0.1:{port}")
    granted = json.dumps({"ok": True, "lease": "0" * 32, "vgpus": []}).encode()
    released = json.dumps({"ok": True}).encode()
    while not stop.is_set():
        if router.poll(100):
            while True:
                try:
                    frames = router.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                reply = granted if b'"allocate"' in frames[-1] else released
                router.send_multipart(frames[:-1] + [reply])
    router.close(linger=0)
    context.term()


# -- the clients -------------------------------------------------------------------------

def _phase(spawn, addr: str, args: argparse.Namespace, period_s: float) -> dict:
    per_worker = [args.clients // args.workers + (i < args.clients % args.workers)
                  for i in range(args.workers)]
    results = spawn.Queue()
    start_at = time.time() + 2.0     # every worker starts together
    workers = [spawn.Process(target=_clients, args=(addr, n, start_at, args.duration, period_s,
                                                    seed, results))
               for seed, n in enumerate(per_worker)]
    for worker in workers:
        worker.start()
    collected = [results.get(timeout=args.duration + 60) for _ in workers]
    for worker in workers:
        worker.join(10)
    grants = sorted(x for c in collected for x in c["grant"])
    releases = sorted(x for c in collected for x in c["release"])
    busy = sum(c["busy"] for c in collected)
    return {"grants": len(grants), "busy_refusals": busy,
            "grants_per_s": round(len(grants) / args.duration, 1),
            "cycle_period_per_client_ms": round(period_s * 1000, 2),
            "grant_ms": _percentiles(grants), "release_ms": _percentiles(releases)}


def _clients(addr: str, count: int, start_at: float, duration: float, period_s: float,
             seed: int, results) -> None:
    """`count` clients in one process: each a REQ socket doing allocate then release, a
    cycle every period_s (at once when late; period 0: back to back)."""
    rnd = random.Random(seed)
    context = zmq.Context()
    poller = zmq.Poller()
    sockets = []
    for _ in range(count):
        req = context.socket(zmq.REQ)
        req.setsockopt(zmq.LINGER, 0)
        req.connect(f"tcp://{addr}")
        poller.register(req, zmq.POLLIN)
        sockets.append(req)
    state = {s: ("idle", 0.0, None) for s in sockets}     # what it waits for, since, lease
    grant_ms, release_ms, busy = [], [], 0
    time.sleep(max(0.0, start_at - time.time()))
    end = time.perf_counter() + duration
    # stagger the first requests over one period so paced clients do not move in lockstep
    wake = {s: time.perf_counter() + rnd.random() * period_s for s in sockets}
    while time.perf_counter() < end:
        now = time.perf_counter()
        for s in sockets:
            if state[s][0] == "idle" and now >= wake[s]:
                s.send(json.dumps({"op": "allocate", "client_id": f"bench{seed}",
                                   **_shape(rnd)}).encode())
                state[s] = ("grant", time.perf_counter(), None)
        timeout = max(0, min((w - now for s, w in wake.items() if state[s][0] == "idle"),
                             default=0.05) * 1000)
        for s, _ in poller.poll(min(timeout, 50)):
            reply = json.loads(s.recv())
            waited, since, _ = state[s]
            elapsed = (time.perf_counter() - since) * 1000
            if waited == "grant" and reply["ok"]:
                grant_ms.append(elapsed)
                s.send(json.dumps({"op": "release", "lease": reply["lease"]}).encode())
                state[s] = ("release", time.perf_counter(), reply["lease"])
                continue
            if waited == "grant":
                busy += 1
            else:
                release_ms.append(elapsed)
            state[s] = ("idle", 0.0, None)
            wake[s] = max(wake[s] + period_s, time.perf_counter()) if period_s else 0.0
    # let requests in flight finish so their leases are released
    deadline = time.perf_counter() + 5
    while any(v[0] != "idle" for v in state.values()) and time.perf_counter() < deadline:
        for s, _ in poller.poll(100):
            reply = json.loads(s.recv())
            if state[s][0] == "grant" and reply["ok"]:
                s.send(json.dumps({"op": "release", "lease": reply["lease"]}).encode())
                state[s] = ("release", time.perf_counter(), reply["lease"])
            else:
                state[s] = ("idle", 0.0, None)
    for s in sockets:
        s.close()
    context.term()
    results.put({"grant": grant_ms, "release": release_ms, "busy": busy})


# -- helpers -----------------------------------------------------------------------------

def _shape(rnd: random.Random) -> dict:
    return dict(rnd.choices([shape for _, shape in SHAPES], [w for w, _ in SHAPES])[0])


def _percentiles(values: list[float]) -> dict:
    if not values:
        return {}
    def at(q: float) -> float:
        return round(values[min(len(values) - 1, int(q * len(values)))], 3)
    return {"p50": at(0.50), "p90": at(0.90), "p99": at(0.99), "max": round(values[-1], 3),
            "mean": round(statistics.fmean(values), 3)}


def _markdown(r: dict) -> str:
    rows = [("saturated (closed loop, back to back)", r["saturated"])] + [
        (f"paced, {p['offered_grants_per_s']:g} grants/s offered", p) for p in r["paced"]]
    table = "\n".join(
        f"| {name} | {p['grants_per_s']} | {p['grant_ms'].get('p50')} | {p['grant_ms'].get('p90')} "
        f"| {p['grant_ms'].get('p99')} | {p['grant_ms'].get('max')} | {p['release_ms'].get('p50')} "
        f"| {p['release_ms'].get('p99')} | {p['busy_refusals']} | {p['controller_cpu_s']} |"
        for name, p in rows)
    floor = "\n".join(
        f"| null server, {p['offered_grants_per_s']:g} grants/s offered | {p['grants_per_s']} "
        f"| {p['grant_ms'].get('p50')} | {p['grant_ms'].get('p90')} | {p['grant_ms'].get('p99')} "
        f"| {p['grant_ms'].get('max')} | {p['release_ms'].get('p50')} "
        f"| {p['release_ms'].get('p99')} | - | - |" for p in r["floor_null_server"])
    met = [p["offered_grants_per_s"] for p in r["paced"]
           if p["grant_ms"].get("p99", 1e9) <= r["target"]["grant_p99_ms"]]
    verdict = (f"met up to {max(met):g} grants/s offered" if met
               else "missed at every paced rate")
    return f"""# Controller grants: {r['date']}

Pool: {r['pool']['servers']} servers x {r['pool']['gpus_per_server']} GPUs ({r['pool']['gpus']} GPUs),
half full with {r['pool']['prefill_leases']} mixed grants, {r['pool']['heartbeats_per_s']} heartbeats/s.
{r['clients']} clients in {r['worker_processes']} processes, {r['duration_s']} s per phase, through the
real ZeroMQ service (one controller process, {r['log_level']} log). Host: {r['host']['cpus']} CPUs
({r['host']['cpu']}), Python {r['host']['python']}, libzmq {r['host']['libzmq']}.

| phase | grants/s | grant p50 ms | p90 | p99 | max | release p50 ms | p99 | busy | controller CPU s |
|---|---|---|---|---|---|---|---|---|---|
{table}
{floor}

Target p99 <= {r['target']['grant_p99_ms']} ms per grant: {verdict}. Saturated latency is
queueing: clients without pause wait behind each other for the one controller thread.
The null-server rows are the floor: the same clients and transport with no controller.
"""


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def _wait(addr: str) -> None:
    deadline = time.monotonic() + 20
    with ControlClient(addr, timeout_s=0.5) as client:
        while True:
            try:
                if client.request({"op": "status"})["ok"]:
                    return
            except ControllerUnreachable:
                if time.monotonic() > deadline:
                    raise


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, default=1000)
    parser.add_argument("--gpus", type=int, default=8, help="GPUs per server")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--workers", type=int, default=max(1, min(8, (os.cpu_count() or 2) - 2)),
                        help="client processes")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per phase")
    parser.add_argument("--rate", type=float, nargs="+", default=[250.0, 500.0, 1000.0],
                        help="grants/s all clients together offer, one paced phase each")
    parser.add_argument("--prefill", type=float, default=0.5, help="pool fraction filled first")
    parser.add_argument("--heartbeat-hz", type=float, default=1.0,
                        help="heartbeats per server per second (oriond: 1; 0: none)")
    parser.add_argument("--log-level", default="INFO",
                        help="the controller's LOG_LEVEL (INFO logs every decision)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results"))
    parser.add_argument("--quick", action="store_true", help="100 servers, 5 s phases")
    args = parser.parse_args()
    if args.quick:
        args.servers, args.duration = 100, 5.0
    return args


if __name__ == "__main__":
    raise SystemExit(main())
