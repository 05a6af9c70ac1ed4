#!/usr/bin/env python3
"""Compute shares measured: `spin` sessions through Orion on one GPU at the same time.

    python3 benchmarks/compute_share.py --out DIR [--shim-dir orion_client/lib]
            [--backend cuda|host] [--seconds 12]

Each scenario starts an all-in-one pool (one GPU) with the scenario's [throttle]
settings, runs its sessions (tests/programs/spin.cu: fixed-work kernels, progress lines
with wall-clock stamps) side by side, and counts the kernels each finished inside the
window where all of them ran (half a second at each end left out). Where several
sessions share the GPU, a session's share is its part of the kernels all of them
finished (the GPU's work); a session alone is compared with one session through Orion
with throttling off (the baseline: what the turns cost shows there). `throughput` is
what the sessions together did against the same program alone natively (on the host
backend, against the baseline): the cost of Orion and of the turns. Writes DIR/compute-share-<date>-<gpu>.json/.md.
On the host backend (`--backend host`, CI) kernels do not run: the figures are the
shares of the worker's turns, which is what the mechanism controls.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import harness  # noqa: E402

# (name, ORION_RATIO of each session, throttle_level (None: throttling off), what each
# should get)
BASELINE = ("100 alone, throttling off", [100], None, [1.00])
SCENARIOS = [
    ("30/70", [30, 70], 100, [0.30, 0.70]),
    ("4x25", [25, 25, 25, 25], 100, [0.25] * 4),
    ("50 alone, throttle_level 0", [50], 0, [0.50]),
    ("50 alone, throttle_level 100", [50], 100, [1.00]),
    ("100 alone (takes no turns)", [100], 100, [1.00]),
]
TOLERANCE = 0.05
# A session expected to get the whole GPU is compared with another run of one session:
# two runs of the same configuration (rows 1 and 6) differ by up to 5 points on the
# H100, so "the whole GPU" is met from 90 %.


def parse_work(text: str) -> list[tuple[int, int]]:
    """(unix ms, kernels done) of each WORK line of a spin run."""
    series = []
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "WORK":
            series.append((int(parts[1]), int(parts[2])))
    return series


def work_between(series: list[tuple[int, int]], start_ms: float, end_ms: float) -> float:
    """Kernels done between two instants, interpolated between progress lines."""
    def at(t: float) -> float:
        if not series or t <= series[0][0]:
            return 0.0 if not series else float(series[0][1])
        for (t0, k0), (t1, k1) in zip(series, series[1:]):
            if t0 <= t <= t1:
                return k0 + (k1 - k0) * (t - t0) / max(1, t1 - t0)
        return float(series[-1][1])
    return at(end_ms) - at(start_ms)


def common_window(runs: list[list[tuple[int, int]]]) -> tuple[float, float]:
    """The span where every run was working, less half a second at each end."""
    start = max(r[0][0] for r in runs) + 500
    end = min(r[-1][0] for r in runs) - 500
    if end - start < 2000:
        spans = ", ".join(f"{(r[-1][0] - r[0][0]) / 1000:.1f} s from {r[0][0]}" for r in runs)
        raise RuntimeError(f"the sessions did not overlap for 2 s ({spans})")
    return start, end


def run_spins(spin: Path, envs: list[dict], seconds: float) -> list[str]:
    """Start one spin per environment at once; their outputs."""
    procs = [subprocess.Popen([str(spin), str(seconds)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for env in envs]
    outputs = []
    for proc in procs:
        out, _ = proc.communicate(timeout=seconds + 120)
        if proc.returncode != 0 or "PASS spin" not in out:
            raise RuntimeError(f"spin failed (exit {proc.returncode}):\n{out[-2000:]}")
        outputs.append(out)
    return outputs


def orion_env(controller: str, shim_dir: Path, home: Path, ratio: int, host: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORION_")}
    env.update(LD_LIBRARY_PATH=str(shim_dir), ORION_CONTROLLER=controller, HOME=str(home),
               ORION_VGPU="1", ORION_RATIO=str(ratio))
    if host:
        env["ORION_TEST_HOST_BACKEND"] = "1"
    return env


def scenario(spin: Path, shim_dir: Path, ratios: list[int], level: int | None,
             seconds: float, backend: str, workdir: Path) -> list[float]:
    """Kernels per second of each session, in the window where all ran."""
    from orion_client.local_pool import LocalPool
    config = workdir / f"server-{level}.toml"
    config.write_text(f"[throttle]\nenable_computation_throttle = {str(level is not None).lower()}\n"
                      f"throttle_level = {level or 0}\n")
    with LocalPool(backend=backend, host_devices=1, log_dir=workdir / "pool",
                   extra_env={"ORION_SERVER_CONFIG": str(config)}) as pool:
        envs = [orion_env(pool.controller, shim_dir, workdir, r, backend == "host")
                for r in ratios]
        runs = [parse_work(out) for out in run_spins(spin, envs, seconds)]
    start, end = common_window(runs)
    return [work_between(r, start, end) / ((end - start) / 1000) for r in runs]


def alone_natively(spin: Path, seconds: float) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORION_")}
    env.pop("LD_LIBRARY_PATH", None)
    (out,) = run_spins(spin, [env], seconds)
    run = parse_work(out)
    start, end = run[0][0] + 1000, run[-1][0] - 1000
    return work_between(run, start, end) / ((end - start) / 1000)


def measure(spin: Path, shim_dir: Path, backend: str, seconds: float, workdir: Path,
            scenarios=SCENARIOS) -> dict:
    """The baseline, then every scenario (see the module's docstring)."""
    (baseline,) = scenario(spin, shim_dir, BASELINE[1], BASELINE[2], seconds, backend,
                           workdir)
    whole = alone_natively(spin, seconds) if backend == "cuda" else baseline
    runs = [(BASELINE, [baseline])] + [
        (s, scenario(spin, shim_dir, s[1], s[2], seconds, backend, workdir)) for s in scenarios]
    results = []
    for (name, ratios, level, expected), rates in runs:
        base = sum(rates) if len(rates) > 1 else baseline
        shares = [r / base for r in rates]
        met = all(abs(s - e) <= TOLERANCE if e < 1 else s >= 1 - 2 * TOLERANCE
                  for s, e in zip(shares, expected))
        results.append({"scenario": name, "ratios": ratios, "throttle_level": level,
                        "expected": expected, "shares": shares,
                        "throughput": sum(rates) / whole, "met": met})
    gpu = harness.gpu_info().get("gpu_name", "") if backend == "cuda" else "no GPU"
    return {"backend": backend, "gpu": gpu, "seconds": seconds, "whole_kernels_per_s": whole,
            "tolerance": TOLERANCE, "results": results}


def markdown(data: dict) -> str:
    lines = [f"# Compute shares ({data['backend']} backend, {data.get('gpu', '')})", "",
             f"Each session runs `spin` ({data['seconds']:.0f} s), counted over the window "
             "where all sessions ran. Several sessions: share = its part of the kernels "
             "they all finished. One session: against the first row (one session through "
             "Orion, throttling off). Throughput: all sessions' kernels against "
             f"{data['whole_kernels_per_s']:.0f} per second, the same program alone "
             f"{'natively' if data['backend'] == 'cuda' else 'through Orion'}. "
             "Target: ±5 points.", "",
             "| scenario | ORION_RATIO | throttle_level | expected | measured | throughput "
             "| met? |", "|---|---|---|---|---|---|---|"]
    for r in data["results"]:
        level = "off" if r["throttle_level"] is None else r["throttle_level"]
        lines.append(f"| {r['scenario']} | {'/'.join(map(str, r['ratios']))} | {level} | "
                     f"{' / '.join(f'{e:.0%}' for e in r['expected'])} | "
                     f"{' / '.join(f'{s:.1%}' for s in r['shares'])} | "
                     f"{r['throughput']:.1%} | {'yes' if r['met'] else '**no**'} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--shim-dir", type=Path, default=harness.ROOT / "orion_client" / "lib")
    p.add_argument("--backend", choices=("cuda", "host"), default="cuda")
    p.add_argument("--seconds", type=float, default=12.0)
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="orion-share-", dir=args.out))
    spin = harness._programs.build("spin", workdir)   # tests/programs/spin.cu
    started = time.monotonic()
    data = measure(spin, args.shim_dir.resolve(), args.backend, args.seconds, workdir)
    data["suite_s"] = round(time.monotonic() - started)
    data["commit"] = harness.git_commit()
    slug = "host" if args.backend == "host" else data["gpu"].lower().replace(" ", "-")
    stem = args.out / f"compute-share-{datetime.date.today()}-{slug}"
    stem.with_suffix(".json").write_text(json.dumps(data, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(data))
    print(markdown(data))
    return 0 if all(r["met"] for r in data["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
