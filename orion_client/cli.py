"""`orion`: run a CUDA program on vGPUs.

    orion run [--vgpu N] [--gmem MiB] [--ratio PCT] -- PROGRAM ARGS...

The program runs with the client runtime first on its library path. When no controller
is configured (no ORION_CONTROLLER, no controller_addr in ~/.orion/client.toml or
/etc/orion/client.toml), an all-in-one controller and oriond are started on this machine
for the run and stopped afterwards.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

from .local_pool import LocalPool, controller_configured

LIB_DIR = Path(__file__).resolve().parent / "lib"


def shim_environment(base: dict, vgpu: int | None, gmem: int | None, ratio: int | None) -> dict:
    if not (LIB_DIR / "libcudart.so.13").exists():
        raise SystemExit(f"orion: {LIB_DIR / 'libcudart.so.13'} is missing: "
                         "build it with `python -m orion_client.native_build`")
    env = dict(base)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (str(LIB_DIR), base.get("LD_LIBRARY_PATH", "")) if p)
    for name, value in (("ORION_VGPU", vgpu), ("ORION_GMEM", gmem), ("ORION_RATIO", ratio)):
        if value is not None:
            env[name] = str(value)
    return env


def positive(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} is not a positive number")
    return value


def run(args: argparse.Namespace) -> int:
    if not args.program:
        print("orion run: no program given (orion run [options] -- PROGRAM ARGS)",
              file=sys.stderr)
        return 2
    env = shim_environment(os.environ, args.vgpu, args.gmem, args.ratio)
    if controller_configured(os.environ):
        return subprocess.call(args.program, env=env)
    with LocalPool(backend=args.backend, host_devices=args.host_devices,
                   log_dir=args.log_dir) as pool:
        env["ORION_CONTROLLER"] = pool.controller
        return subprocess.call(args.program, env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="orion", description="Run CUDA programs on vGPUs")
    sub = parser.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a program with the client runtime injected")
    r.add_argument("--vgpu", type=positive, help="number of vGPUs (ORION_VGPU)")
    r.add_argument("--gmem", type=positive, help="memory of each vGPU in MiB (ORION_GMEM)")
    r.add_argument("--ratio", type=int, choices=range(1, 101), metavar="PCT",
                   help="compute share of each vGPU, 1-100 (ORION_RATIO)")
    r.add_argument("--backend", choices=["cuda", "host"], default="cuda",
                   help="backend of the all-in-one server; host = test backend, no GPU")
    r.add_argument("--host-devices", type=positive, default=1,
                   help="simulated GPUs of the host backend")
    r.add_argument("--log-dir", type=Path,
                   help="logs of the all-in-one controller and server (default: a temp dir)")
    r.add_argument("program", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if args.program and args.program[0] == "--":
        args.program = args.program[1:]
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
