"""The worker's cost of one synchronous call, on the CPU alone (no GPU needed).

A synchronous round trip through Orion is the client's ring write, the worker's part
and the driver's work. This queues `cudaStreamSynchronize` requests in a real call ring
(as worker_launch.py queues launches), for the GPU backend with the driver stubbed and
device printf captured as the real worker captures it, and times the worker:

  generic  the generic path by stage: `CallRing.next_request`, `Session.handle`
           (header, decode, handler, the check for device output) and `CallRing.reply`
           (with `finish`)
  fast     the C call loop (orion_server/fast_path.py), which takes the whole queue in
           `next_request` and writes each reply itself

So the figures are everything of a round trip but the client, the driver and the
hand-over between processes.

    python3 benchmarks/worker_call.py [--calls 2000] [--rounds 10]

Prints µs per call (median over rounds); compare on one machine only.
"""
from __future__ import annotations

import argparse
import os
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import worker_launch  # noqa: E402

from orion_server import fast_path, ring, worker  # noqa: E402
from orion_server.device_output import DeviceOutputs  # noqa: E402
from orion_server.generated.cudart_table import CALLS  # noqa: E402

SYNC_ID = next(i for i, c in CALLS.items() if c.name == "cudaStreamSynchronize")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=10)
    opts = parser.parse_args(argv)
    print(f"# {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, no GPU (CPU only)")
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        backend, _, streams = worker_launch.cuda_backend(tmp, 0)
        request = struct.pack("<Q", streams[0])
        for fast in (False, True):
            session = worker.Session(backend)
            # device printf captured as the worker captures it (from descriptors of ours)
            spare = [os.open(os.devnull, os.O_WRONLY) for _ in range(2)]
            session.outputs = DeviceOutputs(tuple(zip((1, 2), spare)))
            client = worker_launch.Client(tmp)
            call_ring = ring.CallRing(client.name)
            if fast:
                fast_path.attach(session, call_ring,
                                 lambda reply: call_ring.reply(0, reply))
            try:
                stages = measure(client, call_ring, session, request, opts, fast)
            finally:
                call_ring.close()
                client.close()
            medians = {name: statistics.median(v) for name, v in stages.items()}
            print(f"cudaStreamSynchronize, {'fast' if fast else 'generic'}: " +
                  ", ".join(f"{n} {m:.2f}" for n, m in medians.items() if len(medians) > 1) +
                  f"{' us; ' if len(medians) > 1 else ''}total "
                  f"{sum(medians.values()):.2f} us per call")
    return 0


def measure(client, call_ring, session, request, opts, fast) -> dict[str, list[float]]:
    """µs per call of each stage, per round (round 0 warms up)."""
    clock = time.perf_counter
    stages = {"total": []} if fast else {"next_request": [], "handle": [], "reply": []}
    for r in range(opts.rounds + 1):
        for _ in range(opts.calls):
            client.put(SYNC_ID, request)
        took = [0.0, 0.0, 0.0]
        if fast:
            t0 = clock()
            assert call_ring.next_request(0.0) is None      # the loop took them all
            took[0] = clock() - t0
        else:
            for seq in range(opts.calls):
                t0 = clock()
                frames = call_ring.next_request(1.0)
                t1 = clock()
                reply = session.handle(frames)
                t2 = clock()
                call_ring.finish()
                call_ring.reply(seq, reply)
                t3 = clock()
                took[0] += t1 - t0
                took[1] += t2 - t1
                took[2] += t3 - t2
        if r:
            for name, t in zip(stages, took):
                stages[name].append(t / opts.calls * 1e6)
    return stages


if __name__ == "__main__":
    sys.exit(main())
