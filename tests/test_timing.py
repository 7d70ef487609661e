"""The roofline timing model: chip profiles, per-operator cost, and sharing a chip between streams."""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flexnpu.timing import (
    CHIPS,
    KNOWN_OPS,
    Efficiency,
    Op,
    SharedChip,
    Tensor,
    Work,
    get_chip,
    op_cost,
    op_time,
    op_work,
    share_rates,
)

B2 = get_chip("910B2")
IDEAL = Efficiency(1.0, 1.0, 1.0)
NO_LAUNCH = dataclasses.replace(B2, launch_s=0.0)


def test_profiles_are_internally_consistent():
    assert B2.peak_flops == pytest.approx(24 * 8192 * 1.8e9, rel=1e-3)  # cores x FLOP/cycle x clock
    assert get_chip("910B3").peak_flops == pytest.approx(20 * 8192 * 1.8e9, rel=1e-3)
    die, pkg = get_chip("910C-die"), get_chip("910c")
    assert pkg.peak_flops == pytest.approx(2 * die.peak_flops)
    assert pkg.hbm_bw == pytest.approx(2 * die.hbm_bw) and pkg.ai_cores == 2 * die.ai_cores
    assert get_chip("H200").peak_flops == get_chip("H100").peak_flops
    assert get_chip("H200").hbm_bw > get_chip("H100").hbm_bw
    for chip in CHIPS.values():
        assert 150 < chip.ridge < 350  # anchors §5: ridge points of ~200-300 FLOP/byte
    with pytest.raises(ValueError, match="unknown chip"):
        get_chip("910Z")


def test_efficiency_must_be_a_fraction():
    with pytest.raises(ValueError):
        Efficiency(compute=1.5)
    with pytest.raises(ValueError):
        Efficiency(memory=0.0)


def test_emulated_operator_set_is_covered():
    wanted = {"MatMul", "MatMulV2", "BatchMatMul", "Add", "Sub", "Mul", "Div", "Cast", "RmsNorm", "SoftmaxV2",
              "SwiGlu", "Silu", "GatherV2", "ArgMaxV2", "Transpose", "ApplyRotaryPosEmb", "ScatterUpdate",
              "PromptFlashAttention", "IncreFlashAttention", "FusedInferAttentionScore"}
    assert wanted <= KNOWN_OPS
    with pytest.raises(ValueError, match="no cost model"):
        op_cost(Op("Conv2D", (Tensor((1,)),)))


def test_matmul_roofline_by_hand():
    # 4096 x 4096 x 4096 BF16: 2*4096^3 FLOPs; reads two 32 MiB matrices, writes one.
    a, b = Tensor((4096, 4096)), Tensor((4096, 4096))
    op = Op("MatMulV2", (a, b))
    c = op_cost(op)
    assert c.flops == 2 * 4096**3
    assert c.bytes == 3 * 4096 * 4096 * 2
    assert c.unit == "cube"
    expected = max(2 * 4096**3 / B2.peak_flops, 3 * 4096 * 4096 * 2 / B2.hbm_bw) + B2.launch_s
    assert op_time(op, B2, IDEAL) == pytest.approx(expected)
    assert 2 * 4096**3 / B2.peak_flops > 3 * 4096 * 4096 * 2 / B2.hbm_bw  # compute-bound
    # efficiency and a core share scale the compute term only
    eff = Efficiency(0.5, 0.8)
    assert op_time(op, NO_LAUNCH, eff) == pytest.approx(2 * 4096**3 / (B2.peak_flops * 0.5))
    assert op_time(op, NO_LAUNCH, eff, core_share=0.5) == pytest.approx(2 * 4096**3 / (B2.peak_flops * 0.25))


def test_transposed_and_batched_matmul():
    op = Op("MatMul", (Tensor((64, 32)), Tensor((128, 64))),
            attrs={"transpose_x1": True, "transpose_x2": True})
    assert op_cost(op).flops == 2 * 32 * 64 * 128
    bmm = Op("BatchMatMul", (Tensor((8, 16, 32)), Tensor((8, 32, 64))))
    assert op_cost(bmm).flops == 2 * 8 * 16 * 32 * 64
    with pytest.raises(ValueError, match="inner dimensions"):
        op_cost(Op("MatMul", (Tensor((4, 5)), Tensor((6, 7)))))


def test_decode_matmul_is_memory_bound():
    # one token through a 3584 x 18944 weight: intensity ~1 FLOP/byte, far below the ridge
    op = Op("MatMulV2", (Tensor((1, 3584)), Tensor((3584, 18944))))
    c = op_cost(op)
    assert c.flops / c.bytes < 2
    assert op_time(op, NO_LAUNCH, IDEAL) == pytest.approx(c.bytes / B2.hbm_bw)


def test_elementwise_and_norm_costs():
    x = Tensor((100, 3584))
    add = op_cost(Op("Add", (x, x)))
    assert add.bytes == 3 * x.nbytes and add.flops == x.numel and add.unit == "vector"
    bcast = op_cost(Op("Mul", (x, Tensor((3584,)))))
    assert bcast.bytes == 2 * x.nbytes + 3584 * 2
    norm = op_cost(Op("RmsNorm", (x, Tensor((3584,)))))
    assert norm.bytes == 2 * x.nbytes + 3584 * 2 + 100 * 4  # x, gamma, y, rstd (fp32 per row)
    swiglu = op_cost(Op("SwiGlu", (Tensor((10, 200)),)))
    assert swiglu.bytes == (10 * 200 + 10 * 100) * 2
    cast = op_cost(Op("Cast", (Tensor((10, 10), "float16"),), attrs={"dst_type": "float32"}))
    assert cast.bytes == 100 * 2 + 100 * 4


def test_gather_and_scatter_touch_only_the_rows_they_move():
    table = Tensor((152064, 3584))
    g = op_cost(Op("GatherV2", (table, Tensor((7,), "int64"))))
    assert g.bytes == 2 * 7 * 3584 * 2 + 7 * 8  # not the 1 GB table
    cache = Tensor((100000, 512))
    s = op_cost(Op("ScatterUpdate", (cache, Tensor((5,), "int64"), Tensor((5, 512)))))
    assert s.bytes == 2 * 5 * 512 * 2 + 5 * 8


def test_prompt_flash_attention_causal_by_hand():
    # one 1024-token prompt, 28 heads x 128: causal pairs = 1024*1025/2
    q = Tensor((1, 1024, 28 * 128))
    kv = Tensor((1, 1024, 4 * 128))
    attrs = {"num_heads": 28, "num_key_value_heads": 4, "input_layout": "BSH"}
    full = op_cost(Op("PromptFlashAttention", (q, kv, kv), attrs=attrs))
    causal = op_cost(Op("PromptFlashAttention", (q, kv, kv), attrs={**attrs, "sparse_mode": 3}))
    assert full.flops == 4 * 28 * 128 * 1024 * 1024
    assert causal.flops == 4 * 28 * 128 * (1024 * 1025 / 2)
    assert full.bytes == 2 * q.nbytes + 2 * kv.nbytes  # q and out, K and V once


def test_incre_flash_attention_reads_the_kv_cache():
    # 32 requests of 1000 cached tokens, GQA 28/4 heads x 128
    q = Tensor((32, 1, 28 * 128))
    attrs = {"num_heads": 28, "num_key_value_heads": 4, "actual_seq_lengths": [1000] * 32}
    c = op_cost(Op("IncreFlashAttention", (q, Tensor((1,)), Tensor((1,))), attrs=attrs))
    assert c.flops == 4 * 28 * 128 * 32000
    assert c.bytes == 32000 * 4 * 128 * 2 * 2 + 2 * q.nbytes
    total = op_cost(Op("IncreFlashAttention", (q, Tensor((1,)), Tensor((1,))),
                       attrs={"num_heads": 28, "num_key_value_heads": 4, "kv_total": 32000}))
    assert total == c


def test_fused_infer_attention_matches_the_split_operators():
    attrs = {"num_heads": 8, "num_key_value_heads": 2, "input_layout": "TND"}
    # two decodes (1 query token each) and a 100-token chunk after a 50-token prefix
    fia = op_cost(Op("FusedInferAttentionScore", (Tensor((102, 8, 64)),),
                     attrs={**attrs, "actual_seq_lengths": [1, 2, 102],
                            "actual_seq_lengths_kv": [300, 40, 150]}))
    kv = Tensor((150, 2, 64))
    pfa = op_cost(Op("PromptFlashAttention", (Tensor((100, 8, 64)), kv, kv),
                     attrs={**attrs, "sparse_mode": 3, "actual_seq_lengths": [100],
                            "actual_seq_lengths_kv": [150]}))
    ifa = op_cost(Op("IncreFlashAttention", (Tensor((2, 1, 8 * 64)), Tensor((1,)), Tensor((1,))),
                     attrs={"num_heads": 8, "num_key_value_heads": 2, "actual_seq_lengths": [300, 40]}))
    assert fia.flops == pytest.approx(pfa.flops + ifa.flops)
    assert fia.bytes == pytest.approx(pfa.bytes + ifa.bytes)


def test_all_to_all_uses_the_link():
    op = Op("HcomAllToAllV", (Tensor((8, 7168), "int8"),), attrs={"send_bytes": 1e6, "latency_s": 2e-5})
    c = op_cost(op)
    assert c.link_bytes == 1e6 and c.flops == 0
    w = op_work(op, NO_LAUNCH, IDEAL)
    assert w.alone_s == pytest.approx(1e6 / B2.link_bw + 2e-5)
    assert w.demand[2] == pytest.approx((1e6 / B2.link_bw) / w.alone_s)


# -- sharing -----------------------------------------------------------------------------------------


def test_compute_and_memory_bound_overlap_well_two_of_a_kind_do_not():
    compute_bound, memory_bound = (1.0, 0.1, 0.0), (0.1, 1.0, 0.0)
    # the memory-bound work occupies half the cores to pull full bandwidth (bw_saturation 0.5): together
    # they need 1.5 chips' worth of cores, so each runs at 2/3 -- 1.33 chips of work, not 1
    mixed = share_rates([compute_bound, memory_bound], bw_saturation=0.5)
    assert mixed == pytest.approx([2 / 3, 2 / 3])
    # if a quarter of the cores saturates HBM, the overlap is better still
    assert share_rates([compute_bound, memory_bound], bw_saturation=0.25) == pytest.approx([0.8, 0.8])
    same = share_rates([compute_bound, compute_bound])
    assert same == pytest.approx([0.5, 0.5])
    both_mem = share_rates([memory_bound, memory_bound])
    assert both_mem == pytest.approx([0.5, 0.5])


def test_core_limits_split_compute():
    # two compute-bound streams, limited to 3/4 and 1/4 of the cores
    assert share_rates([(1, 0, 0), (1, 0, 0)], [0.75, 0.25]) == pytest.approx([0.75, 0.25])
    # a stream alone on a quarter of the cores runs at a quarter of the speed...
    assert share_rates([(1, 0, 0)], [0.25]) == pytest.approx([0.25])
    # ...and a memory-bound one on too few cores cannot pull the full bandwidth
    assert share_rates([(0.1, 1, 0)], [0.25], bw_saturation=0.5) == pytest.approx([0.5])
    assert share_rates([(0.1, 1, 0)], [0.25], bw_saturation=0.25) == pytest.approx([1.0])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.floats(0, 1), st.floats(0, 1), st.floats(0, 1)), min_size=1, max_size=4),
       st.lists(st.floats(0.05, 1.0), min_size=4, max_size=4))
def test_shared_rates_respect_every_capacity(demands, caps):
    caps = caps[: len(demands)]
    rates = share_rates(demands, caps, bw_saturation=0.5)
    use = [(max(c, 0.5 * m), m, li) for c, m, li in demands]  # cores occupied, HBM, link per unit rate
    for k in range(3):
        assert sum(r * u[k] for r, u in zip(rates, use)) <= 1 + 1e-9
    for r, u, cap in zip(rates, use, caps):
        assert 0 <= r <= 1 + 1e-12
        assert r * u[0] <= cap + 1e-9
    # max-min fair: no stream can be sped up without a binding constraint
    for i, (r, u, cap) in enumerate(zip(rates, use, caps)):
        if r < 1 - 1e-9:
            own = u[0] > 0 and r * u[0] >= cap - 1e-9
            shared = any(u[k] > 1e-12 and sum(rr * uu[k] for rr, uu in zip(rates, use)) >= 1 - 1e-9
                         for k in range(3))
            assert own or shared, (i, rates)


def test_shared_chip_runs_two_streams_to_completion():
    chip = SharedChip(bw_saturation=0.5)
    prefill = Work(alone_s=0.100, compute_s=0.095, mem_s=0.010)  # compute-bound: cores 0.95
    decode = Work(alone_s=0.020, compute_s=0.004, mem_s=0.019)  # memory-bound: cores 0.475
    chip.start(0, decode, "d")
    chip.start(1, prefill, "p")
    done = chip.advance(1.0)
    assert [tag for _, tag, _ in done] == ["d", "p"]
    t_decode, t_prefill = done[0][2], done[1][2]
    rate = 1 / (0.95 + 0.475)  # both slowed equally while they share the cores
    assert t_decode == pytest.approx(0.020 / rate)
    # prefill then runs alone at full speed for the rest
    assert t_prefill == pytest.approx(t_decode + (0.100 - t_decode * rate))
    assert t_prefill < 0.100 + 0.020  # less than running the two back to back
    assert chip.next_completion() == math.inf and not chip.busy(0)


def test_shared_chip_limits_pause_and_prediction():
    chip = SharedChip()
    w = Work(alone_s=1.0, compute_s=1.0)
    chip.start(0, w)
    chip.set_core_limit(0, 0.5)
    assert chip.advance(1.0) == [] and chip.progress(0) == pytest.approx(0.5)
    chip.pause(0)
    assert chip.next_completion() == math.inf
    chip.advance(5.0)
    assert chip.progress(0) == pytest.approx(0.5)
    chip.resume(0)
    chip.set_core_limit(0, None)
    (_, _, t), = chip.advance(10.0)
    assert t == pytest.approx(5.5)
    # two compute-bound works together: the shorter finishes at 2x its time, the other then speeds up
    assert SharedChip().predict([(Work(1.0, 1.0), None), (Work(2.0, 2.0), None)]) == pytest.approx([2.0, 3.0])
    with pytest.raises(ValueError):
        chip.set_core_limit(0, 0.0)
    chip.start(1, w)
    with pytest.raises(RuntimeError, match="busy"):
        chip.start(1, w)
