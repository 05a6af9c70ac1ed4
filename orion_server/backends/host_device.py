"""The simulated GPUs of the host backend: their attributes, identity and PCI address.

Values are those a real GPU of the same compute capability reports (an H100 for 9.0),
so that programs querying the device see numbers they can plan with; only the SM
count, name and memory come from the backend's configuration.
"""
from __future__ import annotations

import re

from .fatbin import Kernel

DEFAULT_DEVICE = {
    "name": "Orion Host Test Device",
    "sm_count": 16,
    "major": 9,
    "minor": 0,
    "memory": None,            # bytes, if a vGPU may not be larger
}

# What changes with the compute capability: max threads per SM, max blocks per SM,
# shared memory per SM, opt-in shared memory per block.
_PER_CC = {
    (7, 5): (1024, 16, 65536, 65536),
    (8, 0): (2048, 32, 167936, 166912),
    (8, 6): (1536, 16, 102400, 101376),
    (8, 9): (1536, 24, 102400, 101376),
    (9, 0): (2048, 32, 233472, 232448),
    (10, 0): (2048, 32, 233472, 232448),
    (12, 0): (1536, 32, 102400, 101376),
}

MAX_THREADS_PER_BLOCK = 1024
MAX_BLOCK_DIM = (1024, 1024, 64)
MAX_GRID_DIM = (2**31 - 1, 65535, 65535)
DEFAULT_SHARED_PER_BLOCK = 49152       # without cudaFuncAttributeMaxDynamicSharedMemorySize
REGISTERS_PER_SM = 65536
_REGISTER_UNIT = 256                   # registers are allocated per warp in these units


def describe(device: dict | None) -> dict:
    """A device description completed with the defaults; unknown keys are an error."""
    device = dict(device or {})
    unknown = set(device) - set(DEFAULT_DEVICE)
    if unknown:
        raise ValueError(f"unknown device keys {sorted(unknown)}; known: {sorted(DEFAULT_DEVICE)}")
    full = {**DEFAULT_DEVICE, **device}
    if (full["major"], full["minor"]) not in _PER_CC:
        raise ValueError(f"compute capability {full['major']}.{full['minor']} is not simulated; "
                         f"known: {sorted(_PER_CC)}")
    return full


def max_shared_per_block_optin(device: dict) -> int:
    return _PER_CC[device["major"], device["minor"]][3]


def _reserved_shared(device: dict) -> int:
    """Shared memory the driver keeps per block (cc 8.0 and later)."""
    return 1024 if device["major"] >= 8 else 0


def _warp_registers(kernel: Kernel) -> int:
    return -(-max(kernel.registers, 1) * 32 // _REGISTER_UNIT) * _REGISTER_UNIT


def max_threads_per_block(kernel: Kernel) -> int:
    """What cudaFuncGetAttributes reports: bounded by the registers the kernel uses and
    by its __launch_bounds__."""
    by_registers = REGISTERS_PER_SM // _warp_registers(kernel) * 32
    return min(MAX_THREADS_PER_BLOCK, by_registers, kernel.max_threads or MAX_THREADS_PER_BLOCK)


def blocks_per_sm(kernel: Kernel, device: dict, block_size: int, dynamic_shared: int) -> int:
    """cudaOccupancyMaxActiveBlocksPerMultiprocessor, from the SM's four limits."""
    threads_per_sm, max_blocks, shared_per_sm, _ = _PER_CC[device["major"], device["minor"]]
    warps = -(-block_size // 32)
    shared = kernel.shared + dynamic_shared + _reserved_shared(device)
    return min(max_blocks, threads_per_sm // (warps * 32),
               REGISTERS_PER_SM // (warps * _warp_registers(kernel)),
               shared_per_sm // shared if shared else max_blocks)


def available_dynamic_shared(kernel: Kernel, device: dict, blocks: int, block_size: int) -> int:
    """cudaOccupancyAvailableDynamicSMemPerBlock: what each of `blocks` co-resident
    blocks may still ask for (0 when they cannot be co-resident at all)."""
    if blocks_per_sm(kernel, device, block_size, 0) < blocks:
        return 0
    shared_per_sm = _PER_CC[device["major"], device["minor"]][2]
    per_block = shared_per_sm // blocks - _reserved_shared(device) - kernel.shared
    return max(0, min(per_block, max_shared_per_block_optin(device) - kernel.shared))


def attributes(device: dict, pci_bus: int) -> dict[int, int]:
    """cudaDeviceAttr number -> value (driver_types.h numbering)."""
    threads_per_sm, blocks_per_sm, smem_per_sm, smem_optin = _PER_CC[device["major"],
                                                                     device["minor"]]
    return {
        1: MAX_THREADS_PER_BLOCK,
        2: MAX_BLOCK_DIM[0], 3: MAX_BLOCK_DIM[1], 4: MAX_BLOCK_DIM[2],
        5: MAX_GRID_DIM[0], 6: MAX_GRID_DIM[1], 7: MAX_GRID_DIM[2],
        8: 49152,                 # shared memory per block
        9: 65536,                 # constant memory
        10: 32,                   # warp size
        11: 2147483647,           # max pitch
        12: 65536,                # registers per block
        13: 1980000,              # clock, kHz
        14: 512,                  # texture alignment
        15: 1,                    # GPU overlap
        16: device["sm_count"],
        17: 0,                    # kernel exec timeout
        18: 0,                    # integrated
        19: 1,                    # can map host memory
        20: 0,                    # compute mode default
        21: 131072, 22: 131072, 23: 65536, 24: 16384, 25: 16384, 26: 16384,
        27: 32768, 28: 32768, 29: 2048,
        30: 512,                  # surface alignment
        31: 1,                    # concurrent kernels
        32: 1,                    # ECC
        33: pci_bus, 34: 0,       # PCI bus, device
        35: 0,                    # TCC
        36: 2619000,              # memory clock, kHz
        37: 5120,                 # bus width, bits
        38: 50 << 20,             # L2
        39: threads_per_sm,
        40: 5,                    # async engines
        41: 1,                    # unified addressing
        42: 32768, 43: 2048, 45: 32768, 46: 32768, 47: 8192, 48: 8192, 49: 32768,
        50: 0,                    # PCI domain
        51: 32,                   # texture pitch alignment
        52: 32768, 53: 32768, 54: 2046,
        55: 32768, 56: 131072, 57: 65536, 58: 16384, 59: 16384, 60: 16384,
        61: 32768, 62: 2048, 63: 32768, 64: 32768, 65: 2048, 66: 32768, 67: 32768, 68: 2046,
        69: 268435456, 70: 131072, 71: 65000, 72: 2097120, 73: 32768, 74: 32768,
        75: device["major"], 76: device["minor"],
        77: 32768,
        78: 1,                    # stream priorities
        79: 1, 80: 1,             # global/local L1 caching
        81: smem_per_sm,
        82: 65536,                # registers per SM
        83: 1,                    # managed memory
        84: 0, 85: 0,             # multi-GPU board
        86: 0,                    # host native atomics
        87: 2,                    # single/double precision ratio
        88: 0, 89: 1,             # pageable access, concurrent managed access
        90: 1,                    # compute preemption
        91: 1,                    # host pointer for registered memory
        95: 1,                    # cooperative launch
        97: smem_optin,
        98: 0,                    # flush remote writes
        99: 1,                    # host register
        100: 0, 101: 0,
        106: blocks_per_sm,
        108: 32505856,            # max persisting L2
        109: 134213632,           # max access policy window
        111: _reserved_shared(device),
        112: 1, 113: 1, 114: 1,
        115: 1,                   # memory pools
        116: 1, 117: 1, 118: 100,
        119: 1,                   # pool handle types: POSIX fd
        120: int(device["major"] >= 9),   # cluster launch
        121: 1,
        125: 1,                   # IPC events
        126: 4 if device["major"] >= 9 else 1,   # memory sync domains
        130: 0, 131: -1, 133: 0, 134: -1,
    }


def pci_bus(index: int) -> int:
    """The PCI bus of vGPU `index`: one each, so a bus id leads back to one device."""
    return 0x10 + index


def pci_bus_id(bus: int) -> str:
    return f"0000:{bus:02x}:00.0"


_BUS_ID = re.compile(r"^(?:([0-9a-fA-F]{1,8}):)?([0-9a-fA-F]{1,2}):([0-9a-fA-F]{1,2})(?:\.[0-7])?$")


def parse_pci_bus_id(text: str) -> tuple[int, int, int] | None:
    """(domain, bus, device) of "[domain:]bus:device[.function]", or None."""
    m = _BUS_ID.match(text.strip())
    if not m:
        return None
    return int(m.group(1) or "0", 16), int(m.group(2), 16), int(m.group(3), 16)
