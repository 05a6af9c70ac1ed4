"""orioncli as a user types it in a shell, against a controller process."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from test_controller_process import REPO, Controller, free_port, running


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[tuple[Controller, dict]]:
    """A controller, and the environment of a shell where `orioncli` is installed."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "orioncli"   # what the console script entry installs
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m orion_controller.cli "$@"\n')
    script.chmod(0o755)
    with running(tmp_path / "controller.log", "--db", str(tmp_path / "c.db"),
                 env={"QUOTA_LIMIT": "enable"}) as controller:
        env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
               "PYTHONPATH": str(REPO), "ORION_CONTROLLER": controller.addr}
        yield controller, env


def typed(env: dict, line: str) -> subprocess.CompletedProcess:
    return subprocess.run(line, shell=True, env=env, capture_output=True, text=True, timeout=30)


def test_custom_device_commands(shell) -> None:
    _, env = shell
    added = typed(env, """orioncli custom-device add small-gpu-4 --display-name="Small GPU 4G" \\
        --memory=4000 \\
        --physical-devices='[{"device_name":"Tesla T4","ratio":20},{"device_name":"Tesla P4","ratio":10}]'""")
    assert added.returncode == 0, added.stderr
    assert added.stdout.splitlines() == [
        "Custom device small-gpu-4 added.",
        "NAME         DISPLAY NAME  MEMORY(MiB)  PHYSICAL DEVICES",
        "small-gpu-4  Small GPU 4G  4000         Tesla T4:20%, Tesla P4:10%"]
    assert typed(env, "orioncli custom-device list").stdout.splitlines() == [
        "NAME         DISPLAY NAME  MEMORY(MiB)", "small-gpu-4  Small GPU 4G  4000"]
    full = typed(env, "orioncli custom-device list --full-fields --json")
    assert json.loads(full.stdout)["custom_devices"][0]["physical_devices"][1] == {
        "device_name": "Tesla P4", "ratio": 10}
    updated = typed(env, "orioncli custom-device update small-gpu-4 --memory 5000")
    assert "Custom device small-gpu-4 updated." in updated.stdout and "5000" in updated.stdout
    assert "5000" in typed(env, "orioncli custom-device info small-gpu-4").stdout
    assert typed(env, "orioncli custom-device del small-gpu-4").returncode == 0
    gone = typed(env, "orioncli custom-device info small-gpu-4")
    assert (gone.returncode, gone.stderr) == (1, "Err: no custom device small-gpu-4.\n")


def test_quota_commands(shell) -> None:
    controller, env = shell
    done = typed(env, "orioncli quota set alice GPU NVIDIA --vdevice-num 4 --vdevice-mem 32000 "
                      "--vdevice-ratio 200 --single-vdevice-mem 16000 --single-vdevice-ratio 100")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0] == "Quota of alice for GPU NVIDIA set."
    listed = typed(env, "orioncli quota list").stdout.splitlines()
    assert listed[0].split("  ")[0] == "CLIENT ID"
    assert "LEFT NUM" in listed[0] and "SINGLE VDEVICE RATIO" in listed[0]
    assert listed[1].split() == ["alice", "GPU", "NVIDIA", "4", "32000", "200", "4", "32000",
                                 "200", "16000", "100"]
    info = json.loads(typed(env, "orioncli --json quota info alice gpu nvidia").stdout)
    assert info["quota"]["left_num"] == 4
    lifted = typed(env, "orioncli quota set alice GPU NVIDIA --vdevice-mem -1")
    assert lifted.stdout.splitlines()[2].split()[4] == "-"
    deleted = typed(env, "orioncli quota del alice")
    assert deleted.stdout.splitlines()[0] == "1 quota(s) of alice deleted."
    assert typed(env, "orioncli quota del alice").returncode == 1


@pytest.mark.parametrize("line, error, example", [
    ("orioncli custom-device add small-gpu-4 --display-name=Small "
     "--physical-devices='[{\"device_name\":\"Tesla T4\",\"ratio\":20}]'",
     "Err: memory is missing.", "orioncli custom-device add small-gpu-4 --display-name="),
    ("orioncli custom-device add small-gpu-4 --memory=4000",
     "Err: physical-devices is missing.", "orioncli custom-device add small-gpu-4"),
    ("orioncli custom-device add x --memory=4G --physical-devices='[]'",
     "Err: memory must be an integer, not '4G'.", "orioncli custom-device add"),
    ("orioncli custom-device info", "Err: name is missing.", "orioncli custom-device info"),
    ("orioncli quota info alice GPU", "Err: device_vendor is missing.",
     "orioncli quota info alice GPU NVIDIA"),
    ("orioncli quota set alice GPU NVIDIA", "Err: vdevice-num, vdevice-mem, vdevice-ratio, "
     "single-vdevice-mem or single-vdevice-ratio is missing.", "orioncli quota set alice"),
    ("orioncli quota set alice GPU NVIDIA --vdevice-nun 3", "Err: unknown argument "
     "--vdevice-nun.", "orioncli quota set alice"),
    ("orioncli quota", "Err: an action is missing.", "orioncli quota list"),
    ("orioncli", "Err: a command is missing.", "orioncli custom-device add"),
])
def test_bad_usage_shows_an_example(shell, line: str, error: str, example: str) -> None:
    _, env = shell
    result = typed(env, line)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert lines[0] == error
    assert lines[1] in ("Usage example:", "Usage examples:")
    assert lines[2].startswith(f"  {example}")
    assert result.stdout == ""


def test_refusals_and_no_controller(shell) -> None:
    _, env = shell
    refused = typed(env, "orioncli custom-device add x --memory=1 "
                         "--physical-devices='[{\"device_name\":\"T4\",\"ratio\":200}]'")
    assert (refused.returncode, refused.stderr) == (
        1, "Err: physical_devices[0].ratio must be <= 100, not 200.\n")
    nobody = typed({**env, "ORION_CONTROLLER": f"127.0.0.1:{free_port()}"},
                   "orioncli quota list --timeout 0.5")
    assert nobody.returncode == 1
    assert nobody.stderr.startswith("Err: no reply from the controller at tcp://127.0.0.1:")
