"""orioncli: the controller's admin command line (custom device types and quotas).

It talks to the controller over the same ZeroMQ address clients use (ORION_CONTROLLER
or --controller, default 127.0.0.1:9123); the REST API offers the same operations.
Output is a table, or the controller's reply with --json. Bad usage prints
"Err: <what>." and a usage example, and exits 2; a refusal by the controller or no
controller exits 1.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any, Callable, NoReturn, Sequence

from orion_controller.client import ControlClient, ControlError

EXAMPLES = {
    "custom-device add": "orioncli custom-device add small-gpu-4 --display-name=\"Small GPU 4G\" "
                         "--memory=4000 --physical-devices='[{\"device_name\":\"Tesla T4\","
                         "\"ratio\":20},{\"device_name\":\"Tesla P4\",\"ratio\":10}]'",
    "custom-device update": "orioncli custom-device update small-gpu-4 --memory=5000",
    "custom-device list": "orioncli custom-device list --full-fields",
    "custom-device info": "orioncli custom-device info small-gpu-4",
    "custom-device del": "orioncli custom-device del small-gpu-4",
    "quota list": "orioncli quota list",
    "quota info": "orioncli quota info alice GPU NVIDIA",
    "quota set": "orioncli quota set alice GPU NVIDIA --vdevice-num 4 --vdevice-mem 32000 "
                 "--vdevice-ratio 200 --single-vdevice-mem 16000 --single-vdevice-ratio 100",
    "quota del": "orioncli quota del alice",
}
QUOTA_FLAGS = ("vdevice-num", "vdevice-mem", "vdevice-ratio", "single-vdevice-mem",
               "single-vdevice-ratio")


class Usage(Exception):
    """Bad usage of one command: the message, and which command's example to show."""

    def __init__(self, message: str, command: str | None) -> None:
        super().__init__(message)
        self.command = command


class _Parser(argparse.ArgumentParser):
    """argparse that reports errors in orioncli's style instead of its own."""

    command: str | None = None

    def error(self, message: str) -> NoReturn:
        raise Usage(message, self.command)


def main(argv: Sequence[str] | None = None) -> int:
    command = None
    try:
        args, extra = _parser().parse_known_args(argv)
        command = getattr(args, "command", None) or args.group
        if extra:
            raise Usage(f"unknown argument {extra[0]}", command)
        if not getattr(args, "command", None):
            raise Usage("an action is missing" if args.group else "a command is missing", command)
        message = args.build(args)
    except Usage as usage:
        _usage(str(usage), usage.command or command)
        return 2
    try:
        with ControlClient(args.controller, timeout_s=args.timeout) as client:
            reply = client.request(message)
    except (ControlError, ValueError) as error:
        print(f"Err: {_sentence(str(error))}", file=sys.stderr)
        return 1
    if not reply["ok"]:
        # The controller names the op first ("quota_info: no quota ..."); users did not
        # type the op, so it goes.
        error = reply.get("error", "refused").removeprefix(f"{message['op']}: ")
        print(f"Err: {_sentence(error)}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(reply, indent=2))
    else:
        args.show(args, reply)
    return 0


# -- commands: request builders ------------------------------------------------------

def _custom_add(args: argparse.Namespace) -> dict:
    name = _required(args.name, "name")
    return {"op": "custom_device_add", "name": name, "display_name": args.display_name or name,
            "memory": _integer(_required(args.memory, "memory"), "memory", 1),
            "physical_devices": _physical(_required(args.physical_devices, "physical-devices"))}


def _custom_update(args: argparse.Namespace) -> dict:
    message = {"op": "custom_device_update", "name": _required(args.name, "name")}
    if args.display_name is not None:
        message["display_name"] = args.display_name
    if args.memory is not None:
        message["memory"] = _integer(args.memory, "memory", 1)
    if args.physical_devices is not None:
        message["physical_devices"] = _physical(args.physical_devices)
    if len(message) == 2:
        raise Usage("display-name, memory or physical-devices is missing", args.command)
    return message


def _custom_named(op: str) -> Callable[[argparse.Namespace], dict]:
    return lambda args: {"op": op, "name": _required(args.name, "name")}


def _quota_key(args: argparse.Namespace) -> dict:
    return {"client_id": _required(args.client_id, "client_id"),
            "device_type": _required(args.device_type, "device_type"),
            "device_vendor": _required(args.device_vendor, "device_vendor")}


def _quota_set(args: argparse.Namespace) -> dict:
    message = {"op": "quota_set", **_quota_key(args)}
    for flag in QUOTA_FLAGS:
        value = getattr(args, flag.replace("-", "_"))
        if value is not None:
            # -1 lifts a limit
            message[flag.replace("-", "_")] = (None if value.strip() == "-1"
                                               else _integer(value, flag, 0))
    if len(message) == 4:
        raise Usage(f"{', '.join(QUOTA_FLAGS[:-1])} or {QUOTA_FLAGS[-1]} is missing",
                    args.command)
    return message


def _quota_del(args: argparse.Namespace) -> dict:
    return {"op": "quota_del", "client_id": _required(args.client_id, "client_id")}


# -- commands: output ----------------------------------------------------------------

def _show_custom(args: argparse.Namespace, reply: dict) -> None:
    done = {"add": "added", "update": "updated", "del": "deleted"}.get(args.action)
    entry = reply["custom_device"]
    if done:
        print(f"Custom device {entry['name']} {done}.")
    _table_custom([entry], full=True)


def _show_custom_list(args: argparse.Namespace, reply: dict) -> None:
    _table_custom(reply["custom_devices"], full=args.full_fields)


def _table_custom(entries: list[dict], full: bool) -> None:
    header = ["NAME", "DISPLAY NAME", "MEMORY(MiB)"] + (["PHYSICAL DEVICES"] if full else [])
    rows = [[e["name"], e["display_name"], e["memory"]]
            + ([", ".join(f"{p['device_name']}:{p['ratio']}%" for p in e["physical_devices"])]
               if full else []) for e in entries]
    _table(header, rows)


def _show_quotas(args: argparse.Namespace, reply: dict) -> None:
    if "quotas" in reply:
        quotas = reply["quotas"]
        if not reply.get("enforced", True):
            print("(QUOTA_LIMIT is not enabled on the controller: quotas are not enforced)")
    elif "deleted" in reply:
        quotas = reply["deleted"]
        print(f"{len(quotas)} quota(s) of {args.client_id} deleted.")
    else:
        quotas = [reply["quota"]]
        if args.action == "set":
            print(f"Quota of {args.client_id} for {quotas[0]['device_type']} "
                  f"{quotas[0]['device_vendor']} set.")
    header = ["CLIENT ID", "DEVICE TYPE", "DEVICE VENDOR", "VDEVICE NUM", "VDEVICE MEM",
              "VDEVICE RATIO", "LEFT NUM", "LEFT MEM", "LEFT RATIO", "SINGLE VDEVICE MEM",
              "SINGLE VDEVICE RATIO"]
    keys = ["client_id", "device_type", "device_vendor", "vdevice_num", "vdevice_mem",
            "vdevice_ratio", "left_num", "left_mem", "left_ratio", "single_vdevice_mem",
            "single_vdevice_ratio"]
    _table(header, [[q[key] for key in keys] for q in quotas])


def _table(header: list[str], rows: list[list[Any]]) -> None:
    cells = [header] + [["-" if value is None else str(value) for value in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    for row in cells:
        print("  ".join(value.ljust(width) for value, width in zip(row, widths)).rstrip())


# -- parsing -------------------------------------------------------------------------

def _common(defaults: bool) -> _Parser:
    """The flags a user may give before or after the command. Only the top parser has
    defaults: a subcommand's default would overwrite a value given before it."""
    def default(value: Any) -> Any:
        return value if defaults else argparse.SUPPRESS

    common = _Parser(add_help=False)
    common.add_argument("--controller",
                        default=default(os.environ.get("ORION_CONTROLLER", "127.0.0.1:9123")),
                        help="controller address host:port (env ORION_CONTROLLER)")
    common.add_argument("--json", action="store_true", default=default(False),
                        help="print the controller's reply")
    common.add_argument("--timeout", type=float, default=default(5.0),
                        help="seconds to wait (5)")
    return common


def _parser() -> _Parser:
    common = _common(defaults=False)
    parser = _Parser(prog="orioncli", parents=[_common(defaults=True)],
                     description="Administer an Orion controller: custom device types, quotas.")
    groups = parser.add_subparsers(dest="group", parser_class=_Parser)

    custom = groups.add_parser("custom-device", help="custom device types")
    custom.command = "custom-device"
    actions = custom.add_subparsers(dest="action", parser_class=_Parser)
    for action, build, show in (("add", _custom_add, _show_custom),
                                ("update", _custom_update, _show_custom)):
        sub = _command(actions, "custom-device", action, common, build, show)
        sub.add_argument("name", nargs="?", metavar="NAME")
        sub.add_argument("--display-name")
        sub.add_argument("--memory", help="MiB of each vGPU")
        sub.add_argument("--physical-devices", metavar="JSON",
                         help='[{"device_name": "Tesla T4", "ratio": 20}, ...]')
    listing = _command(actions, "custom-device", "list", common,
                       lambda args: {"op": "custom_device_list", "full_fields": args.full_fields},
                       _show_custom_list)
    listing.add_argument("--full-fields", action="store_true")
    for action, op in (("info", "custom_device_info"), ("del", "custom_device_del")):
        sub = _command(actions, "custom-device", action, common, _custom_named(op), _show_custom)
        sub.add_argument("name", nargs="?", metavar="NAME")

    quota = groups.add_parser("quota", help="quotas per client id")
    quota.command = "quota"
    actions = quota.add_subparsers(dest="action", parser_class=_Parser)
    _command(actions, "quota", "list", common, lambda args: {"op": "quota_list"}, _show_quotas)
    info = _command(actions, "quota", "info", common,
                    lambda args: {"op": "quota_info", **_quota_key(args)}, _show_quotas)
    setting = _command(actions, "quota", "set", common, _quota_set, _show_quotas)
    for sub in (info, setting):
        for name in ("client_id", "device_type", "device_vendor"):
            sub.add_argument(name, nargs="?", metavar=name.upper())
    for flag in QUOTA_FLAGS:
        setting.add_argument(f"--{flag}", metavar="MiB" if flag.endswith("mem") else "N",
                             help="-1: no limit")
    delete = _command(actions, "quota", "del", common, _quota_del, _show_quotas)
    delete.add_argument("client_id", nargs="?", metavar="CLIENT_ID")
    return parser


def _command(actions: argparse._SubParsersAction, group: str, action: str,
             common: argparse.ArgumentParser, build: Callable, show: Callable) -> _Parser:
    sub = actions.add_parser(action, parents=[common], help=EXAMPLES[f"{group} {action}"])
    sub.command = f"{group} {action}"
    sub.set_defaults(command=sub.command, build=build, show=show)
    return sub


def _required(value: str | None, name: str) -> str:
    if value is None or not value.strip():
        raise Usage(f"{name} is missing", None)
    return value


def _integer(text: str, name: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise Usage(f"{name} must be an integer, not {text!r}", None) from None
    if value < low:
        raise Usage(f"{name} must be >= {low}, not {value}", None)
    return value


def _physical(text: str) -> list:
    try:
        value = json.loads(text)
    except ValueError as error:
        raise Usage(f"physical-devices is not JSON ({error})", None) from None
    if not isinstance(value, list):
        raise Usage("physical-devices must be a JSON list of {device_name, ratio}", None)
    return value


def _usage(message: str, command: str | None) -> None:
    """Prints the error and the examples of the command (or group, or all of them)."""
    examples = [example for name, example in EXAMPLES.items()
                if command and (name == command or name.startswith(f"{command} "))]
    examples = examples or list(EXAMPLES.values())
    print(f"Err: {_sentence(message)}", file=sys.stderr)
    print("Usage example:" if len(examples) == 1 else "Usage examples:", file=sys.stderr)
    for example in examples:
        print(f"  {example}", file=sys.stderr)


def _sentence(text: str) -> str:
    return text if text.endswith(".") else f"{text}."


if __name__ == "__main__":
    raise SystemExit(main())
