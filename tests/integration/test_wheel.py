"""The wheel, as a user gets it: built with pip from a copy of this tree (the compiled
shims inside), installed with its dependencies into a fresh venv, every command there,
and a CUDA program run through the venv's `orion run` on the host backend.

Building needs a C compiler, the CUDA and NVML headers and a package index for the
build and run dependencies (PyPI or a local mirror). Where the index cannot serve them
the test is skipped, as it is with ORION_SKIP_WHEEL_TEST=1; it takes about a minute.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT, programs

COMMANDS = ("orion", "oriond", "orion-controller", "orioncli", "orion-nv-smi",
            "install-client-13.0")
NO_INDEX = ("No matching distribution", "Could not find a version", "Network is unreachable",
            "Failed to establish a new connection")


def source_copy(dest: Path) -> Path:
    """The files git would commit (tracked or new, not ignored): no build products."""
    listing = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                             capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listing):
        src = ROOT / name
        if src.is_file() or src.is_symlink():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name, follow_symlinks=False)
    return dest


def pip(python: Path | str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LD_LIBRARY_PATH")}
    proc = subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if proc.returncode and any(s in proc.stdout + proc.stderr for s in NO_INDEX):
        pytest.skip("no package index serves the build or run dependencies:\n" +
                    proc.stderr[-1500:])
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    if os.environ.get("ORION_SKIP_WHEEL_TEST") == "1":
        pytest.skip("ORION_SKIP_WHEEL_TEST=1")
    if not shutil.which("git") or not (ROOT / ".git").exists():
        pytest.skip("needs the git tree to copy the sources from")
    work = tmp_path_factory.mktemp("wheel")
    tree = source_copy(work / "src")
    pip(sys.executable, "wheel", "--no-deps", "-w", str(work / "dist"), str(tree), cwd=work)
    (wheel,) = (work / "dist").glob("orion_vgpu-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(work / "venv")], check=True)
    pip(work / "venv" / "bin" / "python", "install", str(wheel), cwd=work)
    return work / "venv"


def test_the_wheel_carries_the_compiled_shims(venv):
    (wheel,) = (venv.parent / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for lib in ("libcudart.so.13", "libnvidia-ml.so.1", "libcjson.so.1"):
        assert f"orion_client/lib/{lib}" in names, lib
    assert any(n.startswith("orion_client/lib/libzmq") for n in names)
    assert not wheel.name.endswith("-none-any.whl")   # platform-specific: it holds binaries


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_is_installed(venv, command):
    path = venv / "bin" / command
    assert path.exists(), f"{command} is not in the venv"
    proc = subprocess.run([str(path), "--help"], cwd=venv.parent, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_a_cuda_program_runs_through_the_installed_orion(venv, program_dir, tmp_path):
    program = programs.build("device_props", program_dir)
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("ORION_") and k not in ("PYTHONPATH", "LD_LIBRARY_PATH")}
    env.update(HOME=str(tmp_path), ORION_TEST_HOST_BACKEND="1",
               PATH=f"{venv / 'bin'}{os.pathsep}{env['PATH']}")
    proc = subprocess.run(["orion", "run", "--backend", "host", "--gmem", "2048", "--",
                           str(program)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert programs.passed(proc, "device_props"), proc.stdout + proc.stderr
    assert "2048 MiB" in proc.stdout
