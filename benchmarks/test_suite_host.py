"""run_suite.py end to end without a GPU: the pool on Orion's host-memory test backend
(kernel launches recorded, not run), Orion modes only, --quick. Checks the harness (build,
pool, runs, files), not performance. Needs nvcc and the shim (built here, or
$ORION_SHIM_DIR).

    python3 -m pytest benchmarks/test_suite_host.py
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from benchmarks import harness, report, run_suite


@pytest.fixture(scope="module")
def shim(tmp_path_factory) -> Path:
    if harness.nvcc_path() is None:
        pytest.skip("nvcc not found")
    if os.environ.get("ORION_SHIM_DIR"):
        return Path(os.environ["ORION_SHIM_DIR"])
    try:
        from orion_client.native_build import build
        return build(tmp_path_factory.mktemp("shim")).parent
    except Exception as e:   # noqa: BLE001
        pytest.skip(f"cannot build the shim here: {e}")


def test_suite_on_the_host_backend(tmp_path, shim, capsys):
    out = tmp_path / "out"
    rc = run_suite.main([str(out), "--shim-dir", str(shim), "--backend", "host", "--quick",
                         "--first-call-runs", "2"])
    printed = capsys.readouterr().out
    files = sorted(p.name for p in out.iterdir())
    assert [f for f in files if f.endswith(".json")] and [f for f in files if f.endswith(".md")]
    assert set(files) == {f for f in files if f.endswith((".json", ".md"))} | {"logs"}
    doc = json.loads(next(out.glob("*.json")).read_text())
    assert doc["problems"] == [], doc["problems"]
    assert rc == 0, printed
    assert doc["meta"]["complete"] and doc["meta"]["modes"] == ["shm", "tcp"]
    programs = {c["program"] for c in doc["cases"]}
    assert programs == set(harness.PROGRAMS)
    for c in doc["cases"]:
        assert c["native"] is None and c["shm"] and c["tcp"], c["case"]
    runs = {(r["program"], r["mode"]) for r in doc["runs"]}
    assert runs == {(p, m) for p in harness.PROGRAMS for m in report.ORION_MODES}
    assert sum(r["program"] == "first_call" for r in doc["runs"]) == 4
    assert all(r["runtime"].startswith(str(shim.resolve())) for r in doc["runs"])
    md = next(out.glob("*.md")).read_text()
    assert "| launch_async_1stream | launches_per_s | – |" in md
    assert (out / "logs" / "runs" / "gemm_bound-shm-0.log").is_file()
    assert not (out / "build").exists()   # removed afterwards
    assert "targets met:" in printed
