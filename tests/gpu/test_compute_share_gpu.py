"""Compute shares on the H100: spin sessions through Orion side by side get the shares
their ORION_RATIO and throttle_level promise, as fractions of what the same program does
alone natively (benchmarks/compute_share.py; ±5 points)."""
from __future__ import annotations

import pytest

from benchmarks import compute_share
from conftest import programs
from test_programs_gpu import _gpu_present

pytestmark = pytest.mark.gpu


def test_compute_shares_hold_on_the_gpu(shim_dir, program_dir, tmp_path):
    if not programs.available() or not _gpu_present():
        pytest.skip("needs nvcc and an NVIDIA GPU")
    spin = programs.build("spin", program_dir)
    data = compute_share.measure(spin, shim_dir, "cuda", 12, tmp_path)
    print(compute_share.markdown(data))
    assert all(r["met"] for r in data["results"]), compute_share.markdown(data)
