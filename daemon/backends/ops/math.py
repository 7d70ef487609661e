"""Arithmetic operators: element-wise binaries, Cast, matrix products.

=============  =====================================  ==========================================
op             inputs                                 attrs (default)
=============  =====================================  ==========================================
Add Sub Mul    x1, x2 (same dtype, numpy              -
Div            broadcasting); y has the broadcast
               shape and the inputs' dtype.  Integer
               Div truncates toward zero; an integer
               division by zero is INVALID_PARAM.
Cast           x; y's dtype comes from its            dst_type (optional aclDataType; must
               descriptor                             agree with y's dtype), truncate (ignored)
MatMul         x1 (M,K), x2 (K,N), bias (N,)?         transpose_x1 (False), transpose_x2 (False)
MatMulV2       ... and offset_w? (must be absent)     same, offset_x (0; must be 0)
BatchMatMul    x1 (...,M,K), x2 (...,K,N), bias?      adj_x1 (False), adj_x2 (False); batch dims
BatchMatMulV2                                         broadcast like numpy
=============  =====================================  ==========================================

Matrix products of float16/bfloat16 accumulate in float32 and may write a float16/bfloat16 or a
float32 output; int8 products accumulate in int32 and write int32.
"""

from __future__ import annotations

import numpy as np

from ._core import OpCall, as_compute, is_float, is_int, numpy_dtype, op

_ARITHMETIC = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply}


@op("Add", "Sub", "Mul", "Div")
def binary(call: OpCall) -> None:
    call.expect_counts((2, 2), (1, 1))
    x1, x2 = call.input(0, "x1"), call.input(1, "x2")
    dtype = call.same_dtype(("x1", x1), ("x2", x2))
    if not (is_float(dtype) or is_int(dtype) or dtype.kind == "c"):
        raise call.fail(f"unsupported dtype {dtype}")
    call.check_output_dtype(0, dtype)
    if x1.shape != x2.shape:
        try:
            np.broadcast_shapes(x1.shape, x2.shape)
        except ValueError:
            raise call.fail(f"shapes {x1.shape} and {x2.shape} do not broadcast") from None
    a, b = as_compute(x1), as_compute(x2)
    if call.op_type != "Div":
        result = _ARITHMETIC[call.op_type](a, b)
    elif is_int(dtype):
        if np.any(b == 0):
            raise call.fail("integer division by zero")
        a64, b64 = a.astype(np.int64), b.astype(np.int64)
        quotient = np.abs(a64) // np.abs(b64)
        result = np.where((a64 < 0) != (b64 < 0), -quotient, quotient)
    else:
        result = np.true_divide(a, b)
    call.store(0, result)  # numpy gives the result the broadcast shape


@op("Cast")
def cast(call: OpCall) -> None:
    call.expect_counts((1, 1), (1, 1))
    x, y = call.input(0, "x"), call.output(0)
    if "dst_type" in call.attrs:
        wanted = numpy_dtype(call.attr_int("dst_type"))
        if wanted != y.dtype:
            raise call.fail(f"dst_type is {wanted} but the output descriptor says {y.dtype}")
    call.store(0, x)


def _matmul_output_dtypes(call: OpCall, dtype: np.dtype) -> tuple[np.dtype, ...]:
    if dtype == np.int8:
        return (np.dtype(np.int32),)
    if is_float(dtype):
        return (dtype, np.dtype(np.float32))
    if is_int(dtype):
        return (dtype,)
    raise call.fail(f"unsupported dtype {dtype}")


def _product(call: OpCall, a: np.ndarray, b: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """a @ b (+ bias) with the accumulation type the NPU uses."""
    dtype = call.same_dtype(("x1", a), ("x2", b))
    call.check_output_dtype(0, *_matmul_output_dtypes(call, dtype))
    if a.shape[-1] != b.shape[-2]:
        raise call.fail(f"inner dimensions differ: x1 {a.shape} x2 {b.shape} (after transposes)")
    if is_int(dtype):
        acc = np.dtype(np.int32 if dtype == np.int8 else np.int64)
    else:
        acc = np.dtype(np.float64 if dtype == np.float64 else np.float32)
    try:
        result = np.matmul(a.astype(acc, copy=False), b.astype(acc, copy=False))
    except ValueError:
        raise call.fail(f"batch shapes of x1 {a.shape} and x2 {b.shape} do not broadcast") from None
    if bias is not None:
        n = result.shape[-1]
        if bias.ndim not in (1, 2) or bias.shape[-1] != n or bias.size != n:
            raise call.fail(f"bias must have shape ({n},), got {bias.shape}")
        result = result + as_compute(bias.reshape(n)).astype(result.dtype)
    return result


@op("MatMul", "MatMulV2")
def matmul(call: OpCall) -> None:
    call.expect_counts((2, 4), (1, 1))
    x1, x2 = call.input(0, "x1"), call.input(1, "x2")
    if call.optional_input(3) is not None or call.attr_int("offset_x", 0) != 0:
        raise call.fail("quantized matmul (offset_w / offset_x) is not supported")
    if x1.ndim != 2 or x2.ndim != 2:
        raise call.fail(f"x1 and x2 must be 2-D, got {x1.shape} and {x2.shape}")
    a = x1.T if call.attr_bool("transpose_x1", False) else x1
    b = x2.T if call.attr_bool("transpose_x2", False) else x2
    call.store(0, _product(call, a, b, call.optional_input(2)))


@op("BatchMatMul", "BatchMatMulV2")
def batch_matmul(call: OpCall) -> None:
    call.expect_counts((2, 4), (1, 1))
    x1, x2 = call.input(0, "x1"), call.input(1, "x2")
    if call.optional_input(3) is not None:
        raise call.fail("quantized matmul (offset_w) is not supported")
    if x1.ndim < 2 or x2.ndim < 2:
        raise call.fail(f"x1 and x2 must have rank >= 2, got {x1.shape} and {x2.shape}")
    a = np.swapaxes(x1, -1, -2) if call.attr_bool("adj_x1", False) else x1
    b = np.swapaxes(x2, -1, -2) if call.attr_bool("adj_x2", False) else x2
    call.store(0, _product(call, a, b, call.optional_input(2)))
