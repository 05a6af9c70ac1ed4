"""Data-plane framing (docs/protocol.md): headers, argument decoding, reply encoding.

Frame 0 of a request is a 24-byte header and the packed arguments; each `in_buf`
argument's bytes are the next frame. A reply's frame 0 is a 24-byte header and the
packed `out`/`inout` values; each `out_buf` is its own frame, so bulk bytes are never
copied into frame 0.
"""
from __future__ import annotations

import struct
from typing import NamedTuple

from .calls import Call

MAGIC = 0x314E524F          # b"ORN1" little-endian
VERSION = 1
FLAG_ASYNC = 1
# reply flags: trailing frames of device output, in this order, for the client's
FLAG_OUTPUT = 2     # stdout (device printf)
FLAG_ERRORS = 4     # stderr (device assert messages)
REQUEST = struct.Struct("<IHHIHHQ")   # magic, version, flags, call id, device, reserved, seq
REPLY = struct.Struct("<IHHIIQ")      # magic, version, flags, status, reserved, seq
HEADER_SIZE = 24
_U8, _U32, _U64 = struct.Struct("<B"), struct.Struct("<I"), struct.Struct("<Q")


class WireError(ValueError):
    """A request that cannot be decoded: answered with an error, never fatal."""


class Request(NamedTuple):
    """A request's header (immutable; a frozen dataclass cost 0.5 µs per call to make)."""
    flags: int
    call_id: int
    device: int
    seq: int


_new_request = tuple.__new__    # Request(...) without NamedTuple's Python-level __new__


def parse_request_header(frame: bytes | memoryview) -> Request:
    if len(frame) < HEADER_SIZE:
        raise WireError(f"request of {len(frame)} bytes is shorter than its header")
    magic, version, flags, call_id, device, _, seq = REQUEST.unpack_from(frame)
    if magic != MAGIC:
        raise WireError(f"bad magic 0x{magic:08x}")
    if version != VERSION:
        raise WireError(f"protocol version {version}, this server speaks {VERSION}")
    return _new_request(Request, (flags, call_id, device, seq))


def pack_request_header(call_id: int, seq: int, flags: int = 0, device: int = 0) -> bytes:
    return REQUEST.pack(MAGIC, VERSION, flags, call_id, device, 0, seq)


def pack_reply_header(status: int, seq: int, flags: int = 0) -> bytes:
    return REPLY.pack(MAGIC, VERSION, flags, status, 0, seq)


def parse_reply_header(frame: bytes | memoryview) -> tuple[int, int]:
    magic, version, _, status, _, seq = REPLY.unpack_from(frame)
    if magic != MAGIC or version != VERSION:
        raise WireError("bad reply header")
    return status, seq


def _plan(call: Call) -> tuple:
    """The decoding plan of a call, made once (keyed by name: hashing the frozen Call
    itself would cost more than decoding)."""
    plan = _PLANS.get(call.name)
    if plan is None:
        plan = _PLANS[call.name] = _make_plan(call)
    return plan


_PLANS: dict[str, tuple] = {}


def _make_plan(call: Call) -> tuple:
    """How to decode a call's arguments, fixed once per call: runs of fixed-size
    parameters (values, and the lengths of buffers) become one struct unpack each; an
    optional `in` or a string starts a step of its own. This is the hot path of every
    call, so it is kept to a few C-level unpacks."""
    steps, fmt, kinds = [], "", []
    for p in call.params:
        if p.kind in ("val", "inout", "in_buf", "out_buf"):
            fmt += "Q" if p.kind in ("in_buf", "out_buf") else p.fmt
            kinds.append(p.kind)
        elif p.kind in ("in", "str"):
            if kinds:
                steps.append(("fixed", struct.Struct("<" + fmt), tuple(kinds)))
                fmt, kinds = "", []
            steps.append((p.kind, struct.Struct("<" + p.fmt) if p.kind == "in" else None, ()))
    if kinds:
        steps.append(("fixed", struct.Struct("<" + fmt), tuple(kinds)))
    return tuple(steps)


def out_buf_positions(call: Call) -> tuple[int, ...]:
    """Where the requested lengths of out_buf parameters sit among the decoded args."""
    positions = _OUT_BUFS.get(call.name)
    if positions is None:
        inputs = [p for p in call.params if p.kind != "out"]
        positions = _OUT_BUFS[call.name] = tuple(i for i, p in enumerate(inputs)
                                                 if p.kind == "out_buf")
    return positions


_OUT_BUFS: dict[str, tuple[int, ...]] = {}


def decode_args(call: Call, frame: memoryview, bulk: list[memoryview]) -> list:
    """The handler's arguments: every non-`out` parameter in order.

    val/inout -> the decoded value (int, float, or bytes for structs); in -> bytes or
    None; str -> str; in_buf -> memoryview of its frame; out_buf -> the requested length.
    """
    args, pos, next_bulk = [], HEADER_SIZE, 0
    try:
        for step, layout, kinds in _plan(call):
            if step == "fixed":
                values = layout.unpack_from(frame, pos)
                pos += layout.size
                if "in_buf" not in kinds:
                    args.extend(values)
                    continue
                for kind, value in zip(kinds, values):
                    if kind == "in_buf":
                        if next_bulk >= len(bulk) or len(bulk[next_bulk]) != value:
                            raise WireError(f"{call.name}: a buffer of {value} bytes "
                                            "is missing")
                        value = bulk[next_bulk]
                        next_bulk += 1
                    args.append(value)
            elif step == "in":
                (present,) = _U8.unpack_from(frame, pos)
                pos += 1
                if present:
                    args.append(layout.unpack_from(frame, pos)[0])
                    pos += layout.size
                else:
                    args.append(None)
            else:
                (n,) = _U32.unpack_from(frame, pos)
                if pos + 4 + n > len(frame):
                    raise WireError(f"{call.name}: a string runs past the frame")
                args.append(bytes(frame[pos + 4: pos + 4 + n]).decode())
                pos += 4 + n
    except struct.error as e:
        raise WireError(f"{call.name}: truncated arguments ({e})") from None
    except UnicodeDecodeError:
        raise WireError(f"{call.name}: a string argument is not UTF-8") from None
    if pos != len(frame) or next_bulk != len(bulk):
        raise WireError(f"{call.name}: {len(frame) - pos} stray bytes, "
                        f"{len(bulk) - next_bulk} stray frames")
    return args


def encode_outs(call: Call, outs: tuple, out_buf_sizes: list[int]) -> tuple[bytes, list]:
    """Pack a handler's outputs (out/inout/out_buf values, in parameter order)."""
    packed, frames = [], []
    expected = [p for p in call.params if p.kind in ("out", "inout", "out_buf")]
    if len(outs) != len(expected):
        raise TypeError(f"{call.name}: handler returned {len(outs)} outputs, "
                        f"the call has {len(expected)}")
    sizes = iter(out_buf_sizes)
    for p, value in zip(expected, outs):
        if p.kind == "out_buf":
            size = next(sizes)
            if len(value) != size:
                raise TypeError(f"{call.name}: {p.name} is {len(value)} bytes, asked {size}")
            frames.append(value)
        else:
            packed.append(struct.pack("<" + p.fmt, value))
    return b"".join(packed), frames
