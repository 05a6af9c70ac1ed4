"""The generator: committed output is current, every header function is exported."""
import subprocess
import sys
from pathlib import Path

import pytest

from orion_client.codegen import spec
from orion_client.codegen.model import Kind

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lib():
    return spec.load(spec.SPEC_DIR / "cudart.toml")


def test_generated_files_are_current():
    result = subprocess.run([sys.executable, "-m", "orion_client.codegen", "--check"],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_every_declared_function_is_in_the_version_script(lib):
    script = (ROOT / "native/generated/libcudart.map").read_text()
    for f in lib.exported:
        assert f"    {f.name};" in script, f.name
        for alias in f.exported_aliases:
            assert f"    {alias};" in script, alias
    assert "local:\n    *;" in script


def test_call_ids_are_unique_and_stable(lib):
    ids = [f.call_id for f in lib.functions if f.forwarded or f.internal]
    assert len(ids) == len(set(ids))
    assert next(f for f in lib.functions if f.name == "cudaMalloc").call_id == 0x0B79C2B5


def test_kinds_are_inferred_from_types():
    assert spec.infer_kind("size_t") == Kind.VAL
    assert spec.infer_kind("void *") == Kind.VAL
    assert spec.infer_kind("const char *") == Kind.STR
    assert spec.infer_kind("int *") == Kind.OUT
    assert spec.infer_kind("void **") == Kind.OUT
    assert spec.infer_kind("const struct cudaExtent *") == Kind.IN
    assert spec.infer_kind("const cudaGraphNode_t **") is None


def test_layouts_are_measured(lib):
    f = next(f for f in lib.functions if f.name == "cudaMalloc3D")
    pitched, extent = f.params
    assert (pitched.kind, pitched.ctype.size) == (Kind.OUT, 32)
    assert (extent.kind, extent.ctype.size, extent.ctype.pyfmt) == (Kind.VAL, 24, "24s")


def test_spec_errors_are_reported(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text((spec.SPEC_DIR / "cudart.toml").read_text() +
                   '\n[forward.cudaNoSuchCall]\n')
    with pytest.raises(spec.SpecError, match="cudaNoSuchCall"):
        spec.load(bad)
