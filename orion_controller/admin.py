"""Administration ops (orioncli, the REST API): custom device types and quotas.

Each op checks and applies the change in the pool's books, writes it to the store
before answering, and tells the pool its rules changed (cached refusals are dropped,
waiting requests are tried again).
"""
from __future__ import annotations

import logging
from typing import Callable

from orion_controller import fields
from orion_controller.pool import Pool

log = logging.getLogger(__name__)

Op = Callable[[Pool, dict], dict]


def custom_device_add(pool: Pool, m: dict) -> dict:
    created = pool.custom.add(m)
    pool.store.save_custom_device(created.wire())
    pool.touch()
    log.info("custom device %s added: %s", created.name, created.wire())
    return {"custom_device": created.wire()}


def custom_device_update(pool: Pool, m: dict) -> dict:
    updated = pool.custom.update(m)
    pool.store.save_custom_device(updated.wire())
    pool.touch()
    log.info("custom device %s updated: %s", updated.name, updated.wire())
    return {"custom_device": updated.wire()}


def custom_device_list(pool: Pool, m: dict) -> dict:
    full = fields.boolean("full_fields", m.get("full_fields", False))
    return {"custom_devices": [kind.wire(full) for kind in pool.custom.all()]}


def custom_device_info(pool: Pool, m: dict) -> dict:
    return {"custom_device": pool.custom.get(m.get("name")).wire()}


def custom_device_del(pool: Pool, m: dict) -> dict:
    removed = pool.custom.remove(m.get("name"))
    pool.store.delete_custom_device(removed.name)
    pool.touch()
    log.info("custom device %s deleted", removed.name)
    return {"custom_device": removed.wire()}


def quota_set(pool: Pool, m: dict) -> dict:
    quota = pool.quotas.set(m)
    pool.store.save_quota(quota)
    pool.touch()
    log.info("quota set: %s", quota)
    return {"quota": pool.quotas.view(quota)}


def quota_info(pool: Pool, m: dict) -> dict:
    quota = pool.quotas.get(m.get("client_id"), m.get("device_type"), m.get("device_vendor"))
    return {"quota": pool.quotas.view(quota)}


def quota_list(pool: Pool, m: dict) -> dict:
    return {"quotas": [pool.quotas.view(quota) for quota in pool.quotas.all()],
            "enforced": pool.quotas.enforced}


def quota_del(pool: Pool, m: dict) -> dict:
    gone = pool.quotas.delete(m.get("client_id"), m.get("device_type"), m.get("device_vendor"))
    for quota in gone:
        pool.store.delete_quota(quota)
    pool.touch()
    log.info("quota(s) deleted: %s", ", ".join(" ".join(q.key) for q in gone))
    return {"deleted": [pool.quotas.view(quota) for quota in gone]}


OPS: dict[str, Op] = {
    "custom_device_add": custom_device_add, "custom_device_update": custom_device_update,
    "custom_device_list": custom_device_list, "custom_device_info": custom_device_info,
    "custom_device_del": custom_device_del,
    "quota_set": quota_set, "quota_info": quota_info, "quota_list": quota_list,
    "quota_del": quota_del,
}
