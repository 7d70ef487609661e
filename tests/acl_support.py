"""Plumbing of the shared ACL behaviour suite (``tests/test_acl_api.py``).

The suite is written against an ``acl`` namespace, never a runtime class, so that the very same
tests run against every runtime (uvloop's mixin pattern).  ``ACL_FACTORIES`` names each way to
get one: ``factory(memory_bytes)`` returns ``(acl, cleanup)``, where ``acl`` is a fresh,
uninitialized ``acl``-like namespace (``acl.init``, ``acl.rt.*``, ``acl.op.*``, ``acl.util``)
whose device 0 has ``memory_bytes`` of memory, and ``cleanup()`` releases everything it holds
(whatever state the test left).

The helpers below are the few idioms the tests repeat (device tensors, launches, a stream kept
busy); they use only the public ``acl`` surface.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import numpy as np

from flexnpu.acl import constants as C

MiB = 2**20


def direct_acl(memory_bytes: int) -> tuple[Any, Callable[[], None]]:
    """``flexnpu run --direct``: the in-process emulated device, no daemon."""
    from flexnpu.acl._api import bind
    from flexnpu.acl._direct import DirectRuntime

    runtime = DirectRuntime(memory_bytes=memory_bytes, device_count=1)
    return bind(runtime), runtime.close


def daemon_acl(memory_bytes: int) -> tuple[Any, Callable[[], None]]:
    """``flexnpu run``: through a real daemon process (in its own runtime directory), rings and all."""
    import shutil
    import tempfile

    from daemon_support import DaemonProcess, make_client, runtime_dir_env

    path = tempfile.mkdtemp(prefix="flexnpu-acl-")
    env = runtime_dir_env(path)
    env.__enter__()
    daemon = DaemonProcess(memory=memory_bytes)
    acl = make_client()

    def cleanup() -> None:
        try:
            acl.finalize()  # whatever state the test left; a second finalize is just an error code
        finally:
            daemon.stop()
            env.__exit__(None, None, None)
            shutil.rmtree(path, ignore_errors=True)

    return acl, cleanup


ACL_FACTORIES: dict[str, Callable[[int], tuple[Any, Callable[[], None]]]] = {
    "direct": direct_acl,
    "daemon": daemon_acl,
}

ACL_DTYPES = {
    np.dtype(np.float32): C.ACL_FLOAT,
    np.dtype(np.float16): C.ACL_FLOAT16,
    np.dtype(np.int32): C.ACL_INT32,
    np.dtype(np.int64): C.ACL_INT64,
    np.dtype(np.bool_): C.ACL_BOOL,
    np.dtype(np.uint8): C.ACL_UINT8,
}


def ok(ret: Any, what: str = "acl call") -> None:
    """Assert an acl return code (or a (value, ret) tuple's ret) is success."""
    code = ret[-1] if isinstance(ret, tuple) else ret
    assert code in (None, C.ACL_SUCCESS), f"{what} returned {code}"


def value(result: tuple, what: str = "acl call") -> Any:
    """The value of a (value, ret) result, asserting ret is success."""
    ok(result, what)
    return result[0] if len(result) == 2 else result[:-1]


def malloc(acl: Any, nbytes: int) -> int:
    return value(acl.rt.malloc(nbytes, C.ACL_MEM_MALLOC_HUGE_FIRST), "acl.rt.malloc")


def upload(acl: Any, array: np.ndarray) -> int:
    """New device memory holding a copy of array."""
    array = np.ascontiguousarray(array)
    ptr = malloc(acl, max(array.nbytes, 1))
    ok(acl.rt.memcpy(ptr, array.nbytes, array.ctypes.data, array.nbytes, C.ACL_MEMCPY_HOST_TO_DEVICE))
    return ptr


def download(acl: Any, ptr: int, shape: Any, dtype: Any) -> np.ndarray:
    out = np.empty(shape, dtype)
    ok(acl.rt.memcpy(out.ctypes.data, out.nbytes, ptr, out.nbytes, C.ACL_MEMCPY_DEVICE_TO_HOST))
    return out


class Tensor:
    """Device memory with a tensor desc and a data buffer describing it."""

    def __init__(self, acl: Any, shape: tuple[int, ...], dtype: Any, ptr: int = 0):
        self.shape, self.dtype = tuple(shape), np.dtype(dtype)
        self.nbytes = math.prod(self.shape) * self.dtype.itemsize
        self.ptr = ptr or malloc(acl, max(self.nbytes, 1))
        self.desc = acl.create_tensor_desc(ACL_DTYPES[self.dtype], list(self.shape), C.ACL_FORMAT_ND)
        self.buf = acl.create_data_buffer(self.ptr, self.nbytes)
        assert self.desc and self.buf
        self._acl = acl

    @classmethod
    def of(cls, acl: Any, array: np.ndarray) -> Tensor:
        return cls(acl, array.shape, array.dtype, upload(acl, array))

    def read(self) -> np.ndarray:
        return download(self._acl, self.ptr, self.shape, self.dtype)


def launch(acl: Any, op_type: str, inputs: list[Tensor], outputs: list[Tensor], attr: int = 0, stream: int = 0) -> int:
    return acl.op.execute_v2(
        op_type,
        [t.desc for t in inputs],
        [t.buf for t in inputs],
        [t.desc for t in outputs],
        [t.buf for t in outputs],
        attr,
        stream,
    )


def make_attr(acl: Any, **attrs: Any) -> int:
    attr = acl.op.create_attr()
    assert attr
    for name, v in attrs.items():
        if isinstance(v, bool):
            ok(acl.op.set_attr_bool(attr, name, v))
        elif isinstance(v, int):
            ok(acl.op.set_attr_int(attr, name, v))
        elif isinstance(v, float):
            ok(acl.op.set_attr_float(attr, name, v))
        elif isinstance(v, str):
            ok(acl.op.set_attr_string(attr, name, v))
        else:
            ok(acl.op.set_attr_list_int(attr, name, list(v)))
    return attr


class Busy:
    """Keeps a stream busy for tens of milliseconds with a queue of real matrix products, so
    that what is queued behind it observably waits (an asynchronous call that ran eagerly, or a
    wait that did not wait, shows up as a wrong result)."""

    SIZE = 384

    def __init__(self, acl: Any):
        rng = np.random.default_rng(0)
        n = self.SIZE
        self.x = Tensor.of(acl, rng.standard_normal((n, n), np.float32))
        self.out = Tensor(acl, (n, n), np.float32)
        self._acl = acl

    def run(self, stream: int = 0, launches: int = 16) -> None:
        for _ in range(launches):
            ok(launch(self._acl, "MatMulV2", [self.x, self.x], [self.out], stream=stream), "busy MatMulV2")
