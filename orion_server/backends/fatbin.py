"""CUDA fat binaries as nvcc embeds them: their kernels' parameter layouts and
resources, and their device variables' sizes and initial bytes.

This is what the host backend needs to check launches and symbol copies the way the
driver would; nothing here runs device code. The layouts below were read off nvcc 13
output and are checked against binaries compiled at test time (tests/unit/test_fatbin.py).

Fat binary: a 16-byte header (u32 magic, u16 version, u16 header size, u64 size of the
entries), then entries, each a header (u16 kind, u16 version, u32 header size, u64
payload size, ..., u32 architecture at byte 28, u64 flags at byte 40) and its payload:
a cubin (ELF) or PTX.

Cubin: each kernel is a FUNC symbol marked as an entry point; its section
`.nv.info.<name>` holds attribute records, among them one per parameter, and the
module-wide `.nv.info` its register count and stack frame. Device
variables are OBJECT symbols in `.nv.global` (no initial bytes), `.nv.global.init` or a
user constant bank `.nv.constant<N>` (bank 0 holds the kernels' parameters instead).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, replace

from ..backend import CudaError

cudaErrorInvalidKernelImage = 200
cudaErrorNoKernelImageForDevice = 209
cudaErrorNotSupported = 801

FATBIN_MAGIC = 0xBA55ED50
_FATBIN_HEADER = struct.Struct("<IHHQ")
_ENTRY_HEADER = struct.Struct("<HHIQ")
_ENTRY_ARCH = struct.Struct("<I")
_ENTRY_ARCH_AT = 28                      # 75 for sm_75 / compute_75
_ENTRY_FLAGS = struct.Struct("<Q")
_ENTRY_FLAGS_AT = 40
ENTRY_PTX, ENTRY_ELF = 1, 2
# Entry flags of a compressed payload: the older LZ-style scheme and zstd (nvcc 12.8+,
# which compresses PTX by default and cubins with -Xfatbin -compress-all).
_COMPRESSED = 0x2000 | 0x8000

_SECTION = struct.Struct("<IIQQQQIIQQ")  # name, type, flags, addr, offset, size, link, info, ..
_SYMBOL = struct.Struct("<IBBHQQ")       # name, info, other, section, value, size
_SHT_SYMTAB, _SHT_NOBITS = 2, 8
_STT_OBJECT, _STT_FUNC = 1, 2
_STO_CUDA_ENTRY = 0x10                   # st_other bit of a __global__ function
_SHN_LORESERVE = 0xFF00

# .nv.info records: u8 format, u8 attribute. Format 4 carries a u16 size and that many
# bytes; the others carry a fixed 2-byte value (4-byte records).
_EIFMT_SVAL = 0x04
_EIFMT_FIXED = (0x01, 0x02, 0x03)
# A parameter: u32 index, u16 ordinal, u16 offset, then u32 flags with the size in bits
# 18..31 (v1), or a plain u32 size (v2, which nvcc uses when the parameters are large).
_EIATTR_KPARAM_INFO = 0x17
_EIATTR_KPARAM_INFO_V2 = 0x45
_KPARAM = struct.Struct("<IHHI")
# Module-wide records (u32 symbol index, u32 amount): registers and stack frame per thread.
_EIATTR_REGCOUNT = 0x2F
_EIATTR_FRAME_SIZE = 0x11
_U32_PAIR = struct.Struct("<II")
_EIATTR_MAX_THREADS = 0x05               # __launch_bounds__: u32 x, y, z
_RESERVED_SHARED = 1024


@dataclass(frozen=True)
class Kernel:
    name: str
    params: tuple[tuple[int, int], ...]   # (offset, size) in ordinal order
    registers: int = 0                    # per thread
    shared: int = 0                       # static shared memory, bytes
    local: int = 0                        # local memory (stack frame) per thread, bytes
    max_threads: int = 0                  # __launch_bounds__ (x*y*z); 0: none

    @property
    def param_end(self) -> int:
        """Bytes of the packed argument buffer a launch must supply."""
        return max((offset + size for offset, size in self.params), default=0)


@dataclass(frozen=True)
class Variable:
    name: str
    size: int
    init: bytes     # the initial bytes; shorter than size (empty in .nv.global): zeros follow


@dataclass(frozen=True)
class Cubin:
    arch: int                             # 75 for sm_75
    kernels: dict[str, Kernel]
    variables: dict[str, Variable]


@dataclass(frozen=True)
class Image:
    cubins: tuple[Cubin, ...]
    ptx: tuple[int, ...]                  # virtual architectures of the PTX entries

    def for_device(self, major: int, minor: int) -> Cubin:
        """The code the driver would run on a device of this compute capability: the
        newest cubin of the same major version not above it, else PTX compiled for it
        (whose kernels and variables are those of any cubin of the same source)."""
        cc = major * 10 + minor
        fits = [c for c in self.cubins if c.arch // 10 == major and c.arch <= cc]
        if fits:
            return max(fits, key=lambda c: c.arch)
        if any(arch <= cc for arch in self.ptx):
            return replace(self.cubins[0], arch=cc)
        raise CudaError(cudaErrorNoKernelImageForDevice,
                        f"no code for compute capability {major}.{minor}: cubins "
                        f"{[c.arch for c in self.cubins]}, PTX {list(self.ptx)}")


def parse_fatbin(data: bytes | memoryview) -> Image:
    """The cubins and PTX architectures in `data`; raises only CudaError."""
    data = bytes(data)
    try:
        return _parse(data)
    except (struct.error, IndexError, ValueError, OverflowError) as e:  # UnicodeDecodeError too
        raise CudaError(cudaErrorInvalidKernelImage, f"malformed fat binary: {e}") from None


def _parse(data: bytes) -> Image:
    cubins, ptx, compressed = [], [], 0
    for kind, arch, flags, payload in _entries(data):
        if kind == ENTRY_PTX:
            ptx.append(arch)
        elif kind == ENTRY_ELF and flags & _COMPRESSED:
            compressed += 1
        elif kind == ENTRY_ELF:
            cubins.append(parse_cubin(payload, arch))
    if cubins:
        return Image(tuple(cubins), tuple(ptx))
    if compressed:
        raise CudaError(cudaErrorNotSupported,
                        "the fat binary's cubins are compressed, which the host backend cannot "
                        "read: build with nvcc --no-compress (or --compress-mode=none)")
    if ptx:
        raise CudaError(cudaErrorNoKernelImageForDevice,
                        "the fat binary holds PTX only; the host backend reads cubins: "
                        "build with code=sm_XX")
    raise CudaError(cudaErrorInvalidKernelImage, "no fat binary entries")


def _entries(data: bytes):
    """(kind, arch, flags, payload) of every entry of the fat binary at the start of
    data; bytes after it (the next fat binary of a host ELF section) are not its own."""
    magic, _, header_size, size = _FATBIN_HEADER.unpack_from(data)
    if magic != FATBIN_MAGIC:
        raise ValueError(f"bad fat binary magic 0x{magic:08x}")
    entry, end = header_size, header_size + size
    if header_size < _FATBIN_HEADER.size or end > len(data):
        raise ValueError("fat binary runs past its buffer")
    while entry < end:
        kind, _, entry_header_size, payload_size = _ENTRY_HEADER.unpack_from(data, entry)
        (arch,) = _ENTRY_ARCH.unpack_from(data, entry + _ENTRY_ARCH_AT)
        (flags,) = _ENTRY_FLAGS.unpack_from(data, entry + _ENTRY_FLAGS_AT)
        start = entry + entry_header_size
        if entry_header_size < _ENTRY_FLAGS_AT + 8 or start + payload_size > end:
            raise ValueError("fat binary entry runs past its fat binary")
        yield kind, arch, flags, data[start:start + payload_size]
        entry = start + payload_size


def parse_cubin(elf: bytes, arch: int) -> Cubin:
    """Kernels and variables of one cubin; raises ValueError/struct.error if malformed."""
    sections = _sections(elf)
    by_name = {s.name: s for s in sections}
    symbols = _symbols(elf, sections)
    # per-kernel resources the compiler lists in the module-wide .nv.info, by symbol index
    resources = {_EIATTR_REGCOUNT: {}, _EIATTR_FRAME_SIZE: {}}
    if ".nv.info" in by_name:
        for attr, value in _records(elf, by_name[".nv.info"]):
            if attr in resources:
                index, amount = _U32_PAIR.unpack_from(value)
                if index < len(symbols):
                    resources[attr][symbols[index].name] = amount
    # sm_90 and later put the driver's reserved region at the start of the section
    reserved = _RESERVED_SHARED if ".nv.shared.reserved.0" in by_name else 0
    kernels, variables = {}, {}
    for sym in symbols:
        kind = sym.info & 0xF
        if not 0 < sym.section < min(len(sections), _SHN_LORESERVE):
            continue   # undefined or special
        home = sections[sym.section]
        if kind == _STT_FUNC and sym.other & _STO_CUDA_ENTRY:
            info = by_name.get(".nv.info." + sym.name)
            params, max_threads = _kernel_info(elf, info) if info else ((), 0)
            shared = by_name.get(".nv.shared." + sym.name)
            kernels.setdefault(sym.name, Kernel(
                sym.name, params, resources[_EIATTR_REGCOUNT].get(sym.name, 0),
                max(shared.size - reserved, 0) if shared else 0,
                resources[_EIATTR_FRAME_SIZE].get(sym.name, 0), max_threads))
        elif kind == _STT_OBJECT and _is_variable_section(home.name):
            if sym.value + sym.size > home.size:
                raise ValueError(f"variable {sym.name} runs past its section")
            init = b"" if home.type == _SHT_NOBITS else _slice(elf, home.offset + sym.value,
                                                                 sym.size)
            variables.setdefault(sym.name, Variable(sym.name, sym.size, init))
    return Cubin(arch, kernels, variables)


def _is_variable_section(name: str) -> bool:
    if name in (".nv.global", ".nv.global.init"):
        return True
    bank = name[len(".nv.constant"):]
    return name.startswith(".nv.constant") and bank.isdigit() and bank != "0"


@dataclass(frozen=True)
class _Section:
    name: str
    type: int
    offset: int
    size: int
    link: int


@dataclass(frozen=True)
class _Symbol:
    name: str
    info: int
    other: int
    section: int
    value: int
    size: int


def _slice(data: bytes, start: int, size: int) -> bytes:
    if start < 0 or size < 0 or start + size > len(data):
        raise ValueError("reference past the end of the cubin")
    return data[start:start + size]


def _cstr(data: bytes, start: int) -> str:
    end = data.index(b"\0", start)    # ValueError if unterminated
    return data[start:end].decode()


def _sections(elf: bytes) -> list[_Section]:
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        raise ValueError("cubin is not a little-endian 64-bit ELF")
    (shoff,) = struct.unpack_from("<Q", elf, 0x28)
    entsize, count, strndx = struct.unpack_from("<HHH", elf, 0x3A)
    if entsize != _SECTION.size or strndx >= count:
        raise ValueError("bad ELF section table")
    raw = [_SECTION.unpack(_slice(elf, shoff + i * entsize, entsize)) for i in range(count)]
    names = raw[strndx]
    sections = []
    for name, type_, _, _, offset, size, link, _, _, _ in raw:
        if type_ != _SHT_NOBITS:
            _slice(elf, offset, size)      # every section with bytes lies inside the ELF
        if name >= names[5]:
            raise ValueError("section name past the section name table")
        sections.append(_Section(_cstr(elf, names[4] + name), type_, offset, size, link))
    return sections


def _symbols(elf: bytes, sections: list[_Section]) -> list[_Symbol]:
    symbols = []
    for table in sections:
        if table.type != _SHT_SYMTAB or table.link >= len(sections):
            continue
        strings = sections[table.link]
        for pos in range(table.offset, table.offset + table.size - _SYMBOL.size + 1,
                         _SYMBOL.size):
            name, info, other, section, value, size = _SYMBOL.unpack_from(elf, pos)
            if name >= strings.size:
                raise ValueError("symbol name past its string table")
            symbols.append(_Symbol(_cstr(elf, strings.offset + name), info, other, section,
                                   value, size))
    return symbols


def _records(elf: bytes, section: _Section):
    """(attribute, value bytes) of each record of a .nv.info section."""
    records = _slice(elf, section.offset, section.size)
    pos = 0
    while pos + 4 <= len(records):
        fmt, attr = records[pos], records[pos + 1]
        if fmt in _EIFMT_FIXED:
            yield attr, records[pos + 2:pos + 4]
            pos += 4
        elif fmt == _EIFMT_SVAL:
            (size,) = struct.unpack_from("<H", records, pos + 2)
            yield attr, _slice(records, pos + 4, size)
            pos += 4 + size
        else:
            raise ValueError(f"unknown .nv.info record format {fmt:#x}")


def _kernel_info(elf: bytes, info: _Section) -> tuple[tuple[tuple[int, int], ...], int]:
    """A kernel's parameters (offset, size) by ordinal, and its __launch_bounds__."""
    by_ordinal: dict[int, tuple[int, int]] = {}
    max_threads = 0
    for attr, value in _records(elf, info):
        if attr in (_EIATTR_KPARAM_INFO, _EIATTR_KPARAM_INFO_V2):
            _, ordinal, offset, word = _KPARAM.unpack_from(value)
            size = (word >> 18) & 0x3FFF if attr == _EIATTR_KPARAM_INFO else word
            by_ordinal[ordinal] = (offset, size)
        elif attr == _EIATTR_MAX_THREADS:
            x, y, z = struct.unpack_from("<III", value)
            max_threads = x * y * z
    if sorted(by_ordinal) != list(range(len(by_ordinal))):
        raise ValueError(f"{info.name}: parameter ordinals {sorted(by_ordinal)} have gaps")
    return tuple(by_ordinal[i] for i in range(len(by_ordinal))), max_threads
