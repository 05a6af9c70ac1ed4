"""Calls the client's hand-written C builds itself (not through a generated stub) must
match the generated table: same id, same argument layout."""
from __future__ import annotations

import re
from pathlib import Path

from orion_server.generated.cudart_table import CALLS

ROOT = Path(__file__).resolve().parents[2]


def test_memory_c_builds_orionMemcpyDtoH_as_the_generated_stub_does():
    source = (ROOT / "native" / "src" / "memory.c").read_text()
    (call_id,) = re.findall(r"#define CALL_MEMCPY_DTOH (0x[0-9a-fA-F]+)u", source)
    call = CALLS[int(call_id, 16)]
    assert call.name == "orionMemcpyDtoH" and not call.is_async
    assert [(p.kind, p.fmt) for p in call.params] == [
        ("out_buf", "Q"), ("val", "Q"), ("val", "Q"), ("val", "Q")]
    # dtoh_chunk puts them in this order: the out_buf's length, src, count, stream
    body = source[source.index("static void dtoh_chunk"):]
    body = body[:body.index("\n}\n")]
    assert re.findall(r"orion_(expect_buf|put)\(m, [^,]+", body) == [
        "expect_buf", "put", "put", "put"]


def test_memory_c_builds_orionMemcpyShm_as_the_generated_stub_does():
    source = (ROOT / "native" / "src" / "memory.c").read_text()
    (call_id,) = re.findall(r"#define CALL_MEMCPY_SHM (0x[0-9a-fA-F]+)u", source)
    call = CALLS[int(call_id, 16)]
    assert call.name == "orionMemcpyShm" and not call.is_async
    assert [(p.kind, p.fmt) for p in call.params] == [
        ("val", "Q"), ("val", "Q"), ("val", "Q"), ("val", "I"), ("val", "Q")]
    # chunk_call puts dst, src, count, kind (an enum: 4 bytes), stream
    body = source[source.index("static cudaError_t chunk_call"):]
    body = body[:body.index("\n}\n")]
    assert re.findall(r"orion_put\(&m, &(\w+), sizeof", body) == [
        "dst", "src", "n", "kind", "stream"]
