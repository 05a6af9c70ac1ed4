"""Overcommit factors of each GPU, from the controller's settings and the server's own.

The controller's OC_ENABLE with OC_MEM_RATIO / OC_CORE_RATIO gives every GPU a factor;
a server may set its own in `register` (`overcommit: {mem_ratio, core_ratio, devices:
{"<gpu index>": {mem_ratio, core_ratio}}}`, as its [overcommit] section says). The most
specific value set wins: a device's, else its server's, else the controller's. 0 (or
leaving it out) sets nothing, as in the server's configuration file; 1 turns overcommit
off. Only shared QoS modes use the factors (see inventory.Device.caps).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orion_controller import fields
from orion_controller.fields import Invalid
from orion_controller.model import Gpu


@dataclass(frozen=True)
class Overcommit:
    """Factors >= 1 by which shared QoS modes may overbook a GPU (1 = not at all)."""

    mem: float = 1.0
    core: float = 1.0


def per_device(value: Any, gpus: tuple[Gpu, ...], default: Overcommit) -> dict[int, Overcommit]:
    """The factors of each GPU (by index) of a registering node."""
    if value is None:
        return {gpu.index: default for gpu in gpus}
    value = fields.mapping("overcommit", value)
    server = _factors("overcommit", value, default)
    devices = fields.mapping("overcommit.devices", value.get("devices") or {})
    indexes = {str(gpu.index) for gpu in gpus}
    unknown = sorted(set(devices) - indexes)
    if unknown:
        raise Invalid(f"overcommit.devices names GPU index {', '.join(unknown)}, "
                      f"which the node does not register")
    return {gpu.index: _factors(f"overcommit.devices[{gpu.index}]",
                                fields.mapping(f"overcommit.devices[{gpu.index}]",
                                               devices.get(str(gpu.index)) or {}), server)
            for gpu in gpus}


def _factors(where: str, entry: dict, fallback: Overcommit) -> Overcommit:
    return Overcommit(mem=_factor(f"{where}.mem_ratio", entry.get("mem_ratio"), fallback.mem),
                      core=_factor(f"{where}.core_ratio", entry.get("core_ratio"), fallback.core))


def _factor(name: str, value: Any, fallback: float) -> float:
    if value is None or (value == 0 and not isinstance(value, bool)):
        return fallback
    return fields.ratio_factor(name, value)
