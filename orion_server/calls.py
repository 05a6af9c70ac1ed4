"""The shape of one forwarded call, as the generated tables describe it."""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Param:
    name: str
    kind: str     # val | in | out | inout | str | in_buf | out_buf (docs/protocol.md)
    fmt: str      # struct-module code of the value that travels ("" for str/buffers)


@dataclass(frozen=True)
class Call:
    name: str
    is_async: bool
    params: tuple[Param, ...]
