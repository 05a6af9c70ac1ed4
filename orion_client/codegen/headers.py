"""Read C function declarations out of a library's public headers.

The header is run through the C preprocessor (so every macro, guard and version test
is resolved exactly as a C compiler sees it), attributes are dropped, and each
`extern RET NAME(PARAMS);` becomes a `Decl`. Headers that declare functions without
`extern` (nvml.h) are read line by line instead: a statement that starts a line with a
plain return type. Parsing the preprocessed text is enough for these headers: they
declare functions one per statement, without K&R forms.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

_ATTRIBUTE = re.compile(r"__attribute__\s*\(\((?:[^()]|\((?:[^()]|\([^()]*\))*\))*\)\)")
_DECL = re.compile(r"extern\s+([^;{}()]*?)\b(\w+)\s*\(([^;{}]*?)\)\s*;", re.S)
_PLAIN_DECL = re.compile(
    r"^[ \t]*(?!typedef\b)([A-Za-z_][\w \t*]*?)\b(\w+)\s*\(([^;{}]*?)\)\s*;", re.M)
_PARAM = re.compile(r"^(.*?)\s*\b(\w+)$")


@dataclass(frozen=True)
class RawParam:
    ctype: str   # normalised spelling, e.g. "const struct cudaExtent *"
    name: str


@dataclass(frozen=True)
class Decl:
    name: str
    ret: str
    params: tuple[RawParam, ...]


def cuda_include_dir(header: str = "cuda_runtime_api.h", package: str | None = None) -> Path:
    """The directory holding `header`: the pip `package` that ships it (pinned, so the
    generated files do not depend on the machine), else $CUDA_HOME/include, else next to
    nvcc, else /usr/local/cuda."""
    candidates = _package_dirs(package, header) if package else []
    if os.environ.get("CUDA_HOME"):
        candidates.append(Path(os.environ["CUDA_HOME"]) / "include")
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(Path(nvcc).resolve().parent.parent / "include")
    candidates.append(Path("/usr/local/cuda/include"))
    for path in candidates:
        if (path / header).exists():
            return path
    hint = f"pip install {package}, or " if package else ""
    raise FileNotFoundError(
        f"{header} not found: {hint}set CUDA_HOME to a CUDA 13 toolkit "
        "(searched: " + ", ".join(map(str, candidates)) + ")")


def _package_dirs(package: str, header: str) -> list[Path]:
    """Directories of the installed distribution `package` that hold `header`."""
    from importlib import metadata
    try:
        dist = metadata.distribution(package)
    except metadata.PackageNotFoundError:
        return []
    return [Path(dist.locate_file(f)).parent for f in dist.files or ()
            if f.name == header]


def preprocess(header: Path, include_dir: Path, defines: tuple[str, ...] = ()) -> str:
    cmd = ["gcc", "-E", "-P", "-x", "c", f"-I{include_dir}"]
    cmd += [f"-D{d}" for d in defines] + [str(header)]
    return subprocess.run(cmd, check=True, capture_output=True, text=True).stdout


def normalise_type(spelling: str) -> str:
    """One spelling per type: single spaces, '*' set apart ("void*" -> "void *")."""
    spelling = re.sub(r"\s*\*\s*", " * ", spelling)
    return " ".join(spelling.split()).replace("* *", "**").replace("* const", "*const")


def parse_declarations(text: str, plain: bool = False) -> list[Decl]:
    """`plain`: the header declares functions without `extern` (one per line start)."""
    text = _ATTRIBUTE.sub("", text)
    decls = []
    for ret, name, params in (_PLAIN_DECL if plain else _DECL).findall(text):
        raw = []
        params = " ".join(params.split())
        if params and params != "void":
            for i, p in enumerate(params.split(",")):
                match = _PARAM.match(p.strip())
                if not match or not match.group(1):   # unnamed parameter: invent a name
                    raw.append(RawParam(normalise_type(p), f"arg{i}"))
                else:
                    raw.append(RawParam(normalise_type(match.group(1)), match.group(2)))
        decls.append(Decl(name, normalise_type(ret), tuple(raw)))
    return decls


def read_header(header: Path, include_dir: Path, defines: tuple[str, ...] = (),
                plain: bool = False) -> list[Decl]:
    return parse_declarations(preprocess(header, include_dir, defines), plain)
