"""Model descriptions: shapes from the configs, operator streams, and the cached step coster."""

from __future__ import annotations

import dataclasses
import random

import pytest

from flexnpu.models import (
    DEEPSEEK_R1,
    MODEL_NAMES,
    QWEN25_7B,
    BatchShape,
    StepCoster,
    get_model,
)
from flexnpu.sched import Phase, phase_from_op
from flexnpu.timing import KNOWN_OPS, Efficiency, get_chip, op_cost, ops_work

IDEAL = Efficiency(1.0, 1.0, 1.0)


def test_qwen25_7b_shapes_match_the_published_figures():
    m = get_model("qwen2.5-7b")
    assert m.cfg == QWEN25_7B
    assert m.cfg.params_per_layer() == 233_057_792  # anchors §4: 233.06 M per layer
    assert m.cfg.params() == pytest.approx(7.62e9, rel=2e-3)
    assert m.kv_bytes_per_token() == 57_344  # 56 KiB per token, BF16


def test_deepseek_shapes_match_the_published_figures():
    m = get_model("deepseek-r1")
    c = m.cfg
    assert (c.n_layers, c.n_routed, c.top_k, c.n_shared) == (61, 256, 8, 1)
    assert (c.kv_lora_rank, c.qk_rope_dim) == (512, 64)
    assert m.kv_bytes_per_token() == 70_272  # anchors §4
    total = c.replicated_params() + c.routed_params()
    assert total == pytest.approx(671e9, rel=0.01)  # 671 B without the MTP module
    # decode attention in absorbed form: ~17.0 MFLOP per (token, position) over all layers
    one = m.plan(BatchShape(n_decode=1, decode_kv=1.0), 1)
    ifa = [op for op in m.layer_ops(one, 3, tokens=False) if op.type == "IncreFlashAttention"]
    assert op_cost(ifa[0]).flops * c.n_layers == pytest.approx(17.0e6, rel=0.01)


def test_prefill_flops_follow_two_flops_per_parameter():
    m = get_model("qwen2.5-7b")
    ops = m.step_ops(BatchShape(prefill=((1024, 1024),)))
    flops = sum(op_cost(op).flops for op in ops if op.type.startswith("MatMul"))
    non_embedding = m.cfg.n_layers * m.cfg.params_per_layer()
    # linear layers of 1024 tokens plus the LM head for the one row that needs logits
    assert flops == pytest.approx(2 * 1024 * non_embedding + 2 * m.cfg.hidden * m.cfg.vocab, rel=2e-3)


def test_qwen_roofline_matches_the_anchor_table():
    """anchors §5: ideal roofline of Qwen2.5-7B on a 910B: 1k prefill 41.5 ms (counting the LM head on
    every token), decode B=32 ctx 1k 10.7 ms, B=128 14.2 ms."""
    m = get_model("qwen2.5-7b")
    chip = dataclasses.replace(get_chip("910B2"), launch_s=0.0)
    c = StepCoster(m, chip, IDEAL, host_overhead_s=0.0)
    assert c.seconds(BatchShape(prefill=((1024, 1024),))) == pytest.approx(41.5e-3, rel=0.06)
    assert c.seconds(BatchShape(n_decode=32, decode_kv=32 * 1024)) == pytest.approx(10.7e-3, rel=0.06)
    assert c.seconds(BatchShape(n_decode=128, decode_kv=128 * 1024)) == pytest.approx(14.2e-3, rel=0.06)


def test_every_operator_is_costed_and_tagged():
    for name in MODEL_NAMES:
        m = get_model(name)
        chips = 4 if name.startswith("deepseek") else 1
        ops = m.step_ops(BatchShape(prefill=((300, 500), (20, 20)), n_decode=7, decode_kv=7 * 900.0), chips)
        assert {op.type for op in ops} <= KNOWN_OPS
        phases = {phase_from_op(op.type, op.attrs) for op in ops} - {None}
        assert phases == {Phase.PREFILL, Phase.DECODE}


@pytest.mark.parametrize("name,chip,chips", [("qwen2.5-7b", "910B2", 1), ("qwen2-tiny", "910B3", 1),
                                             ("deepseek-r1", "910C", 16), ("deepseek-r1", "910C", 3)])
def test_cached_step_cost_equals_the_operator_sum(name, chip, chips):
    m, profile = get_model(name), get_chip(chip)
    coster = StepCoster(m, profile, chips=chips, host_overhead_s=0.002)
    rng = random.Random(7)
    for _ in range(25):
        q_lens = [rng.randint(1, 2500) for _ in range(rng.randint(0, 4))]
        prefill = tuple((q, q + rng.randint(0, 3000)) for q in q_lens)
        n = rng.randint(0, 400)
        batch = BatchShape(prefill=prefill, n_decode=n, decode_kv=float(n * rng.randint(1, 4000)))
        if batch.tokens == 0:
            continue
        exact = ops_work(m.step_ops(batch, chips), profile, coster.eff)
        fast = coster.work(batch)
        # exact up to 512 tokens; interpolated (and, for many-chip MoE, a rounded routing ratio) above
        rel = 1e-9 if batch.tokens <= 512 and (chips == 1 or not prefill) else 5e-3
        assert fast.alone_s - 0.002 == pytest.approx(exact.alone_s, rel=rel)
        assert fast.mem_s == pytest.approx(exact.mem_s, rel=rel)
        assert fast.compute_s == pytest.approx(exact.compute_s, rel=rel)


def test_decode_is_memory_bound_and_prefill_compute_bound():
    for name, chip, chips in (("qwen2.5-7b", "910B2", 1), ("deepseek-r1", "910C", 16)):
        c = StepCoster(get_model(name), get_chip(chip), chips=chips)
        dec = c.work(BatchShape(n_decode=64, decode_kv=64 * 1200.0)).demand
        pre = c.work(BatchShape(prefill=((2048, 2048),) * chips)).demand
        assert dec[1] > 0.5 > dec[0]
        assert pre[0] > 0.7 > pre[1]


def test_moe_expert_parallelism_reads_fewer_weights_per_chip():
    m = get_model("deepseek-r1")
    assert m.weight_bytes_per_chip(16) < m.weight_bytes_per_chip(4) / 2
    chip = get_chip("910C")
    with pytest.raises(ValueError, match="does not fit"):
        m.kv_capacity_tokens(chip, 2)
    assert m.kv_capacity_tokens(chip, 16) > 1_000_000
    batch = BatchShape(n_decode=256, decode_kv=256 * 1000.0)
    ops = m.step_ops(batch, 16)
    a2a = [op for op in ops if op.type == "HcomAllToAllV"]
    assert len(a2a) == 2 * (DEEPSEEK_R1.n_layers - DEEPSEEK_R1.n_dense)
    assert not [op for op in m.step_ops(batch, 1) if op.type == "HcomAllToAllV"]


def test_unknown_model_and_qwen_on_several_chips():
    with pytest.raises(ValueError, match="unknown model"):
        get_model("llama")
    with pytest.raises(ValueError, match="one chip"):
        get_model("qwen2.5-7b").plan(BatchShape(n_decode=1, decode_kv=1.0), 2)
