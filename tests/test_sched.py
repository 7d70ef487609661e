"""Policies and phase detection, driven directly through the policy interface -- as the daemon would,
with per-operator records -- without the simulator."""

from __future__ import annotations

import math
from collections import deque

import pytest

from flexnpu.models import BatchShape, get_model
from flexnpu.sched import (
    PHASE_ENV,
    POLICY_NAMES,
    Decision,
    Dynamic,
    Fifo,
    OpRecord,
    Phase,
    PhaseTracker,
    RequestInfo,
    StaticColoc,
    StaticDisagg,
    make_policy,
    phase_from_cumulative_lengths,
    phase_from_declaration,
    phase_from_env,
    phase_from_op,
    size_pools,
)
from flexnpu.timing import SharedChip, Work, get_chip, op_work, share_rates

# -- phase detection ---------------------------------------------------------------------------------


def test_declaration_wins_and_parses_short_forms():
    assert phase_from_declaration("prefill") is Phase.PREFILL
    assert phase_from_declaration(" D ") is Phase.DECODE
    assert phase_from_declaration("mixed") is Phase.MIXED
    assert phase_from_declaration("") is None and phase_from_declaration(None) is None
    with pytest.raises(ValueError, match="unknown phase"):
        phase_from_declaration("sideways")
    assert phase_from_env({PHASE_ENV: "decode"}) is Phase.DECODE
    assert phase_from_env({}) is None


def test_operator_evidence():
    assert phase_from_op("PromptFlashAttention") is Phase.PREFILL
    assert phase_from_op("IncreFlashAttention") is Phase.DECODE
    assert phase_from_op("MatMulV2") is None
    # FusedInferAttentionScore: cumulative query lengths (vllm-ascend TND) -> all deltas 1 is decode
    assert phase_from_op("FusedInferAttentionScore", {"actual_seq_lengths": [1, 2, 3, 4]}) is Phase.DECODE
    assert phase_from_op("FusedInferAttentionScore", {"actual_seq_lengths": [100, 612]}) is Phase.PREFILL
    assert phase_from_cumulative_lengths([1, 2, 514]) is Phase.MIXED
    assert phase_from_op("FusedInferAttentionScore", {}) is Phase.UNKNOWN


def test_tracker_labels_operators_between_attention_calls():
    tr = PhaseTracker()
    assert tr.observe(1, 0, "MatMulV2") is Phase.UNKNOWN
    assert tr.observe(1, 0, "PromptFlashAttention") is Phase.PREFILL
    assert tr.observe(1, 0, "MatMulV2") is Phase.PREFILL
    assert tr.observe(1, 1, "MatMulV2") is Phase.UNKNOWN  # another stream has its own history
    assert tr.observe(1, 0, "FusedInferAttentionScore", {"actual_seq_lengths": [1, 2]}) is Phase.DECODE
    assert tr.observe(1, 0, "SwiGlu") is Phase.DECODE
    tr.declare(2, "prefill")
    assert tr.observe(2, 0, "IncreFlashAttention") is Phase.PREFILL  # the declaration is stronger
    tr.declare(2, None)
    assert tr.observe(2, 0, "IncreFlashAttention") is Phase.DECODE


# -- a minimal dispatcher, as a daemon would drive a policy --------------------------------------------


class MiniDispatcher:
    """Per-stream device FIFOs on a SharedChip; the policy decides what leaves the pending queue."""

    def __init__(self, policy, n_cores: int = 24):
        self.policy = policy
        self.n_cores = n_cores
        self.chip = SharedChip()
        self._pending: list[OpRecord] = []
        self.device: dict[int, deque[OpRecord]] = {}
        self.limits: dict[int, float | None] = {}
        self.done: list[tuple[OpRecord, float]] = []

    # ChipView
    def pending(self):
        return self._pending

    def running(self):
        return [q[0] for q in self.device.values() if q]

    def paused(self, stream):
        return self.chip.is_paused(stream)

    def core_limit(self, stream):
        return self.limits.get(stream)

    def predict(self, ops):
        rates = share_rates([o.demand for o, _ in ops], [1.0 if s is None else s for _, s in ops])
        return [o.est_s / r for (o, _), r in zip(ops, rates)]

    def submit(self, op: OpRecord):
        self._pending.append(op)
        self.policy.on_op_arrived(self.chip.now, op)

    def _apply(self, d: Decision):
        for s, share in d.core_limits.items():
            self.limits[s] = share
            self.chip.set_core_limit(s, share)
        for s in d.pause:
            if self.chip.busy(s):
                self.chip.pause(s)
        for s in d.resume:
            if self.chip.busy(s):
                self.chip.resume(s)
        for op in d.release:
            self._pending.remove(op)
            self.device.setdefault(op.stream, deque()).append(op)
        for s, q in self.device.items():
            if q and not self.chip.busy(s):
                self.chip.start(s, op_work_of(q[0]), q[0])

    def run(self, until: float = math.inf):
        self._apply(self.policy.decide(self.chip.now, self))
        while True:
            t = self.chip.next_completion()
            wake = getattr(self, "_wake", math.inf)
            t = min(t, wake)
            if math.isinf(t) or t > until:
                return
            for stream, op, when in self.chip.advance(t):
                self.device[stream].popleft()
                self.done.append((op, when))
                self.policy.on_op_completed(when, op)
            d = self.policy.decide(self.chip.now, self)
            self._wake = d.wake_at if d.wake_at is not None and d.wake_at > self.chip.now else math.inf
            self._apply(d)


def op_work_of(op: OpRecord) -> Work:
    c, m, link = op.demand
    return Work(op.est_s, c * op.est_s, m * op.est_s, link * op.est_s)


def record(seq, stream, phase, est, demand, tokens=0) -> OpRecord:
    return OpRecord(seq=seq, client=stream, stream=stream, phase=phase, est_s=est, demand=demand,
                    tokens=tokens)


def records_from_model(phase: Phase, batch: BatchShape, stream: int, start: int) -> list[OpRecord]:
    """One engine step of Qwen2.5-7B as per-operator records, phases from the tracker."""
    model, chip = get_model("qwen2.5-7b"), get_chip("910B2")
    tracker = PhaseTracker()
    tracker.declare(stream, phase)
    out = []
    for i, op in enumerate(model.step_ops(batch)):
        w = op_work(op, chip)
        out.append(OpRecord(seq=start + i, client=stream, stream=stream,
                            phase=tracker.observe(stream, stream, op.type, op.attrs),
                            est_s=w.alone_s, demand=w.demand, tokens=batch.prefill_tokens, name=op.type))
    return out


# -- policies ----------------------------------------------------------------------------------------


def test_registry_and_names():
    assert POLICY_NAMES == ("fifo", "static-coloc", "static-disagg", "dynamic")
    for name in POLICY_NAMES:
        p = make_policy(name, ttft_slo_s=2.0, tpot_slo_s=0.1)
        assert p.name == name and p.tpot_slo_s == 0.1 and p.describe().startswith(name)
    with pytest.raises(ValueError, match="unknown policy"):
        make_policy("round-robin")
    with pytest.raises(ValueError):
        Dynamic(split="space")
    with pytest.raises(ValueError):
        StaticColoc(token_budget=0)
    assert StaticColoc().engine.batching == "hybrid" and StaticColoc().engine.token_budget == 512
    assert StaticDisagg().engine.disaggregated and Dynamic().engine.batching == "split"
    assert Fifo(max_prefill_tokens=1024).engine.max_prefill_tokens == 1024


def test_fifo_releases_everything_in_order():
    d = MiniDispatcher(Fifo())
    ops = [record(i, i % 2, Phase.PREFILL if i % 2 else Phase.DECODE, 0.01, (0.5, 0.5, 0)) for i in range(6)]
    for op in ops:
        d.submit(op)
    decision = d.policy.decide(0.0, d)
    assert decision.release == ops and decision.core_limits == {}


def test_static_coloc_gives_decode_first_and_a_fixed_prefill_quota():
    policy = StaticColoc(token_budget=512)
    d = MiniDispatcher(policy)
    dec = record(0, 0, Phase.DECODE, 0.02, (0.3, 0.9, 0), tokens=112)
    pre = [record(1 + i, 1, Phase.PREFILL, 0.03, (1, 0.1, 0), tokens=200) for i in range(4)]
    for op in [*pre, dec]:
        d.submit(op)
    policy.on_op_completed(0.0, record(99, 0, Phase.DECODE, 0.02, (0.3, 0.9, 0), tokens=112))
    first = policy.decide(0.0, d)
    # the decode comes first even though it arrived last; 512 - 112 = 400 prefill tokens fit: two records
    assert first.release == [dec, pre[0], pre[1]]
    d._apply(first)
    assert policy.decide(0.0, d).release == []  # quota used until the decode step completes
    policy.on_op_completed(0.02, dec)
    assert policy.decide(0.02, d).release == [pre[2], pre[3]]


def test_size_pools_balances_busy_time():
    assert size_pools(10, 1.0, 1.0) == (5, 5)
    assert size_pools(24, 1.0, 3.0) == (6, 18)
    assert size_pools(4, 100.0, 1.0) == (3, 1)  # each pool keeps at least one instance
    with pytest.raises(ValueError):
        size_pools(1, 1.0, 1.0)


DEC = (0.35, 0.85, 0.0)  # a decode step: memory-bound
PRE = (0.95, 0.15, 0.0)  # a prefill batch: compute-bound


def test_dynamic_leaves_the_chip_alone_when_one_phase_runs():
    p = Dynamic()
    d = MiniDispatcher(p)
    d.submit(record(0, 0, Phase.DECODE, 0.02, DEC))
    decision = p.decide(0.0, d)
    assert decision.core_limits == {} and [o.seq for o in decision.release] == [0]


def test_dynamic_limits_prefill_only_as_far_as_the_decode_target_needs():
    p = Dynamic(tpot_slo_s=0.05, margin=0.9, knee_slowdown=0.1)
    d = MiniDispatcher(p)
    dec, pre = record(0, 0, Phase.DECODE, 0.02, DEC), record(1, 1, Phase.PREFILL, 0.5, PRE, tokens=4096)
    d.submit(dec)
    d.submit(pre)
    # no prefill pressure known: the decode step may slow by at most 10%
    share = p.prefill_share(d, dec, pre)
    assert share is not None and 1 / 24 <= share < 1
    assert d.predict([(dec, None), (pre, share)])[0] <= 0.02 * 1.1 + 1e-12
    assert d.predict([(dec, None), (pre, share + 1 / 24)])[0] > 0.02 * 1.1  # the largest such share
    # a long prefill queue moves the target to the TPOT margin: prefill gets more of the chip
    p.on_request_arrived(0.0, RequestInfo(1, prompt_tokens=40_000))
    assert p.pressure() == 1.0
    loose = p.prefill_share(d, dec, pre)
    assert loose is None or loose > share
    # a light decode step beside prefill needs no limit at all
    light = record(2, 0, Phase.DECODE, 0.02, (0.05, 0.6, 0))
    assert p.prefill_share(d, light, pre) is None
    decision = p.decide(0.0, d)
    assert decision.release == [dec, pre]


def test_dynamic_controllers_fixed_and_none():
    dec, pre = record(0, 0, Phase.DECODE, 0.02, DEC), record(1, 1, Phase.PREFILL, 0.5, PRE)
    d = MiniDispatcher(Dynamic(controller="fixed", fixed_share=0.25))
    assert d.policy.prefill_share(d, dec, pre) == pytest.approx(6 / 24)
    d = MiniDispatcher(Dynamic(controller="none"))
    assert d.policy.prefill_share(d, dec, pre) is None


def test_dynamic_time_split_holds_decode_for_prefill_then_pauses_it():
    p = Dynamic(split="time", tpot_slo_s=0.05, margin=0.9)
    d = MiniDispatcher(p)
    p.on_request_arrived(0.0, RequestInfo(1, prompt_tokens=100_000))
    pre = record(1, 1, Phase.PREFILL, 1.0, PRE, tokens=100_000)
    d.submit(pre)
    d._apply(p.decide(0.0, d))
    assert d.chip.busy(1)
    # a decode step completes: prefill's turn lasts (0.045 - 0.02) s; the next decode step is held
    p.on_op_completed(0.0, record(9, 0, Phase.DECODE, 0.02, DEC))
    dec = record(2, 0, Phase.DECODE, 0.02, DEC)
    d.submit(dec)
    held = p.decide(0.0, d)
    assert dec not in held.release and held.wake_at == pytest.approx(0.025)
    turn_over = p.decide(held.wake_at, d)
    assert turn_over.pause == [1] and turn_over.release == [dec]


def test_dynamic_protects_decode_with_per_operator_records():
    """The daemon's view: single operators, phases from the tracker.  With the SLO controller the decode
    step is slowed less than under the chip's own arbitration, and prefill still progresses."""
    results = {}
    for controller in ("slo", "none"):
        d = MiniDispatcher(Dynamic(controller=controller))
        decode = records_from_model(Phase.DECODE, BatchShape(n_decode=128, decode_kv=128 * 2000.0), 0, 0)
        prefill = records_from_model(Phase.PREFILL, BatchShape(prefill=((4096, 4096),)), 1, 10_000)
        for op in decode + prefill:
            d.submit(op)
        d.run()
        end = {s: max(t for op, t in d.done if op.stream == s) for s in (0, 1)}
        assert len(d.done) == len(decode) + len(prefill)
        results[controller] = end
    alone = sum(op.est_s for op in decode)
    assert results["slo"][0] < results["none"][0]
    assert results["slo"][0] < alone * 1.2
    assert results["slo"][1] < sum(op.est_s for op in prefill) * 2
