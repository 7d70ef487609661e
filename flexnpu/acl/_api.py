"""The contract of FlexNPU's pyACL-compatible ``acl`` module.

``flexnpu.acl`` exposes pyACL's names (``acl.init``, ``acl.rt.malloc``, ``acl.op.execute_v2``, ...)
by binding each of them to a method of one *runtime* object, chosen once per process:

* ``DaemonRuntime`` (``flexnpu/_acl_hooks.pyx``): every call becomes records in a shared-memory
  ring drained by the device daemon (``flexnpu run``);
* ``DirectRuntime`` (``flexnpu/acl/_direct.py``): the same calls bound in-process to the emulated
  device, no daemon and no rings (``flexnpu run --direct``): the passthrough baseline.

Both implement every method of :class:`AclRuntime` below, with pyACL's conventions: handles and
pointers are Python ints (0 means "none"/failure), functions that return a value in C return a
tuple ``(value, ret)``, errors are ACL int codes (never exceptions), C functions returning void
return None.  Names of ``acl.util`` are the same in both (``flexnpu/acl/util.py``).

Handles (`make_handle`) carry their kind, so a stream passed where an event is expected is an
invalid handle, not a crash.  A stream argument of 0 (or None) means the current context's
default stream.
"""

from __future__ import annotations

import abc
import threading
from typing import Any, Optional

from flexnpu.acl import constants as C

# ---- handles -----------------------------------------------------------------------------------
# 0xF1 | kind (8 bits) | device (8 bits) | index (32 bits): readable in hex, never 0, never a
# plausible host or device address.
HANDLE_MARK = 0xF1
KIND_CONTEXT, KIND_STREAM, KIND_EVENT, KIND_DESC, KIND_BUFFER, KIND_ATTR = 1, 2, 3, 4, 5, 6
KIND_NAMES = {KIND_CONTEXT: "context", KIND_STREAM: "stream", KIND_EVENT: "event",
              KIND_DESC: "tensor desc", KIND_BUFFER: "data buffer", KIND_ATTR: "op attr"}


def make_handle(kind: int, device: int, index: int) -> int:
    return (HANDLE_MARK << 48) | (kind << 40) | ((device & 0xFF) << 32) | (index & 0xFFFFFFFF)


def split_handle(handle: Any, kind: int) -> Optional[tuple[int, int]]:
    """(device, index) if `handle` is a handle of `kind`, else None."""
    if not isinstance(handle, int) or handle >> 48 != HANDLE_MARK or (handle >> 40) & 0xFF != kind:
        return None
    return (handle >> 32) & 0xFF, handle & 0xFFFFFFFF


# ---- what every runtime shares ----------------------------------------------------------------
MAX_DIMS = 32
# aclDataType -> element size in bytes (the types the emulated device computes with)
DTYPE_SIZES = {
    C.ACL_FLOAT: 4, C.ACL_FLOAT16: 2, C.ACL_INT8: 1, C.ACL_INT32: 4, C.ACL_UINT8: 1, C.ACL_INT16: 2,
    C.ACL_UINT16: 2, C.ACL_UINT32: 4, C.ACL_INT64: 8, C.ACL_UINT64: 8, C.ACL_DOUBLE: 8, C.ACL_BOOL: 1,
    C.ACL_COMPLEX64: 8, C.ACL_COMPLEX128: 16, C.ACL_BF16: 2,
}
VALID_FORMATS = {v for k, v in vars(C).items() if k.startswith("ACL_FORMAT_")}
# what create_stream_with_config / create_event_with_flag / malloc accept
STREAM_FLAGS = C.ACL_STREAM_FAST_LAUNCH | C.ACL_STREAM_FAST_SYNC | C.ACL_STREAM_PERSISTENT | C.ACL_STREAM_HUGE
STREAM_PRIORITIES = range(0, 8)  # aclrtDeviceGetStreamPriorityRange on 910B: 0 (highest) .. 7
EVENT_FLAGS = C.ACL_EVENT_SYNC | C.ACL_EVENT_TIME_LINE | C.ACL_EVENT_EXTERNAL | C.ACL_EVENT_IPC
MALLOC_POLICY_BITS = (C.ACL_MEM_TYPE_LOW_BAND_WIDTH | C.ACL_MEM_TYPE_HIGH_BAND_WIDTH
                      | C.ACL_MEM_ACCESS_USER_SPACE_READONLY)


def valid_malloc_policy(policy: Any) -> bool:
    """aclrtMemMallocPolicy: a base policy (0..7), optionally OR-ed with the memory-type bits."""
    return (isinstance(policy, int) and not isinstance(policy, bool) and policy >= 0
            and (policy & ~MALLOC_POLICY_BITS) <= C.ACL_MEM_MALLOC_HUGE1G_ONLY_P2P)


MEMCPY_KINDS = (C.ACL_MEMCPY_HOST_TO_HOST, C.ACL_MEMCPY_HOST_TO_DEVICE, C.ACL_MEMCPY_DEVICE_TO_HOST,
                C.ACL_MEMCPY_DEVICE_TO_DEVICE, C.ACL_MEMCPY_DEFAULT)


def check_desc_args(data_type: Any, dims: Any, fmt: Any) -> Optional[str]:
    """Why (data_type, dims, format) is not a valid tensor descriptor, or None if it is."""
    if not isinstance(data_type, int) or not isinstance(fmt, int):
        return f"data type and format must be ints, not {data_type!r} and {fmt!r}"
    if data_type not in DTYPE_SIZES and data_type != C.ACL_DT_UNDEFINED:
        return f"unsupported data type {data_type!r}"
    if fmt not in VALID_FORMATS:
        return f"unknown format {fmt!r}"
    try:
        dims = list(dims)
    except TypeError:
        return f"dims must be a list of ints, not {type(dims).__name__}"
    if len(dims) > MAX_DIMS:
        return f"{len(dims)} dims (at most {MAX_DIMS})"
    for d in dims:
        if not isinstance(d, int) or isinstance(d, bool) or d < -2:
            return f"invalid dim {d!r}"
    return None


class ErrorMessages:
    """aclGetRecentErrMsg: the last error message of each thread (read once, then cleared)."""

    def __init__(self) -> None:
        self._local = threading.local()

    def set(self, code: int, message: str) -> int:
        self._local.message = f"[{code}] {message}"
        return code

    def take(self) -> str:
        message = getattr(self._local, "message", "")
        self._local.message = ""
        return message


class AclRuntime(abc.ABC):
    """Every pyACL function FlexNPU serves, as methods (see the module docstring)."""

    # ---- acl ---------------------------------------------------------------------------------
    @abc.abstractmethod
    def init(self, config_path: Optional[str] = None) -> int: ...
    @abc.abstractmethod
    def finalize(self) -> int: ...
    @abc.abstractmethod
    def get_recent_err_msg(self) -> str: ...
    @abc.abstractmethod
    def create_tensor_desc(self, data_type: int, dims: list, fmt: int) -> int: ...
    @abc.abstractmethod
    def destroy_tensor_desc(self, desc: int) -> None: ...
    @abc.abstractmethod
    def get_tensor_desc_type(self, desc: int) -> int: ...
    @abc.abstractmethod
    def get_tensor_desc_format(self, desc: int) -> int: ...
    @abc.abstractmethod
    def get_tensor_desc_num_dims(self, desc: int) -> int: ...
    @abc.abstractmethod
    def get_tensor_desc_dim_v2(self, desc: int, index: int) -> tuple[int, int]: ...
    @abc.abstractmethod
    def get_tensor_desc_size(self, desc: int) -> int: ...
    @abc.abstractmethod
    def create_data_buffer(self, data: int, size: int) -> int: ...
    @abc.abstractmethod
    def destroy_data_buffer(self, buffer: int) -> int: ...
    @abc.abstractmethod
    def update_data_buffer(self, buffer: int, data: int, size: int) -> int: ...
    @abc.abstractmethod
    def get_data_buffer_addr(self, buffer: int) -> int: ...
    @abc.abstractmethod
    def get_data_buffer_size_v2(self, buffer: int) -> int: ...

    # ---- acl.rt: devices and contexts ---------------------------------------------------------
    @abc.abstractmethod
    def set_device(self, device_id: int) -> int: ...
    @abc.abstractmethod
    def reset_device(self, device_id: int) -> int: ...
    @abc.abstractmethod
    def get_device(self) -> tuple[int, int]: ...
    @abc.abstractmethod
    def get_device_count(self) -> tuple[int, int]: ...
    @abc.abstractmethod
    def synchronize_device(self) -> int: ...
    @abc.abstractmethod
    def get_soc_name(self) -> Optional[str]: ...
    @abc.abstractmethod
    def create_context(self, device_id: int) -> tuple[int, int]: ...
    @abc.abstractmethod
    def destroy_context(self, context: int) -> int: ...
    @abc.abstractmethod
    def set_context(self, context: int) -> int: ...
    @abc.abstractmethod
    def get_context(self) -> tuple[int, int]: ...

    # ---- acl.rt: streams and events -----------------------------------------------------------
    @abc.abstractmethod
    def create_stream(self) -> tuple[int, int]: ...
    @abc.abstractmethod
    def create_stream_with_config(self, priority: int, flag: int) -> tuple[int, int]: ...
    @abc.abstractmethod
    def destroy_stream(self, stream: int) -> int: ...
    @abc.abstractmethod
    def synchronize_stream(self, stream: int) -> int: ...
    @abc.abstractmethod
    def synchronize_stream_with_timeout(self, stream: int, timeout_ms: int) -> int: ...
    @abc.abstractmethod
    def stream_query(self, stream: int) -> tuple[int, int]: ...
    @abc.abstractmethod
    def stream_wait_event(self, stream: int, event: int) -> int: ...
    @abc.abstractmethod
    def create_event(self) -> tuple[int, int]: ...
    @abc.abstractmethod
    def create_event_with_flag(self, flag: int) -> tuple[int, int]: ...
    @abc.abstractmethod
    def destroy_event(self, event: int) -> int: ...
    @abc.abstractmethod
    def record_event(self, event: int, stream: int) -> int: ...
    @abc.abstractmethod
    def reset_event(self, event: int, stream: int) -> int: ...
    @abc.abstractmethod
    def query_event_status(self, event: int) -> tuple[int, int]: ...
    @abc.abstractmethod
    def synchronize_event(self, event: int) -> int: ...
    @abc.abstractmethod
    def event_elapsed_time(self, start: int, end: int) -> tuple[float, int]: ...

    # ---- acl.rt: memory -----------------------------------------------------------------------
    @abc.abstractmethod
    def malloc(self, size: int, policy: int) -> tuple[int, int]: ...
    @abc.abstractmethod
    def malloc_align32(self, size: int, policy: int) -> tuple[int, int]: ...
    @abc.abstractmethod
    def free(self, dev_ptr: int) -> int: ...
    @abc.abstractmethod
    def malloc_host(self, size: int) -> tuple[int, int]: ...
    @abc.abstractmethod
    def free_host(self, host_ptr: int) -> int: ...
    @abc.abstractmethod
    def memset(self, dev_ptr: int, max_size: int, value: int, count: int) -> int: ...
    @abc.abstractmethod
    def memset_async(self, dev_ptr: int, max_size: int, value: int, count: int, stream: int) -> int: ...
    @abc.abstractmethod
    def memcpy(self, dst: int, dest_max: int, src: int, count: int, kind: int) -> int: ...
    @abc.abstractmethod
    def memcpy_async(self, dst: int, dest_max: int, src: int, count: int, kind: int, stream: int) -> int: ...
    @abc.abstractmethod
    def get_mem_info(self, attr: int) -> tuple[int, int, int]: ...
    @abc.abstractmethod
    def ipc_mem_get_export_key(self, dev_ptr: int, size: int, flag: int) -> tuple[str, int]: ...
    @abc.abstractmethod
    def ipc_mem_set_import_pid(self, key: str, pids: list) -> int: ...
    @abc.abstractmethod
    def ipc_mem_import_by_key(self, key: str, flag: int) -> tuple[int, int]: ...
    @abc.abstractmethod
    def ipc_mem_close(self, key: str) -> int: ...

    # ---- acl.op -------------------------------------------------------------------------------
    @abc.abstractmethod
    def create_attr(self) -> int: ...
    @abc.abstractmethod
    def destroy_attr(self, attr: int) -> None: ...
    @abc.abstractmethod
    def set_attr_bool(self, attr: int, name: str, value: Any) -> int: ...
    @abc.abstractmethod
    def set_attr_int(self, attr: int, name: str, value: int) -> int: ...
    @abc.abstractmethod
    def set_attr_float(self, attr: int, name: str, value: float) -> int: ...
    @abc.abstractmethod
    def set_attr_string(self, attr: int, name: str, value: str) -> int: ...
    @abc.abstractmethod
    def set_attr_list_int(self, attr: int, name: str, values: list) -> int: ...
    @abc.abstractmethod
    def set_attr_list_float(self, attr: int, name: str, values: list) -> int: ...
    @abc.abstractmethod
    def set_attr_list_bool(self, attr: int, name: str, values: list) -> int: ...
    @abc.abstractmethod
    def set_attr_data_type(self, attr: int, name: str, value: int) -> int: ...
    @abc.abstractmethod
    def execute_v2(self, op_type: str, input_desc: list, inputs: list, output_desc: list, outputs: list,
                   attr: int, stream: int) -> int: ...


# Which pyACL namespace each method belongs to (everything else is top-level `acl.*`).
RT_NAMES = [
    "set_device", "reset_device", "get_device", "get_device_count", "synchronize_device", "get_soc_name",
    "create_context", "destroy_context", "set_context", "get_context", "create_stream",
    "create_stream_with_config", "destroy_stream", "synchronize_stream", "synchronize_stream_with_timeout",
    "stream_query", "stream_wait_event", "create_event", "create_event_with_flag", "destroy_event",
    "record_event", "reset_event", "query_event_status", "synchronize_event", "event_elapsed_time", "malloc",
    "malloc_align32", "free", "malloc_host", "free_host", "memset", "memset_async", "memcpy", "memcpy_async",
    "get_mem_info", "ipc_mem_get_export_key", "ipc_mem_set_import_pid", "ipc_mem_import_by_key",
    "ipc_mem_close",
]
OP_NAMES = [
    "create_attr", "destroy_attr", "set_attr_bool", "set_attr_int", "set_attr_float", "set_attr_string",
    "set_attr_list_int", "set_attr_list_float", "set_attr_list_bool", "set_attr_data_type", "execute_v2",
]
TOP_NAMES = sorted(set(AclRuntime.__abstractmethods__) - set(RT_NAMES) - set(OP_NAMES))


def bind(runtime: AclRuntime, name: str = "acl") -> Any:
    """An `acl`-like namespace (``.rt``, ``.op``, ``.util``, ``.constants`` and the top-level
    functions) whose functions are `runtime`'s bound methods."""
    import types

    from flexnpu.acl import util

    module = types.SimpleNamespace(__name__=name, runtime=runtime, util=util, constants=C)
    module.rt = types.SimpleNamespace(**{n: getattr(runtime, n) for n in RT_NAMES})
    module.op = types.SimpleNamespace(**{n: getattr(runtime, n) for n in OP_NAMES})
    for n in TOP_NAMES:
        setattr(module, n, getattr(runtime, n))
    return module
