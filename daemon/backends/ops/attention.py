"""LLM attention operators: PromptFlashAttention (prefill), IncreFlashAttention (decode) and
FusedInferAttentionScore (both).

Inputs, in this order for all three (an optional input is absent when the list is shorter or the
entry is None)::

    0 query   1 key   2 value   3 atten_mask?   4 actual_seq_lengths?   5 actual_seq_lengths_kv?

(The CANN graph prototypes also carry pse_shift and quantisation inputs; those are not supported,
and atten_mask takes the slot right after value.)  query/key/value share one floating dtype and
one layout, attribute ``input_layout``: "BSH" (B, S, N*D), "BSND" (B, S, N, D) or "BNSD"
(B, N, S, D); key and value have ``num_key_value_heads`` heads (0 means num_heads), and query
head h reads kv head h // (num_heads // num_key_value_heads) (GQA).  The output has query's shape,
layout and dtype.  Scores are computed in float32: softmax(scale * q k^T + mask) v.

atten_mask (bool/int8/uint8): nonzero means "do not attend".  PromptFlashAttention / FIA accept
(Sq, Skv), (B|1, Sq, Skv) and (B|1, 1, Sq, Skv), larger masks are cut to their top-left
(Sq, Skv) corner.  IncreFlashAttention accepts (B, Skv), (B, 1, Skv) and (B, 1, 1, Skv).

Valid lengths per batch row: ``actual_seq_lengths`` (query rows; for IncreFlashAttention the KV
lengths) and ``actual_seq_lengths_kv`` (PFA/FIA), each as an int list attribute or as an integer
tensor input (slots 4 and 5); one value applies to every row, otherwise the first B values are
used.  Keys at positions >= the KV length are ignored, query rows >= the query length give zeros.

sparse_mode (PFA/FIA), with i a query row and j a key position, lq/lkv the row's valid lengths:

    0  the mask as given, and the band i - pre_tokens <= j <= i + next_tokens; without a mask
       nothing is masked (pre/next_tokens ignored)
    1  the mask as given (required); pre/next_tokens ignored
    2  causal from the top left: j <= i  (a mask may be passed; it is not needed)
    3  causal from the bottom right: j <= i + lkv - lq  (likewise)
    4  band from the bottom right: i + lkv - lq - pre_tokens <= j <= i + lkv - lq + next_tokens

A row with nothing left to attend to outputs zeros.

=========================  ==========================================================================
op                         attrs (default)
=========================  ==========================================================================
PromptFlashAttention       num_heads (required), scale_value (1.0), pre_tokens (2147483647),
                           next_tokens (0), input_layout ("BSH"), num_key_value_heads (0),
                           sparse_mode (0), actual_seq_lengths, actual_seq_lengths_kv,
                           inner_precise (ignored)
IncreFlashAttention        num_heads (required), scale_value (1.0), input_layout ("BSH"),
                           num_key_value_heads (0), actual_seq_lengths (KV lengths); query S must
                           be 1; block_size / inner_precise ignored (no paged KV)
FusedInferAttentionScore   as PromptFlashAttention, but the scale attribute is ``scale``; a second
                           output, if given, receives softmax_lse (B, N, Sq, 1) float32
=========================  ==========================================================================
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from ._core import OpCall, op

INT_MAX = 2147483647
_LAYOUTS = ("BSH", "BSND", "BNSD")


class _Heads:
    """query/key/value of one call, converted to float32 BNSD arrays."""

    def __init__(self, call: OpCall, layout: str, num_heads: int, num_kv_heads: int):
        query, key = call.float_input(0, "query"), call.float_input(1, "key")
        value = call.float_input(2, "value")
        call.same_dtype(("query", query), ("key", key), ("value", value))
        call.check_output_dtype(0, query.dtype)
        if layout not in _LAYOUTS:
            raise call.fail(f"input_layout {layout!r} is not one of {', '.join(_LAYOUTS)}")
        if num_heads <= 0:
            raise call.fail(f"num_heads must be positive, got {num_heads}")
        if num_kv_heads == 0:
            num_kv_heads = num_heads
        if num_kv_heads < 0 or num_heads % num_kv_heads:
            raise call.fail(f"num_heads {num_heads} is not a multiple of num_key_value_heads {num_kv_heads}")
        rank = 3 if layout == "BSH" else 4
        for name, a in (("query", query), ("key", key), ("value", value)):
            if a.ndim != rank:
                raise call.fail(f"{name} must have rank {rank} for layout {layout}, got {a.shape}")
        if key.shape != value.shape:
            raise call.fail(f"key {key.shape} and value {value.shape} differ")
        if key.shape[0] != query.shape[0]:
            raise call.fail(f"batch sizes differ: query {query.shape} key {key.shape}")
        self.layout, self.query_shape = layout, query.shape
        self.q = self._to_bnsd(call, "query", query, num_heads)
        self.head_dim = self.q.shape[-1]
        self.k = self._to_bnsd(call, "key", key, num_kv_heads)
        self.v = self._to_bnsd(call, "value", value, num_kv_heads)
        if self.k.shape[-1] != self.head_dim:
            raise call.fail(f"head dims differ: query {query.shape} key {key.shape} ({layout})")
        self.batch, self.q_len, self.kv_len = self.q.shape[0], self.q.shape[2], self.k.shape[2]

    def _to_bnsd(self, call: OpCall, name: str, a: np.ndarray, heads: int) -> np.ndarray:
        if self.layout == "BSH":
            b, s, h = a.shape
            dim = self.query_shape[2] // heads if name == "query" else self.head_dim
            if dim == 0 or h != heads * dim:
                raise call.fail(f"{name} hidden size {h} is not {heads} heads x head dim ({self.layout})")
            a = a.reshape(b, s, heads, dim)
        if self.layout in ("BSH", "BSND"):
            a = a.transpose(0, 2, 1, 3)
        if a.shape[1] != heads:
            raise call.fail(f"{name} {a.shape} must have {heads} heads ({self.layout})")
        return a.astype(np.float32)

    def from_bnsd(self, out: np.ndarray) -> np.ndarray:
        if self.layout == "BNSD":
            return out
        out = out.transpose(0, 2, 1, 3)
        return out.reshape(self.query_shape) if self.layout == "BSH" else out


def _attend(
    q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float, allowed: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """softmax(scale * q k^T) v over the allowed positions, float32 BNSD; also log-sum-exp.

    q (B, N, Sq, D), k/v (B, Nkv, Skv, D), allowed broadcastable to (B, 1, Sq, Skv).
    """
    b, n, sq, d = q.shape
    nkv = k.shape[1]
    q5 = q.reshape(b, nkv, n // nkv, sq, d)  # query heads grouped by the kv head they read
    scores = (q5 @ k[:, :, None].swapaxes(-1, -2)) * np.float32(scale)
    allowed5 = np.broadcast_to(allowed, (b, 1, sq, k.shape[2]))[:, :, None]
    scores = np.where(allowed5, scores, -np.inf)
    if scores.shape[-1]:
        peak = np.max(scores, axis=-1, keepdims=True)
        peak = np.where(np.isfinite(peak), peak, 0.0).astype(np.float32)  # fully masked rows
    else:
        peak = np.zeros((*scores.shape[:-1], 1), np.float32)
    weights = np.exp(scores - peak)
    total = np.sum(weights, axis=-1, keepdims=True)
    probs = weights / np.where(total > 0, total, 1.0)
    out = (probs @ v[:, :, None]).reshape(b, n, sq, d)
    lse = (np.log(total) + peak).reshape(b, n, sq, 1)
    return out.astype(np.float32), lse.astype(np.float32)


def _lengths(call: OpCall, index: int, name: str, batch: int, limit: int) -> np.ndarray:
    """Per-batch valid lengths (input tensor `index` or list attribute `name`), default `limit`."""
    values = call.int_values(index, name)
    if values is None:
        values = call.attr_ints(name, [limit])
    if len(values) == 1:
        values = values * batch
    if len(values) < batch:
        raise call.fail(f"{name} has {len(values)} values for batch {batch}")
    lengths = np.asarray(values[:batch], dtype=np.int64)
    if lengths.size and (lengths.min() < 0 or lengths.max() > limit):
        raise call.fail(f"{name} {values[:batch]} must lie in [0, {limit}]")
    return lengths


def _mask(call: OpCall, batch: int, sq: int, skv: int, decode: bool) -> Optional[np.ndarray]:
    """The optional atten_mask input as a boolean (B|1, Sq, Skv) array, True = masked."""
    mask = call.optional_input(3)
    if mask is None:
        return None
    if mask.dtype not in (np.bool_, np.int8, np.uint8):
        raise call.fail(f"atten_mask must be bool, int8 or uint8, got {mask.dtype}")
    shape = mask.shape
    if decode:  # (B, Skv), (B, 1, Skv), (B, 1, 1, Skv)
        ok = mask.ndim in (2, 3, 4) and all(s == 1 for s in shape[1:-1]) and shape[0] in (1, batch)
        ok = ok and shape[-1] >= skv
        m = mask.reshape(shape[0], 1, shape[-1]) if ok else None
    else:  # (Sq, Skv), (B|1, Sq, Skv), (B|1, 1, Sq, Skv)
        ok = mask.ndim in (2, 3, 4) and shape[-2] >= sq and shape[-1] >= skv
        ok = ok and (mask.ndim == 2 or shape[0] in (1, batch)) and (mask.ndim < 4 or shape[1] == 1)
        m = mask.reshape((1 if mask.ndim == 2 else shape[0], *shape[-2:])) if ok else None
    if m is None:
        raise call.fail(f"atten_mask shape {shape} does not fit batch {batch}, Sq {sq}, Skv {skv}")
    return m[:, :sq, :skv] != 0


def _allowed_positions(call: OpCall, heads: _Heads, decode: bool) -> np.ndarray:
    """Boolean (B, Sq, Skv): which key positions each query row attends to."""
    b, sq, skv = heads.batch, heads.q_len, heads.kv_len
    if decode:
        q_lens = np.full(b, sq, dtype=np.int64)
        kv_lens = _lengths(call, 4, "actual_seq_lengths", b, skv)
        mode = 0
    else:
        q_lens = _lengths(call, 4, "actual_seq_lengths", b, sq)
        kv_lens = _lengths(call, 5, "actual_seq_lengths_kv", b, skv)
        mode = call.attr_int("sparse_mode", 0)
    i = np.arange(sq)[None, :, None]
    j = np.arange(skv)[None, None, :]
    lq, lkv = q_lens[:, None, None], kv_lens[:, None, None]
    allowed = (i < lq) & (j < lkv)
    mask = _mask(call, b, sq, skv, decode)
    if decode:
        return allowed if mask is None else allowed & ~mask
    pre, nxt = call.attr_int("pre_tokens", INT_MAX), call.attr_int("next_tokens", 0)
    if mode == 0:
        if mask is not None:
            allowed = allowed & ~mask & (j >= i - pre) & (j <= i + nxt)
    elif mode == 1:
        if mask is None:
            raise call.fail("sparse_mode 1 needs an atten_mask")
        allowed = allowed & ~mask
    elif mode == 2:
        allowed = allowed & (j <= i)
    elif mode == 3:
        allowed = allowed & (j <= i + lkv - lq)
    elif mode == 4:
        diagonal = i + lkv - lq
        allowed = allowed & (j >= diagonal - pre) & (j <= diagonal + nxt)
    else:
        raise call.fail(f"sparse_mode {mode} is not supported (0-4)")
    return allowed


def _attention(call: OpCall, scale_attr: str, decode: bool) -> None:
    heads = _Heads(
        call,
        call.attr_str("input_layout", "BSH"),
        call.attr_int("num_heads"),
        call.attr_int("num_key_value_heads", 0),
    )
    if decode and heads.q_len != 1:
        raise call.fail(f"query must hold one token per batch row, got {heads.query_shape} ({heads.layout})")
    allowed = _allowed_positions(call, heads, decode)
    # Keys no row attends to are never read, as on the device: they may hold garbage (a KV cache's
    # unwritten tail), and 0 * nan would leak into the output.
    used = allowed.any(axis=1)  # (B, Skv)
    end = int(np.flatnonzero(used.any(axis=0))[-1]) + 1 if used.any() else 0
    k, v = heads.k[:, :, :end], np.where(used[:, None, :end, None], heads.v[:, :, :end], np.float32(0))
    out, lse = _attend(heads.q, k, v, call.attr_float(scale_attr, 1.0), allowed[:, None, :, :end])
    results = [heads.from_bnsd(out)]
    if len(call.outputs) == 2:
        call.check_output_dtype(1, np.float32)
        results.append(lse)
    call.store_all(results)


@op("PromptFlashAttention")
def prompt_flash_attention(call: OpCall) -> None:
    call.expect_counts((3, 6), (1, 1))
    _attention(call, "scale_value", decode=False)


@op("IncreFlashAttention")
def incre_flash_attention(call: OpCall) -> None:
    call.expect_counts((3, 5), (1, 1))
    _attention(call, "scale_value", decode=True)


@op("FusedInferAttentionScore")
def fused_infer_attention_score(call: OpCall) -> None:
    call.expect_counts((3, 6), (1, 2))
    _attention(call, "scale", decode=False)
