"""The model the generator builds from a header plus its spec: frozen dataclasses only.

A `Function` is one C entry point; `forwarded` functions get a generated client stub
and a server table entry, `manual` ones are written by hand in native/src, and all the
rest get a stub that answers the library's "not supported" error.
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from enum import Enum


class Kind(str, Enum):
    """How a parameter crosses the wire (docs/protocol.md, "Data plane")."""

    VAL = "val"          # scalar, handle, device pointer or struct by value: raw bytes
    IN = "in"            # const T*: one object, may be NULL
    OUT = "out"          # T*: written by the call, returned in the reply
    INOUT = "inout"      # T*: sent, and returned as updated
    STR = "str"          # const char*: NUL-terminated string
    IN_BUF = "in_buf"    # host bytes read by the call; length given by a C expression
    OUT_BUF = "out_buf"  # host bytes written by the call; length given by a C expression


@dataclass(frozen=True)
class CType:
    """A C type as written in the header, with what the layout probe measured."""

    spelling: str         # e.g. "const struct cudaExtent *"
    pointee: str | None   # for pointers: the type pointed to, else None
    size: int             # sizeof(the value that travels): the pointee for in/out kinds
    pyfmt: str            # struct-module code for that value ("Q", "i", "24s", ...)


@dataclass(frozen=True)
class Param:
    name: str
    ctype: CType
    kind: Kind
    length: str | None = None  # C expression, for IN_BUF / OUT_BUF


@dataclass(frozen=True)
class Function:
    name: str
    ret: str
    params: tuple[Param, ...]
    forwarded: bool = False
    manual: bool = False
    internal: bool = False    # a wire call of our own, used by hand-written client code
    is_async: bool = False
    exported_aliases: tuple[str, ...] = ()   # e.g. the _ptds/_ptsz names

    @property
    def call_id(self) -> int:
        """Stable id on the wire: the CRC-32 of the name (collisions checked at build)."""
        return zlib.crc32(self.name.encode()) & 0x7FFFFFFF


@dataclass(frozen=True)
class Library:
    name: str                 # "cudart"
    soname: str               # "libcudart.so.13"
    header_version: str       # e.g. "13000"
    spec_hash: str
    functions: tuple[Function, ...] = field(default_factory=tuple)
    entry_points: tuple[str, ...] = ()   # hand-written, exported, not in the header
    version_node: str = ""    # symbol version of the exports; "" for unversioned ones
    error_type: str = "cudaError_t"              # what every API function returns
    unsupported_call: str = "orion_unsupported"  # answers a call that is not served
    stub_include: str = "orion.h"                # the header the C stubs include

    @property
    def forwarded(self) -> tuple[Function, ...]:
        return tuple(f for f in self.functions if f.forwarded)

    @property
    def exported(self) -> tuple[Function, ...]:
        return tuple(f for f in self.functions if not f.internal)
