#!/usr/bin/env python3
"""The whole benchmark suite in one command, on a GPU machine:

    python3 benchmarks/run_suite.py --out DIR [--shim-dir orion_client/lib] [--quick]

Builds benchmarks/programs/*.cu with nvcc (into DIR/build), starts an all-in-one Orion
pool (controller + oriond on the CUDA backend, LocalPool), and runs every program
natively, through Orion on the same host (shm: ipc:// + shared memory) and through
Orion over tcp:// loopback (ORION_ENABLE_NET=1), interleaved per program. Writes

    DIR/<YYYY-MM-DD>-<gpu-slug>[-quick].json   every figure of every run, ratios, targets,
                                               environment (GPU, driver, commit, shim hash)
    DIR/<same>.md                              the Markdown table
    DIR/logs/                                  each run's output, client and pool logs

and nothing outside DIR (besides the pool's transient sockets and shared-memory
segments). The JSON and Markdown are rewritten after every program, so a suite cut short
still leaves its figures; past --deadline-s no new run starts. Exit status: 0 when every
run succeeded (met targets or not), 1 when something failed (see the Problems section).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks import harness, report  # noqa: E402

# Longest a single run may take (s); the suite deadline may cut it shorter.
RUN_TIMEOUT_S = {"memcpy": 240.0}
DEFAULT_RUN_TIMEOUT_S = 150.0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", "-o", type=Path, default=harness.BENCH_DIR / "results",
                   help="directory for results, logs and the build (default benchmarks/results)")
    p.add_argument("out_pos", nargs="?", type=Path, metavar="OUT",
                   help="the same as --out")
    p.add_argument("--shim-dir", type=Path, default=harness.ROOT / "orion_client" / "lib",
                   help="directory holding Orion's libcudart.so.13 (prebuilt)")
    p.add_argument("--build-dir", type=Path,
                   help="where the programs are built (default OUT/build)")
    p.add_argument("--quick", action="store_true",
                   help="short budgets and fewer sizes: a sanity pass of a minute or two")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply every program's time budget")
    p.add_argument("--programs", default=",".join(harness.PROGRAMS),
                   help="comma-separated subset of: " + ", ".join(harness.PROGRAMS))
    p.add_argument("--modes", default=",".join(report.MODES),
                   help="comma-separated subset of: native, shm, tcp")
    p.add_argument("--first-call-runs", type=int,
                   help="runs of first_call per mode (default 5; 2 with --quick)")
    p.add_argument("--memcpy-runs", type=int,
                   help="runs of memcpy per mode, interleaved with the other modes', the "
                        "median of each case kept (default 3; 1 with --quick): a host's "
                        "slow phase then spoils one run of one mode, not the ratio")
    p.add_argument("--deadline-s", type=float, default=450.0,
                   help="start no run after this many seconds (default 450)")
    p.add_argument("--vgpu-count", type=int, default=1,
                   help="vGPUs per GPU in the pool (default 1: the vGPU is the whole GPU)")
    p.add_argument("--backend", choices=("cuda", "host"), default="cuda",
                   help="oriond backend; host = Orion's test backend without a GPU (checks "
                        "the harness only, the figures mean nothing)")
    p.add_argument("--commit", help="the commit measured, when DIR's tree has no .git")
    p.add_argument("--keep-build", action="store_true",
                   help="keep the compiled programs in OUT/build afterwards")
    args = p.parse_args(argv)
    if args.out_pos is not None:
        args.out = args.out_pos
    args.programs = [x for x in args.programs.split(",") if x]
    args.modes = [x for x in args.modes.split(",") if x]
    unknown = set(args.programs) - set(harness.PROGRAMS)
    if unknown:
        p.error(f"unknown programs: {', '.join(sorted(unknown))}")
    if set(args.modes) - set(report.MODES):
        p.error(f"unknown modes: {', '.join(sorted(set(args.modes) - set(report.MODES)))}")
    if args.first_call_runs is None:
        args.first_call_runs = 2 if args.quick else 5
    if args.memcpy_runs is None:
        args.memcpy_runs = 1 if args.quick else 3
    return args


def say(start: float, text: str) -> None:
    print(f"[{time.monotonic() - start:6.1f}s] {text}", flush=True)


def headline(run: harness.Run) -> str:
    parts = []
    for (case, metric), (value, unit) in run.parsed.results.items():
        if metric in report.HEADLINE_METRICS and len(parts) < 3:
            parts.append(f"{case} {report.format_value(value, unit)}")
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    start = time.monotonic()
    started = datetime.datetime.now(datetime.timezone.utc)
    out = args.out.resolve()
    logs = out / "logs"
    (logs / "runs").mkdir(parents=True, exist_ok=True)
    build_dir = (args.build_dir or out / "build").resolve()
    shim_dir = args.shim_dir.resolve()

    env = harness.environment(shim_dir, args.commit)
    env["pool_backend"] = args.backend
    env["vgpu_count"] = args.vgpu_count
    stem = report.result_stem(started.strftime("%Y-%m-%d"), env.get("gpu_name", ""),
                              args.quick)
    collector = report.Collector()
    meta = {"started": started.isoformat(timespec="seconds"), "quick": args.quick,
            "scale": args.scale, "programs": args.programs, "modes": args.modes,
            "first_call_runs": args.first_call_runs, "memcpy_runs": args.memcpy_runs,
            "argv": sys.argv[1:],
            "complete": False, "incomplete": []}
    json_path, md_path = out / f"{stem}.json", out / f"{stem}.md"

    def write() -> dict:
        meta["duration_s"] = round(time.monotonic() - start, 1)
        doc = collector.document(env, meta)
        json_path.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
        md_path.write_text(report.render_markdown(doc))
        return doc

    shm_free = env.get("dev_shm_free_mib")
    if shm_free is not None and shm_free < 1024 and set(args.modes) & set(report.ORION_MODES):
        collector.add_warning(f"/dev/shm has {shm_free} MiB free: Orion's page-locked memory "
                              "(up to 256 MiB at once in memcpy) lives there")
    say(start, f"GPU: {env.get('gpu_name')} (driver {env.get('driver_version')}); "
               f"results: {json_path}")
    try:
        harness.build_all(build_dir, args.programs)
    except (harness.BuildError, OSError) as e:
        collector.add_problem(f"build failed: {e}")
        write()
        print(e, file=sys.stderr)
        return 1
    say(start, f"built {len(args.programs)} programs in {build_dir}")

    modes = list(args.modes)
    orion = [m for m in modes if m in report.ORION_MODES]
    if args.backend == "host" and "native" in modes:
        modes.remove("native")   # no GPU: nothing to run natively
    with contextlib.ExitStack() as stack:
        pool = None
        if orion and not harness.shim_ok(shim_dir):
            collector.add_problem(f"no libcudart.so.13 in {shim_dir}: Orion runs skipped "
                                  "(build it with `python3 -m orion_client.native_build`)")
            modes = [m for m in modes if m == "native"]
        elif orion:
            from orion_client.local_pool import LocalPool
            try:
                pool = stack.enter_context(LocalPool(backend=args.backend,
                                                     vgpu_count=args.vgpu_count,
                                                     log_dir=logs / "pool"))
                say(start, f"Orion pool up: controller {pool.controller}")
            except Exception as e:   # noqa: BLE001 - reported, native runs still go on
                collector.add_problem(f"the Orion pool did not start: {e}")
                modes = [m for m in modes if m == "native"]
        meta["modes"] = modes
        runner = harness.Runner(build_dir, shim_dir, pool.controller if pool else None, logs,
                                host_backend=args.backend == "host")
        deadline = start + args.deadline_s
        base_args = (["--quick"] if args.quick else []) + (
            ["--scale", f"{args.scale:g}"] if args.scale != 1.0 else [])

        for program in args.programs:
            repeats = {"first_call": args.first_call_runs,
                       "memcpy": args.memcpy_runs}.get(program, 1)
            native: harness.Run | None = None
            for rep in range(repeats):
                for mode in modes:
                    label = f"{program} [{mode}#{rep}]"
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        meta["incomplete"].append(label)
                        continue
                    prog_args = list(base_args)
                    if mode != "native":
                        prog_args += harness.calibrated_args(program, native)
                        if not harness.wait_pool_idle(pool):
                            collector.add_warning(f"{label}: the previous lease was still "
                                                  "held after 20 s")
                    timeout = min(RUN_TIMEOUT_S.get(program, DEFAULT_RUN_TIMEOUT_S),
                                  remaining + 60.0)
                    run, retried = harness.run_with_retry(runner, pool, program, mode,
                                                          prog_args, timeout=timeout)
                    if retried:
                        collector.add_warning(
                            f"{label}: vGPU allocation refused {retried} time(s) right after "
                            "the previous client released its lease (lease rebuilt from a "
                            "stale oriond heartbeat?); retried, see logs/pool/controller.log")
                    if mode == "native" and native is None:
                        native = run
                    log = logs / "runs" / f"{program}-{mode}-{rep}.log"
                    log.write_text(f"$ {program} {' '.join(prog_args)}\nexit {run.rc}, "
                                   f"{run.wall_s:.2f} s{' (timed out)' if run.timed_out else ''}"
                                   f"\n--- stdout\n{run.stdout}\n--- stderr\n{run.stderr}")
                    collector.add_run(program, mode, run.parsed, rc=run.rc, wall_s=run.wall_s,
                                      timed_out=run.timed_out, args=prog_args, repeat=rep,
                                      log=str(log.relative_to(out)), runtime=run.runtime,
                                      runtime_ok=runner.runtime_ok(run))
                    if program in harness.PROCESS_WALL and run.rc == 0:
                        collector.add_result(program, mode, program, "process_wall_s",
                                             run.wall_s, "s")
                    status = "ok" if run.rc == 0 else ("TIMED OUT" if run.timed_out
                                                       else f"FAILED (exit {run.rc})")
                    say(start, f"{label:<26} {status} in {run.wall_s:.1f} s  {headline(run)}")
            write()

    meta["complete"] = not meta["incomplete"]
    if not args.keep_build and args.build_dir is None:
        harness.remove_build(build_dir)
    doc = write()
    targets = doc["targets"]
    print(f"\nresults: {json_path}\n         {md_path}")
    print(f"targets met: {sum(1 for t in targets if t['met'])} of "
          f"{sum(1 for t in targets if t['met'] is not None)} measured")
    for t in targets:
        shown = ("not measured" if t["actual"] is None else
                 report.format_ratio(t["actual"]) if t["kind"] == "ratio" else
                 report.format_value(t["actual"], t["unit"]))
        print(f"  {'MET ' if t['met'] else 'miss' if t['met'] is False else '  - '} "
              f"{t['case']:<34} {t['text']:<16} {shown}")
    for w in doc["warnings"]:
        print(f"warning: {w}")
    if doc["problems"]:
        print("problems:")
        for p in doc["problems"]:
            print(f"  {p}")
    return 1 if doc["problems"] else 0


if __name__ == "__main__":
    sys.exit(main())
