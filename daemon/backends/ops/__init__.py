"""The emulated device's operator library: CANN operator types with numpy reference semantics.

``run_op(op_type, inputs, outputs, attrs)`` computes operator ``op_type`` and writes the results
into ``outputs``: numpy arrays that are views of device memory, already typed and shaped from their
tensor descriptors.  ``inputs`` are arrays too; an optional input is absent when the list is shorter
or its entry is None.  ``attrs`` maps CANN attribute names to Python values (bool, int, float, str,
list of int / float).  Each module documents its operators' inputs and attributes in a table:

- ``math``: Add, Sub, Mul, Div, Cast, MatMul, MatMulV2, BatchMatMul, BatchMatMulV2
- ``nn``: RmsNorm, SoftmaxV2, Silu, SwiGlu, ApplyRotaryPosEmb
- ``array``: GatherV2, ArgMaxV2, Transpose, ScatterUpdate
- ``attention``: PromptFlashAttention, IncreFlashAttention, FusedInferAttentionScore

Errors are DeviceErrors with ACL codes: ACL_ERROR_OP_NOT_FOUND for an unknown type,
ACL_ERROR_INVALID_PARAM for wrong counts, shapes, dtypes or attributes (the message names the
operator and the problem).  An operator writes nothing when it fails a check.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Optional

import numpy as np

from flexnpu.acl import constants as C

from ..base import DeviceError
from . import array, attention, math, nn  # noqa: F401  (importing registers the operators)
from ._core import BFLOAT16, OPS, OpCall, acl_dtype, numpy_dtype

__all__ = ["BFLOAT16", "OPS", "acl_dtype", "numpy_dtype", "run_op"]


def run_op(
    op_type: str,
    inputs: Sequence[Optional[np.ndarray]],
    outputs: Sequence[np.ndarray],
    attrs: Mapping[str, Any],
) -> None:
    """Run one operator; see the module docstring."""
    impl = OPS.get(op_type)
    if impl is None:
        raise DeviceError(C.ACL_ERROR_OP_NOT_FOUND, f"operator type {op_type!r} is not supported")
    call = OpCall(op_type, inputs, outputs, attrs)
    try:
        # Overflow, 0/0 and the like give inf/nan as on the device, not Python warnings.
        with np.errstate(all="ignore"):
            impl(call)
    except DeviceError:
        raise
    except (ValueError, TypeError, IndexError) as exc:  # a shape combination no check foresaw
        raise call.fail(f"{type(exc).__name__}: {exc}") from exc
    except MemoryError as exc:
        raise DeviceError(C.ACL_ERROR_BAD_ALLOC, f"{op_type}: out of host memory") from exc
