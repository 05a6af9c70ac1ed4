"""Quotas per client id, device type and vendor (QUOTA_LIMIT=enable enforces them).

A quota limits what one client holds at once: vGPU count, total MiB and total % over
its vGPUs, and the size of any single vGPU. A missing limit (None) is no limit; a client
without a quota is not limited. Usage is counted for every client at all times, so the
"left" figures are right from the moment a quota is set, enforced or not. Checks and
charges happen under the controller's one lock, inside the grant, so concurrent requests
cannot overdraw a quota together.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any, Iterable, Mapping

from orion_controller import fields
from orion_controller.fields import Invalid, NotFound
from orion_controller.model import Gpu

LIMITS = ("vdevice_num", "vdevice_mem", "vdevice_ratio", "single_vdevice_mem",
          "single_vdevice_ratio")
Key = tuple[str, str, str]     # client_id, DEVICE TYPE, DEVICE VENDOR (type, vendor upper case)


class QuotaExceeded(Exception):
    def __init__(self, reason: str, *, retry: bool) -> None:
        super().__init__(reason)
        self.retry = retry


@dataclass(frozen=True)
class Quota:
    client_id: str
    device_type: str
    device_vendor: str
    vdevice_num: int | None = None
    vdevice_mem: int | None = None      # MiB over all vGPUs
    vdevice_ratio: int | None = None    # % over all vGPUs
    single_vdevice_mem: int | None = None
    single_vdevice_ratio: int | None = None

    @property
    def key(self) -> Key:
        return self.client_id, self.device_type, self.device_vendor


def key_of(client_id: Any, device_type: Any, device_vendor: Any) -> Key:
    return (fields.text("client_id", client_id), fields.text("device_type", device_type).upper(),
            fields.text("device_vendor", device_vendor).upper())


class QuotaBook:
    def __init__(self, enforced: bool) -> None:
        self.enforced = enforced
        self._quotas: dict[Key, Quota] = {}
        self._used: dict[Key, list[int]] = {}   # num, MiB, % held now

    # -- administration ---------------------------------------------------------------

    def set(self, values: Mapping[str, Any]) -> Quota:
        """Creates or updates a quota; limits left out keep their value (none if new)."""
        key = key_of(values.get("client_id"), values.get("device_type"),
                     values.get("device_vendor"))
        given = {name: fields.optional_integer(name, values.get(name), low=0)
                 for name in LIMITS if name in values}
        if not given:
            raise Invalid(f"give at least one limit: {', '.join(LIMITS)}")
        quota = replace(self._quotas.get(key) or Quota(*key), **given)
        self._quotas[key] = quota
        return quota

    def load(self, quotas: Iterable[Quota]) -> None:
        self._quotas.update((quota.key, quota) for quota in quotas)

    def delete(self, client_id: Any, device_type: Any = None,
               device_vendor: Any = None) -> list[Quota]:
        """Deletes one quota, or every quota of the client when type and vendor are None."""
        client_id = fields.text("client_id", client_id)
        if device_type is None and device_vendor is None:
            gone = [q for q in self._quotas.values() if q.client_id == client_id]
        else:
            found = self._quotas.get(key_of(client_id, device_type, device_vendor))
            gone = [found] if found else []
        if not gone:
            raise NotFound(f"no quota for client {client_id}"
                           + (f" {device_type} {device_vendor}" if device_type else ""))
        for quota in gone:
            del self._quotas[quota.key]
        return gone

    def get(self, client_id: Any, device_type: Any, device_vendor: Any) -> Quota:
        key = key_of(client_id, device_type, device_vendor)
        if key not in self._quotas:
            raise NotFound(f"no quota for client {key[0]} {key[1]} {key[2]}")
        return self._quotas[key]

    def all(self) -> list[Quota]:
        return sorted(self._quotas.values(), key=lambda q: q.key)

    def view(self, quota: Quota) -> dict[str, Any]:
        """The quota with its left figures (None where there is no limit)."""
        used = self._used.get(quota.key, [0, 0, 0])
        limits = (quota.vdevice_num, quota.vdevice_mem, quota.vdevice_ratio)
        left = [None if limit is None else limit - held for limit, held in zip(limits, used)]
        return {**asdict(quota), "enforced": self.enforced, "used_num": used[0],
                "used_mem": used[1], "used_ratio": used[2], "left_num": left[0],
                "left_mem": left[1], "left_ratio": left[2]}

    # -- grants -----------------------------------------------------------------------

    def single_limits(self, client_id: str | None, gpu: Gpu) -> tuple[int | None, int | None]:
        """The largest MiB and % one vGPU of this client may have on such a GPU."""
        quota = self._applying(client_id, gpu)
        if quota is None:
            return None, None
        return quota.single_vdevice_mem, quota.single_vdevice_ratio

    def check(self, client_id: str | None, vgpus: Iterable[tuple[Gpu, int, int]]) -> None:
        """Raises QuotaExceeded if granting these (gpu, MiB, %) would overdraw a quota."""
        asked: dict[Key, list[int]] = {}
        for gpu, mib, ratio in vgpus:
            quota = self._applying(client_id, gpu)
            if quota is None:
                continue
            for limit, value, what in ((quota.single_vdevice_mem, mib, "MiB"),
                                       (quota.single_vdevice_ratio, ratio, "%")):
                if limit is not None and value > limit:
                    raise QuotaExceeded(f"{self._name(quota)} allows {limit} {what} per vGPU, "
                                        f"not {value}", retry=False)
            total = asked.setdefault(quota.key, [0, 0, 0])
            total[0] += 1
            total[1] += mib
            total[2] += ratio
        for key, total in asked.items():
            quota = self._quotas[key]
            used = self._used.get(key, [0, 0, 0])
            limits = (quota.vdevice_num, quota.vdevice_mem, quota.vdevice_ratio)
            for limit, want, held, what in zip(limits, total, used, ("vGPUs", "MiB", "%")):
                if limit is None or held + want <= limit:
                    continue
                if want > limit:
                    raise QuotaExceeded(f"{self._name(quota)} allows {limit} {what} in all; "
                                        f"this request alone needs {want}", retry=False)
                raise QuotaExceeded(f"{self._name(quota)} has {limit - held} {what} left "
                                    f"of {limit}; this request needs {want}", retry=True)

    def charge(self, client_id: str | None, vgpus: Iterable[tuple[Gpu, int, int]],
               sign: int = 1) -> None:
        if client_id is None:
            return
        for gpu, mib, ratio in vgpus:
            used = self._used.setdefault((client_id, gpu.type.upper(), gpu.vendor.upper()),
                                         [0, 0, 0])
            used[0] += sign
            used[1] += sign * mib
            used[2] += sign * ratio

    def _applying(self, client_id: str | None, gpu: Gpu) -> Quota | None:
        if not self.enforced or client_id is None:
            return None
        return self._quotas.get((client_id, gpu.type.upper(), gpu.vendor.upper()))

    @staticmethod
    def _name(quota: Quota) -> str:
        return f"quota of {quota.client_id} for {quota.device_type} {quota.device_vendor}"
