"""An all-in-one pool on this machine: a controller and one oriond, for one run or test."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from orion_controller.client import ControlClient, ControlError

START_TIMEOUT_S = 30.0


def controller_configured(env: dict) -> bool:
    """True when the user pointed the client at a controller (env or client.toml)."""
    if env.get("ORION_CONTROLLER"):
        return True
    for path in (Path(env.get("HOME", "/nonexistent")) / ".orion/client.toml",
                 Path("/etc/orion/client.toml")):
        if path.exists() and "controller_addr" in path.read_text():
            return True
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalPool:
    """Context manager: starts controller + oriond, waits until the GPUs are registered."""

    def __init__(self, backend: str = "cuda", host_devices: int = 1, vgpu_count: int = 4,
                 log_dir: Path | None = None, extra_env: dict | None = None):
        self.backend, self.host_devices, self.vgpu_count = backend, host_devices, vgpu_count
        self.log_dir = Path(log_dir or tempfile.mkdtemp(prefix="orion-pool-"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.extra_env = extra_env or {}
        self.controller = f"127.0.0.1:{free_port()}"
        self.server_port = free_port()
        self.procs: list[subprocess.Popen] = []

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen:
        env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
        env.update(self.extra_env)
        out = open(self.log_dir / log_name, "ab")
        return subprocess.Popen([sys.executable, "-m", *args], stdout=out, stderr=out,
                                stdin=subprocess.DEVNULL, env=env)

    def _spawn_controller(self) -> subprocess.Popen:
        port = self.controller.rsplit(":", 1)[1]
        return self._spawn(["orion_controller", "--listen", "127.0.0.1", "--port", port,
                            "--db", ":memory:", "--http-port", "0",
                            "--log-file", str(self.log_dir / "controller.log")],
                           "controller.out")

    def restart_controller(self) -> None:
        """Kill the controller and start a new one on the same port (fault tests)."""
        self.procs[0].kill()
        self.procs[0].wait()
        self.procs[0] = self._spawn_controller()

    def restart_server(self) -> None:
        """Stop oriond (SIGTERM: it unregisters) and start it again (fault tests)."""
        self.procs[1].terminate()
        self.procs[1].wait()
        self.procs[1] = self._spawn(self._server_args(), "oriond.out")
        self._wait_registered()

    def _server_args(self) -> list[str]:
        server_args = ["orion_server.oriond", "--controller", self.controller,
                       "--bind", "127.0.0.1", "--port", str(self.server_port),
                       "--log-dir", str(self.log_dir), "--backend", self.backend,
                       "--vgpu-count", str(self.vgpu_count)]
        if self.backend == "host":
            server_args += ["--host-devices", str(self.host_devices)]
        return server_args

    def __enter__(self) -> "LocalPool":
        self.procs.append(self._spawn_controller())
        self.procs.append(self._spawn(self._server_args(), "oriond.out"))
        try:
            self._wait_registered()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def status(self) -> dict:
        with ControlClient(self.controller, timeout_s=2.0) as client:
            return client.request({"op": "status"})

    def _wait_registered(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"{p.args[2]} exited with {p.returncode}; "
                                       f"logs in {self.log_dir}")
            try:
                if any(n.get("state") == "up" for n in self.status().get("nodes", [])):
                    return
            except ControlError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"the local pool did not come up in {START_TIMEOUT_S:.0f} s; "
                           f"logs in {self.log_dir}")

    def __exit__(self, *exc) -> None:
        for p in reversed(self.procs):
            p.terminate()
        for p in reversed(self.procs):
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
