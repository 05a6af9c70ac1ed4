"""Calls the client's hand-written C builds itself (not through a generated stub) must
match the generated table: the generated id (cudart_internal.h), the same argument
layout."""
from __future__ import annotations

import re
from pathlib import Path

from orion_server.generated.cudart_table import CALLS

ROOT = Path(__file__).resolve().parents[2]


def test_memory_c_builds_orionMemcpyDtoH_as_the_generated_stub_does():
    source = (ROOT / "native" / "src" / "memory.c").read_text()
    assert "orion_begin(m, ORION_CALL_ID_orionMemcpyDtoH, 0)" in source
    call = next(c for c in CALLS.values() if c.name == "orionMemcpyDtoH")
    assert not call.is_async
    assert [(p.kind, p.fmt) for p in call.params] == [
        ("out_buf", "Q"), ("val", "Q"), ("val", "Q"), ("val", "Q")]
    # dtoh_chunk puts them in this order: the out_buf's length, src, count, stream
    body = source[source.index("static void dtoh_chunk"):]
    body = body[:body.index("\n}\n")]
    assert re.findall(r"orion_(expect_buf|put)\(m, [^,]+", body) == [
        "expect_buf", "put", "put", "put"]


def test_memory_c_builds_orionMemcpyShm_as_the_generated_stub_does():
    source = (ROOT / "native" / "src" / "memory.c").read_text()
    assert "orion_begin(&m, ORION_CALL_ID_orionMemcpyShm, 0)" in source
    call = next(c for c in CALLS.values() if c.name == "orionMemcpyShm")
    assert not call.is_async
    assert [(p.kind, p.fmt) for p in call.params] == [
        ("val", "Q"), ("val", "Q"), ("val", "Q"), ("val", "I"), ("val", "Q")]
    # chunk_call puts dst, src, count, kind (an enum: 4 bytes), stream
    body = source[source.index("static cudaError_t chunk_call"):]
    body = body[:body.index("\n}\n")]
    assert re.findall(r"orion_put\(&m, &(\w+), sizeof", body) == [
        "dst", "src", "n", "kind", "stream"]


def test_memory_c_builds_orionMemcpyHtoD_as_the_generated_stubs_do():
    source = (ROOT / "native" / "src" / "memory.c").read_text()
    body = source[source.index("static cudaError_t htod_chunk"):]
    body = body[:body.index("\n}\n")]
    assert ("wait ? ORION_CALL_ID_orionMemcpyHtoD : ORION_CALL_ID_orionMemcpyHtoDAsync"
            in body)
    assert "wait ? 0 : ORION_ASYNC" in body
    for name, is_async in (("orionMemcpyHtoD", False), ("orionMemcpyHtoDAsync", True)):
        call = next(c for c in CALLS.values() if c.name == name)
        assert call.is_async == is_async
        assert [(p.kind, p.fmt) for p in call.params] == [
            ("val", "Q"), ("in_buf", "Q"), ("val", "Q"), ("val", "Q")]
    # htod_chunk puts dst, the bytes (their length), count, stream
    assert re.findall(r"orion_put(?:_buf)?\(&m, &?(\w+)", body) == [
        "dst", "src", "n", "stream"]
