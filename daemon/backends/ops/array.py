"""Indexing and data-movement operators.

=============  =========================================  ========================================
op             inputs -> outputs                          attrs (default)
=============  =========================================  ========================================
GatherV2       x, indices (int32/int64), axis? (one-      axis (0; used when there is no third
               element int tensor) -> y of shape          input), batch_dims (0)
               x[:axis] + indices[batch_dims:] +
               x[axis+1:]; indices must lie in
               [0, x.shape[axis])
ArgMaxV2       x, dimension? (one-element int tensor)     dimension (used when there is no second
               -> y (int32 or int64), x's shape without   input), dtype (optional aclDataType of y;
               that axis; ties -> the first index         must agree with y's descriptor)
Transpose      x, perm? (int tensor) -> y                 perm (used when there is no second input)
ScatterUpdate  var, indices (int32/int64), updates ->     use_locking (ignored)
               var: var[indices[i]] = updates[i] along
               axis 0 (updates shape = indices shape +
               var.shape[1:]); in place when the output
               is var's buffer; duplicate indices: last
               update wins
=============  =========================================  ========================================
"""

from __future__ import annotations

import math

import numpy as np

from ._core import OpCall, as_compute, numpy_dtype, op


@op("GatherV2")
def gather_v2(call: OpCall) -> None:
    call.expect_counts((2, 3), (1, 1))
    x, indices = call.input(0, "x"), call.index_input(1, "indices")
    call.check_output_dtype(0, x.dtype)
    if x.ndim == 0:
        raise call.fail("x must have rank >= 1")
    axis = call.axis(call.int_scalar_input_or_attr(2, "axis", 0), x.ndim)
    batch_dims = call.attr_int("batch_dims", 0)
    if batch_dims < 0:
        batch_dims += indices.ndim
    if not 0 <= batch_dims <= min(indices.ndim, axis):
        raise call.fail(f"batch_dims {batch_dims} must lie in [0, min(rank(indices), axis)]")
    if x.shape[:batch_dims] != indices.shape[:batch_dims]:
        raise call.fail(f"batch dims of x {x.shape} and indices {indices.shape} differ")
    call.check_indices(indices, x.shape[axis], "indices")
    out_shape = x.shape[:axis] + indices.shape[batch_dims:] + x.shape[axis + 1 :]
    if batch_dims == 0:
        result = np.take(x, indices, axis=axis)
    else:
        n = math.prod(x.shape[:batch_dims])
        xs = x.reshape((n, *x.shape[batch_dims:]))
        ids = indices.reshape((n, *indices.shape[batch_dims:]))
        parts = [np.take(xs[i], ids[i], axis=axis - batch_dims) for i in range(n)]
        result = np.stack(parts).reshape(out_shape) if n else np.empty(out_shape, x.dtype)
    call.store(0, result)


@op("ArgMaxV2")
def arg_max_v2(call: OpCall) -> None:
    call.expect_counts((1, 2), (1, 1))
    x = call.input(0, "x")
    call.check_output_dtype(0, np.int32, np.int64)
    if "dtype" in call.attrs and numpy_dtype(call.attr_int("dtype")) != call.output(0).dtype:
        raise call.fail(f"attribute dtype disagrees with the output descriptor ({call.output(0).dtype})")
    if x.ndim == 0:
        raise call.fail("x must have rank >= 1")
    axis = call.axis(call.int_scalar_input_or_attr(1, "dimension"), x.ndim, "dimension")
    if x.shape[axis] == 0:
        raise call.fail(f"argmax over an empty axis of {x.shape}")
    call.store(0, np.argmax(as_compute(x), axis=axis))


@op("Transpose")
def transpose(call: OpCall) -> None:
    call.expect_counts((1, 2), (1, 1))
    x = call.input(0, "x")
    call.check_output_dtype(0, x.dtype)
    perm = call.ints_input_or_attr(1, "perm")
    if sorted(perm) != list(range(x.ndim)):
        raise call.fail(f"perm {perm} is not a permutation of the {x.ndim} axes of x")
    call.store(0, np.transpose(x, perm))


@op("ScatterUpdate")
def scatter_update(call: OpCall) -> None:
    call.expect_counts((3, 3), (1, 1))
    var, indices, updates = call.input(0, "var"), call.index_input(1, "indices"), call.input(2, "updates")
    out = call.output(0)
    call.same_dtype(("var", var), ("updates", updates))
    call.check_output_dtype(0, var.dtype)
    if var.ndim == 0:
        raise call.fail("var must have rank >= 1")
    if out.shape != var.shape:
        raise call.fail(f"output shape {out.shape} must equal var's {var.shape}")
    if updates.shape != indices.shape + var.shape[1:]:
        raise call.fail(
            f"updates {updates.shape} must have shape indices + var[1:] = {indices.shape + var.shape[1:]}"
        )
    call.check_indices(indices, var.shape[0], "indices")
    if np.may_share_memory(updates, out):
        updates = updates.copy()  # the copy of var below must not clobber them
    in_place = out.ctypes.data == var.ctypes.data and out.strides == var.strides
    if not in_place:
        call.store(0, var)
    out[indices.reshape(-1)] = updates.reshape((-1, *var.shape[1:]))
