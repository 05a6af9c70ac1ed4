"""scripts/install-client in a scratch prefix and sysconfdir (never the host's /etc or
linker cache): what it installs, that a program finds the runtime through the line it
prints, that a second run is harmless and that --uninstall leaves nothing behind."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

SCRIPT = ROOT / "scripts" / "install-client"


def install(tmp_path, *args, **env) -> subprocess.CompletedProcess:
    environ = {**os.environ, **{k: str(v) for k, v in env.items()}}
    return subprocess.run([sys.executable, str(SCRIPT), "--prefix", str(tmp_path / "orion"),
                           "--sysconfdir", str(tmp_path / "etc"), "--no-ldconfig", *args],
                          capture_output=True, text=True, timeout=60, env=environ)


def tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_install_run_again_and_uninstall(shim_dir, tmp_path):
    before = tree(tmp_path)
    first = install(tmp_path, "--controller", "ctl.example:9123", ORION_SIM_NVSMI=1)
    assert first.returncode == 0, first.stderr
    prefix = tmp_path / "orion"
    assert (prefix / "libcudart.so.13").read_bytes() == (shim_dir / "libcudart.so.13").read_bytes()
    assert (prefix / "libnvidia-ml.so.1").exists() and (prefix / "libcjson.so.1").exists()
    assert any(p.name.startswith("libzmq") for p in prefix.iterdir())
    assert f"export LD_LIBRARY_PATH={prefix}" in first.stdout
    assert not (tmp_path / "etc" / "ld.so.conf.d").exists()   # --no-ldconfig
    toml = (tmp_path / "etc" / "orion" / "client.toml").read_text()
    assert 'controller_addr = "ctl.example:9123"' in toml and "enable_net = false" in toml
    assert (prefix / "bin" / "nvidia-smi").stat().st_mode & 0o111

    # the installed runtime loads on its own: its private libraries came along
    lddtree = subprocess.run(["ldd", str(prefix / "libnvidia-ml.so.1")], capture_output=True,
                             text=True, env={**os.environ, "LD_LIBRARY_PATH": str(prefix)})
    assert "not found" not in lddtree.stdout
    assert f"{prefix}/libcudart.so.13" in lddtree.stdout

    installed = tree(tmp_path)
    manifest = json.loads((prefix / ".install-manifest.json").read_text())
    again = install(tmp_path, "--controller", "other:1", ORION_SIM_NVSMI=1)
    assert again.returncode == 0, again.stderr
    assert tree(tmp_path) == installed
    assert json.loads((prefix / ".install-manifest.json").read_text()) == manifest
    assert "ctl.example" in (tmp_path / "etc" / "orion" / "client.toml").read_text()

    gone = install(tmp_path, "--uninstall")
    assert gone.returncode == 0, gone.stderr
    assert tree(tmp_path) == before


def test_uninstall_keeps_what_it_did_not_make(shim_dir, tmp_path):
    (tmp_path / "etc" / "orion").mkdir(parents=True)
    mine = tmp_path / "etc" / "orion" / "client.toml"
    mine.write_text("[controller]\ncontroller_addr = \"mine:9123\"\n")
    assert install(tmp_path).returncode == 0
    assert "mine:9123" in mine.read_text()
    (tmp_path / "orion" / "notes.txt").write_text("the admin's")
    assert install(tmp_path, "--uninstall").returncode == 0
    assert mine.exists() and (tmp_path / "orion" / "notes.txt").exists()
    assert sorted(p.name for p in (tmp_path / "orion").iterdir()) == ["notes.txt"]


def test_uninstall_of_nothing_says_so(tmp_path):
    out = install(tmp_path, "--uninstall")
    assert out.returncode == 1 and "nothing was installed" in out.stderr


def test_versioned_name_is_the_same_script():
    assert (ROOT / "scripts" / "install-client-13.0").resolve() == SCRIPT.resolve()
