"""The benchmark harness's logic without a GPU: result-line parsing, aggregation, ratios,
targets, Markdown, the run environments of each mode, the suite's arguments.

    python3 -m pytest benchmarks/test_report.py
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from benchmarks import harness, report, run_suite

NATIVE_OUT = """\
INFO cudart /usr/local/cuda/lib64/libcudart.so.13
INFO runtime_version 13000
some chatter the parser must ignore
RESULT memcpy_h2d_pinned_64MiB bandwidth 50 GB/s
RESULT memcpy_h2d_pinned_64MiB time_us 1342.2 us
RESULT roundtrip_stream_sync_idle latency_us 2.5 us
RESULT gemm_bound wall_s 3.0 s
RESULT gemm_bound iterations 1200 count
PARAM iterations 1200
CHECK gemm_bound 12345.5
DONE 0
"""

SHM_OUT = """\
INFO cudart /opt/orion/lib/libcudart.so.13
RESULT memcpy_h2d_pinned_64MiB bandwidth 49 GB/s
RESULT memcpy_h2d_pinned_64MiB time_us 1369.6 us
RESULT roundtrip_stream_sync_idle latency_us 25 us
RESULT gemm_bound wall_s 3.06 s
RESULT gemm_bound iterations 1200 count
PARAM iterations 1200
CHECK gemm_bound 12345.5
DONE 0
"""


# ------------------------------------------------------------------------- parsing

def test_parse_output_reads_every_kind_of_line():
    p = report.parse_output(NATIVE_OUT + "ERROR memcpy_check bytes differ\n")
    assert p.results[("memcpy_h2d_pinned_64MiB", "bandwidth")] == (50.0, "GB/s")
    assert p.results[("gemm_bound", "iterations")] == (1200.0, "count")
    assert p.params == {"iterations": "1200"}
    assert p.checks == {"gemm_bound": "12345.5"}
    assert p.info["cudart"] == "/usr/local/cuda/lib64/libcudart.so.13"
    assert p.errors == [("memcpy_check", "bytes differ")]
    assert p.done == 0


def test_parse_output_flags_malformed_lines_and_missing_done():
    p = report.parse_output("RESULT a b notanumber GB/s\nRESULT a b 1\nRESULT c d nan s\n"
                            "DONE x\n")
    assert [case for case, _ in p.errors] == ["parse"] * 4
    assert p.results == {}
    assert p.done is None


def test_parse_output_accepts_scientific_notation():
    p = report.parse_output("RESULT launch_async_1stream launches_per_s 2.75e+05 launches/s\n")
    assert p.results[("launch_async_1stream", "launches_per_s")][0] == 275000.0


# --------------------------------------------------------------- ratios and targets

def test_better_direction_by_unit():
    assert report.better("GB/s") == "higher"
    assert report.better("launches/s") == "higher"
    assert report.better("us") == report.better("ms") == report.better("s") == "lower"
    assert report.better("count") is None


def test_ratio_is_orion_over_native():
    assert report.ratio(49.0, 50.0) == pytest.approx(0.98)
    assert report.ratio(None, 50.0) is None
    assert report.ratio(1.0, 0.0) is None


def test_targets_ratio_and_absolute():
    rec = {"ratio": {"shm": 0.96, "tcp": 0.5}, "shm": {"value": 25.0}, "tcp": {"value": 3.2}}
    assert report.Target("c", "m", "shm", "ratio", ">=", 0.95).evaluate(rec) == (0.96, True)
    assert report.Target("c", "m", "shm", "ratio", "<=", 0.95).evaluate(rec) == (0.96, False)
    assert report.Target("c", "m", "shm", "absolute", "<=", 20, "us").evaluate(rec) == (25.0, False)
    assert report.Target("c", "m", "tcp", "absolute", ">=", 3, "GB/s").evaluate(rec) == (3.2, True)
    missing = {"tcp": None}
    assert report.Target("c", "m", "tcp", "absolute", ">=", 3).evaluate(missing) == (None, None)
    assert report.Target("c", "m", "shm", "ratio", ">=", 0.95).text() == "shm ≥ 0.95x"
    assert report.Target("c", "m", "tcp", "absolute", ">=", 3, "GB/s").text() == "tcp ≥ 3 GB/s"
    assert report.Target("c", "m", "shm", "absolute", "<=", 20, "us").text() == "shm ≤ 20 µs"


def _program_case_names() -> set[str]:
    """Every case name the programs can print (memcpy's are generated)."""
    names = set()
    for src in harness.PROGRAMS_DIR.glob("*.cu"):
        names |= set(re.findall(r'"([A-Za-z0-9_]+)"', src.read_text()))
    for api in ("memcpy", "memcpyasync"):
        for d in ("h2d", "d2h"):
            for mem in ("pinned", "pageable"):
                for size in ("4KiB", "16KiB", "64KiB", "256KiB", "1MiB", "4MiB", "16MiB",
                             "64MiB", "256MiB"):
                    names.add(f"{api}_{d}_{mem}_{size}")
    return names


def test_default_targets_cover_the_design_and_name_real_cases():
    targets = report.default_targets()
    names = _program_case_names()
    assert {t.case for t in targets} <= names
    kinds = {(t.case, t.mode, t.kind, t.op, t.value) for t in targets}
    assert ("memcpy_h2d_pinned_64MiB", "shm", "ratio", ">=", 0.95) in kinds
    assert ("memcpy_d2h_pageable_64MiB", "shm", "ratio", ">=", 1.0) in kinds
    assert ("memcpy_d2h_pinned_64MiB", "tcp", "absolute", ">=", 3.0) in kinds
    assert ("launch_async_1stream", "shm", "ratio", ">=", 0.5) in kinds
    assert ("roundtrip_memcpy_d2h_4B", "shm", "absolute", "<=", 20.0) in kinds
    assert ("roundtrip_stream_sync_idle", "shm", "absolute", "<=", 20.0) in kinds
    assert ("gemm_bound", "shm", "ratio", "<=", 1.03) in kinds
    assert ("launch_bound", "shm", "ratio", "<=", 1.5) in kinds
    assert ("first_call", "shm", "ratio", "<=", 1.5) in kinds
    for t in targets:   # every target's metric is a headline of the table
        assert t.metric in report.HEADLINE_METRICS


# ------------------------------------------------------------------------ collector

def _collector() -> report.Collector:
    c = report.Collector()
    c.add_run("memcpy", "native", report.parse_output(NATIVE_OUT), rc=0, wall_s=4.0)
    c.add_run("memcpy", "shm", report.parse_output(SHM_OUT), rc=0, wall_s=5.0)
    return c


def _case(doc: dict, case: str, metric: str) -> dict:
    return next(c for c in doc["cases"] if c["case"] == case and c["metric"] == metric)


def test_document_ratios_and_targets():
    doc = _collector().document({"gpu_name": "NVIDIA H100 80GB HBM3"}, {"quick": False})
    bw = _case(doc, "memcpy_h2d_pinned_64MiB", "bandwidth")
    assert bw["native"]["value"] == 50 and bw["shm"]["value"] == 49 and bw["tcp"] is None
    assert bw["ratio"]["shm"] == pytest.approx(0.98) and bw["ratio"]["tcp"] is None
    met = {(t["mode"], t["kind"]): t["met"] for t in bw["targets"]}
    assert met == {("shm", "ratio"): True, ("tcp", "absolute"): None}
    assert bw["headline"] and bw["better"] == "higher"
    assert _case(doc, "roundtrip_stream_sync_idle", "latency_us")["targets"][0]["met"] is False
    gemm = _case(doc, "gemm_bound", "wall_s")
    assert gemm["ratio"]["shm"] == pytest.approx(1.02) and gemm["targets"][0]["met"] is True
    assert _case(doc, "gemm_bound", "iterations")["ratio"] == {"shm": None, "tcp": None}
    assert doc["problems"] == []
    # targets of cases that never ran are listed as not measured
    first = [t for t in doc["targets"] if t["case"] == "first_call"]
    assert first and first[0]["met"] is None


def test_first_call_keeps_the_best_of_its_runs_others_the_median():
    c = report.Collector()
    for native, orion in ((250.0, 900.0), (211.0, 700.0), (400.0, 800.0)):
        c.add_run("first_call", "native",
                  report.parse_output(f"RESULT first_call time_ms {native} ms\nDONE 0\n"), rc=0)
        c.add_run("first_call", "shm",
                  report.parse_output(f"RESULT first_call time_ms {orion} ms\nDONE 0\n"), rc=0)
    for v in (1.0, 5.0, 2.0):
        c.add_run("alloc", "native",
                  report.parse_output(f"RESULT alloc_free_1MiB latency_us {v} us\nDONE 0\n"), rc=0)
    doc = c.document()
    fc = _case(doc, "first_call", "time_ms")
    assert fc["aggregate"] == "min" and fc["native"]["value"] == 211.0
    assert fc["shm"]["value"] == 700.0 and fc["shm"]["median"] == 800.0
    assert fc["ratio"]["shm"] == pytest.approx(700 / 211)
    assert fc["targets"][0]["met"] is False
    assert _case(doc, "alloc_free_1MiB", "latency_us")["native"]["value"] == 2.0


def test_problems_are_reported():
    c = report.Collector()
    c.add_run("gemm_bound", "native", report.parse_output(NATIVE_OUT), rc=0)
    c.add_run("gemm_bound", "shm", report.parse_output(SHM_OUT.replace("12345.5", "1")), rc=0)
    c.add_run("launch", "tcp", report.parse_output("RESULT x y 1 s\n"), rc=None, timed_out=True)
    c.add_run("alloc", "shm", report.parse_output("DONE 0\n"), rc=139)
    c.add_run("roundtrip", "shm", report.parse_output("ERROR roundtrip_event_query boom\nDONE 1\n"),
              rc=1)
    c.add_run("memcpy", "native", report.parse_output("DONE 0\n"), rc=0,
              runtime="/opt/orion/lib/libcudart.so.13", runtime_ok=False)
    c.add_run("first_call", "shm", report.parse_output("RESULT first_call time_ms 1 ms\n"), rc=0)
    c.add_run("memcpy", "shm", report.parse_output("RESULT a b 1 s\n"), rc=-7)
    problems = "\n".join(c.document()["problems"])
    assert "gemm_bound: checksum through Orion (shm)" in problems
    assert "launch [tcp#0]: timed out" in problems
    assert "alloc [shm#0]: exit status 139 without an ERROR line" in problems
    assert "roundtrip [shm#0]: roundtrip_event_query: boom" in problems
    assert "wrong CUDA runtime for mode native" in problems
    assert "first_call [shm#0]: no DONE line" in problems
    assert "memcpy [shm#0]: killed by SIGBUS" in problems
    assert c.case_errors["roundtrip_event_query"] == ["shm: boom"]


# ------------------------------------------------------------------------- Markdown

def test_format_value_and_ratio():
    assert report.format_value(54.6123, "GB/s") == "54.6 GB/s"
    assert report.format_value(275123.4, "launches/s") == "275,123 launches/s"
    assert report.format_value(3.6, "us") == "3.60 µs"
    assert report.format_value(0.0484, "GB/s") == "0.0484 GB/s"
    assert report.format_value(211.4, "ms") == "211 ms"
    assert report.format_value(None, "s") == "–"
    assert report.format_value(0.9996, "s") == "1.00 s"
    assert report.format_ratio(0.9812) == "0.98x"
    assert report.format_ratio(None) == "–"


def test_render_markdown_table():
    c = _collector()
    c.add_problem("something broke")
    doc = c.document({"gpu_name": "NVIDIA H100 80GB HBM3", "driver_version": "580.1",
                      "git_commit": "abc"}, {"quick": True, "duration_s": 12.3})
    md = report.render_markdown(doc)
    assert md.startswith("# Orion benchmarks")
    assert "- GPU: NVIDIA H100 80GB HBM3" in md and "quick sanity pass" in md
    assert "## Copies: cudaMemcpy / cudaMemcpyAsync" in md
    header = ("| case | metric | native | Orion shm | ratio | Orion tcp | ratio | target "
              "| met? |")
    assert header in md
    row = next(line for line in md.splitlines()
               if line.startswith("| memcpy_h2d_pinned_64MiB | bandwidth | 50.0"))
    assert "| 49.0 GB/s | 0.98x | – | – | shm ≥ 0.95x · tcp ≥ 3 GB/s | yes · – |" in row
    assert "| roundtrip_stream_sync_idle | latency_us | shm ≤ 20 µs | 25.0 µs | **no** |" in md
    assert "time_us" not in md          # secondary metrics only in the JSON
    assert "- something broke" in md
    assert re.search(r"## Targets: 2 of 3 met", md)


def test_result_file_names():
    assert report.slug("NVIDIA H100 80GB HBM3") == "nvidia-h100-80gb-hbm3"
    assert report.slug("") == "unknown-gpu"
    assert report.result_stem("2026-11-24", "NVIDIA H200") == "2026-11-24-nvidia-h200"
    assert report.result_stem("2026-11-24", "NVIDIA H200", quick=True).endswith("-quick")


# ------------------------------------------------------------------- harness logic

def test_runner_environments(tmp_path):
    shim = tmp_path / "shim"
    shim.mkdir()
    base = {"PATH": "/usr/bin", "LD_LIBRARY_PATH": f"{shim}:/usr/local/cuda/lib64",
            "ORION_ENABLE_NET": "1", "ORION_GMEM": "5", "HOME": "/root"}
    r = harness.Runner(tmp_path, shim, "127.0.0.1:9123", tmp_path / "logs", base_env=base)
    native = r.env("native")
    assert native["LD_LIBRARY_PATH"] == "/usr/local/cuda/lib64"
    assert not any(k.startswith("ORION_") for k in native) and native["HOME"] == "/root"
    shm, tcp = r.env("shm"), r.env("tcp")
    for env in (shm, tcp):
        assert env["LD_LIBRARY_PATH"] == f"{shim.resolve()}:/usr/local/cuda/lib64"
        assert env["ORION_CONTROLLER"] == "127.0.0.1:9123" and env["ORION_VGPU"] == "1"
        assert "ORION_GMEM" not in env and "ORION_TEST_HOST_BACKEND" not in env
        assert Path(env["HOME"]).is_dir() and env["HOME"] != "/root"
    assert shm["ORION_ENABLE_NET"] == "0" and tcp["ORION_ENABLE_NET"] == "1"
    assert shm["ORION_LOG_DIR"].endswith("client-shm")
    host = harness.Runner(tmp_path, shim, "c:1", tmp_path / "logs", host_backend=True,
                          base_env=base)
    assert host.env("tcp")["ORION_TEST_HOST_BACKEND"] == "1"
    with pytest.raises(RuntimeError):
        harness.Runner(tmp_path, shim, None, tmp_path / "logs", base_env=base).env("shm")


def _fake_run(mode: str, runtime: str | None, params: dict | None = None) -> harness.Run:
    parsed = report.Parsed(params=params or {})
    if runtime:
        parsed.info["cudart"] = runtime
    return harness.Run("p", mode, [], 0, 1.0, "", "", False, parsed)


def test_runtime_check_and_calibrated_arguments(tmp_path):
    shim = tmp_path / "shim"
    shim.mkdir()
    r = harness.Runner(tmp_path, shim, "c:1", tmp_path / "logs", base_env={})
    ours, real = str(shim / "libcudart.so.13"), "/usr/local/cuda/lib64/libcudart.so.13"
    assert r.runtime_ok(_fake_run("shm", ours)) is True
    assert r.runtime_ok(_fake_run("shm", real)) is False
    assert r.runtime_ok(_fake_run("native", real)) is True
    assert r.runtime_ok(_fake_run("native", ours)) is False
    assert r.runtime_ok(_fake_run("tcp", None)) is None
    native = _fake_run("native", real, {"iterations": "1234", "other": "1"})
    assert harness.calibrated_args("gemm_bound", native) == ["--iterations", "1234"]
    assert harness.calibrated_args("launch_bound", native) == []
    assert harness.calibrated_args("memcpy", native) == []
    assert harness.calibrated_args("gemm_bound", None) == []


def test_every_program_has_a_source():
    for name in harness.PROGRAMS:
        assert (harness.PROGRAMS_DIR / f"{name}.cu").is_file()


@pytest.mark.skipif(harness.nvcc_path() is None, reason="nvcc not found")
def test_programs_compile(tmp_path):
    paths = harness.build_all(tmp_path)
    assert all(os.access(paths[n], os.X_OK) for n in harness.PROGRAMS)
    # unchanged sources: the cache is used, nothing is rebuilt
    mtimes = {n: paths[n].stat().st_mtime_ns for n in harness.PROGRAMS}
    harness.build_all(tmp_path)
    assert mtimes == {n: paths[n].stat().st_mtime_ns for n in harness.PROGRAMS}
    harness.remove_build(tmp_path)
    assert not tmp_path.exists()


def test_suite_arguments(tmp_path):
    a = run_suite.parse_args([str(tmp_path), "--quick", "--programs", "launch,memcpy"])
    assert a.out == tmp_path and a.quick and a.first_call_runs == 2 and a.memcpy_runs == 1
    assert a.programs == ["launch", "memcpy"] and a.modes == ["native", "shm", "tcp"]
    full = run_suite.parse_args(["--out", str(tmp_path)])
    assert full.first_call_runs == 5 and full.memcpy_runs == 3
    with pytest.raises(SystemExit):
        run_suite.parse_args(["--programs", "nope"])
    with pytest.raises(SystemExit):
        run_suite.parse_args(["--modes", "native,udp"])


class _FakeRunner:
    """Answers runs from a script of stdouts."""

    def __init__(self, outputs: list[tuple[int, str]]):
        self.outputs, self.calls = list(outputs), 0

    def run(self, program, mode, args, timeout):
        rc, out = self.outputs.pop(0)
        self.calls += 1
        return harness.Run(program, mode, list(args), rc, 0.1, out, "", False,
                           report.parse_output(out))


def test_refused_allocations_are_retried(monkeypatch):
    monkeypatch.setattr(harness.time, "sleep", lambda s: None)
    monkeypatch.setattr(harness, "wait_pool_idle", lambda pool, timeout_s=20.0: True)
    no_device = (1, "ERROR launch_init cudaFree(0): cudaErrorNoDevice (no device)\nDONE 1\n")
    fine = (0, "RESULT a b 1 s\nDONE 0\n")
    runner = _FakeRunner([no_device, no_device, fine])
    run, retried = harness.run_with_retry(runner, object(), "launch", "shm")
    assert run.rc == 0 and retried == 2 and runner.calls == 3
    # never more than `retries` times; native runs are not retried
    runner = _FakeRunner([no_device] * 3)
    run, retried = harness.run_with_retry(runner, object(), "launch", "tcp", retries=2)
    assert run.rc == 1 and retried == 2 and runner.calls == 3
    runner = _FakeRunner([no_device])
    assert harness.run_with_retry(runner, None, "launch", "native")[1] == 0
    # other failures are not retried
    other = (1, "ERROR x cudaErrorIllegalAddress (boom)\nDONE 1\n")
    runner = _FakeRunner([other])
    assert harness.run_with_retry(runner, object(), "launch", "shm")[1] == 0


def test_warnings_are_rendered_apart_from_problems():
    c = _collector()
    c.add_warning("allocation refused once, retried")
    doc = c.document()
    assert doc["problems"] == [] and doc["warnings"] == ["allocation refused once, retried"]
    md = report.render_markdown(doc)
    assert "## Problems\n\nnone" in md
    assert "## Warnings\n\n- allocation refused once, retried" in md
