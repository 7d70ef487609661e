"""Per-client device memory: virtual addresses, translation, quotas, IPC sharing.

Each client gets its own range of virtual addresses (VAs).  An allocation maps a VA range onto a
device allocation; pointer arithmetic inside it works as on the chip, and any VA outside this
client's live allocations (another client's memory included) translates to nothing:
ACL_ERROR_INVALID_PARAM.  VAs are never reused within a client, so a stale pointer after a free
is always an error, never an alias of newer memory.  A 64 KiB unmapped gap separates allocations.

Accounting is exact: a client's `used` is the sum of the device sizes (aclrtMalloc rounding
included) of the device allocations it made and that are still alive.  Memory exported over IPC
stays alive (and counted to its exporter) until the exporter has freed it and every importer
has closed it.
"""

from __future__ import annotations

import bisect
import secrets
from dataclasses import dataclass, field
from typing import Optional

from flexnpu_daemon.backends.base import Device, DeviceError

from flexnpu.acl import constants as C

VA_SPAN = 1 << 40  # each client's virtual range: 1 TiB


def va_base(device_id: int, client_index: int) -> int:
    """Client k of device d gets [(d + 1) << 52 | k << 40, + 1 TiB): a pointer names its device,
    ranges of different clients (and devices) never overlap, and bit 63 stays clear."""
    return ((device_id + 1) << 52) | (client_index << 40)
_GUARD = 64 << 10
_VA_ALIGN = 4096


@dataclass(eq=False)
class PhysicalBlock:
    """A device allocation, possibly shared by several clients' mappings."""

    addr: int
    size: int  # device bytes (what mem_info counts)
    owner: ClientMemory
    freed_by_owner: bool = False
    mappings: int = 0  # live VA mappings (the owner's plus IPC imports)


@dataclass(eq=False)
class Mapping:
    va: int
    length: int  # usable bytes (what the client asked for)
    block: PhysicalBlock
    offset: int = 0  # into the block (IPC exports of a sub-range)
    imported_key: Optional[str] = None


@dataclass(eq=False)
class Export:
    key: str
    block: PhysicalBlock
    offset: int
    length: int
    exporter: ClientMemory
    check_pid: bool
    allowed_pids: set = field(default_factory=set)
    importers: dict = field(default_factory=dict)  # ClientMemory -> va
    closed: bool = False  # the exporter closed the key: no new imports


class IpcRegistry:
    """Keys exported by the clients of one daemon (aclrtIpcMemGetExportKey)."""

    def __init__(self) -> None:
        self.exports: dict[str, Export] = {}


class ClientMemory:
    def __init__(self, device: Device, index: int, quota: int, ipc: IpcRegistry, pid: int):
        self.device = device
        self.va_base = va_base(device.device_id, index)
        self.va_end = self.va_base + VA_SPAN
        self._next_va = self.va_base
        self.quota = quota
        self.used = 0
        self.ipc = ipc
        self.pid = pid
        self._starts: list[int] = []  # sorted VAs of live mappings
        self._maps: dict[int, Mapping] = {}

    # ---- allocation ---------------------------------------------------------------------------
    def malloc(self, size: int, policy: int, align32: bool) -> tuple[int, int]:
        """A new allocation: (its virtual address, its usable size, ACL's rounding included)."""
        if size <= 0:
            raise DeviceError(C.ACL_ERROR_INVALID_PARAM, f"malloc size must be > 0, not {size}")
        addr = self.device.malloc(size, policy, align32)
        block_size = self.device.allocation_size(addr) if hasattr(self.device, "allocation_size") else size
        if self.used + block_size > self.quota:
            self.device.free(addr)
            raise DeviceError(
                C.ACL_ERROR_RT_MEMORY_ALLOCATION,
                f"allocating {size} bytes exceeds this client's memory quota "
                f"({self.used} of {self.quota} bytes in use)",
            )
        self.used += block_size
        usable = self.device.allocation_of(addr)[1] if hasattr(self.device, "allocation_of") else size
        block = PhysicalBlock(addr, block_size, self)
        return self._map(block, 0, usable), usable

    def free(self, va: int) -> None:
        m = self._maps.get(va)
        if m is None or m.imported_key is not None or m.block.owner is not self:
            raise DeviceError(C.ACL_ERROR_INVALID_PARAM, f"{va:#x} is not the start of an allocation of "
                              "this process (imported IPC memory is released with ipc_mem_close)")
        m.block.freed_by_owner = True
        for export in [e for e in self.ipc.exports.values() if e.block is m.block]:
            export.closed = True  # freed memory cannot be imported any more
            if not export.importers:
                del self.ipc.exports[export.key]
        self._unmap(m)

    def _map(self, block: PhysicalBlock, offset: int, length: int, key: Optional[str] = None) -> int:
        va = self._next_va
        span = -(-length // _VA_ALIGN) * _VA_ALIGN + _GUARD
        if va + span > self.va_end:
            raise DeviceError(C.ACL_ERROR_RT_MEMORY_ALLOCATION, "this client's virtual address range is used up")
        self._next_va = va + span
        self._maps[va] = Mapping(va, length, block, offset, key)
        bisect.insort(self._starts, va)
        block.mappings += 1
        return va

    def _unmap(self, m: Mapping) -> None:
        del self._maps[m.va]
        del self._starts[bisect.bisect_left(self._starts, m.va)]
        block = m.block
        block.mappings -= 1
        if block.mappings == 0 and block.freed_by_owner:
            self.device.free(block.addr)
            block.owner.used -= block.size

    # ---- translation --------------------------------------------------------------------------
    def find(self, va: int) -> Optional[Mapping]:
        i = bisect.bisect_right(self._starts, va) - 1
        if i < 0:
            return None
        m = self._maps[self._starts[i]]
        return m if va < m.va + m.length else None

    def translate(self, va: int, nbytes: int) -> int:
        """The device address of [va, va + nbytes), which must lie inside one live allocation."""
        m = self.find(va)
        if m is None:
            raise DeviceError(C.ACL_ERROR_INVALID_PARAM, f"{va:#x} is not inside any device allocation of "
                              "this process")
        if nbytes < 0 or va + nbytes > m.va + m.length:
            raise DeviceError(C.ACL_ERROR_INVALID_PARAM, f"[{va:#x}, +{nbytes}) runs past the end of its "
                              f"allocation ({m.length} bytes at {m.va:#x})")
        return m.block.addr + m.offset + (va - m.va)

    def is_device(self, va: int) -> bool:
        return self.va_base <= va < self.va_end

    # ---- IPC ----------------------------------------------------------------------------------
    def export(self, va: int, size: int, flags: int) -> str:
        m = self.find(va)
        if m is None or m.imported_key is not None or va + size > m.va + m.length or size <= 0:
            raise DeviceError(C.ACL_ERROR_INVALID_PARAM, f"[{va:#x}, +{size}) is not inside one allocation "
                              "of this process")
        key = f"flexnpu-ipc-{secrets.token_hex(12)}"
        check_pid = not (flags & 0x1)  # ACL_RT_IPC_MEM_EXPORT_FLAG_DISABLE_PID_VALIDATION
        self.ipc.exports[key] = Export(key, m.block, m.offset + (va - m.va), size, self, check_pid)
        return key

    def set_import_pid(self, key: str, pid: int) -> None:
        export = self.ipc.exports.get(key)
        if export is None or export.exporter is not self:
            raise DeviceError(C.ACL_ERROR_INVALID_PARAM, f"no IPC key {key!r} exported by this process")
        export.allowed_pids.add(pid)

    def import_key(self, key: str) -> tuple[int, int]:
        """Map an exported range into this client: (its virtual address, its length)."""
        export = self.ipc.exports.get(key)
        if export is None or export.closed:
            raise DeviceError(C.ACL_ERROR_INVALID_PARAM, f"no IPC memory exported under key {key!r}")
        if export.check_pid and self.pid not in export.allowed_pids:
            raise DeviceError(C.ACL_ERROR_INVALID_PARAM, f"process {self.pid} is not on the import list of "
                              f"{key!r} (the exporter must call ipc_mem_set_import_pid)")
        if self in export.importers:
            return export.importers[self], export.length
        va = self._map(export.block, export.offset, export.length, key)
        export.importers[self] = va
        return va, export.length

    def close_key(self, key: str) -> None:
        export = self.ipc.exports.get(key)
        if export is None:
            raise DeviceError(C.ACL_ERROR_INVALID_PARAM, f"no IPC memory under key {key!r}")
        if self in export.importers:
            va = export.importers.pop(self)
            self._unmap(self._maps[va])
        elif export.exporter is self:
            export.closed = True  # no new imports; existing importers keep their mapping
        else:
            raise DeviceError(C.ACL_ERROR_INVALID_PARAM, f"this process neither exported nor imported {key!r}")
        if export.closed and not export.importers:
            del self.ipc.exports[key]

    # ---- teardown -----------------------------------------------------------------------------
    def release_all(self) -> None:
        """A detaching or dead client: drop every mapping, export and import."""
        for key, export in list(self.ipc.exports.items()):
            export.importers.pop(self, None)
            if export.exporter is self:
                export.closed = True
            if export.closed and not export.importers:
                del self.ipc.exports[key]
        for m in list(self._maps.values()):
            if m.imported_key is None and m.block.owner is self:
                m.block.freed_by_owner = True
            self._unmap(m)

    def stats(self) -> dict:
        return {"used": self.used, "quota": self.quota, "allocations": len(self._maps)}
