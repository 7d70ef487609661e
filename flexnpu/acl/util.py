"""``acl.util``: pyACL's host-memory helpers (the same under every runtime).

Pointers are Python ints.  As in pyACL, ``bytes_to_ptr`` and ``numpy_to_ptr`` return the address
of the object's own buffer: the caller keeps the object alive while the pointer is in use.
"""

from __future__ import annotations

import ctypes
from typing import Any

import numpy as np


def bytes_to_ptr(data: Any) -> int:
    """Address of a bytes / bytearray / buffer object's data."""
    if isinstance(data, bytes) and not data:
        return 0
    return np.frombuffer(data, np.uint8).ctypes.data


def ptr_to_bytes(ptr: int, size: int) -> bytes:
    """A copy of `size` bytes at host address `ptr`."""
    if size < 0:
        raise ValueError(f"size must be >= 0, not {size}")
    if size == 0:
        return b""
    return ctypes.string_at(ptr, size)


def numpy_to_ptr(array: np.ndarray) -> int:
    """Address of a C-contiguous array's data (pyACL marks this deprecated; still widely used)."""
    if not array.flags.c_contiguous:
        raise ValueError("numpy_to_ptr needs a C-contiguous array (use np.ascontiguousarray)")
    return array.ctypes.data


def numpy_contiguous_to_ptr(array: np.ndarray) -> int:
    return numpy_to_ptr(np.ascontiguousarray(array))


def ptr_to_numpy(ptr: int, shape: Any, np_type: Any) -> np.ndarray:
    """A numpy view of host memory at `ptr` (no copy).  np_type: a numpy type number or dtype."""
    dtype = _dtype_of_type_number(np_type) if isinstance(np_type, int) else np.dtype(np_type)
    shape = (shape,) if isinstance(shape, int) else tuple(shape)
    count = int(np.prod(shape, dtype=np.int64)) if shape else 1
    raw = (ctypes.c_char * (count * dtype.itemsize)).from_address(ptr)
    return np.frombuffer(raw, dtype=dtype, count=count).reshape(shape)


def _dtype_of_type_number(num: int) -> np.dtype:
    for t in set(np.sctypeDict.values()):
        if np.dtype(t).num == num:
            return np.dtype(t)
    raise ValueError(f"no numpy type has type number {num}")
