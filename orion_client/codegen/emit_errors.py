"""Emit the table behind cudaGetErrorName / cudaGetErrorString, from driver_types.h.

Names are the enumerators of the header. Strings are the ones applications see from
the real runtime ("no error", "out of memory", ...), which cuda-python's runtime
bindings carry; codes it does not know get the first sentence of their documentation
comment in the header.
"""
from __future__ import annotations

import re
from pathlib import Path
from string import Template

from .model import Library

_ENUM = re.compile(r"enum\s+__device_builtin__\s+cudaError\s*\{(.*?)\};", re.S)
_ENTRY = re.compile(r"/\*\*(.*?)\*/\s*(cudaError\w+|cudaSuccess)\s*=\s*(\d+)", re.S)

FILE = Template("""\
$banner
#include <stddef.h>

/* (code, name, string), ordered by code */
const struct orion_error_text { int code; const char *name; const char *text; }
orion_error_texts[] = {
$rows
};
const size_t orion_error_text_count = sizeof orion_error_texts / sizeof orion_error_texts[0];
""")


def _first_sentence(doc: str) -> str:
    text = " ".join(line.strip().lstrip("*").strip() for line in doc.splitlines()).strip()
    text = re.sub(r"\\ref\s+|::|\\p\s+|\\e\s+", "", text)
    sentence = re.split(r"(?<=[a-z0-9)])\.\s", text + " ", maxsplit=1)[0].rstrip(". ")
    return sentence.replace("\\", "\\\\").replace('"', '\\"')


def _runtime_string(code: int) -> str | None:
    from cuda.bindings import runtime
    try:
        err, text = runtime.cudaGetErrorString(runtime.cudaError_t(code))
    except ValueError:
        return None
    return text.decode().replace("\\", "\\\\").replace('"', '\\"') if err == 0 else None


def error_table(lib: Library, banner: str, include_dir: Path) -> str:
    body = _ENUM.search((include_dir / "driver_types.h").read_text()).group(1)
    entries = sorted({int(code): (name, _runtime_string(int(code)) or _first_sentence(doc))
                      for doc, name, code in _ENTRY.findall(body)}.items())
    rows = "\n".join(f'    {{{code}, "{name}", "{text}"}},' for code, (name, text) in entries)
    return FILE.substitute(banner=banner, rows=rows)
