"""scripts/install-server in a scratch sysconfdir: the unit, the config, and back out."""
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "install-server"


def run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args, "--no-systemctl"],
                          capture_output=True, text=True)


def test_install_twice_then_uninstall_leaves_nothing(tmp_path):
    etc = tmp_path / "etc"
    for _ in range(2):   # running it again is harmless
        assert run("--sysconfdir", str(etc), "--controller", "ctl:9123").returncode == 0
    unit = etc / "systemd/system/oriond.service"
    assert "ExecStart=" in unit.read_text() and "oriond" in unit.read_text()
    assert 'controller_addr = "ctl:9123"' in (etc / "orion/server.toml").read_text()
    assert run("--sysconfdir", str(etc), "--uninstall").returncode == 0
    assert [p for p in etc.rglob("*") if p.is_file()] == []


def test_an_edited_config_is_kept(tmp_path):
    etc = tmp_path / "etc"
    run("--sysconfdir", str(etc))
    config = etc / "orion/server.toml"
    config.write_text(config.read_text() + "\n# mine\n")
    run("--sysconfdir", str(etc), "--uninstall")
    assert config.exists() and not (etc / "systemd/system/oriond.service").exists()


def test_the_installed_config_is_what_oriond_reads(tmp_path):
    from orion_server import config
    etc = tmp_path / "etc"
    run("--sysconfdir", str(etc), "--controller", "10.0.0.1:9123")
    cfg = config.load(etc / "orion/server.toml", environ={})
    assert (cfg.controller, cfg.vgpu_count, cfg.listen_port) == ("10.0.0.1:9123", 4, 9960)
    cfg = config.load(etc / "orion/server.toml", environ={"ORION_VGPU_COUNT": "2",
                                                         "ORION_SERVER_PORT": "9961"})
    assert (cfg.vgpu_count, cfg.listen_port) == (2, 9961)
