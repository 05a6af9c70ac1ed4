"""Durable state in SQLite: quotas, custom device types, reserved groups.

Live grants are not stored: the servers report them in their heartbeats and the pool
rebuilds them after a restart (docs/protocol.md, "Restarts"). Each write is its own
transaction (autocommit), made under the controller's lock, so the file always holds a
state the controller has answered from. The connection is shared by the ZeroMQ loop and
the REST thread; the lock serialises them, hence check_same_thread=False.
"""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

from orion_controller.quota import LIMITS, Quota

SCHEMA_VERSION = 1
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS custom_devices (
    name TEXT PRIMARY KEY, display_name TEXT NOT NULL, memory INTEGER NOT NULL,
    physical_devices TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS quotas (
    client_id TEXT NOT NULL, device_type TEXT NOT NULL, device_vendor TEXT NOT NULL,
    {", ".join(f"{limit} INTEGER" for limit in LIMITS)},
    PRIMARY KEY (client_id, device_type, device_vendor));
CREATE TABLE IF NOT EXISTS reserved_groups (
    group_id TEXT PRIMARY KEY, client_id TEXT, slots TEXT NOT NULL);
PRAGMA user_version = {SCHEMA_VERSION};
"""


class StoreError(Exception):
    """The database cannot be opened or is of another schema."""


class Store:
    def __init__(self, path: str) -> None:
        self.path = path
        try:
            if path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version not in (0, SCHEMA_VERSION):
                raise StoreError(f"{path} has schema version {version}; this controller "
                                 f"knows {SCHEMA_VERSION}")
            self._db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as error:
            raise StoreError(f"cannot open the database {path}: {error}") from error

    def close(self) -> None:
        self._db.close()

    # -- reads, once at start ---------------------------------------------------------

    def custom_devices(self) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT name, display_name, memory, physical_devices "
                                "FROM custom_devices ORDER BY name")
        return [{"name": name, "display_name": display, "memory": memory,
                 "physical_devices": json.loads(physical)}
                for name, display, memory, physical in rows]

    def quotas(self) -> list[Quota]:
        rows = self._db.execute(f"SELECT client_id, device_type, device_vendor, "
                                f"{', '.join(LIMITS)} FROM quotas")
        return [Quota(*row) for row in rows]

    def groups(self) -> list[dict[str, Any]]:
        rows = self._db.execute("SELECT group_id, client_id, slots FROM reserved_groups")
        return [{"group_id": group_id, "client_id": client_id, "slots": json.loads(slots)}
                for group_id, client_id, slots in rows]

    # -- writes -----------------------------------------------------------------------

    def save_custom_device(self, entry: dict[str, Any]) -> None:
        self._db.execute("INSERT OR REPLACE INTO custom_devices VALUES (?, ?, ?, ?)",
                         (entry["name"], entry["display_name"], entry["memory"],
                          json.dumps(entry["physical_devices"])))

    def delete_custom_device(self, name: str) -> None:
        self._db.execute("DELETE FROM custom_devices WHERE name = ?", (name,))

    def save_quota(self, quota: Quota) -> None:
        self._db.execute(f"INSERT OR REPLACE INTO quotas VALUES ({', '.join('?' * 8)})",
                         (quota.client_id, quota.device_type, quota.device_vendor,
                          *(getattr(quota, limit) for limit in LIMITS)))

    def delete_quota(self, quota: Quota) -> None:
        self._db.execute("DELETE FROM quotas WHERE client_id = ? AND device_type = ? "
                         "AND device_vendor = ?", quota.key)

    def save_group(self, entry: dict[str, Any]) -> None:
        self._db.execute("INSERT OR REPLACE INTO reserved_groups VALUES (?, ?, ?)",
                         (entry["group_id"], entry["client_id"], json.dumps(entry["slots"])))

    def delete_group(self, group_id: str) -> None:
        self._db.execute("DELETE FROM reserved_groups WHERE group_id = ?", (group_id,))
