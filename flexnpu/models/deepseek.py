"""DeepSeek-V3 / R1: MLA attention and a 256-expert MoE, deployed the way large Ascend clusters run it:
data-parallel attention (each chip holds whole requests and their latent KV cache) and expert
parallelism over the chips of an instance, with an all-to-all dispatch and combine per MoE layer over
the chip-to-chip link.

Per MoE layer the operator stream is: RmsNorm -> MLA (q_a, q_b, kv_a MatMuls, norms, RoPE, latent cache
ScatterUpdate, attention, o_proj) -> Add -> RmsNorm -> gate MatMul -> MoeGatingTopKSoftmax -> all-to-all
dispatch -> GroupedMatmul gate_up -> SwiGlu -> GroupedMatmul down -> all-to-all combine -> shared
expert (MatMul, SwiGlu, MatMul) -> Add.  The first ``n_dense`` layers have a dense FFN instead.

Attention takes two forms, as DeepSeek's reference and the Ascend kernels do: prefill up-projects the
latent cache (kv_b) and attends with 192-dim keys / 128-dim values; decode absorbs the up-projections
into the query and output (two BatchMatMuls) and attends over the 576-wide latent cache directly.

Assumptions, stated once: expert load is balanced (an EPLB-style placement), so every chip receives
``top_k / chips`` of the instance's routed tokens and activates ``E_local * (1 - (1 - k/E)^T)`` of its
experts in expectation; decode requests are spread evenly over the chips; prefill prompts are placed
whole on chips, longest first, and the step takes as long as the busiest chip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import accumulate

from flexnpu.models.base import BatchShape, ChipBatch, Model
from flexnpu.timing.ops import DTYPE_BYTES, Op, Tensor

# Start-up time of one all-to-all (handshake and synchronisation) that does not shrink with message
# size.  No Ascend/HCCL figure was found; 20 us is our assumption (small-message collective latency on
# NVLink/HCCS-class links is tens of microseconds).
A2A_LATENCY_S = 20e-6


@dataclass(frozen=True)
class DeepSeekConfig:
    name: str = "deepseek-r1"
    n_layers: int = 61
    n_dense: int = 3
    hidden: int = 7168
    n_heads: int = 128
    q_lora_rank: int = 1536
    kv_lora_rank: int = 512
    qk_nope_dim: int = 128
    qk_rope_dim: int = 64
    v_head_dim: int = 128
    dense_intermediate: int = 18432
    moe_intermediate: int = 2048
    n_routed: int = 256
    n_shared: int = 1
    top_k: int = 8
    vocab: int = 129280
    # W8A8-style deployment as CloudMatrix-Infer runs R1 (INT8, anchors §1 [S27]): 1-byte weights.
    # Matrix products are still costed at the BF16 peak (conservative: the INT8 peak is higher).
    weight_dtype: str = "int8"
    act_dtype: str = "bfloat16"
    kv_dtype: str = "bfloat16"  # 70,272 B/token, anchors §4

    @property
    def latent_width(self) -> int:
        return self.kv_lora_rank + self.qk_rope_dim  # 576 cached values per layer and token

    @property
    def qk_head_dim(self) -> int:
        return self.qk_nope_dim + self.qk_rope_dim

    def attention_params(self) -> int:
        h, n = self.hidden, self.n_heads
        return (h * self.q_lora_rank + self.q_lora_rank * n * self.qk_head_dim
                + h * self.latent_width + self.kv_lora_rank * n * (self.qk_nope_dim + self.v_head_dim)
                + n * self.v_head_dim * h + self.q_lora_rank + self.kv_lora_rank + 2 * h)

    def expert_params(self) -> int:
        return 3 * self.hidden * self.moe_intermediate

    def replicated_params(self) -> int:
        """Held by every chip: attention, dense FFNs, shared experts, router, embeddings, LM head."""
        n_moe = self.n_layers - self.n_dense
        return (self.n_layers * self.attention_params()
                + self.n_dense * 3 * self.hidden * self.dense_intermediate
                + n_moe * (self.n_shared * self.expert_params() + self.hidden * self.n_routed)
                + 2 * self.vocab * self.hidden)

    def routed_params(self) -> int:
        return (self.n_layers - self.n_dense) * self.n_routed * self.expert_params()


DEEPSEEK_R1 = DeepSeekConfig()


class DeepSeekModel(Model):
    # 16 chips (910C packages, 32 dies) per instance: expert parallelism over 32 dies, the prefill
    # instance size of CloudMatrix-Infer (anchors §1 [S27], recalled).  Overridable per run.
    default_instance_chips = 16
    parallelism = "data-parallel attention + expert parallelism over the instance's chips"

    def __init__(self, cfg: DeepSeekConfig = DEEPSEEK_R1):
        self.cfg = cfg
        self.name = cfg.name
        self.n_layers = cfg.n_layers

    # -- placement ----------------------------------------------------------------------------------

    def plan(self, batch: BatchShape, chips: int) -> ChipBatch:
        n_dec = math.ceil(batch.n_decode / chips)
        loads = [n_dec] * chips
        assigned: list[list[tuple[int, int]]] = [[] for _ in range(chips)]
        for chunk in sorted(batch.prefill, key=lambda qk: -qk[0]):  # longest first onto the least loaded
            i = min(range(chips), key=loads.__getitem__)
            loads[i] += chunk[0]
            assigned[i].append(chunk)
        busiest = max(range(chips), key=loads.__getitem__)
        mine = tuple(assigned[busiest])
        logits = math.ceil(batch.n_decode / chips) + len(mine)
        return ChipBatch(tokens=loads[busiest], logits=logits, group_tokens=batch.tokens, prefill=mine,
                         n_decode=n_dec if batch.n_decode else 0, decode_kv=batch.decode_kv / chips,
                         chips=chips)

    def kv_bytes_per_token(self) -> int:
        c = self.cfg
        return c.n_layers * c.latent_width * DTYPE_BYTES[c.kv_dtype]

    def weight_bytes_per_chip(self, chips: int) -> float:
        c = self.cfg
        return (c.replicated_params() + c.routed_params() / chips) * DTYPE_BYTES[c.weight_dtype]

    # -- operators ----------------------------------------------------------------------------------

    def layer_groups(self) -> list[tuple[int, int]]:
        c = self.cfg
        return [(0, c.n_dense), (c.n_dense, c.n_layers - c.n_dense)]

    def embed_ops(self, cb: ChipBatch) -> list[Op]:
        c = self.cfg
        return [Op("GatherV2", (Tensor((c.vocab, c.hidden), c.act_dtype), Tensor((cb.tokens,), "int64")))]

    def final_ops(self, cb: ChipBatch, tokens: bool = True, logits: bool = True) -> list[Op]:
        c, a, rows = self.cfg, self.cfg.act_dtype, cb.logits
        ops = [Op("RmsNorm", (Tensor((cb.tokens, c.hidden), a), Tensor((c.hidden,), a)))] if tokens else []
        if logits and rows:
            ops += [
                Op("MatMulV2", (Tensor((rows, c.hidden), a), Tensor((c.hidden, c.vocab), c.weight_dtype))),
                Op("ArgMaxV2", (Tensor((rows, c.vocab), a),)),
            ]
        return ops

    def layer_ops(self, cb: ChipBatch, layer: int, tokens: bool = True, context: bool = True) -> list[Op]:
        c, a, w, t = self.cfg, self.cfg.act_dtype, self.cfg.weight_dtype, cb.tokens
        h, n = c.hidden, c.n_heads
        x = Tensor((t, h), a)
        ops: list[Op] = []
        if tokens:
            ops += [
                Op("RmsNorm", (x, Tensor((h,), a))),
                Op("MatMulV2", (x, Tensor((h, c.q_lora_rank), w))),
                Op("RmsNorm", (Tensor((t, c.q_lora_rank), a), Tensor((c.q_lora_rank,), a))),
                Op("MatMulV2", (Tensor((t, c.q_lora_rank), a),
                                Tensor((c.q_lora_rank, n * c.qk_head_dim), w))),
                Op("MatMulV2", (x, Tensor((h, c.latent_width), w))),
                Op("RmsNorm", (Tensor((t, c.kv_lora_rank), a), Tensor((c.kv_lora_rank,), a))),
                Op("ApplyRotaryPosEmb", (Tensor((t, n * c.qk_rope_dim), a), Tensor((t, c.qk_rope_dim), a),
                                         Tensor((t, c.qk_rope_dim), a), Tensor((t, c.qk_rope_dim), a))),
                Op("ScatterUpdate", (Tensor((1,), c.kv_dtype), Tensor((t,), "int64"),
                                     Tensor((t, c.latent_width), c.kv_dtype))),
            ]
        if context:
            ops += self._attention(cb)
        if tokens:
            ops += [
                Op("MatMulV2", (Tensor((t, n * c.v_head_dim), a), Tensor((n * c.v_head_dim, h), w))),
                Op("Add", (x, x)),
                Op("RmsNorm", (x, Tensor((h,), a))),
            ]
            ops += self._dense_ffn(t) if layer < c.n_dense else self._moe(cb)
            ops.append(Op("Add", (x, x)))
        return ops

    def _attention(self, cb: ChipBatch) -> list[Op]:
        c, a, w = self.cfg, self.cfg.act_dtype, self.cfg.weight_dtype
        n = c.n_heads
        ops = []
        if cb.prefill:
            q_lens = [q for q, _ in cb.prefill]
            kv_lens = [kv for _, kv in cb.prefill]
            ctx = sum(kv_lens)
            ops += [
                # up-project the latent cache of every context token (prefix + chunk) to per-head K/V
                Op("MatMulV2", (Tensor((ctx, c.kv_lora_rank), a),
                                Tensor((c.kv_lora_rank, n * (c.qk_nope_dim + c.v_head_dim)), w)),
                   phase="prefill"),
                Op("PromptFlashAttention",
                   (Tensor((sum(q_lens), n, c.qk_head_dim), a), Tensor((ctx, n, c.qk_head_dim), a),
                    Tensor((ctx, n, c.v_head_dim), a)),
                   attrs={"num_heads": n, "num_key_value_heads": n, "input_layout": "TND", "sparse_mode": 3,
                          "head_dim": c.qk_head_dim, "value_head_dim": c.v_head_dim,
                          "actual_seq_lengths": list(accumulate(q_lens)), "actual_seq_lengths_kv": kv_lens},
                   phase="prefill"),
            ]
        if cb.n_decode:
            b = cb.n_decode
            ops += [
                # absorb W_uk into the query: (heads, b, nope) x (heads, nope, kv_lora)
                Op("BatchMatMul", (Tensor((n, b, c.qk_nope_dim), a),
                                   Tensor((n, c.qk_nope_dim, c.kv_lora_rank), w)),
                   phase="decode"),
                Op("IncreFlashAttention",
                   (Tensor((b, 1, n * c.latent_width), a), Tensor((1,), c.kv_dtype),
                    Tensor((1,), c.kv_dtype)),
                   attrs={"num_heads": n, "num_key_value_heads": 1, "input_layout": "BSH",
                          "head_dim": c.latent_width, "value_head_dim": c.kv_lora_rank, "shared_kv": True,
                          "kv_total": cb.decode_kv},
                   phase="decode"),
                # absorb W_uv on the way out: (heads, b, kv_lora) x (heads, kv_lora, v)
                Op("BatchMatMul", (Tensor((n, b, c.kv_lora_rank), a),
                                   Tensor((n, c.kv_lora_rank, c.v_head_dim), w)),
                   phase="decode"),
            ]
        return ops

    def _dense_ffn(self, t: int) -> list[Op]:
        c, a, w = self.cfg, self.cfg.act_dtype, self.cfg.weight_dtype
        i = c.dense_intermediate
        return [
            Op("MatMulV2", (Tensor((t, c.hidden), a), Tensor((c.hidden, 2 * i), w))),
            Op("SwiGlu", (Tensor((t, 2 * i), a),)),
            Op("MatMulV2", (Tensor((t, i), a), Tensor((i, c.hidden), w))),
        ]

    def _moe(self, cb: ChipBatch) -> list[Op]:
        c, a, w = self.cfg, self.cfg.act_dtype, self.cfg.weight_dtype
        chips = cb.chips
        t, h, i = cb.tokens, c.hidden, c.moe_intermediate
        e_local = c.n_routed / chips
        p_pick = c.top_k / c.n_routed
        active = e_local * (1.0 - (1.0 - p_pick) ** cb.group_tokens)
        routed = math.ceil(cb.group_tokens * c.top_k / chips)  # token-expert pairs computed on this chip
        leave = (chips - 1) / chips  # the share of routed tokens whose expert sits on another chip
        e_shape = max(1, math.ceil(e_local))
        ops = [
            Op("MatMulV2", (Tensor((t, h), a), Tensor((h, c.n_routed), a))),
            Op("MoeGatingTopKSoftmax", (Tensor((t, c.n_routed), "float32"),), attrs={"k": c.top_k}),
        ]
        if chips > 1:  # dispatch in INT8 (quantised activations), combine in BF16
            ops.append(Op("HcomAllToAllV", (Tensor((t * c.top_k, h), "int8"),),
                          attrs={"send_bytes": t * c.top_k * h * leave, "latency_s": A2A_LATENCY_S}))
        ops += [
            Op("GroupedMatmul", (Tensor((routed, h), a), Tensor((e_shape, h, 2 * i), w)),
               attrs={"active_experts": active}),
            Op("SwiGlu", (Tensor((routed, 2 * i), a),)),
            Op("GroupedMatmul", (Tensor((routed, i), a), Tensor((e_shape, i, h), w)),
               attrs={"active_experts": active}),
        ]
        if chips > 1:
            ops.append(Op("HcomAllToAllV", (Tensor((t * c.top_k, h), a),),
                          attrs={"send_bytes": t * c.top_k * h * 2 * leave, "latency_s": A2A_LATENCY_S}))
        for _ in range(c.n_shared):
            ops += [
                Op("MatMulV2", (Tensor((t, h), a), Tensor((h, 2 * i), w))),
                Op("SwiGlu", (Tensor((t, 2 * i), a),)),
                Op("MatMulV2", (Tensor((t, i), a), Tensor((i, h), w))),
            ]
        return ops
