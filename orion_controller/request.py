"""The fields of an `allocate` request (docs/protocol.md, "allocate"), checked.

The C client sends one JSON field per ORION_* variable, named as the variable without
ORION_ in snake case; the QoS variables are folded into one `qos` field by the client.
"""
from __future__ import annotations

from typing import Any, Mapping

from orion_controller import fields
from orion_controller.fields import Invalid
from orion_controller.model import (FULL_RATIO, LOCAL_FIRST, QOS_MODES, SCHEDULE_RULES,
                                    Demand, Owner, EXCLUSIVE)

MAX_WAIT_S = 600.0    # a queued request is answered within this; longer belongs in a job queue

FIELDS = ("vgpu", "gmem", "ratio", "cross_node", "device_ids", "device_name", "device_type",
          "k8s_node", "schedule_rule", "qos", "client_id", "host", "pid", "group_id",
          "reserved", "wait_s")


def pick(message: Mapping[str, Any]) -> dict[str, Any]:
    """The allocate fields of a message (the rest, `op` included, is not the pool's)."""
    return {name: message[name] for name in FIELDS if name in message}


def parse(values: Mapping[str, Any]) -> tuple[Demand, Owner, float]:
    """Demand, owner and wait_s of a request; raises Invalid naming the first bad field."""
    def get(name: str, default: Any = None) -> Any:
        value = values.get(name)
        return default if value is None else value

    cross_node = fields.boolean("cross_node", get("cross_node", False))
    ratio = fields.optional_integer("ratio", values.get("ratio"), low=1, high=FULL_RATIO)
    if cross_node:
        # vGPUs on several nodes are whole GPUs: a split GPU across hosts makes no sense.
        if ratio not in (None, FULL_RATIO):
            raise Invalid(f"cross_node grants whole GPUs: ratio must be {FULL_RATIO}, not {ratio}")
        ratio = FULL_RATIO
    host = fields.optional_text("host", values.get("host"))
    demand = Demand(
        vgpu=fields.integer("vgpu", get("vgpu", 1), low=1),
        gmem=fields.optional_integer("gmem", values.get("gmem"), low=1),
        ratio=ratio,
        cross_node=cross_node,
        device_ids=fields.texts("device_ids", get("device_ids", [])),
        device_name=fields.optional_text("device_name", values.get("device_name")),
        device_type=fields.optional_text("device_type", values.get("device_type")),
        k8s_node=fields.optional_text("k8s_node", values.get("k8s_node")),
        schedule_rule=fields.choice("schedule_rule", get("schedule_rule", LOCAL_FIRST),
                                    SCHEDULE_RULES),
        qos=fields.choice("qos", get("qos", EXCLUSIVE), QOS_MODES),
        host=host)
    owner = Owner(client_id=fields.optional_text("client_id", values.get("client_id")),
                  host=host,
                  pid=fields.optional_integer("pid", values.get("pid"), low=0),
                  group_id=fields.optional_text("group_id", values.get("group_id")),
                  reserved=fields.boolean("reserved", get("reserved", False)))
    if owner.reserved and owner.group_id is None:
        raise Invalid("reserved needs a group_id: the reservation belongs to the group")
    if demand.schedule_rule != LOCAL_FIRST and host is None:
        raise Invalid(f"schedule_rule {demand.schedule_rule} needs the client's host")
    wait_s = fields.seconds("wait_s", get("wait_s", 0), high=MAX_WAIT_S)
    return demand, owner, wait_s
