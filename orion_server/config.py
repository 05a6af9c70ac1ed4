"""oriond settings: /etc/orion/server.toml < environment < command line.

Sections and keys follow the reference's server.conf, in TOML; the environment
variables are the reference's (ORION_CONTROLLER, ORION_BIND_NET, ORION_SERVER_PORT,
ORION_VGPU_COUNT, MY_NODE_NAME, NATIVE_GPU_COUNT).
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:   # Python < 3.11
    import tomli as tomllib

DEFAULT_CONFIG = Path("/etc/orion/server.toml")


class ConfigError(ValueError):
    pass


@dataclass
class ServerConfig:
    controller: str = "127.0.0.1:9123"
    bind_addr: str = "127.0.0.1"
    listen_port: int = 9960
    vgpu_count: int = 4
    node: str = socket.gethostname()
    native_gpu_count: int = 0
    log_dir: Path = Path("/var/log/orion")
    log_level: str = "INFO"
    backend: str = "cuda"          # "host": the host-memory test backend, for CI only
    host_devices: int = 1          # simulated GPUs of the host backend
    host_memory_mib: int = 16384
    # GPU memory kept out of the pool per vGPU for the worker's own CUDA context, which
    # is not charged to the vGPU (an Orion key, [server] context_reserve_mib)
    context_reserve_mib: int = 520   # an H100 worker: 582 MiB with 64 MiB allocated
    # [throttle]: compute shares (ORION_RATIO) enforced by turns; see compute_share.py
    enable_computation_throttle: bool = True
    throttle_level: int = 100      # % of idle GPU capacity a session may borrow


def _int(name: str, text: str, low: int, high: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ConfigError(f"{name}={text!r} is not a whole number") from None
    if not low <= value <= high:
        raise ConfigError(f"{name}={value} is outside [{low}, {high}]")
    return value


def load(path: Path | None = None, environ: dict | None = None) -> ServerConfig:
    env = os.environ if environ is None else environ
    cfg = ServerConfig()
    path = path or Path(env.get("ORION_SERVER_CONFIG", DEFAULT_CONFIG))
    if path.exists():
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: {e}") from None
        server, log = data.get("server", {}), data.get("log", {})
        cfg.controller = data.get("controller", {}).get("controller_addr", cfg.controller)
        cfg.bind_addr = server.get("bind_addr", cfg.bind_addr)
        cfg.listen_port = _int("listen_port", str(server.get("listen_port", cfg.listen_port)),
                               1, 65535)
        cfg.vgpu_count = _int("vgpu_count", str(server.get("vgpu_count", cfg.vgpu_count)), 1, 64)
        cfg.context_reserve_mib = _int("context_reserve_mib", str(server.get(
            "context_reserve_mib", cfg.context_reserve_mib)), 0, 1 << 20)
        cfg.log_level = str(log.get("log_level", cfg.log_level)).upper()
        throttle = data.get("throttle", {})
        cfg.throttle_level = _int("throttle_level", str(throttle.get(
            "throttle_level", cfg.throttle_level)), 0, 100)
        enabled = throttle.get("enable_computation_throttle", cfg.enable_computation_throttle)
        if not isinstance(enabled, bool):
            raise ConfigError(f"enable_computation_throttle={enabled!r} is not true or false")
        cfg.enable_computation_throttle = enabled
    if "ORION_CONTROLLER" in env:
        cfg.controller = env["ORION_CONTROLLER"]
    if "ORION_BIND_NET" in env:
        cfg.bind_addr = env["ORION_BIND_NET"]
    if "ORION_SERVER_PORT" in env:
        cfg.listen_port = _int("ORION_SERVER_PORT", env["ORION_SERVER_PORT"], 1, 65535)
    if "ORION_VGPU_COUNT" in env:
        cfg.vgpu_count = _int("ORION_VGPU_COUNT", env["ORION_VGPU_COUNT"], 1, 64)
    if "NATIVE_GPU_COUNT" in env:
        cfg.native_gpu_count = _int("NATIVE_GPU_COUNT", env["NATIVE_GPU_COUNT"], 0, 1024)
    if "MY_NODE_NAME" in env:
        cfg.node = env["MY_NODE_NAME"]
    return cfg
