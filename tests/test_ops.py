"""The emulated device's operators against independent numpy formulations."""

from __future__ import annotations

import math

import numpy as np
import pytest
from flexnpu_daemon.backends.base import DeviceError
from flexnpu_daemon.backends.ops import BFLOAT16, OPS, acl_dtype, numpy_dtype, run_op

from flexnpu.acl import constants as C

F32, F16 = np.float32, np.float16
TOL = {np.dtype(F32): dict(rtol=1e-5, atol=1e-5), np.dtype(F16): dict(rtol=2e-2, atol=2e-2)}


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def run(op_type, inputs, outputs, **attrs):
    """Run an op into freshly allocated outputs given as (shape, dtype) pairs; return them."""
    outs = [np.full(shape, 77, dtype=dtype) for shape, dtype in outputs]
    run_op(op_type, inputs, outs, attrs)
    return outs[0] if len(outs) == 1 else outs


def expect_error(code, op_type, inputs, outputs, match=None, **attrs):
    """The op must fail with `code` and leave every output untouched."""
    outs = [np.full(shape, 77, dtype=dtype) for shape, dtype in outputs]
    before = [out.copy() for out in outs]
    with pytest.raises(DeviceError, match=match) as info:
        run_op(op_type, inputs, outs, attrs)
    assert info.value.code == code, info.value
    for out, old in zip(outs, before):
        np.testing.assert_array_equal(out, old, "a failing op wrote into its outputs")
    return info.value


def close(actual, expected, dtype):
    np.testing.assert_allclose(np.asarray(actual, np.float64), expected, **TOL[np.dtype(dtype)])


# ---- types and dispatch ---------------------------------------------------------------------------


def test_numpy_dtype_maps_acl_types_both_ways():
    pairs = {
        C.ACL_FLOAT: np.float32,
        C.ACL_FLOAT16: np.float16,
        C.ACL_INT8: np.int8,
        C.ACL_INT32: np.int32,
        C.ACL_UINT8: np.uint8,
        C.ACL_INT64: np.int64,
        C.ACL_BOOL: np.bool_,
        C.ACL_DOUBLE: np.float64,
        C.ACL_INT16: np.int16,
        C.ACL_UINT64: np.uint64,
    }
    for code, dtype in pairs.items():
        assert numpy_dtype(code) == np.dtype(dtype)
        assert acl_dtype(dtype) == code
    for bad in (C.ACL_STRING, C.ACL_DT_UNDEFINED, 12345, "float"):
        with pytest.raises(DeviceError) as info:
            numpy_dtype(bad)
        assert info.value.code == C.ACL_ERROR_UNSUPPORTED_DATA_TYPE


def test_bfloat16_is_supported_exactly_when_ml_dtypes_is_installed(rng):
    try:
        import ml_dtypes
    except ImportError:
        assert BFLOAT16 is None
        with pytest.raises(DeviceError) as info:
            numpy_dtype(C.ACL_BF16)
        assert info.value.code == C.ACL_ERROR_UNSUPPORTED_DATA_TYPE
        return
    bf16 = np.dtype(ml_dtypes.bfloat16)
    assert numpy_dtype(C.ACL_BF16) == bf16 and acl_dtype(bf16) == C.ACL_BF16
    a = rng.standard_normal((4, 8)).astype(bf16)
    b = rng.standard_normal((8, 3)).astype(bf16)
    got = run("MatMul", [a, b], [((4, 3), bf16)])
    expected = a.astype(np.float64) @ b.astype(np.float64)
    np.testing.assert_allclose(got.astype(np.float64), expected, rtol=2e-2, atol=5e-2)


def test_unknown_operator_is_op_not_found():
    err = expect_error(C.ACL_ERROR_OP_NOT_FOUND, "NoSuchOp", [np.zeros(2, F32)], [((2,), F32)])
    assert "NoSuchOp" in err.message


def test_every_required_operator_is_registered():
    required = [
        "MatMul",
        "MatMulV2",
        "BatchMatMul",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Cast",
        "RmsNorm",
        "SoftmaxV2",
        "SwiGlu",
        "Silu",
        "GatherV2",
        "ArgMaxV2",
        "Transpose",
        "ApplyRotaryPosEmb",
        "ScatterUpdate",
        "PromptFlashAttention",
        "IncreFlashAttention",
        "FusedInferAttentionScore",
    ]
    assert set(required) <= set(OPS)


def test_wrong_input_and_output_counts_are_invalid_param():
    x = np.ones((2, 2), F32)
    expect_error(C.ACL_ERROR_INVALID_PARAM, "Add", [x], [((2, 2), F32)], match="inputs")
    expect_error(C.ACL_ERROR_INVALID_PARAM, "Add", [x, x, x], [((2, 2), F32)], match="inputs")
    expect_error(C.ACL_ERROR_INVALID_PARAM, "Add", [x, x], [], match="outputs")
    expect_error(C.ACL_ERROR_INVALID_PARAM, "Add", [x, None], [((2, 2), F32)], match="required")


def test_bad_attribute_types_are_invalid_param():
    a = np.ones((2, 2), F32)
    expect_error(C.ACL_ERROR_INVALID_PARAM, "MatMul", [a, a], [((2, 2), F32)], transpose_x1="yes")
    expect_error(C.ACL_ERROR_INVALID_PARAM, "SoftmaxV2", [a], [((2, 2), F32)], axes=1.5)
    expect_error(C.ACL_ERROR_INVALID_PARAM, "RmsNorm", [a, a[0]], [((2, 2), F32)], epsilon="small")


# ---- element-wise -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [F32, F16, np.int32])
@pytest.mark.parametrize("op_type", ["Add", "Sub", "Mul", "Div"])
def test_binary_ops_broadcast(op_type, dtype, rng):
    x1 = (rng.standard_normal((3, 1, 4)) * 10).astype(dtype)
    x2 = (rng.standard_normal((5, 4)) * 10).astype(dtype)
    if dtype == np.int32:
        x2[x2 == 0] = 3
    got = run(op_type, [x1, x2], [((3, 5, 4), dtype)])
    a, b = x1.astype(np.float64), x2.astype(np.float64)
    expected = {"Add": a + b, "Sub": a - b, "Mul": a * b, "Div": a / b}[op_type]
    if dtype == np.int32:
        if op_type == "Div":
            expected = np.trunc(expected)  # C semantics: truncate toward zero
        np.testing.assert_array_equal(got, expected.astype(np.int64))
    else:
        close(got, expected, dtype)


def test_integer_division_truncates_and_rejects_zero():
    x1 = np.array([7, -7, 7, -7, 0], np.int32)
    x2 = np.array([2, 2, -2, -2, 5], np.int32)
    np.testing.assert_array_equal(run("Div", [x1, x2], [((5,), np.int32)]), [3, -3, -3, 3, 0])
    expect_error(
        C.ACL_ERROR_INVALID_PARAM, "Div", [x1, np.zeros(5, np.int32)], [((5,), np.int32)], match="zero"
    )


def test_float_division_by_zero_gives_inf_without_warnings():
    got = run("Div", [np.array([1.0, -1.0, 0.0], F32), np.zeros(3, F32)], [((3,), F32)])
    assert got[0] == np.inf and got[1] == -np.inf and np.isnan(got[2])


def test_binary_op_errors():
    a, b = np.ones((2, 3), F32), np.ones((4,), F32)
    expect_error(C.ACL_ERROR_INVALID_PARAM, "Add", [a, b], [((2, 3), F32)], match="broadcast")
    expect_error(C.ACL_ERROR_INVALID_PARAM, "Add", [a, a.astype(F16)], [((2, 3), F32)], match="dtype")
    expect_error(C.ACL_ERROR_INVALID_PARAM, "Add", [a, a], [((3, 2), F32)], match="shape")
    expect_error(C.ACL_ERROR_INVALID_PARAM, "Add", [a, a], [((2, 3), F16)], match="dtype")
    expect_error(C.ACL_ERROR_INVALID_PARAM, "Mul", [a > 0, a > 0], [((2, 3), np.bool_)], match="dtype")


def test_cast(rng):
    x = (rng.standard_normal((4, 5)) * 100).astype(F32)
    np.testing.assert_array_equal(run("Cast", [x], [((4, 5), F16)], dst_type=C.ACL_FLOAT16), x.astype(F16))
    np.testing.assert_array_equal(run("Cast", [x], [((4, 5), np.int32)]), np.trunc(x).astype(np.int32))
    np.testing.assert_array_equal(
        run("Cast", [np.array([0, 2, -1], np.int64)], [((3,), np.bool_)]), [0, 1, 1]
    )
    expect_error(
        C.ACL_ERROR_INVALID_PARAM, "Cast", [x], [((4, 5), F16)], dst_type=C.ACL_FLOAT, match="dst_type"
    )
    expect_error(C.ACL_ERROR_INVALID_PARAM, "Cast", [x], [((5, 4), F16)], match="shape")


# ---- matrix products -------------------------------------------------------------------------------------


def naive_matmul(a, b):
    """Triple loop in float64: independent of numpy's matmul."""
    m, k = a.shape
    n = b.shape[1]
    out = np.zeros((m, n))
    for i in range(m):
        for j in range(n):
            out[i, j] = sum(float(a[i, t]) * float(b[t, j]) for t in range(k))
    return out


@pytest.mark.parametrize("op_type", ["MatMul", "MatMulV2"])
@pytest.mark.parametrize("dtype", [F32, F16])
@pytest.mark.parametrize("t1,t2", [(False, False), (True, False), (False, True), (True, True)])
def test_matmul_transposes_and_bias(op_type, dtype, t1, t2, rng):
    a = rng.standard_normal((3, 5)).astype(dtype)
    b = rng.standard_normal((5, 4)).astype(dtype)
    bias = rng.standard_normal(4).astype(dtype)
    x1 = np.ascontiguousarray(a.T) if t1 else a
    x2 = np.ascontiguousarray(b.T) if t2 else b
    got = run(op_type, [x1, x2, bias], [((3, 4), dtype)], transpose_x1=t1, transpose_x2=t2)
    close(got, naive_matmul(a, b) + bias.astype(np.float64), dtype)
    no_bias = run(op_type, [x1, x2], [((3, 4), F32)], transpose_x1=t1, transpose_x2=t2)  # f32 output
    close(no_bias, naive_matmul(a, b), F32)


def test_matmul_int8_accumulates_in_int32():
    a = np.full((2, 300), 100, np.int8)
    b = np.full((300, 2), 100, np.int8)
    np.testing.assert_array_equal(run("MatMul", [a, b], [((2, 2), np.int32)]), np.full((2, 2), 3_000_000))


def test_matmul_errors():
    a, b = np.ones((3, 5), F32), np.ones((4, 2), F32)
    expect_error(C.ACL_ERROR_INVALID_PARAM, "MatMul", [a, b], [((3, 2), F32)], match="inner")
    expect_error(C.ACL_ERROR_INVALID_PARAM, "MatMul", [a[None], a.T], [((3, 3), F32)], match="2-D")
    expect_error(
        C.ACL_ERROR_INVALID_PARAM, "MatMul", [a, a.T.copy(), np.ones(4, F32)], [((3, 3), F32)], match="bias"
    )
    expect_error(C.ACL_ERROR_INVALID_PARAM, "MatMul", [a, a.T.copy()], [((3, 3), np.int32)], match="dtype")


@pytest.mark.parametrize("dtype", [F32, F16])
@pytest.mark.parametrize("adj1,adj2", [(False, False), (True, True), (False, True)])
def test_batch_matmul_with_broadcast_batch(dtype, adj1, adj2, rng):
    a = rng.standard_normal((2, 3, 4, 5)).astype(dtype)
    b = rng.standard_normal((3, 5, 6)).astype(dtype)  # batch (3,) broadcasts against (2, 3)
    x1 = np.ascontiguousarray(np.swapaxes(a, -1, -2)) if adj1 else a
    x2 = np.ascontiguousarray(np.swapaxes(b, -1, -2)) if adj2 else b
    got = run("BatchMatMul", [x1, x2], [((2, 3, 4, 6), dtype)], adj_x1=adj1, adj_x2=adj2)
    for i in range(2):
        for j in range(3):
            close(got[i, j], naive_matmul(a[i, j], b[j]), dtype)


def test_batch_matmul_errors():
    expect_error(
        C.ACL_ERROR_INVALID_PARAM,
        "BatchMatMul",
        [np.ones((2, 3, 4), F32), np.ones((3, 4, 5), F32)],
        [((2, 3, 5), F32)],
        match="broadcast",
    )


# ---- normalisation and activations --------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [F32, F16])
def test_rms_norm_with_rstd(dtype, rng):
    x = rng.standard_normal((2, 3, 8)).astype(dtype)
    gamma = rng.standard_normal(8).astype(dtype)
    y, rstd = run("RmsNorm", [x, gamma], [((2, 3, 8), dtype), ((2, 3, 1), F32)], epsilon=1e-5)
    for i in range(2):
        for j in range(3):
            row = x[i, j].astype(np.float64)
            r = 1.0 / math.sqrt(sum(v * v for v in row) / 8 + 1e-5)
            close(rstd[i, j, 0], r, F32)
            close(y[i, j], row * r * gamma.astype(np.float64), dtype)
    y_only = run("RmsNorm", [x, gamma], [((2, 3, 8), dtype)], epsilon=1e-5)
    np.testing.assert_array_equal(y_only, y)


def test_rms_norm_over_two_trailing_dims(rng):
    x = rng.standard_normal((4, 3, 2)).astype(F32)
    gamma = np.ones((3, 2), F32)
    y = run("RmsNorm", [x, gamma], [((4, 3, 2), F32)])
    ms = (x.astype(np.float64) ** 2).reshape(4, -1).mean(axis=1)
    close(y, x / np.sqrt(ms + 1e-6)[:, None, None], F32)
    expect_error(
        C.ACL_ERROR_INVALID_PARAM, "RmsNorm", [x, np.ones(3, F32)], [((4, 3, 2), F32)], match="gamma"
    )


@pytest.mark.parametrize("dtype", [F32, F16])
def test_softmax_axes(dtype, rng):
    x = (rng.standard_normal((2, 3, 4)) * 3).astype(dtype)
    last = run("SoftmaxV2", [x], [((2, 3, 4), dtype)])
    for idx in np.ndindex(2, 3):
        e = [math.exp(float(v)) for v in x[idx]]
        close(last[idx], np.array(e) / sum(e), dtype)
    both = run("SoftmaxV2", [x], [((2, 3, 4), dtype)], axes=[0, 2])
    for j in range(3):
        e = np.exp(x[:, j, :].astype(np.float64))
        close(both[:, j, :], e / e.sum(), dtype)
    expect_error(C.ACL_ERROR_INVALID_PARAM, "SoftmaxV2", [x], [((2, 3, 4), dtype)], axes=[3], match="axis")


@pytest.mark.parametrize("dtype", [F32, F16])
def test_silu_and_swiglu(dtype, rng):
    x = (rng.standard_normal((3, 8)) * 4).astype(dtype)
    xd = x.astype(np.float64)

    def silu(v):
        return v / (1.0 + np.exp(-v))

    close(run("Silu", [x], [((3, 8), dtype)]), silu(xd), dtype)
    close(run("SwiGlu", [x], [((3, 4), dtype)]), silu(xd[:, :4]) * xd[:, 4:], dtype)
    close(run("SwiGlu", [x[:2]], [((1, 8), dtype)], dim=0), silu(xd[:1]) * xd[1:2], dtype)
    expect_error(C.ACL_ERROR_INVALID_PARAM, "SwiGlu", [x[:3]], [((1, 8), dtype)], dim=0, match="even")
    expect_error(
        C.ACL_ERROR_INVALID_PARAM, "Silu", [x.astype(np.int32)], [((3, 8), np.int32)], match="floating"
    )


# ---- indexing -----------------------------------------------------------------------------------------


def test_gather_v2_axis_as_input_or_attr(rng):
    x = rng.standard_normal((5, 3, 4)).astype(F32)
    idx = np.array([[4, 0], [2, 2]], np.int64)
    by_input = run("GatherV2", [x, idx, np.array([0], np.int32)], [((2, 2, 3, 4), F32)])
    for i, j in np.ndindex(2, 2):
        np.testing.assert_array_equal(by_input[i, j], x[idx[i, j]])
    idx_last = (idx % 4).astype(np.int32)
    by_attr = run("GatherV2", [x, idx_last], [((5, 3, 2, 2), F32)], axis=-1)
    for i, j in np.ndindex(2, 2):
        np.testing.assert_array_equal(by_attr[:, :, i, j], x[:, :, idx_last[i, j]])


def test_gather_v2_batch_dims(rng):
    x = rng.standard_normal((2, 6, 3)).astype(F32)
    idx = np.array([[5, 0, 1], [2, 2, 4]], np.int32)
    got = run("GatherV2", [x, idx, np.array(1, np.int64)], [((2, 3, 3), F32)], batch_dims=1)
    for b, i in np.ndindex(2, 3):
        np.testing.assert_array_equal(got[b, i], x[b, idx[b, i]])


def test_gather_v2_errors():
    x = np.ones((4, 2), F16)
    out = [((1, 2), F16)]
    expect_error(C.ACL_ERROR_INVALID_PARAM, "GatherV2", [x, np.array([4], np.int32)], out, match="range")
    expect_error(C.ACL_ERROR_INVALID_PARAM, "GatherV2", [x, np.array([-1], np.int32)], out, match="range")
    expect_error(C.ACL_ERROR_INVALID_PARAM, "GatherV2", [x, np.array([1.0], F32)], out, match="int32")
    expect_error(
        C.ACL_ERROR_INVALID_PARAM, "GatherV2", [x, np.array([1], np.int32)], out, axis=2, match="axis"
    )


@pytest.mark.parametrize("dtype", [F32, F16])
def test_arg_max_v2(dtype, rng):
    x = rng.standard_normal((3, 7)).astype(dtype)
    x[1, 2] = x[1, 5] = 50  # a tie: the first index wins
    got = run("ArgMaxV2", [x, np.array([1], np.int32)], [((3,), np.int32)])
    assert got.tolist() == [max(range(7), key=lambda j: (x[i, j], -j)) for i in range(3)]
    assert got[1] == 2
    by_attr = run("ArgMaxV2", [x], [((7,), np.int64)], dimension=0, dtype=C.ACL_INT64)
    assert by_attr.tolist() == [int(np.argmax(x[:, j])) for j in range(7)]
    expect_error(C.ACL_ERROR_INVALID_PARAM, "ArgMaxV2", [x], [((3,), F32)], dimension=1, match="dtype")
    expect_error(C.ACL_ERROR_INVALID_PARAM, "ArgMaxV2", [x], [((3,), np.int32)], match="dimension")
    expect_error(
        C.ACL_ERROR_INVALID_PARAM,
        "ArgMaxV2",
        [x],
        [((3,), np.int32)],
        dimension=1,
        dtype=C.ACL_INT64,
        match="dtype",
    )


def test_transpose(rng):
    x = rng.standard_normal((2, 3, 4)).astype(F16)
    got = run("Transpose", [x, np.array([2, 0, 1], np.int64)], [((4, 2, 3), F16)])
    for i, j, k in np.ndindex(2, 3, 4):
        assert got[k, i, j] == x[i, j, k]
    np.testing.assert_array_equal(run("Transpose", [x], [((3, 2, 4), F16)], perm=[1, 0, 2]), x.swapaxes(0, 1))
    expect_error(
        C.ACL_ERROR_INVALID_PARAM, "Transpose", [x], [((4, 2, 3), F16)], perm=[2, 0, 0], match="perm"
    )


def test_scatter_update_in_place_and_into_a_separate_output(rng):
    var = rng.standard_normal((6, 2, 3)).astype(F32)
    idx = np.array([4, 1], np.int32)
    upd = rng.standard_normal((2, 2, 3)).astype(F32)
    expected = var.copy()
    for n, row in enumerate(idx):
        expected[row] = upd[n]
    separate = np.zeros_like(var)
    run_op("ScatterUpdate", [var, idx, upd], [separate], {})
    np.testing.assert_array_equal(separate, expected)
    in_place = var.copy()
    run_op("ScatterUpdate", [in_place, idx, upd], [in_place], {})  # output is var's buffer
    np.testing.assert_array_equal(in_place, expected)


def test_scatter_update_errors():
    var, upd = np.zeros((4, 3), F32), np.ones((1, 3), F32)
    out = [((4, 3), F32)]
    expect_error(
        C.ACL_ERROR_INVALID_PARAM, "ScatterUpdate", [var, np.array([4], np.int32), upd], out, match="range"
    )
    expect_error(
        C.ACL_ERROR_INVALID_PARAM,
        "ScatterUpdate",
        [var, np.array([0, 1], np.int32), upd],
        out,
        match="updates",
    )
    expect_error(
        C.ACL_ERROR_INVALID_PARAM,
        "ScatterUpdate",
        [var, np.array([0], np.int32), upd.astype(F16)],
        out,
        match="dtype",
    )


@pytest.mark.parametrize("dtype", [F32, F16])
def test_apply_rotary_pos_emb_rotate_half(dtype, rng):
    b, s, n, nkv, d = 2, 3, 4, 2, 8
    q = rng.standard_normal((b, s, n, d)).astype(dtype)
    k = rng.standard_normal((b, s, nkv, d)).astype(dtype)
    angles = rng.uniform(0, 6, (b, s, 1, d // 2))
    cos = np.cos(np.concatenate([angles, angles], -1)).astype(dtype)
    sin = np.sin(np.concatenate([angles, angles], -1)).astype(dtype)

    def rotated(x):
        out = np.zeros(x.shape)
        for idx in np.ndindex(*x.shape[:-1]):
            c, si, v = cos[idx[0], idx[1], 0], sin[idx[0], idx[1], 0], x[idx].astype(np.float64)
            for t in range(d // 2):  # each pair (t, t + d/2) turns by its angle
                out[(*idx, t)] = v[t] * c[t] - v[t + d // 2] * si[t]
                out[(*idx, t + d // 2)] = v[t + d // 2] * c[t] + v[t] * si[t]
        return out

    q_out, k_out = q.copy(), k.copy()
    run_op("ApplyRotaryPosEmb", [q_out, k_out, cos, sin], [q_out, k_out], {"layout": 1})  # in place
    close(q_out, rotated(q), dtype)
    close(k_out, rotated(k), dtype)
    expect_error(
        C.ACL_ERROR_INVALID_PARAM,
        "ApplyRotaryPosEmb",
        [q, k, cos, sin],
        [(q.shape, dtype), (k.shape, dtype)],
        rotary_mode="interleave",
        match="rotary_mode",
    )
    expect_error(
        C.ACL_ERROR_INVALID_PARAM,
        "ApplyRotaryPosEmb",
        [q, k, cos[:, :2], sin[:, :2]],
        [(q.shape, dtype), (k.shape, dtype)],
        match="broadcast",
    )


# ---- attention ------------------------------------------------------------------------------------------


def naive_attention(q, k, v, scale, allowed):
    """Per batch, head and query row; q (B,N,Sq,D), k/v (B,Nkv,Skv,D) BNSD; allowed(b, i, j)."""
    b_, n, sq, d = q.shape
    nkv, skv = k.shape[1], k.shape[2]
    group = n // nkv
    out = np.zeros((b_, n, sq, d))
    for b in range(b_):
        for h in range(n):
            kv = h // group
            for i in range(sq):
                js = [j for j in range(skv) if allowed(b, i, j)]
                if not js:
                    continue  # a row with nothing to attend to is zero
                scores = np.array([scale * float(np.dot(q[b, h, i], k[b, kv, j])) for j in js])
                w = np.exp(scores - scores.max())
                w /= w.sum()
                out[b, h, i] = sum(wj * v[b, kv, j].astype(np.float64) for wj, j in zip(w, js))
    return out


def to_layout(x, layout):
    """BNSD float64 -> the given layout."""
    if layout == "BNSD":
        return x
    bsnd = x.transpose(0, 2, 1, 3)
    return bsnd.reshape(bsnd.shape[0], bsnd.shape[1], -1) if layout == "BSH" else bsnd


def qkv(rng, b, n, nkv, sq, skv, d, dtype):
    q = rng.standard_normal((b, n, sq, d)).astype(dtype)
    k = rng.standard_normal((b, nkv, skv, d)).astype(dtype)
    v = rng.standard_normal((b, nkv, skv, d)).astype(dtype)
    return q, k, v


def causal_right_down(sq, skv):
    return lambda b, i, j: j <= i + skv - sq


@pytest.mark.parametrize("layout", ["BSH", "BSND", "BNSD"])
@pytest.mark.parametrize("dtype", [F32, F16])
def test_prompt_flash_attention_causal_gqa(layout, dtype, rng):
    b, n, nkv, s, d = 2, 8, 2, 5, 16
    q, k, v = qkv(rng, b, n, nkv, s, s, d, dtype)
    scale = 1 / math.sqrt(d)
    expected = to_layout(naive_attention(q, k, v, scale, causal_right_down(s, s)), layout)
    attrs = dict(num_heads=n, num_key_value_heads=nkv, scale_value=scale, input_layout=layout)
    by_mode = run(
        "PromptFlashAttention",
        [to_layout(q, layout), to_layout(k, layout), to_layout(v, layout)],
        [(expected.shape, dtype)],
        sparse_mode=3,
        **attrs,
    )
    close(by_mode, expected, dtype)
    mask = np.triu(np.ones((s, s), np.uint8), k=1)  # 1 = masked
    by_mask = run(
        "PromptFlashAttention",
        [to_layout(q, layout), to_layout(k, layout), to_layout(v, layout), mask],
        [(expected.shape, dtype)],
        pre_tokens=2147483647,
        next_tokens=0,
        **attrs,
    )
    close(by_mask, expected, dtype)


def test_prompt_flash_attention_sparse_modes_with_unequal_lengths(rng):
    b, n, sq, skv, d = 1, 2, 3, 6, 8
    q, k, v = qkv(rng, b, n, n, sq, skv, d, F32)
    attrs = dict(num_heads=n, scale_value=0.5, input_layout="BNSD")
    cases = {
        2: lambda b_, i, j: j <= i,  # top-left causal
        3: causal_right_down(sq, skv),
        4: lambda b_, i, j: i + skv - sq - 1 <= j <= i + skv - sq + 1,  # band, pre 1, next 1
    }
    for mode, allowed in cases.items():
        got = run(
            "PromptFlashAttention",
            [q, k, v],
            [((b, n, sq, d), F32)],
            sparse_mode=mode,
            pre_tokens=1,
            next_tokens=1,
            **attrs,
        )
        close(got, naive_attention(q, k, v, 0.5, allowed), F32)
    no_mask = run("PromptFlashAttention", [q, k, v], [((b, n, sq, d), F32)], **attrs)
    close(no_mask, naive_attention(q, k, v, 0.5, lambda b_, i, j: True), F32)


def test_prompt_flash_attention_mask_band_and_lengths(rng):
    b, n, s, d = 2, 2, 6, 4
    q, k, v = qkv(rng, b, n, n, s, s, d, F32)
    mask = (rng.random((b, 1, s, s)) < 0.3).astype(np.bool_)
    q_lens, kv_lens = [6, 4], [5, 6]

    def allowed(b_, i, j):
        return i < q_lens[b_] and j < kv_lens[b_] and not mask[b_, 0, i, j] and i - 2 <= j <= i + 1

    got = run(
        "PromptFlashAttention",
        [q, k, v, mask],
        [((b, n, s, d), F32)],
        num_heads=n,
        input_layout="BNSD",
        pre_tokens=2,
        next_tokens=1,
        actual_seq_lengths=q_lens,
        actual_seq_lengths_kv=kv_lens,
    )
    close(got, naive_attention(q, k, v, 1.0, allowed), F32)
    assert (got[1, :, 4:] == 0).all()  # rows past the query length are zero
    as_tensors = run(
        "PromptFlashAttention",
        [q, k, v, mask, np.array(q_lens), np.array(kv_lens)],
        [((b, n, s, d), F32)],
        num_heads=n,
        input_layout="BNSD",
        pre_tokens=2,
        next_tokens=1,
    )
    np.testing.assert_array_equal(as_tensors, got)


@pytest.mark.parametrize("layout", ["BSH", "BNSD"])
@pytest.mark.parametrize("dtype", [F32, F16])
def test_incre_flash_attention_kv_lengths_per_batch(layout, dtype, rng):
    b, n, nkv, smax, d = 3, 4, 2, 7, 8
    q, k, v = qkv(rng, b, n, nkv, 1, smax, d, dtype)
    lengths = [7, 3, 1]
    expected = to_layout(naive_attention(q, k, v, 0.3, lambda b_, i, j: j < lengths[b_]), layout)
    ins = [to_layout(q, layout), to_layout(k, layout), to_layout(v, layout)]
    attrs = dict(num_heads=n, num_key_value_heads=nkv, scale_value=0.3, input_layout=layout)
    by_attr = run("IncreFlashAttention", ins, [(expected.shape, dtype)], actual_seq_lengths=lengths, **attrs)
    close(by_attr, expected, dtype)
    by_tensor = run(
        "IncreFlashAttention", [*ins, None, np.array(lengths, np.int64)], [(expected.shape, dtype)], **attrs
    )
    np.testing.assert_array_equal(by_tensor, by_attr)
    mask = np.zeros((b, 1, 1, smax), np.int8)
    mask[:, :, :, 0] = 1  # mask position 0 as well
    masked = run(
        "IncreFlashAttention", [*ins, mask], [(expected.shape, dtype)], actual_seq_lengths=lengths, **attrs
    )
    expected_masked = naive_attention(q, k, v, 0.3, lambda b_, i, j: 0 < j < lengths[b_])
    close(masked, to_layout(expected_masked, layout), dtype)


def test_attention_never_reads_keys_past_the_valid_length(rng):
    b, n, smax, d = 2, 2, 6, 4
    q, k, v = qkv(rng, b, n, n, 1, smax, d, F32)
    lengths = [3, 5]
    clean = run(
        "IncreFlashAttention",
        [q, k, v],
        [(q.shape, F32)],
        num_heads=n,
        input_layout="BNSD",
        actual_seq_lengths=lengths,
    )
    for i, length in enumerate(lengths):  # garbage in the unwritten tail of a KV cache
        k[i, :, length:] = np.nan
        v[i, :, length:] = np.inf
    dirty = run(
        "IncreFlashAttention",
        [q, k, v],
        [(q.shape, F32)],
        num_heads=n,
        input_layout="BNSD",
        actual_seq_lengths=lengths,
    )
    np.testing.assert_array_equal(dirty, clean)
    close(clean, naive_attention(q, k, v, 1.0, lambda b_, i, j: j < lengths[b_]), F32)


def test_fused_infer_attention_score_matches_pfa_and_ifa(rng):
    b, n, nkv, s, d = 2, 4, 1, 5, 8
    q, k, v = qkv(rng, b, n, nkv, s, s, d, F32)
    attrs = dict(num_heads=n, num_key_value_heads=nkv, input_layout="BNSD")
    prefill = run("FusedInferAttentionScore", [q, k, v], [(q.shape, F32)], scale=0.25, sparse_mode=3, **attrs)
    pfa = run("PromptFlashAttention", [q, k, v], [(q.shape, F32)], scale_value=0.25, sparse_mode=3, **attrs)
    np.testing.assert_array_equal(prefill, pfa)
    q1 = q[:, :, :1]
    decode, lse = run(
        "FusedInferAttentionScore",
        [q1, k, v],
        [(q1.shape, F32), ((b, n, 1, 1), F32)],
        scale=0.25,
        actual_seq_lengths_kv=[5, 2],
        **attrs,
    )
    ifa = run(
        "IncreFlashAttention",
        [q1, k, v],
        [(q1.shape, F32)],
        scale_value=0.25,
        actual_seq_lengths=[5, 2],
        **attrs,
    )
    np.testing.assert_allclose(decode, ifa, rtol=1e-6)
    scores = 0.25 * np.einsum("d,jd->j", q1[1, 3, 0].astype(np.float64), k[1, 0, :2].astype(np.float64))
    close(lse[1, 3, 0, 0], math.log(np.exp(scores).sum()), F32)


def test_attention_errors(rng):
    q, k, v = qkv(rng, 1, 4, 2, 3, 3, 8, F32)
    out = [(q.shape, F32)]
    bad = C.ACL_ERROR_INVALID_PARAM
    base = dict(input_layout="BNSD", num_heads=4, num_key_value_heads=2)
    expect_error(
        bad, "PromptFlashAttention", [q, k, v], out, **{**base, "num_key_value_heads": 3}, match="multiple"
    )
    expect_error(
        bad, "PromptFlashAttention", [q, k, v], out, **{**base, "num_key_value_heads": 4}, match="heads"
    )
    expect_error(
        bad, "PromptFlashAttention", [q, k, v], out, **{**base, "input_layout": "TND"}, match="input_layout"
    )
    expect_error(
        bad, "PromptFlashAttention", [q, k, v], out, **{**base, "sparse_mode": 1}, match="atten_mask"
    )
    expect_error(
        bad, "PromptFlashAttention", [q, k, v], out, **{**base, "sparse_mode": 7}, match="sparse_mode"
    )
    expect_error(bad, "PromptFlashAttention", [q, k, v.astype(F16)], out, **base, match="dtype")
    expect_error(
        bad, "PromptFlashAttention", [q, k, v, np.zeros((3, 3), F32)], out, **base, match="atten_mask"
    )
    expect_error(
        bad, "PromptFlashAttention", [q, k, v, np.zeros((2, 3), np.bool_)], out, **base, match="atten_mask"
    )
    expect_error(bad, "PromptFlashAttention", [q, k, v], out, input_layout="BNSD", match="num_heads")
    expect_error(
        bad, "PromptFlashAttention", [q, k, v], out, **base, actual_seq_lengths_kv=[4], match="actual"
    )
    expect_error(bad, "IncreFlashAttention", [q, k, v], out, **base, match="one token")
    q1 = q[:, :, :1]
    expect_error(bad, "IncreFlashAttention", [q1, k, v], [(q1.shape, F32)], **base, actual_seq_lengths=[9])
    expect_error(bad, "IncreFlashAttention", [q1, k, v], [((1, 4, 1, 4), F32)], **base, match="shape")
