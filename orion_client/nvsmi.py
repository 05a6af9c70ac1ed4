"""`orion-nv-smi`: what nvidia-smi shows, for the vGPUs you hold.

    orion-nv-smi [-L | -q | --query-gpu=FIELDS --format=csv[,noheader][,nounits]] [-i IDS]
    orion-nv-smi --install-as-nvidia-smi DIR     (or ORION_SIM_NVSMI=1: into ~/.orion/bin)

The vGPUs are the leases the controller's `status` lists for ORION_CLIENT_ID (else the
login name) or ORION_GROUP_ID, numbered across them in order. When none is held it
shows what a new run with the current ORION_* settings would get (the controller grants
it and takes it back at once), and says so. Sensors, the driver and the memory each
program holds come from the `gpu_info` op of the oriond serving each GPU; what a
server does not report is shown as N/A. Memory in use is what the GPU holds for the
program's worker (its context included, as nvidia-smi counts a process), shared out
evenly when one program has several vGPUs on one GPU.
"""
from __future__ import annotations

import argparse
import datetime
import getpass
import os
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

from orion_controller.client import ControlClient, ControlError
from orion_controller.identity import vgpu_uuid

try:
    import tomllib
except ModuleNotFoundError:   # Python < 3.11
    import tomli as tomllib

CUDA_VERSION = "13.0"        # the runtime libcudart.so.13 emulates (CUDART_VERSION 13000)
NA = 0xFFFFFFFF              # a sensor the GPU does not report (orion_server cuda_nvml.NA)
WIDTH = 89                   # inside the frame of nvidia-smi's table
PREVIEW_NOTE = ("No vGPU is held by {who}: showing what a new run with the current "
                "ORION_* settings would get.")


@dataclass
class VGpu:
    index: int
    name: str
    uuid: str
    memory_mib: int
    used_mib: int | None                  # None: the server does not say
    sensors: dict = field(default_factory=dict)
    processes: list = field(default_factory=list)   # (pid, name, used MiB or None)

    def sensor(self, key: str):
        value = self.sensors.get(key, NA)
        return None if value in (NA, None) else value


# ---- where the numbers come from ----
def controller_address(env: dict) -> str:
    """As the client runtime finds it: ORION_CONTROLLER, ~/.orion, /etc/orion."""
    if env.get("ORION_CONTROLLER"):
        return env["ORION_CONTROLLER"]
    for path in (Path(env.get("HOME", "/nonexistent")) / ".orion/client.toml",
                 Path("/etc/orion/client.toml")):
        try:
            addr = tomllib.loads(path.read_text()).get("controller", {}).get("controller_addr")
        except (OSError, tomllib.TOMLDecodeError):
            continue
        if addr:
            return addr
    return "127.0.0.1:9123"


def _setting(env: dict, name: str, low: int, high: int) -> int | None:
    text = env.get(name)
    if not text:
        return None
    if not text.isdigit() or not low <= int(text) <= high:
        raise SystemExit(f"orion-nv-smi: {name}={text} is not a whole number in [{low}, {high}]")
    return int(text)


def _flag(env: dict, name: str) -> bool:
    return env.get(name, "").lower() in ("1", "true")


def preview_request(env: dict, who: str) -> dict:
    """The request a new run would send (native/src/control.c, orion_allocate), as a
    preview: the controller answers what it would grant and holds nothing."""
    request = {"op": "preview", "vgpu": _setting(env, "ORION_VGPU", 1, 64) or 1,
               "gmem": _setting(env, "ORION_GMEM", 1, 1 << 40),
               "ratio": _setting(env, "ORION_RATIO", 1, 100), "client_id": who,
               "host": socket.gethostname(), "pid": os.getpid()}
    for variable in ("DEVICE_NAME", "DEVICE_TYPE", "K8S_NODE", "SCHEDULE_RULE", "GROUP_ID"):
        if env.get(f"ORION_{variable}"):
            request[variable.lower()] = env[f"ORION_{variable}"]
    if "ORION_CROSS_NODE" in env:
        request["cross_node"] = _flag(env, "ORION_CROSS_NODE")
    if env.get("ORION_DEVICE_IDS"):
        request["device_ids"] = [i for i in env["ORION_DEVICE_IDS"].split(",") if i]
    qos = next((q for v, q in (("ORION_RES_EXCLUSIVE", "exclusive"),
                               ("ORION_RES_SHARED_CORE", "shared_core"),
                               ("ORION_RES_SHARED_ALL", "shared_all")) if _flag(env, v)), None)
    if qos:
        request["qos"] = qos
    return request


def held_or_preview(client: ControlClient, env: dict) -> tuple[list[dict], list[dict], bool]:
    """(leases, nodes, preview): the leases held by this user or group, else a preview."""
    who = env.get("ORION_CLIENT_ID") or getpass.getuser()
    group = env.get("ORION_GROUP_ID")
    status = client.request({"op": "status"})
    if not status["ok"]:
        raise SystemExit(f"orion-nv-smi: the controller refused: {status.get('error')}")
    leases = [lease for lease in status["leases"] if lease.get("client_id") == who or
              (group and lease.get("group_id") == group)]
    if leases:
        return leases, status["nodes"], False
    grant = client.request(preview_request(env, who))
    if not grant["ok"]:
        raise SystemExit(f"orion-nv-smi: no vGPU is held by {who}, and a new run would get "
                         f"none: {grant.get('error')}")
    return [{"lease": None, "pid": None, "host": None, "vgpus": grant["vgpus"]}], \
        status["nodes"], True


def gpu_reports(servers: set[str]) -> dict[tuple[str, int], dict]:
    """(server, GPU index) -> oriond's `gpu_info` entry; servers that cannot say: none."""
    reports = {}
    for server in servers:
        try:
            with ControlClient(server, timeout_s=2.0) as client:
                reply = client.request({"op": "gpu_info"})
        except (ControlError, ValueError):
            continue
        for gpu in reply.get("gpus", []) if reply.get("ok") else []:
            reports[server, gpu["index"]] = gpu
    return reports


def process_name(pid: int | None, host: str | None) -> str:
    if pid is None:
        return "?"
    if host not in (None, socket.gethostname()):
        return f"[{host}]"
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode() or "?"
    except OSError:
        return "?"


def collect(env: dict) -> tuple[list[VGpu], bool]:
    with ControlClient(controller_address(env), timeout_s=3.0) as client:
        leases, nodes, preview = held_or_preview(client, env)
    reports = gpu_reports({v["server"] for lease in leases for v in lease["vgpus"]})
    vgpus = []
    for lease in leases:
        for v in lease["vgpus"]:
            report = reports.get((v["server"], v["gpu_index"]), {})
            here = [p for p in report.get("processes", []) if p.get("lease") == lease["lease"]]
            # one worker holds all of a program's vGPUs on one GPU: share its usage out
            siblings = sum(w["server"] == v["server"] and w["gpu_index"] == v["gpu_index"]
                           for w in lease["vgpus"])
            known = [p["used_bytes"] for p in here if p.get("used_bytes") is not None]
            used = 0 if preview else (sum(known) // siblings >> 20 if known else None)
            procs = [] if preview else [(lease["pid"], process_name(lease["pid"], lease["host"]),
                                         used)]
            # the vGPU's own UUID, as the program's NVML and CUDA show it
            vgpus.append(VGpu(len(vgpus), v["gpu_name"], vgpu_uuid(v["gpu_uuid"], v["vgpu_id"]),
                              v["memory_mib"], used, report, procs))
    return vgpus, preview


def select(vgpus: list[VGpu], ids: str | None) -> list[VGpu]:
    """-i: indices or UUIDs, comma-separated."""
    if not ids:
        return vgpus
    wanted = [i.strip() for i in ids.split(",") if i.strip()]
    chosen = [v for v in vgpus if str(v.index) in wanted or v.uuid in wanted]
    if len(chosen) < len(wanted):
        raise SystemExit(f"No devices were found matching -i {ids}")
    return chosen


# ---- how nvidia-smi shows them ----
def _num(value, fmt: str = "{}", unit: str = "") -> str:
    return "N/A" if value is None else fmt.format(value) + unit


def _driver(vgpus: list[VGpu]) -> str:
    return next((v.sensors["driver_version"] for v in vgpus
                 if v.sensors.get("driver_version")), "N/A")


def _watts(milliwatts) -> float | None:
    return None if milliwatts is None else milliwatts / 1000


def _framed(text: str) -> str:
    return "|" + text.ljust(WIDTH)[:WIDTH] + "|"


def _columns(a: str, b: str, c: str) -> str:
    """One line of the GPU table's three columns (41, 24 and 22 wide)."""
    return f"|{a:<41}|{b:<24}|{c:<22}|"


def table(vgpus: list[VGpu], preview: bool, who: str) -> str:
    rule = _columns("-" * 41, "-" * 24, "-" * 22).replace("|", "+")
    driver = _driver(vgpus)
    lines = [datetime.datetime.now().strftime("%a %b %d %H:%M:%S %Y"),
             "+" + "-" * WIDTH + "+",
             _framed(f" NVIDIA-SMI {driver:<22}Driver Version: {driver:<15}"
                     f"CUDA Version: {CUDA_VERSION}"), rule,
             _columns(" GPU  Name                 Persistence-M", " Bus-Id          Disp.A",
                      " Volatile Uncorr. ECC"),
             _columns(" Fan  Temp   Perf          Pwr:Usage/Cap", "           Memory-Usage",
                      " GPU-Util  Compute M."),
             _columns("", "", "               MIG M."),
             "|" + "=" * 41 + "+" + "=" * 24 + "+" + "=" * 22 + "|"]
    for v in vgpus:
        power = (f"{_num(_watts(v.sensor('power_usage')), '{:.0f}', 'W')} / "
                 f"{_num(_watts(v.sensor('enforced_power_limit')), '{:.0f}', 'W'):>5}")
        head = (f" {_num(v.sensor('fan_speed'), unit='%'):>3}  "
                f"{_num(v.sensor('temperature'), unit='C'):>4}   {_num(v.sensor('pstate'), 'P{}'):<4}")
        lines += [_columns(f" {v.index:>3}  {v.name[:26]:<26}{'N/A':>7}  ",
                           f" {v.sensors.get('pci_bus_id', 'N/A'):>18} N/A ", f"{'N/A':>21} "),
                  _columns(head + f"{power:>23} ",
                           f" {_num(v.used_mib, unit='MiB')} / {v.memory_mib}MiB ".rjust(24),
                           f"{_num(v.sensor('gpu_util'), unit='%'):>8}      Default "),
                  _columns("", "", f"{'N/A':>21} "), rule]
    lines += ["", "+" + "-" * WIDTH + "+", _framed(" Processes:"),
              _framed("  GPU   GI   CI              PID   Type   Process name"
                      "                        GPU Memory"),
              _framed("        ID   ID                                             "
                      "                  Usage"), "|" + "=" * WIDTH + "|"]
    rows = [(v.index, pid, name, used) for v in vgpus for pid, name, used in v.processes]
    if not rows:
        lines.append(_framed("  No running processes found"))
    for index, pid, name, used in rows:
        lines.append(_framed(f"  {index:>3}   N/A  N/A  {pid:>15}      C   {name[-34:]:<34}"
                             f"{_num(used, unit='MiB'):>9} "))
    lines.append("+" + "-" * WIDTH + "+")
    if preview:
        lines.insert(0, PREVIEW_NOTE.format(who=who))
    return "\n".join(lines)


def listing(vgpus: list[VGpu]) -> str:
    return "\n".join(f"GPU {v.index}: {v.name} (UUID: {v.uuid})" for v in vgpus)


# field -> (header unit, value of a vGPU, unit shown after the value)
FIELDS = {
    "index": ("", lambda v: v.index, ""),
    "name": ("", lambda v: v.name, ""),
    "uuid": ("", lambda v: v.uuid, ""),
    "memory.total": (" [MiB]", lambda v: v.memory_mib, " MiB"),
    "memory.used": (" [MiB]", lambda v: v.used_mib, " MiB"),
    "memory.free": (" [MiB]", lambda v: None if v.used_mib is None
                    else v.memory_mib - v.used_mib, " MiB"),
    "utilization.gpu": (" [%]", lambda v: v.sensor("gpu_util"), " %"),
    "temperature.gpu": ("", lambda v: v.sensor("temperature"), ""),
    "power.draw": (" [W]", lambda v: None if v.sensor("power_usage") is None
                   else f"{v.sensor('power_usage') / 1000:.2f}", " W"),
    "driver_version": ("", lambda v: v.sensors.get("driver_version"), ""),
}


def query(vgpus: list[VGpu], fields: str, fmt: str) -> str:
    options = [o.strip() for o in fmt.split(",")]
    if options[0] != "csv" or set(options[1:]) - {"noheader", "nounits"}:
        raise SystemExit(f'"{fmt}" is not a valid format: use csv[,noheader][,nounits]')
    names = [f.strip() for f in fields.split(",") if f.strip()]
    for name in names:
        if name not in FIELDS:
            raise SystemExit(f'Field "{name}" is not a valid field to query.')
    units = "nounits" not in options
    lines = [] if "noheader" in options else [
        ", ".join(n + (FIELDS[n][0] if units else "") for n in names)]
    for v in vgpus:
        cells = []
        for name in names:
            _, get, unit = FIELDS[name]
            value = get(v)
            cells.append("[N/A]" if value is None else f"{value}{unit if units else ''}")
        lines.append(", ".join(cells))
    return "\n".join(lines)


def detail(vgpus: list[VGpu], preview: bool, who: str) -> str:
    def row(depth: int, key: str, value="") -> str:
        return f"{'    ' * depth}{key:<{42 - 4 * depth}}: {value}" if value != "" else \
            "    " * depth + key
    lines = ["", "==============NVSMI LOG==============", ""]
    if preview:
        lines += [PREVIEW_NOTE.format(who=who), ""]
    lines += [row(0, "Timestamp", datetime.datetime.now().strftime("%a %b %d %H:%M:%S %Y")),
              row(0, "Driver Version", _driver(vgpus)), row(0, "CUDA Version", CUDA_VERSION),
              "", row(0, "Attached GPUs", len(vgpus))]
    for v in vgpus:
        clocks = list(v.sensors.get("clocks") or [NA] * 4)
        lines += [f"GPU {v.sensors.get('pci_bus_id', v.index)}",
                  row(1, "Product Name", v.name), row(1, "GPU UUID", v.uuid),
                  row(1, "Minor Number", v.index), row(1, "Serial Number",
                                                       v.sensors.get("serial") or "N/A"),
                  row(1, "FB Memory Usage"), row(2, "Total", f"{v.memory_mib} MiB"),
                  row(2, "Reserved", "0 MiB"), row(2, "Used", _num(v.used_mib, unit=" MiB")),
                  row(2, "Free", _num(None if v.used_mib is None else v.memory_mib - v.used_mib,
                                      unit=" MiB")),
                  row(1, "Utilization"), row(2, "Gpu", _num(v.sensor("gpu_util"), unit=" %")),
                  row(2, "Memory", _num(v.sensor("memory_util"), unit=" %")),
                  row(1, "Temperature"),
                  row(2, "GPU Current Temp", _num(v.sensor("temperature"), unit=" C")),
                  row(1, "GPU Power Readings"),
                  row(2, "Power Draw", _num(_watts(v.sensor("power_usage")), "{:.2f}", " W")),
                  row(2, "Current Power Limit",
                      _num(_watts(v.sensor("enforced_power_limit")), "{:.2f}", " W")),
                  row(1, "Clocks")]
        lines += [row(2, name, _num(None if c == NA else c, unit=" MHz"))
                  for name, c in zip(("Graphics", "SM", "Memory", "Video"), clocks)]
        lines.append(row(1, "Processes", "" if v.processes else "None"))
        for pid, name, used in v.processes:
            lines += [row(2, "Process ID", pid), row(3, "Type", "C"), row(3, "Name", name),
                      row(3, "Used GPU Memory", _num(used, unit=" MiB"))]
        lines.append("")
    return "\n".join(lines)


# ---- standing in for nvidia-smi ----
WRAPPER = """#!/bin/sh
# nvidia-smi for vGPUs: orion-nv-smi standing in (orion-nv-smi --install-as-nvidia-smi)
exec "{python}" -m orion_client.nvsmi "$@"
"""


def install_as_nvidia_smi(directory: Path) -> bool:
    """Write DIRECTORY/nvidia-smi; True when it was not there as it is now."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "nvidia-smi"
    text = WRAPPER.format(python=sys.executable)
    if target.exists() and target.read_text() == text:
        return False
    target.write_text(text)
    target.chmod(0o755)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="orion-nv-smi",
                                     description="nvidia-smi for the vGPUs you hold")
    parser.add_argument("-L", "--list-gpus", action="store_true", help="one line per vGPU")
    parser.add_argument("-q", "--query", action="store_true", help="every detail")
    parser.add_argument("-i", "--id", help="only these vGPUs: indices or UUIDs, comma-separated")
    parser.add_argument("--query-gpu", help="fields: " + ", ".join(FIELDS))
    parser.add_argument("--format", default="csv", help="csv[,noheader][,nounits]")
    parser.add_argument("--install-as-nvidia-smi", type=Path, metavar="DIR",
                        help="write DIR/nvidia-smi running this; put DIR first on PATH")
    args = parser.parse_args(argv)
    env = dict(os.environ)
    target = args.install_as_nvidia_smi
    if target is None and env.get("ORION_SIM_NVSMI") == "1":
        target = Path(env.get("HOME", "~")).expanduser() / ".orion" / "bin"
    if target is not None and install_as_nvidia_smi(target.resolve()):
        print(f"installed {target.resolve() / 'nvidia-smi'}; to use it:\n"
              f"  export PATH={target.resolve()}:$PATH", file=sys.stderr)
    if args.install_as_nvidia_smi is not None:
        return 0
    try:
        vgpus, preview = collect(env)
    except ControlError as e:
        print(f"orion-nv-smi: {e}", file=sys.stderr)
        return 9   # nvidia-smi's exit code when it cannot reach the driver
    vgpus = select(vgpus, args.id)
    who = env.get("ORION_CLIENT_ID") or getpass.getuser()
    if args.query_gpu:
        out = query(vgpus, args.query_gpu, args.format)
    elif args.list_gpus:
        out = listing(vgpus)
    elif args.query:
        out = detail(vgpus, preview, who)
    else:
        out = table(vgpus, preview, who)
    if preview and (args.query_gpu or args.list_gpus):
        print(PREVIEW_NOTE.format(who=who), file=sys.stderr)   # keep stdout parseable
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
