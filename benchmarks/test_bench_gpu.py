"""Every benchmark program natively and through Orion (shm, tcp), under pytest-benchmark.

    pytest benchmarks -m gpu [--benchmark-json=FILE]

pytest-benchmark times each whole program run (process start to exit); the figures the
program measured itself (RESULT lines) and, for Orion runs, their ratios to the native
run of the same session go into the benchmark's `extra_info`. A benchmark fails when its
program fails, when the wrong libcudart.so.13 answered, or when a checksum differs from
the native one; missed performance targets do not fail it (run_suite.py reports them).
"""
from __future__ import annotations

import pytest

from benchmarks import harness, report
from benchmarks.conftest import bench_backend, bench_quick

pytest.importorskip("pytest_benchmark")
pytestmark = pytest.mark.gpu

CASES = [(p, m) for p in harness.PROGRAMS for m in report.MODES]
FIRST_CALL_ROUNDS = 5


def _describe(run: harness.Run) -> str:
    return (f"{run.program} [{run.mode}] exit {run.rc}{' (timed out)' if run.timed_out else ''}"
            f"\n--- stdout\n{run.stdout}\n--- stderr\n{run.stderr}")


def _native(runner: harness.Runner, native_runs: dict, program: str, args: list[str]):
    if program not in native_runs:
        native_runs[program] = runner.run(program, "native", args, timeout=300)
    return native_runs[program]


@pytest.mark.parametrize("program,mode", CASES, ids=[f"{p}-{m}" for p, m in CASES])
def test_benchmark(benchmark, bench_runner, bench_pool, native_runs, program, mode):
    args = ["--quick"] if bench_quick() else []
    native = None
    if bench_backend() == "host" and mode == "native":
        pytest.skip("host test backend: no GPU to run natively")
    if mode != "native" and bench_backend() == "cuda":
        native = _native(bench_runner, native_runs, program, args)
        args = args + harness.calibrated_args(program, native)

    runs: list[harness.Run] = []

    def once():
        runs.append(harness.run_with_retry(bench_runner, bench_pool, program, mode, args)[0])

    rounds = FIRST_CALL_ROUNDS if program == "first_call" else 1
    benchmark.group = program
    benchmark.pedantic(once, rounds=rounds, iterations=1)
    if mode == "native":
        native_runs.setdefault(program, runs[0])

    collector = report.Collector(targets=[])
    for i, run in enumerate(runs):
        collector.add_run(program, mode, run.parsed, rc=run.rc, wall_s=run.wall_s,
                          timed_out=run.timed_out, repeat=i, runtime=run.runtime,
                          runtime_ok=bench_runner.runtime_ok(run))
    if native is not None:
        collector.add_run(program, "native", native.parsed, rc=native.rc)
    figures, ratios = {}, {}
    for rec in collector.cases():
        key = f"{rec['case']}.{rec['metric']}"
        if rec[mode]:
            figures[key] = rec[mode]["value"]
        if mode != "native" and rec["ratio"].get(mode) is not None:
            ratios[key] = rec["ratio"][mode]
    benchmark.extra_info.update(mode=mode, args=args, runtime=runs[0].runtime,
                                figures=figures, ratios_to_native=ratios)

    for run in runs:
        assert run.rc == 0 and not run.parsed.errors, _describe(run)
        assert bench_runner.runtime_ok(run) is not False, (
            f"{mode} run answered by {run.runtime}")
        if native is not None:
            for case, value in run.parsed.checks.items():
                assert native.parsed.checks.get(case, value) == value, (
                    f"{case}: checksum {value} through Orion, "
                    f"{native.parsed.checks[case]} natively")
