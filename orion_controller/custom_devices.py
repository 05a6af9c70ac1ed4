"""Custom device types: a name a client asks for (ORION_DEVICE_NAME) that stands for a
vGPU size on each of several GPU models.

`small-gpu-4` with memory 4000 and physical devices [Tesla T4 at 20 %, Tesla P4 at 10 %]
gives a 4000 MiB vGPU with 20 % of a T4 or with 10 % of a P4. Model names match the
registered GPU names case-insensitively.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import cached_property
from typing import Any, Mapping

from orion_controller import fields
from orion_controller.fields import Invalid, NotFound
from orion_controller.model import FULL_RATIO


@dataclass(frozen=True)
class CustomDevice:
    name: str
    display_name: str
    memory: int                                   # MiB of each vGPU of this type
    physical_devices: tuple[tuple[str, int], ...]  # (GPU model name, % of that GPU)

    def ratio_on(self, model: str) -> int | None:
        """The % a vGPU of this type takes of a GPU of this model; None: not offered on it."""
        return self._ratios.get(model.lower())

    @property
    def models(self) -> list[str]:
        return [model.lower() for model, _ in self.physical_devices]

    @cached_property      # asked once per candidate GPU; a frozen instance never changes
    def _ratios(self) -> dict[str, int]:
        return {model.lower(): ratio for model, ratio in self.physical_devices}

    def wire(self, full: bool = True) -> dict[str, Any]:
        entry: dict[str, Any] = {"name": self.name, "display_name": self.display_name,
                                 "memory": self.memory}
        if full:
            entry["physical_devices"] = [{"device_name": model, "ratio": ratio}
                                         for model, ratio in self.physical_devices]
        return entry


class CustomDeviceBook:
    def __init__(self) -> None:
        self._types: dict[str, CustomDevice] = {}

    def add(self, values: Mapping[str, Any]) -> CustomDevice:
        name = fields.text("name", values.get("name"))
        if name in self._types:
            raise Invalid(f"custom device {name} exists already (update it instead)")
        for needed in ("memory", "physical_devices"):
            if values.get(needed) is None:
                raise Invalid(f"{needed} is missing")
        created = CustomDevice(
            name=name,
            display_name=fields.text("display_name", values.get("display_name") or name),
            memory=_memory(values["memory"]),
            physical_devices=_physical(values["physical_devices"]))
        self._types[name] = created
        return created

    def update(self, values: Mapping[str, Any]) -> CustomDevice:
        current = self.get(values.get("name"))
        changes: dict[str, Any] = {}
        if values.get("display_name") is not None:
            changes["display_name"] = fields.text("display_name", values["display_name"])
        if values.get("memory") is not None:
            changes["memory"] = _memory(values["memory"])
        if values.get("physical_devices") is not None:
            changes["physical_devices"] = _physical(values["physical_devices"])
        if not changes:
            raise Invalid("nothing to update: give display_name, memory or physical_devices")
        updated = replace(current, **changes)
        self._types[updated.name] = updated
        return updated

    def load(self, entry: Mapping[str, Any]) -> None:
        self._types[entry["name"]] = CustomDevice(
            entry["name"], entry["display_name"], entry["memory"],
            _physical(entry["physical_devices"]))

    def get(self, name: Any) -> CustomDevice:
        name = fields.text("name", name)
        if name not in self._types:
            raise NotFound(f"no custom device {name}")
        return self._types[name]

    def find(self, name: str | None) -> CustomDevice | None:
        """The type a request's device_name names, if it names one (custom names win)."""
        return None if name is None else self._types.get(name)

    def remove(self, name: Any) -> CustomDevice:
        return self._types.pop(self.get(name).name)

    def all(self) -> list[CustomDevice]:
        return sorted(self._types.values(), key=lambda t: t.name)


def _memory(value: Any) -> int:
    return fields.integer("memory", value, low=1)


def _physical(value: Any) -> tuple[tuple[str, int], ...]:
    entries = fields.listing("physical_devices", value)
    if not entries:
        raise Invalid("physical_devices must name at least one GPU model")
    parsed = []
    for i, entry in enumerate(entries):
        entry = fields.mapping(f"physical_devices[{i}]", entry)
        parsed.append((fields.text(f"physical_devices[{i}].device_name", entry.get("device_name")),
                       fields.integer(f"physical_devices[{i}].ratio", entry.get("ratio"),
                                      low=1, high=FULL_RATIO)))
    models = [model.lower() for model, _ in parsed]
    repeated = sorted({m for m in models if models.count(m) > 1})
    if repeated:
        raise Invalid(f"physical_devices repeat {', '.join(repeated)}")
    return tuple(parsed)
