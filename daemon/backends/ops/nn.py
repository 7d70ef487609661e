"""Neural-network building blocks: normalisation, activations, softmax, rotary embedding.

=================  ======================================  =======================================
op                 inputs -> outputs                       attrs (default)
=================  ======================================  =======================================
RmsNorm            x, gamma (x's trailing dims) ->         epsilon (1e-6)
                   y (x's shape), rstd? (float32, x's
                   shape with gamma's dims set to 1)
SoftmaxV2          x -> y                                  axes ([-1])
Silu               x -> y = x * sigmoid(x)                 -
SwiGlu             x -> y: x split in two halves a, b      dim (-1)
                   along dim; y = silu(a) * b
ApplyRotaryPosEmb  query, key, cos, sin -> query, key      layout (1 = BSND; any layout works as
                   (in place on the device when the        long as cos/sin broadcast against query
                   outputs are the input buffers); cos     and key), rotary_mode ("half": the
                   and sin broadcast against query/key     rotate-half form; the only one supported)
=================  ======================================  =======================================

All compute in float32 (float64 for float64 inputs) and round once into the output dtype.
"""

from __future__ import annotations

import numpy as np

from ._core import OpCall, as_compute, op


@op("RmsNorm")
def rms_norm(call: OpCall) -> None:
    call.expect_counts((2, 2), (1, 2))
    x, gamma = call.float_input(0, "x"), call.float_input(1, "gamma")
    call.check_output_dtype(0, x.dtype)
    if gamma.ndim == 0 or gamma.ndim > x.ndim or x.shape[x.ndim - gamma.ndim :] != gamma.shape:
        raise call.fail(f"gamma shape {gamma.shape} must equal the trailing dims of x {x.shape}")
    epsilon = call.attr_float("epsilon", 1e-6)
    axes = tuple(range(x.ndim - gamma.ndim, x.ndim))
    xc = as_compute(x)
    rstd = 1.0 / np.sqrt(np.mean(xc * xc, axis=axes, keepdims=True) + xc.dtype.type(epsilon))
    results = [xc * rstd * as_compute(gamma)]
    if len(call.outputs) == 2:
        call.check_output_dtype(1, np.float32, np.float16, np.float64)
        results.append(rstd)
    call.store_all(results)


def _softmax(x: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    shifted = x - np.max(x, axis=axes, keepdims=True)
    e = np.exp(shifted)
    return e / np.sum(e, axis=axes, keepdims=True)


@op("SoftmaxV2")
def softmax(call: OpCall) -> None:
    call.expect_counts((1, 1), (1, 1))
    x = call.float_input(0, "x")
    call.check_output_dtype(0, x.dtype)
    axes = call.attr_ints("axes", [-1])
    if not axes:
        raise call.fail("axes must not be empty")
    norm = tuple(sorted({call.axis(a, x.ndim) for a in axes}))
    if x.size == 0:
        call.store(0, x)
        return
    call.store(0, _softmax(as_compute(x), norm))


def _silu(x: np.ndarray) -> np.ndarray:
    return x / (1.0 + np.exp(-x))


@op("Silu")
def silu(call: OpCall) -> None:
    call.expect_counts((1, 1), (1, 1))
    x = call.float_input(0, "x")
    call.check_output_dtype(0, x.dtype)
    call.store(0, _silu(as_compute(x)))


@op("SwiGlu")
def swiglu(call: OpCall) -> None:
    call.expect_counts((1, 1), (1, 1))
    x = call.float_input(0, "x")
    call.check_output_dtype(0, x.dtype)
    dim = call.axis(call.attr_int("dim", -1), x.ndim, "dim")
    if x.shape[dim] % 2:
        raise call.fail(f"dim {dim} of x {x.shape} must have an even size")
    a, b = np.split(as_compute(x), 2, axis=dim)
    call.store(0, _silu(a) * b)


def rotate_half(x: np.ndarray) -> np.ndarray:
    half = x.shape[-1] // 2
    return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


@op("ApplyRotaryPosEmb")
def apply_rotary_pos_emb(call: OpCall) -> None:
    call.expect_counts((4, 4), (2, 2))
    query, key = call.float_input(0, "query"), call.float_input(1, "key")
    cos, sin = call.float_input(2, "cos"), call.float_input(3, "sin")
    call.same_dtype(("query", query), ("key", key), ("cos", cos), ("sin", sin))
    call.check_output_dtype(0, query.dtype)
    call.check_output_dtype(1, query.dtype)
    if call.attr_int("layout", 1) not in (1, 2, 3):
        raise call.fail(f"layout {call.attrs.get('layout')!r} is not one of 1 (BSND), 2 (SBND), 3 (BNSD)")
    mode = call.attr_str("rotary_mode", "half")
    if mode != "half":
        raise call.fail(f"rotary_mode {mode!r} is not supported (only 'half')")
    if cos.shape != sin.shape:
        raise call.fail(f"cos {cos.shape} and sin {sin.shape} differ")
    dim = query.shape[-1] if query.ndim else 0
    if dim % 2 or key.shape[-1:] != (dim,) or cos.shape[-1:] != (dim,):
        raise call.fail(
            f"last dims must be one even head dim: query {query.shape} key {key.shape} cos {cos.shape}"
        )
    c, s = as_compute(cos), as_compute(sin)
    results = []
    for name, x in (("query", query), ("key", key)):
        try:
            shape = np.broadcast_shapes(x.shape, c.shape)
        except ValueError:
            shape = None
        if shape != x.shape:
            raise call.fail(f"cos/sin {cos.shape} do not broadcast to {name} {x.shape}")
        xc = as_compute(x)
        results.append(xc * c + rotate_half(xc) * s)
    call.store_all(results)  # both computed before either (in-place) write
