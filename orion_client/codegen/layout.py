"""Measure C types with the C compiler, so the wire layout is never guessed.

One throw-away program includes the library header and prints, per type, its size and
GCC's type class. Pointers and handles travel as 8-byte addresses, integers and enums by
their size and signedness, floating types as such, structs and unions as raw bytes.
"""
from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

# __builtin_classify_type results (gcc/typeclass.h)
_INTEGER, _ENUM, _BOOL, _POINTER, _REAL = 1, 3, 4, 5, 8
_INT_FORMATS = {(1, True): "b", (1, False): "B", (2, True): "h", (2, False): "H",
                (4, True): "i", (4, False): "I", (8, True): "q", (8, False): "Q"}


def _run_probe(headers: list[str], include_dir: Path, body: list[str]) -> list[str]:
    program = "\n".join([f"#include <{h}>" for h in headers] + ["#include <stdio.h>",
                          "int main(void) {", *body, "  return 0;", "}"])
    with tempfile.TemporaryDirectory() as tmp:
        src, exe = Path(tmp) / "probe.c", Path(tmp) / "probe"
        src.write_text(program)
        subprocess.run(["gcc", "-w", f"-I{include_dir}", "-o", str(exe), str(src)],
                       check=True, capture_output=True, text=True)
        return subprocess.run([str(exe)], check=True, capture_output=True,
                              text=True).stdout.splitlines()


def measure(types: list[str], headers: list[str], include_dir: Path) -> dict[str, tuple[int, str]]:
    """Map each type spelling to (size, struct-module format)."""
    types = sorted(set(types))
    shapes = _run_probe(headers, include_dir, [
        f'  {{ {t} v; printf("%zu %d\\n", sizeof v, __builtin_classify_type(v)); }}'
        for t in types])
    shapes = [tuple(int(x) for x in line.split()) for line in shapes]
    integers = [t for t, (_, klass) in zip(types, shapes) if klass in (_INTEGER, _BOOL)]
    signed = dict(zip(integers, (line == "1" for line in _run_probe(
        headers, include_dir,
        [f'  printf("%d\\n", (int)(({t})-1 < ({t})0));' for t in integers]))))
    result = {}
    for t, (size, klass) in zip(types, shapes):
        if klass == _POINTER:
            fmt = "Q"
        elif klass == _REAL:
            fmt = {4: "f", 8: "d"}[size]
        elif klass in (_INTEGER, _BOOL, _ENUM):
            fmt = _INT_FORMATS[(size, klass == _ENUM or signed[t])]
        else:
            fmt = f"{size}s"
        result[t] = (size, fmt)
    return result
