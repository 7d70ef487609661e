"""Qwen2-style dense decoder (GQA, SwiGLU, QKV bias, RoPE) as the operator stream an Ascend serving
engine issues per step (vllm-ascend's layer, acl_api §4): RmsNorm -> QKV MatMul -> RoPE -> KV cache
ScatterUpdate -> attention -> o_proj -> Add -> RmsNorm -> gate_up MatMul -> SwiGlu -> down MatMul -> Add;
then final RmsNorm, LM head on the rows that need logits, ArgMax (greedy sampling)."""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate

from flexnpu.models.base import BatchShape, ChipBatch, Model
from flexnpu.timing.ops import DTYPE_BYTES, Op, Tensor


@dataclass(frozen=True)
class Qwen2Config:
    name: str
    n_layers: int
    hidden: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    dtype: str = "bfloat16"

    @property
    def q_width(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.n_kv_heads * self.head_dim

    def params_per_layer(self) -> int:
        h = self.hidden
        qkv = h * (self.q_width + 2 * self.kv_width) + self.q_width + 2 * self.kv_width  # weights + bias
        return qkv + self.q_width * h + 3 * h * self.intermediate + 2 * h

    def params(self) -> int:
        # untied input embedding and LM head, plus the final norm
        return self.n_layers * self.params_per_layer() + 2 * self.vocab * self.hidden + self.hidden


# Qwen2.5-7B: 28 layers, hidden 3584, 28 query / 4 KV heads, head dim 128, intermediate 18944, vocab
# 152064 (the issue; anchors §4 [S35]).
QWEN25_7B = Qwen2Config("qwen2.5-7b", n_layers=28, hidden=3584, n_heads=28, n_kv_heads=4, head_dim=128,
                        intermediate=18944, vocab=152064)

# A small configuration for tests (the Tier B shape of anchors §7: 4 layers would do; 2 keeps tests fast).
QWEN2_TINY = Qwen2Config("qwen2-tiny", n_layers=2, hidden=256, n_heads=4, n_kv_heads=2, head_dim=64,
                         intermediate=512, vocab=32000)


class Qwen2Model(Model):
    parallelism = "one chip per instance (no tensor parallelism)"

    def __init__(self, cfg: Qwen2Config):
        self.cfg = cfg
        self.name = cfg.name
        self.n_layers = cfg.n_layers

    def plan(self, batch: BatchShape, chips: int) -> ChipBatch:
        if chips != 1:
            raise ValueError(f"{self.name} runs one chip per instance (got {chips})")
        return ChipBatch(tokens=batch.tokens, logits=batch.logits, group_tokens=batch.tokens,
                         prefill=batch.prefill, n_decode=batch.n_decode, decode_kv=batch.decode_kv)

    def kv_bytes_per_token(self) -> int:
        c = self.cfg
        return 2 * c.n_layers * c.kv_width * DTYPE_BYTES[c.dtype]

    def weight_bytes_per_chip(self, chips: int) -> float:
        return float(self.cfg.params() * DTYPE_BYTES[self.cfg.dtype])

    def embed_ops(self, cb: ChipBatch) -> list[Op]:
        c = self.cfg
        return [Op("GatherV2", (Tensor((c.vocab, c.hidden), c.dtype), Tensor((cb.tokens,), "int64")))]

    def final_ops(self, cb: ChipBatch, tokens: bool = True, logits: bool = True) -> list[Op]:
        c, dt, rows = self.cfg, self.cfg.dtype, cb.logits
        ops = [Op("RmsNorm", (Tensor((cb.tokens, c.hidden), dt), Tensor((c.hidden,), dt)))] if tokens else []
        if logits and rows:
            ops += [
                Op("MatMulV2", (Tensor((rows, c.hidden), dt), Tensor((c.hidden, c.vocab), dt))),
                Op("ArgMaxV2", (Tensor((rows, c.vocab), dt),)),
            ]
        return ops

    def layer_ops(self, cb: ChipBatch, layer: int, tokens: bool = True, context: bool = True) -> list[Op]:
        c, dt, t = self.cfg, self.cfg.dtype, cb.tokens
        h = c.hidden
        x = Tensor((t, h), dt)
        ops: list[Op] = []
        if tokens:
            qkv_out = c.q_width + 2 * c.kv_width
            ops += [
                Op("RmsNorm", (x, Tensor((h,), dt))),
                Op("MatMulV2", (x, Tensor((h, qkv_out), dt), Tensor((qkv_out,), dt))),
                Op("ApplyRotaryPosEmb", (Tensor((t, c.q_width), dt), Tensor((t, c.kv_width), dt),
                                         Tensor((t, c.head_dim), dt), Tensor((t, c.head_dim), dt))),
                # write this step's K and V rows into the paged cache
                Op("ScatterUpdate", (Tensor((1,), dt), Tensor((t,), "int64"), Tensor((t, c.kv_width), dt))),
                Op("ScatterUpdate", (Tensor((1,), dt), Tensor((t,), "int64"), Tensor((t, c.kv_width), dt))),
            ]
        if context:
            ops += self._attention(cb)
        if tokens:
            ops += [
                Op("MatMulV2", (Tensor((t, c.q_width), dt), Tensor((c.q_width, h), dt))),
                Op("Add", (x, x)),
                Op("RmsNorm", (x, Tensor((h,), dt))),
                Op("MatMulV2", (x, Tensor((h, 2 * c.intermediate), dt))),
                Op("SwiGlu", (Tensor((t, 2 * c.intermediate), dt),)),
                Op("MatMulV2", (Tensor((t, c.intermediate), dt), Tensor((c.intermediate, h), dt))),
                Op("Add", (x, x)),
            ]
        return ops

    def _attention(self, cb: ChipBatch) -> list[Op]:
        c, dt = self.cfg, self.cfg.dtype
        heads = {"num_heads": c.n_heads, "num_key_value_heads": c.n_kv_heads}
        ops = []
        if cb.prefill:
            q_lens = [q for q, _ in cb.prefill]
            kv_lens = [kv for _, kv in cb.prefill]
            tp = sum(q_lens)
            ops.append(Op(
                "PromptFlashAttention",
                (Tensor((tp, c.n_heads, c.head_dim), dt),
                 Tensor((sum(kv_lens), c.n_kv_heads, c.head_dim), dt),
                 Tensor((sum(kv_lens), c.n_kv_heads, c.head_dim), dt)),
                attrs={**heads, "input_layout": "TND", "sparse_mode": 3,
                       "actual_seq_lengths": list(accumulate(q_lens)), "actual_seq_lengths_kv": kv_lens},
                phase="prefill"))
        if cb.n_decode:
            ops.append(Op(
                "IncreFlashAttention",
                (Tensor((cb.n_decode, 1, c.q_width), dt), Tensor((1,), dt), Tensor((1,), dt)),
                attrs={**heads, "input_layout": "BSH", "kv_total": cb.decode_kv},
                phase="decode"))
        return ops
