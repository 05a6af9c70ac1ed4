"""The controller's settings: command-line flags, each defaulting to the reference's
environment variable (docs/protocol.md, "Controller settings")."""
from __future__ import annotations

import argparse
import logging
import os
from dataclasses import dataclass
from typing import Mapping

from orion_controller.client import DEFAULT_PORT
from orion_controller.overcommit import Overcommit
from orion_controller.placement import Policy
from orion_controller.pool import (DEFAULT_LEASE_TIMEOUT_S, DEFAULT_NODE_TIMEOUT_S,
                                   DEFAULT_VGPU_COUNT, MAX_VGPU_COUNT)
from orion_controller.store import Store, StoreError

log = logging.getLogger(__name__)

DEFAULT_HTTP_PORT = 9124
DEFAULT_DB = "/var/lib/orion/controller.db"


@dataclass(frozen=True)
class Settings:
    listen: str
    port: int
    http_port: int            # 0: no REST API
    http_port_given: bool     # set by flag or env: failing to listen on it is fatal
    db: str
    db_given: bool
    lease_timeout: float
    node_timeout: float
    log_file: str | None
    policy: Policy
    overcommit: Overcommit
    quota_limit: bool
    vgpu_num: int


def parse(argv: list[str] | None, env: Mapping[str, str] = os.environ) -> Settings:
    """Raises SystemExit(2) with argparse's message on a bad flag or variable."""
    parser = argparse.ArgumentParser(prog="orion-controller",
                                     description="Orion controller: the GPU pool's manager.")
    parser.add_argument("--listen", default=env.get("LISTEN_IP", "0.0.0.0"),
                        help="address to listen on (env LISTEN_IP, default 0.0.0.0)")
    parser.add_argument("--port", type=_port, default=env.get("LISTEN_PORT", DEFAULT_PORT),
                        help=f"ZeroMQ port (env LISTEN_PORT, default {DEFAULT_PORT})")
    parser.add_argument("--http-port", type=_port_or_off, default=None,
                        help=f"REST API port, 0 for none (env HTTP_PORT, default "
                             f"{DEFAULT_HTTP_PORT})")
    parser.add_argument("--db", default=None,
                        help=f"SQLite file of durable state, or :memory: (env "
                             f"ORION_CONTROLLER_DB, default {DEFAULT_DB})")
    parser.add_argument("--lease-timeout", type=_seconds, default=DEFAULT_LEASE_TIMEOUT_S,
                        help="seconds a lease lives without being reported (default %(default)g)")
    parser.add_argument("--node-timeout", type=_seconds, default=DEFAULT_NODE_TIMEOUT_S,
                        help="seconds without heartbeat before a node is down (default %(default)g)")
    parser.add_argument("--log-file", help="log here instead of stderr (level: env LOG_LEVEL)")
    args = parser.parse_args(argv)
    try:
        http_given = args.http_port is not None or "HTTP_PORT" in env
        http_port = args.http_port if args.http_port is not None else _port_or_off(
            env.get("HTTP_PORT", str(DEFAULT_HTTP_PORT)))
        db = args.db or env.get("ORION_CONTROLLER_DB") or DEFAULT_DB
        oc_enable = _flag(env, "OC_ENABLE", False)
        overcommit = Overcommit(mem=_factor(env, "OC_MEM_RATIO"),
                                core=_factor(env, "OC_CORE_RATIO")) if oc_enable else Overcommit()
        settings = Settings(
            listen=args.listen, port=args.port, http_port=http_port, http_port_given=http_given,
            db=db, db_given=bool(args.db or env.get("ORION_CONTROLLER_DB")),
            lease_timeout=args.lease_timeout, node_timeout=args.node_timeout,
            log_file=args.log_file,
            policy=Policy(device_compact=_flag(env, "ALGORITHM_DEVICE_COMPACT", True),
                          server_compact=_flag(env, "ALGORITHM_SERVER_COMPACT", True),
                          device_prefered=_flag(env, "ALGORITHM_DEVICE_PREFERED", True)),
            overcommit=overcommit,
            quota_limit=_switch(env, "QUOTA_LIMIT"),
            vgpu_num=_vgpu_num(env))
    except (ValueError, argparse.ArgumentTypeError) as error:
        parser.error(str(error))
    return settings


def open_store(settings: Settings) -> Store:
    """The configured database. A default path that cannot be opened (no /var/lib/orion
    for this user) falls back to memory with a warning; a path one asked for is fatal."""
    try:
        return Store(settings.db)
    except StoreError as error:
        if settings.db_given:
            raise
        log.warning("%s; durable state (quotas, custom devices, reserved groups) is kept "
                    "in memory only: set --db or ORION_CONTROLLER_DB", error)
        return Store(":memory:")


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("true", "1", "yes", "on"):
        return True
    if value.lower() in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"{name} must be true or false, not {value!r}")


def _switch(env: Mapping[str, str], name: str) -> bool:
    value = env.get(name, "disable").lower()
    if value not in ("enable", "disable"):
        raise ValueError(f"{name} must be enable or disable, not {env[name]!r}")
    return value == "enable"


def _factor(env: Mapping[str, str], name: str) -> float:
    text = env.get(name, "1")
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not value >= 1:
        raise ValueError(f"{name} must be a number >= 1, not {text!r}")
    return value


def _vgpu_num(env: Mapping[str, str]) -> int:
    text = env.get("VGPU_NUM", str(DEFAULT_VGPU_COUNT))
    if not text.isdigit() or not 1 <= int(text) <= MAX_VGPU_COUNT:
        raise ValueError(f"VGPU_NUM must be an integer in [1, {MAX_VGPU_COUNT}], not {text!r}")
    return int(text)


def _port(text: str) -> int:
    # argparse also runs the env default through here, so LISTEN_PORT is checked too.
    if not str(text).isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"not a TCP port: {text!r}")
    return int(text)


def _port_or_off(text: str) -> int:
    return 0 if str(text) == "0" else _port(text)


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"not a positive number of seconds: {text!r}")
    return value
