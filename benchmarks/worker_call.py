"""The worker's cost of one synchronous call, by stage, on the CPU alone (no GPU needed).

A synchronous round trip through Orion is the client's ring write, the worker's Python
and the driver's work. This queues `cudaStreamSynchronize` requests in a real call ring
(as worker_launch.py queues launches) and times the stages of the worker's generic path
for each: `CallRing.next_request` (the launch loop's check included), `Session.handle`
(header, decode, the GPU backend's handler with the driver stubbed, the check for device
printf output the real worker makes on every synchronising call) and `CallRing.reply`
(with `finish`). So the figures are everything of a round trip but the client, the
driver and the hand-over between processes.

    python3 benchmarks/worker_call.py [--calls 2000] [--rounds 10]

Prints µs per call of each stage (median over rounds); compare on one machine only.
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

from orion_server import launch_path, ring, worker  # noqa: E402
from orion_server.device_output import DeviceOutput, DeviceOutputs  # noqa: E402
from orion_server.generated.cudart_table import CALLS  # noqa: E402

SYNC_ID = next(i for i, c in CALLS.items() if c.name == "cudaStreamSynchronize")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=10)
    opts = parser.parse_args(argv)
    clock = time.perf_counter
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        backend, _, streams = worker_launch.cuda_backend(tmp, 0)
        session = worker.Session(backend)
        # as the worker's: device printf captured (here from two descriptors of our own)
        spare = [os.open(os.devnull, os.O_WRONLY) for _ in range(2)]
        session.outputs = DeviceOutputs(tuple((flag, DeviceOutput(fd))
                                              for flag, fd in zip((1, 2), spare)))
        client = worker_launch.Client(tmp)
        call_ring = ring.CallRing(client.name)
        launch_path.attach(session, call_ring, worker.STICKY_ERRORS)
        stages = {"next_request": [], "handle": [], "reply": []}
        try:
            for r in range(opts.rounds + 1):
                for _ in range(opts.calls):
                    client.put(SYNC_ID, struct.pack("<Q", streams[0]))
                took = [0.0, 0.0, 0.0]
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
                if r:                        # round 0 warms up
                    for name, t in zip(stages, took):
                        stages[name].append(t / opts.calls * 1e6)
        finally:
            call_ring.close()
            client.close()
    medians = {name: statistics.median(v) for name, v in stages.items()}
    print(f"# {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, no GPU (CPU only)")
    print("cudaStreamSynchronize: " + ", ".join(f"{n} {m:.2f}" for n, m in medians.items()) +
          f" us; total {sum(medians.values()):.2f} us per call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
