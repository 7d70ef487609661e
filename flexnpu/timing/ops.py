"""Operators as the device sees them, and what each one costs: FLOPs, HBM bytes and link bytes.

An :class:`Op` carries an operator type name (the CANN / aclnn operator name), its input and output
tensors (shape and dtype) and its attributes.  :func:`op_cost` turns it into an :class:`OpCost`;
:mod:`flexnpu.timing.roofline` turns that into time on a chip.

Conventions (kept deliberately simple, one formula per operator):

* every tensor an operator touches is read or written once (no cache reuse across operators);
* a multiply-add is 2 FLOPs; element-wise operators count a few FLOPs per output element, which only
  matters when HBM is not already the bound;
* attention counts the two matrix products (``QK^T`` and ``PV``) over the (query, key) pairs it visits
  -- causal masks halve that -- and reads each request's K/V cache once;
* a paged KV cache or a cache tensor passed whole is *not* read whole: attention reads the actual
  lengths, ``ScatterUpdate`` writes only the updated rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Callable

DTYPE_BYTES = {
    "float16": 2, "bfloat16": 2, "float32": 4, "float64": 8, "int8": 1, "uint8": 1, "fp8": 1,
    "int16": 2, "int32": 4, "int64": 8, "bool": 1,
}

# Operators that run on the matrix (cube / tensor-core) units; everything else uses the vector units.
CUBE_OPS = frozenset({
    "MatMul", "MatMulV2", "BatchMatMul", "GroupedMatmul",
    "PromptFlashAttention", "IncreFlashAttention", "FusedInferAttentionScore",
})


@dataclass(frozen=True)
class Tensor:
    shape: tuple[int, ...]
    dtype: str = "bfloat16"

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def itemsize(self) -> int:
        try:
            return DTYPE_BYTES[self.dtype]
        except KeyError:
            raise ValueError(f"unknown dtype {self.dtype!r}") from None

    @property
    def nbytes(self) -> int:
        return self.numel * self.itemsize


@dataclass
class Op:
    """One operator launch: type name, tensors, attributes.  ``phase`` is optional metadata (the
    models tag their operators; the daemon may not know it)."""

    type: str
    inputs: tuple[Tensor, ...]
    outputs: tuple[Tensor, ...] = ()
    attrs: dict[str, Any] = field(default_factory=dict)
    phase: str | None = None


@dataclass(frozen=True)
class OpCost:
    flops: float
    bytes: float
    link_bytes: float = 0.0
    unit: str = "vector"  # "cube" or "vector": which compute units the FLOPs run on
    latency_s: float = 0.0  # fixed start-up time that uses no resource (collective handshakes)


def _nbytes(ts: Sequence[Tensor]) -> int:
    return sum(t.nbytes for t in ts)


def _out_or(op: Op, default: Tensor) -> tuple[Tensor, ...]:
    return op.outputs if op.outputs else (default,)


def _matmul(op: Op) -> OpCost:
    a, b = op.inputs[0], op.inputs[1]
    m, k = a.shape[-2], a.shape[-1]
    if op.attrs.get("transpose_x1") or op.attrs.get("adj_x1"):
        m, k = k, m
    kb, n = b.shape[-2], b.shape[-1]
    if op.attrs.get("transpose_x2") or op.attrs.get("adj_x2"):
        kb, n = n, kb
    if kb != k:
        raise ValueError(f"{op.type}: inner dimensions differ ({a.shape} x {b.shape})")
    batch = max(math.prod(a.shape[:-2]), math.prod(b.shape[:-2]))
    outs = _out_or(op, Tensor((*a.shape[:-2], m, n) if len(a.shape) >= len(b.shape) else
                              (*b.shape[:-2], m, n), a.dtype))
    return OpCost(2.0 * batch * m * k * n, _nbytes(op.inputs) + _nbytes(outs), unit="cube")


def _grouped_matmul(op: Op) -> OpCost:
    """x (T, K) routed to the experts held here, weights (E, K, N).  ``active_experts`` (may be an
    expected, fractional count) says how many experts received tokens: only their weights are read."""
    x, w = op.inputs[0], op.inputs[1]
    t, k = x.shape[-2], x.shape[-1]
    e, kw, n = w.shape
    if kw != k:
        raise ValueError(f"GroupedMatmul: inner dimensions differ ({x.shape} x {w.shape})")
    active = float(op.attrs.get("active_experts", e))
    outs = _out_or(op, Tensor((t, n), x.dtype))
    weight_bytes = w.nbytes * min(active, e) / e
    return OpCost(2.0 * t * k * n, x.nbytes + weight_bytes + _nbytes(op.inputs[2:]) + _nbytes(outs),
                  unit="cube")


def _broadcast_shape(shapes: Sequence[tuple[int, ...]]) -> tuple[int, ...]:
    rank = max(len(s) for s in shapes)
    out = []
    for i in range(rank):
        dims = [s[i - rank + len(s)] for s in shapes if i - rank + len(s) >= 0]
        out.append(max(dims))
    return tuple(out)


def _elementwise(flops_per_elem: float) -> Callable[[Op], OpCost]:
    def cost(op: Op) -> OpCost:
        out_shape = _broadcast_shape([t.shape for t in op.inputs])
        outs = _out_or(op, Tensor(out_shape, op.inputs[0].dtype))
        n = outs[0].numel
        return OpCost(flops_per_elem * n, _nbytes(op.inputs) + _nbytes(outs))
    return cost


def _cast(op: Op) -> OpCost:
    x = op.inputs[0]
    outs = _out_or(op, Tensor(x.shape, op.attrs.get("dst_type", "float32")))
    return OpCost(float(x.numel), x.nbytes + _nbytes(outs))


def _rms_norm(op: Op) -> OpCost:
    x = op.inputs[0]
    rows = x.numel // x.shape[-1]
    outs = _out_or(op, Tensor(x.shape, x.dtype))
    if not op.outputs:  # aclnnRmsNorm also writes rstd, one float32 per row
        outs = (*outs, Tensor((rows,), "float32"))
    return OpCost(4.0 * x.numel, _nbytes(op.inputs) + _nbytes(outs))


def _swiglu(op: Op) -> OpCost:
    x = op.inputs[0]
    outs = _out_or(op, Tensor((*x.shape[:-1], x.shape[-1] // 2), x.dtype))
    return OpCost(5.0 * outs[0].numel, x.nbytes + _nbytes(outs))


def _gather(op: Op) -> OpCost:
    table, idx = op.inputs[0], op.inputs[1]
    outs = _out_or(op, Tensor((*idx.shape, *table.shape[1:]), table.dtype))
    # reads only the gathered rows, then writes them
    return OpCost(0.0, 2 * _nbytes(outs) + idx.nbytes)


def _argmax(op: Op) -> OpCost:
    x = op.inputs[0]
    outs = _out_or(op, Tensor(x.shape[:-1], "int32"))
    return OpCost(float(x.numel), x.nbytes + _nbytes(outs))


def _transpose(op: Op) -> OpCost:
    x = op.inputs[0]
    outs = _out_or(op, Tensor(x.shape[::-1], x.dtype))
    return OpCost(0.0, x.nbytes + _nbytes(outs))


def _rope(op: Op) -> OpCost:
    q, k = op.inputs[0], op.inputs[1]
    rest = op.inputs[2:]  # cos, sin
    return OpCost(3.0 * (q.numel + k.numel), 2 * (q.nbytes + k.nbytes) + _nbytes(rest))


def _scatter_update(op: Op) -> OpCost:
    _var, idx, upd = op.inputs[0], op.inputs[1], op.inputs[2]
    return OpCost(0.0, 2 * upd.nbytes + idx.nbytes)


def _gating_topk(op: Op) -> OpCost:
    x = op.inputs[0]
    k = int(op.attrs.get("k", 8))
    rows = x.numel // x.shape[-1]
    outs = _out_or(op, Tensor((rows, k), "float32"))
    return OpCost(5.0 * x.numel, x.nbytes + 2 * _nbytes(outs))


def _all_to_all(op: Op) -> OpCost:
    """Expert-parallel dispatch/combine.  ``send_bytes`` leave this chip over the link; the same amount
    arrives, so HBM sees one read and one write of it."""
    send = float(op.attrs["send_bytes"])
    return OpCost(0.0, 2.0 * send, link_bytes=send, latency_s=float(op.attrs.get("latency_s", 0.0)))


# --- attention ---------------------------------------------------------------------------------


def causal_pairs(q_len: float, kv_len: float) -> float:
    """(query, key) pairs a causal (right-down aligned) mask visits: the chunk's ``q_len`` queries sit
    at the end of a ``kv_len`` sequence."""
    prefix = kv_len - q_len
    return q_len * prefix + q_len * (q_len + 1) / 2.0


def attention_cost(n_heads: int, n_kv_heads: int, head_dim: int, value_head_dim: int, pairs: float,
                   q_tokens: float, kv_tokens: float, itemsize: int, shared_kv: bool = False) -> OpCost:
    """The single formula every attention operator uses.

    ``pairs``: (query, key) pairs visited; ``q_tokens``: query tokens (q read, output written);
    ``kv_tokens``: cached tokens read (summed over requests).  ``shared_kv``: K and V are one latent
    cache (MLA in absorbed form), so V is not read separately.
    """
    flops = 2.0 * n_heads * (head_dim + value_head_dim) * pairs
    q_out = q_tokens * n_heads * (head_dim + value_head_dim) * itemsize
    kv_width = head_dim if shared_kv else head_dim + value_head_dim
    kv = kv_tokens * n_kv_heads * kv_width * itemsize
    return OpCost(flops, q_out + kv, unit="cube")


def _heads(op: Op, q: Tensor) -> tuple[int, int, int, int]:
    n = int(op.attrs.get("num_heads", 1))
    nkv = int(op.attrs.get("num_key_value_heads", 0)) or n
    layout = op.attrs.get("input_layout", "BSH")
    if layout in ("BSH", "TH"):
        d = int(op.attrs.get("head_dim", q.shape[-1] // n))
    else:  # BNSD, BSND, TND: last dim is the head dim
        d = int(op.attrs.get("head_dim", q.shape[-1]))
    dv = int(op.attrs.get("value_head_dim", d))
    return n, nkv, d, dv


def _query_lengths(op: Op, q: Tensor) -> list[int]:
    layout = op.attrs.get("input_layout", "BSH")
    if layout == "TND":
        cum = list(op.attrs["actual_seq_lengths"])  # cumulative query tokens (vllm-ascend convention)
        return [b - a for a, b in zip([0, *cum[:-1]], cum)]
    if "actual_seq_lengths" in op.attrs:
        return list(op.attrs["actual_seq_lengths"])
    b = q.shape[0]
    s = q.shape[2] if layout == "BNSD" else q.shape[1]
    return [s] * b


def _kv_lengths(op: Op, k: Tensor, nq: int) -> list[int]:
    if "actual_seq_lengths_kv" in op.attrs:
        return list(op.attrs["actual_seq_lengths_kv"])
    layout = op.attrs.get("input_layout", "BSH")
    s = k.shape[2] if layout == "BNSD" else k.shape[1]
    return [s] * nq


def _prompt_flash_attention(op: Op) -> OpCost:
    """Prefill.  Causal when ``sparse_mode`` is 2/3 (CANN) or ``causal`` is set."""
    q, k = op.inputs[0], op.inputs[1]
    n, nkv, d, dv = _heads(op, q)
    q_lens = _query_lengths(op, q)
    kv_lens = _kv_lengths(op, k, len(q_lens))
    causal = op.attrs.get("causal", op.attrs.get("sparse_mode", 0) in (2, 3))
    pairs = sum(causal_pairs(s, kv) if causal else s * kv for s, kv in zip(q_lens, kv_lens))
    return attention_cost(n, nkv, d, dv, pairs, sum(q_lens), sum(kv_lens), q.itemsize,
                          bool(op.attrs.get("shared_kv")))


def _incre_flash_attention(op: Op) -> OpCost:
    """Decode: one query token per request.  KV lengths from ``actual_seq_lengths`` (per request, as
    CANN documents for IncreFlashAttention), or ``kv_total`` when only the sum is known (the cost is
    linear in it)."""
    q, k = op.inputs[0], op.inputs[1]
    n, nkv, d, dv = _heads(op, q)
    b = q.shape[0]
    if "kv_total" in op.attrs:
        kv_total = float(op.attrs["kv_total"])
    elif "actual_seq_lengths" in op.attrs:
        kv_total = float(sum(op.attrs["actual_seq_lengths"]))
    else:
        layout = op.attrs.get("input_layout", "BSH")
        kv_total = float(b * (k.shape[2] if layout == "BNSD" else k.shape[1]))
    return attention_cost(n, nkv, d, dv, kv_total, b, kv_total, q.itemsize, bool(op.attrs.get("shared_kv")))


def _fused_infer_attention(op: Op) -> OpCost:
    """Both phases (TND layout as vllm-ascend uses it): ``actual_seq_lengths`` are cumulative query
    tokens, ``actual_seq_lengths_kv`` per-request KV lengths; causal within each request."""
    q = op.inputs[0]
    n, nkv, d, dv = _heads(op, q)
    cum = list(op.attrs["actual_seq_lengths"])
    q_lens = [b - a for a, b in zip([0, *cum[:-1]], cum)]
    kv_lens = list(op.attrs["actual_seq_lengths_kv"])
    pairs = sum(causal_pairs(s, kv) for s, kv in zip(q_lens, kv_lens))
    return attention_cost(n, nkv, d, dv, pairs, sum(q_lens), sum(kv_lens), q.itemsize,
                          bool(op.attrs.get("shared_kv")))


_COST_FNS: dict[str, Callable[[Op], OpCost]] = {
    "MatMul": _matmul,
    "MatMulV2": _matmul,
    "BatchMatMul": _matmul,
    "GroupedMatmul": _grouped_matmul,
    "Add": _elementwise(1.0),
    "Sub": _elementwise(1.0),
    "Mul": _elementwise(1.0),
    "Div": _elementwise(1.0),
    "Cast": _cast,
    "RmsNorm": _rms_norm,
    "SoftmaxV2": _elementwise(5.0),
    "SwiGlu": _swiglu,
    "Silu": _elementwise(4.0),
    "GatherV2": _gather,
    "ArgMaxV2": _argmax,
    "Transpose": _transpose,
    "ApplyRotaryPosEmb": _rope,
    "ScatterUpdate": _scatter_update,
    "MoeGatingTopKSoftmax": _gating_topk,
    "HcomAllToAllV": _all_to_all,
    "PromptFlashAttention": _prompt_flash_attention,
    "IncreFlashAttention": _incre_flash_attention,
    "FusedInferAttentionScore": _fused_infer_attention,
}

KNOWN_OPS = frozenset(_COST_FNS)


def op_cost(op: Op) -> OpCost:
    """FLOPs and bytes of one operator from its shapes, dtypes and attributes."""
    try:
        fn = _COST_FNS[op.type]
    except KeyError:
        raise ValueError(f"no cost model for operator {op.type!r}") from None
    cost = fn(op)
    if op.type in CUBE_OPS and cost.unit != "cube":
        cost = OpCost(cost.flops, cost.bytes, cost.link_bytes, "cube", cost.latency_s)
    return cost
