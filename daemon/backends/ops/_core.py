"""The operator registry, data types, and the argument checking every operator shares."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Callable, Optional

import numpy as np

from flexnpu.acl import constants as C

from ..base import DeviceError

# ---- data types ---------------------------------------------------------------------------------

_ACL_TO_NUMPY: dict[int, np.dtype] = {
    C.ACL_FLOAT: np.dtype(np.float32),
    C.ACL_FLOAT16: np.dtype(np.float16),
    C.ACL_DOUBLE: np.dtype(np.float64),
    C.ACL_INT8: np.dtype(np.int8),
    C.ACL_INT16: np.dtype(np.int16),
    C.ACL_INT32: np.dtype(np.int32),
    C.ACL_INT64: np.dtype(np.int64),
    C.ACL_UINT8: np.dtype(np.uint8),
    C.ACL_UINT16: np.dtype(np.uint16),
    C.ACL_UINT32: np.dtype(np.uint32),
    C.ACL_UINT64: np.dtype(np.uint64),
    C.ACL_BOOL: np.dtype(np.bool_),
    C.ACL_COMPLEX64: np.dtype(np.complex64),
    C.ACL_COMPLEX128: np.dtype(np.complex128),
}
try:  # bfloat16 has no numpy type of its own; ml_dtypes (small, well kept) provides one
    import ml_dtypes

    BFLOAT16: Optional[np.dtype] = np.dtype(ml_dtypes.bfloat16)
    _ACL_TO_NUMPY[C.ACL_BF16] = BFLOAT16
except ImportError:  # pragma: no cover - depends on the environment
    BFLOAT16 = None

_NUMPY_TO_ACL = {dt: code for code, dt in _ACL_TO_NUMPY.items()}

# Float types the NPU computes in float32 internally (as its cube and vector units accumulate).
_HALF_FLOATS = {np.dtype(np.float16)} | ({BFLOAT16} if BFLOAT16 is not None else set())


def numpy_dtype(acl_dtype: int) -> np.dtype:
    """The numpy dtype of an aclDataType; DeviceError(ACL_ERROR_UNSUPPORTED_DATA_TYPE) if none."""
    try:
        return _ACL_TO_NUMPY[acl_dtype]
    except (KeyError, TypeError):
        raise DeviceError(
            C.ACL_ERROR_UNSUPPORTED_DATA_TYPE, f"data type {acl_dtype!r} is not supported"
        ) from None


def acl_dtype(dtype: Any) -> int:
    """The aclDataType of a numpy dtype (inverse of numpy_dtype)."""
    try:
        return _NUMPY_TO_ACL[np.dtype(dtype)]
    except (KeyError, TypeError):
        raise DeviceError(C.ACL_ERROR_UNSUPPORTED_DATA_TYPE, f"dtype {dtype!r} has no ACL type") from None


def is_float(dtype: np.dtype) -> bool:
    return dtype.kind == "f" or dtype in _HALF_FLOATS


def is_int(dtype: np.dtype) -> bool:
    return dtype.kind in "iu"


def compute_dtype(dtype: np.dtype) -> np.dtype:
    """The dtype arithmetic on `dtype` is carried out in: float32 for the half-width floats."""
    return np.dtype(np.float32) if dtype in _HALF_FLOATS else dtype


def as_compute(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32) if a.dtype in _HALF_FLOATS else a


# ---- the registry ---------------------------------------------------------------------------------

OpFunc = Callable[["OpCall"], None]
OPS: dict[str, OpFunc] = {}


def op(*names: str) -> Callable[[OpFunc], OpFunc]:
    """Register an operator implementation under one or more CANN op type names."""

    def register(fn: OpFunc) -> OpFunc:
        for name in names:
            assert name not in OPS, name
            OPS[name] = fn
        return fn

    return register


# ---- one call ---------------------------------------------------------------------------------------

_MISSING = object()


class OpCall:
    """One operator invocation: its arrays and attributes, with checked accessors.

    Every check failure raises DeviceError(ACL_ERROR_INVALID_PARAM) with a message that names the
    operator and what is wrong.  Operators write only into the output arrays, and only after
    every check has passed.
    """

    def __init__(
        self,
        op_type: str,
        inputs: Sequence[Optional[np.ndarray]],
        outputs: Sequence[np.ndarray],
        attrs: Mapping[str, Any],
    ):
        self.op_type = op_type
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.attrs = attrs

    def fail(self, message: str) -> DeviceError:
        return DeviceError(C.ACL_ERROR_INVALID_PARAM, f"{self.op_type}: {message}")

    # ---- counts ----
    def expect_counts(self, n_in: tuple[int, int], n_out: tuple[int, int]) -> None:
        """Check the numbers of inputs and outputs lie in the inclusive ranges given."""
        lo, hi = n_in
        if not lo <= len(self.inputs) <= hi:
            want = str(lo) if lo == hi else f"{lo} to {hi}"
            raise self.fail(f"expects {want} inputs, got {len(self.inputs)}")
        lo, hi = n_out
        if not lo <= len(self.outputs) <= hi:
            want = str(lo) if lo == hi else f"{lo} to {hi}"
            raise self.fail(f"expects {want} outputs, got {len(self.outputs)}")
        for i in range(n_in[0]):
            if self.inputs[i] is None:
                raise self.fail(f"input {i} is required")

    # ---- inputs ----
    def input(self, index: int, name: str) -> np.ndarray:
        a = self.optional_input(index)
        if a is None:
            raise self.fail(f"input {index} ({name}) is required")
        return a

    def optional_input(self, index: int) -> Optional[np.ndarray]:
        """Input `index`, or None when the list is shorter or the entry is None (absent)."""
        return self.inputs[index] if index < len(self.inputs) else None

    def int_values(self, index: int, name: str) -> Optional[list[int]]:
        """An optional integer tensor input read as a flat list of Python ints (None if absent)."""
        a = self.optional_input(index)
        if a is None:
            return None
        if not is_int(a.dtype):
            raise self.fail(f"{name} must be an integer tensor, got {a.dtype}")
        return [int(v) for v in a.reshape(-1)]

    def int_scalar_input_or_attr(self, index: int, name: str, default: Any = _MISSING) -> int:
        """An int given either as a one-element tensor input or as attribute `name`."""
        values = self.int_values(index, name)
        if values is not None:
            if len(values) != 1:
                raise self.fail(f"{name} must have one element, got {len(values)}")
            return values[0]
        return self.attr_int(name, default)

    def ints_input_or_attr(self, index: int, name: str, default: Any = _MISSING) -> list[int]:
        values = self.int_values(index, name)
        if values is not None:
            return values
        return self.attr_ints(name, default)

    # ---- attributes ----
    def _attr(self, name: str, default: Any) -> Any:
        value = self.attrs.get(name, default)
        if value is _MISSING:
            raise self.fail(f"attribute {name!r} is required")
        return value

    def attr_int(self, name: str, default: Any = _MISSING) -> int:
        value = self._attr(name, default)
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
            raise self.fail(f"attribute {name!r} must be an int, got {value!r}")
        return int(value)

    def attr_bool(self, name: str, default: Any = _MISSING) -> bool:
        value = self._attr(name, default)
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        if isinstance(value, (int, np.integer)) and value in (0, 1):  # aclopSetAttrBool takes uint8
            return bool(value)
        raise self.fail(f"attribute {name!r} must be a bool, got {value!r}")

    def attr_float(self, name: str, default: Any = _MISSING) -> float:
        value = self._attr(name, default)
        numeric = isinstance(value, (int, float, np.integer, np.floating))
        if isinstance(value, (bool, np.bool_)) or not numeric:
            raise self.fail(f"attribute {name!r} must be a float, got {value!r}")
        return float(value)

    def attr_str(self, name: str, default: Any = _MISSING) -> str:
        value = self._attr(name, default)
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if not isinstance(value, str):
            raise self.fail(f"attribute {name!r} must be a string, got {value!r}")
        return value

    def attr_ints(self, name: str, default: Any = _MISSING) -> list[int]:
        value = self._attr(name, default)
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if not isinstance(value, (list, tuple)) or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in value
        ):
            raise self.fail(f"attribute {name!r} must be a list of ints, got {value!r}")
        return [int(v) for v in value]

    # ---- checks ----
    def axis(self, axis: int, ndim: int, what: str = "axis") -> int:
        """Normalise a possibly negative axis for an array of rank ndim."""
        if not -ndim <= axis < ndim:
            raise self.fail(f"{what} {axis} out of range for rank {ndim}")
        return axis % ndim

    def same_dtype(self, *named: tuple[str, np.ndarray]) -> np.dtype:
        dtype = named[0][1].dtype
        for name, a in named[1:]:
            if a.dtype != dtype:
                raise self.fail(f"{name} has dtype {a.dtype}, expected {dtype} (as {named[0][0]})")
        return dtype

    def float_input(self, index: int, name: str) -> np.ndarray:
        a = self.input(index, name)
        if not is_float(a.dtype):
            raise self.fail(f"{name} must be a floating-point tensor, got {a.dtype}")
        return a

    def index_input(self, index: int, name: str) -> np.ndarray:
        a = self.input(index, name)
        if a.dtype not in (np.int32, np.int64):
            raise self.fail(f"{name} must be int32 or int64, got {a.dtype}")
        return a

    def check_indices(self, indices: np.ndarray, bound: int, name: str) -> None:
        if indices.size and (indices.min() < 0 or indices.max() >= bound):
            raise self.fail(f"{name} out of range [0, {bound}): min {indices.min()}, max {indices.max()}")

    # ---- outputs ----
    def output(self, index: int) -> np.ndarray:
        return self.outputs[index]

    def check_output_dtype(self, index: int, *allowed: np.dtype) -> None:
        out = self.outputs[index]
        if out.dtype not in allowed:
            names = ", ".join(str(np.dtype(d)) for d in allowed)
            raise self.fail(f"output {index} has dtype {out.dtype}, expected {names}")

    def store(self, index: int, value: np.ndarray) -> None:
        """Write a computed result into output `index` (shape must match its descriptor exactly)."""
        self.store_all([value], first=index)

    def store_all(self, values: Sequence[np.ndarray], first: int = 0) -> None:
        """Write results into consecutive outputs, after checking every shape (all or nothing)."""
        values = [np.asarray(v) for v in values]
        for index, value in enumerate(values, first):
            out = self.outputs[index]
            if value.shape != out.shape:
                raise self.fail(f"output {index} has shape {out.shape}, the result has shape {value.shape}")
        for index, value in enumerate(values, first):
            np.copyto(self.outputs[index], value, casting="unsafe")
