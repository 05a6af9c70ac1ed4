"""Combine a library's headers with its spec (e.g. cudart.toml) into a `Library` model."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:   # Python < 3.11
    import tomli as tomllib

from . import headers, layout
from .model import CType, Function, Kind, Library, Param

SPEC_DIR = Path(__file__).parent
_PER_THREAD_SUFFIXES = ("_ptds", "_ptsz")


class SpecError(ValueError):
    """The spec and the header disagree, or a forwarded call cannot be laid out."""


def infer_kind(ctype: str) -> Kind | None:
    """The default wire kind of a parameter type; None where the spec must say."""
    if ctype == "const char *":
        return Kind.STR
    if "*" not in ctype or ctype in ("void *", "const void *"):
        return Kind.VAL
    if ctype.count("*") > 1 and ctype != "void **":
        return None                           # arrays of pointers need a length
    if ctype.startswith("const "):
        return Kind.IN
    return Kind.OUT


def _pointee(ctype: str) -> str:
    """The type a single-level pointer points to, without qualifiers."""
    base = ctype[: ctype.rindex("*")].strip()
    base = base.removesuffix("const").strip().removeprefix("const ").strip()
    return base or "void"


def _value_type(ctype: str, kind: Kind) -> str:
    """The type whose bytes travel for this parameter."""
    if kind in (Kind.OUT, Kind.IN, Kind.INOUT):
        return _pointee(ctype)
    return ctype.replace("const ", "") if kind == Kind.VAL else ctype


def _parse_kind(text: str) -> tuple[Kind, str | None]:
    name, _, length = text.partition(":")
    kind = Kind(name)
    if (kind in (Kind.IN_BUF, Kind.OUT_BUF)) != bool(length):
        raise SpecError(f"kind {text!r}: in_buf/out_buf take a length, others do not")
    return kind, length or None


def load(spec_path: Path, include_dir: Path | None = None) -> Library:
    spec_text = spec_path.read_bytes()
    spec = tomllib.loads(spec_text.decode())
    include_dir = include_dir or headers.cuda_include_dir(spec["headers"][0],
                                                          spec.get("header_package"))
    defines = tuple(spec.get("defines", ()))
    plain = bool(spec.get("plain_declarations"))

    decls = {}
    for header in spec["headers"]:
        for d in headers.read_header(include_dir / header, include_dir, defines, plain):
            decls.setdefault(d.name, d)
    aliases: dict[str, list[str]] = {}
    if spec.get("per_thread_define"):
        for header in spec["headers"]:
            for d in headers.read_header(include_dir / header, include_dir,
                                         (spec["per_thread_define"],)):
                base = d.name.removesuffix("_ptds").removesuffix("_ptsz")
                if d.name.endswith(_PER_THREAD_SUFFIXES) and base in decls:
                    aliases.setdefault(base, []).append(d.name)
    for name, entry in spec.get("internal", {}).items():
        (d,) = headers.parse_declarations(f"extern {entry['decl']};")
        if d.name != name or name in decls:
            raise SpecError(f"internal call {name}: bad or clashing declaration")
        decls[name] = d

    forward = spec.get("forward", {})
    internal = spec.get("internal", {})
    manual = set(spec.get("manual", []))
    for name in list(forward) + list(manual):
        if name not in decls:
            raise SpecError(f"{name} is in the spec but not declared in {spec['headers']}")
    if overlap := manual & set(forward):
        raise SpecError(f"both manual and forwarded: {sorted(overlap)}")

    # First pass: kinds; then measure every type that travels, in one compiler run.
    planned = {}
    for name, d in decls.items():
        entry = forward[name] if name in forward else internal.get(name)
        kinds = []
        for p in d.params:
            override = (entry or {}).get("params", {}).get(p.name)
            kind, length = _parse_kind(override) if override else (infer_kind(p.ctype), None)
            if entry is not None and kind is None:
                raise SpecError(f"{name}({p.ctype} {p.name}): say its kind in the spec")
            kinds.append((kind, length))
        if entry is not None:
            for extra in set(entry.get("params", {})) - {p.name for p in d.params}:
                raise SpecError(f"{name}: the spec names an unknown parameter {extra!r}")
        planned[name] = kinds
    wanted = {_value_type(p.ctype, k) for name, d in decls.items() if name in forward or name in internal
              for p, (k, _) in zip(d.params, planned[name]) if k is not None}
    measured = layout.measure(sorted(wanted), list(spec["headers"]), include_dir)

    functions = []
    for name, d in sorted(decls.items()):
        entry = forward[name] if name in forward else internal.get(name)
        params = []
        for p, (kind, length) in zip(d.params, planned[name]):
            if entry is None or kind is None:
                ctype = CType(p.ctype, None, 0, "")
            else:
                vt = _value_type(p.ctype, kind)
                size, fmt = measured[vt]
                ctype = CType(p.ctype, vt if kind in (Kind.IN, Kind.OUT, Kind.INOUT) else None,
                              size, fmt)
            params.append(Param(p.name, ctype, kind or Kind.VAL, length))
        functions.append(Function(
            name=name, ret=d.ret, params=tuple(params),
            forwarded=name in forward, manual=name in manual, internal=name in internal,
            is_async=bool((entry or {}).get("async")),
            exported_aliases=tuple(sorted(aliases.get(name, ())))))

    ids = {}
    for f in functions:
        if f.forwarded or f.internal:
            if f.call_id in ids:
                raise SpecError(f"call id clash: {f.name} and {ids[f.call_id]}")
            ids[f.call_id] = f.name
    macro = spec.get("version_macro", "CUDART_VERSION")
    version = re.search(rf"#define {macro}\s+(\d+)", (include_dir / spec["headers"][0]).read_text())
    return Library(name=spec["library"], soname=spec["soname"],
                   header_version=version.group(1) if version else "unknown",
                   spec_hash=hashlib.sha256(spec_text).hexdigest()[:16],
                   functions=tuple(functions),
                   entry_points=tuple(spec.get("entry_points", ())),
                   version_node=spec.get("version_node", spec["soname"]),
                   error_type=spec.get("error_type", "cudaError_t"),
                   unsupported_call=spec.get("unsupported_call", "orion_unsupported"),
                   stub_include=spec.get("stub_include", "orion.h"))
