"""Discrete-event cluster simulator: continuous-batching serving instances on modelled chips, driven by
the same policy objects the daemon runs.

Granularity: one event per engine step.  Each step -- a decode step, a prefill batch, or a hybrid
chunked-prefill step -- is the operator stream of the model (:mod:`flexnpu.models`) priced with the
roofline model as one :class:`~flexnpu.timing.Work` (time alone plus the fractions of cores, HBM and
link it keeps busy).  Work on the two streams of a co-located instance shares the chip through the
fluid model of :mod:`flexnpu.timing.sharing`.  Policies see every step as one
:class:`~flexnpu.sched.OpRecord` whose ``units`` say how many operators (or layers) it consists of, so a
limit change or a pause reaches running work at the next operator, layer or step boundary
(``Policy.granularity``); at operator granularity it applies at once (the next boundary is one operator
-- tens of microseconds -- away).

Instances: ``Cluster`` splits the chips into instances of ``instance_chips`` chips (the model's
deployment unit).  A request is routed on arrival to the co-located instance (or prefill instance)
with the least prefill work waiting, ties to the fewest requests held.
"""

from __future__ import annotations

import heapq
import math
import time
from collections import deque
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from flexnpu.models import DEFAULT_HOST_OVERHEAD_S, BatchShape, StepCoster, get_model
from flexnpu.sched import MAX_PREFILL_TOKENS, OpRecord, Phase, RequestInfo, make_policy, size_pools
from flexnpu.sim.metrics import LogHistogram, RunRecord, summarize
from flexnpu.sim.workload import Workload, mean_mix
from flexnpu.timing import DEFAULT_BW_SATURATION, Efficiency, SharedChip, get_chip, share_rates

DECODE_STREAM, PREFILL_STREAM = 0, 1

# Requests one engine holds at once, per chip: vLLM's max_num_seqs default (256).
MAX_SEQS_PER_CHIP = 256
# Fixed start-up cost of moving one request's KV cache between instances (t0 in the recipe's
# L_in * k / B_link + t0, anchors §7 P1).  No source fixes it; 1 ms is our assumption.
KV_TRANSFER_LATENCY_S = 1e-3
# Cost of re-limiting or pausing/resuming a stream: the recipe's per-switch cost, 20-100 us
# (anchors §7 Tier A.1); we take the midpoint.
SWITCH_S = 60e-6


@dataclass(frozen=True)
class SimConfig:
    """Everything a run depends on besides the workload."""

    model: str = "qwen2.5-7b"
    chip: str = "910B2"
    chips: int = 1
    instance_chips: int | None = None  # None: the model's deployment unit
    policy: str = "dynamic"
    policy_options: tuple[tuple[str, Any], ...] = ()  # extra policy constructor arguments
    ttft_slo_s: float = 1.0
    tpot_slo_s: float = 0.05
    compute_eff: float = Efficiency.compute
    memory_eff: float = Efficiency.memory
    link_eff: float = Efficiency.link
    host_overhead_s: float = DEFAULT_HOST_OVERHEAD_S
    bw_saturation: float = DEFAULT_BW_SATURATION
    switch_s: float = SWITCH_S
    pd_ratio: tuple[int, int] | None = None  # static-disagg pools; None: sized for the mean mix
    link_bw: float | None = None  # bytes/s per chip; None: the chip profile's
    kv_transfer_latency_s: float = KV_TRANSFER_LATENCY_S
    max_seqs_per_chip: int = MAX_SEQS_PER_CHIP
    drain_s: float | None = None  # simulate this long after the last arrival; None: 30 s + duration / 2

    def with_options(self, **opts: Any) -> SimConfig:
        merged = dict(self.policy_options)
        merged.update(opts)
        return replace(self, policy_options=tuple(sorted(merged.items())))


@dataclass
class SimResult:
    config: SimConfig
    workload: str
    metrics: dict[str, Any]
    record: RunRecord
    wall_s: float
    events: int
    notes: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"policy": self.config.policy}
        out.update(self.metrics)
        out.update(self.notes)
        return out


class _Req:
    __slots__ = ("admitted", "arrival", "decode_left", "finish_step", "first_token", "kv_len", "output",
                 "prefilled", "prompt", "rid")

    def __init__(self, rid: int, arrival: float, prompt: int, output: int):
        self.rid = rid
        self.arrival = arrival
        self.prompt = prompt
        self.output = output
        self.prefilled = 0
        self.admitted = False
        self.first_token = math.nan
        self.decode_left = output - 1
        self.kv_len = 0
        self.finish_step = 0


class _Batch:
    """What one step carries: prefill chunks ``(request, tokens)``, which of those prompts complete, and
    the decode batch (its size and the requests that join it with this step)."""

    __slots__ = ("chunks", "completing", "joined", "n_decode")

    def __init__(self) -> None:
        self.chunks: list[tuple[_Req, int]] = []
        self.completing: list[_Req] = []
        self.n_decode = 0
        self.joined: list[_Req] = []


class _View:
    """The :class:`~flexnpu.sched.ChipView` an instance shows its policy."""

    def __init__(self, inst: Instance):
        self._i = inst
        self.n_cores = inst.n_cores

    def pending(self):
        return self._i.pending

    def running(self):
        # released work waiting for the chip (time-slicing) counts as released
        return [*self._i.running_ops.values(), *self._i.queued.values()]

    def paused(self, stream: int) -> bool:
        return stream in self._i.paused

    def core_limit(self, stream: int) -> float | None:
        return self._i.limits.get(stream)

    def predict(self, ops):
        rates = share_rates([op.demand for op, _ in ops], [1.0 if s is None else s for _, s in ops],
                            self._i.chip.bw_saturation)
        return [op.est_s / r if r > 0 else math.inf for (op, _), r in zip(ops, rates)]


class Instance:
    """One serving instance: an engine (or two, prefill and decode) on a modelled chip."""

    def __init__(self, idx: int, cluster: Cluster, role: str):
        self.idx = idx
        self.cluster = cluster
        self.role = role  # "both", "prefill" or "decode"
        cfg = cluster.config
        self.policy = make_policy(cfg.policy, ttft_slo_s=cfg.ttft_slo_s, tpot_slo_s=cfg.tpot_slo_s,
                                  **dict(cfg.policy_options))
        self.rule = self.policy.engine
        self.exclusive = bool(getattr(self.policy, "exclusive", False))
        self.coster = cluster.coster
        self.n_cores = cluster.chip.ai_cores
        self.chip = SharedChip(cfg.bw_saturation)
        self.kv_capacity = cluster.kv_capacity
        self.max_seqs = cfg.max_seqs_per_chip * cluster.instance_chips
        self.view = _View(self)
        # requests
        self.waiting: deque[_Req] = deque()
        self.waiting_tokens = 0
        self.joining: list[_Req] = []
        self.finish_heap: list[tuple[int, int, _Req]] = []
        self.n_run = 0
        self.kv_sum = 0
        self.dec_steps = 0
        self.last_dec_end = 0.0
        self.kv_used = 0
        self.seats = 0
        # dispatch state
        self.pending: list[OpRecord] = []
        self.running_ops: dict[int, OpRecord] = {}
        self.queued: dict[int, OpRecord] = {}  # exclusive mode: released, waiting for the chip
        self.limits: dict[int, float | None] = {}  # limits the policy asked for
        self.paused: set[int] = set()  # streams paused or asked to pause
        self.deferred: list[tuple[float, int, str, Any]] = []  # (time, stream, "limit"/"pause", value)
        self.policy_wake = math.inf
        self.version = 0
        self.units_of = {"op": None, "layer": cluster.model.n_layers, "step": 1}[self.policy.granularity]

    # -- load, for routing -------------------------------------------------------------------------

    def held(self) -> int:
        return self.seats

    # -- arrivals ----------------------------------------------------------------------------------

    def add_request(self, now: float, r: _Req) -> None:
        self.waiting.append(r)
        self.waiting_tokens += r.prompt - r.prefilled
        self.policy.on_request_arrived(now, RequestInfo(r.rid, 0, r.prompt, None, r.arrival))

    def add_decode(self, now: float, r: _Req) -> None:
        """A request whose KV cache arrived from a prefill instance."""
        self.joining.append(r)

    # -- the engine: forming steps -----------------------------------------------------------------

    def _stream_free(self, s: int) -> bool:
        if s in self.running_ops or s in self.queued:
            return False
        return all(op.stream != s for op in self.pending)

    def _admit(self, r: _Req) -> bool:
        if r.admitted:
            return True
        need = r.prompt if self.role == "prefill" else r.prompt + r.output
        if self.seats >= self.max_seqs or self.kv_used + need > self.kv_capacity:
            return False
        r.admitted = True
        self.seats += 1
        self.kv_used += need
        return True

    def _merge_joining(self, b: _Batch) -> None:
        for r in self.joining:
            r.finish_step = self.dec_steps + r.decode_left
            heapq.heappush(self.finish_heap, (r.finish_step, r.rid, r))
            self.n_run += 1
            self.kv_sum += r.kv_len
        b.joined = self.joining
        self.joining = []
        b.n_decode = self.n_run

    def _whole_prompts(self, b: _Batch) -> None:
        limit = self.rule.max_prefill_tokens * self.cluster.instance_chips
        tokens = 0
        while self.waiting:
            r = self.waiting[0]
            if b.chunks and tokens + r.prompt > limit:
                break
            if not self._admit(r):
                break
            self.waiting.popleft()
            self.waiting_tokens -= r.prompt
            b.chunks.append((r, r.prompt))
            b.completing.append(r)
            r.prefilled = r.prompt
            tokens += r.prompt

    def _chunks(self, b: _Batch, room: int) -> None:
        while self.waiting and room > 0:
            r = self.waiting[0]
            if not self._admit(r):
                break
            take = min(room, r.prompt - r.prefilled)
            r.prefilled += take
            self.waiting_tokens -= take
            room -= take
            b.chunks.append((r, take))
            if r.prefilled == r.prompt:
                self.waiting.popleft()
                b.completing.append(r)

    def _make_op(self, stream: int, phase: Phase, b: _Batch, now: float) -> OpRecord:
        # a chunk's KV length counts the chunk: the prompt tokens prefilled once it is done
        shape = BatchShape(prefill=tuple((q, r.prefilled) for r, q in b.chunks), n_decode=b.n_decode,
                           decode_kv=float(self.kv_sum + b.n_decode) if b.n_decode else 0.0,
                           n_logits=b.n_decode + len(b.completing))
        work = self.coster.work(shape)
        units = work.n_ops if self.units_of is None else self.units_of
        tokens = sum(q for _, q in b.chunks) if phase is Phase.PREFILL else b.n_decode
        if phase is Phase.MIXED:
            tokens = shape.tokens
        self.cluster.op_seq += 1
        return OpRecord(seq=self.cluster.op_seq, client=stream, stream=stream, phase=phase,
                        est_s=work.alone_s, demand=work.demand, tokens=tokens, units=max(1, units),
                        name=phase.value, arrived_s=now, payload=(b, work))

    def _form(self, now: float) -> list[OpRecord]:
        rule, new = self.rule, []
        if rule.batching == "hybrid":
            if self._stream_free(DECODE_STREAM) and (self.waiting or self.n_run or self.joining):
                b = _Batch()
                self._merge_joining(b)
                self._chunks(b, rule.token_budget * self.cluster.instance_chips - b.n_decode)
                if b.chunks or b.n_decode:
                    phase = Phase.MIXED if b.chunks and b.n_decode else (
                        Phase.PREFILL if b.chunks else Phase.DECODE)
                    new.append(self._make_op(DECODE_STREAM, phase, b, now))
        elif rule.batching == "prefill-first":
            if self._stream_free(DECODE_STREAM):
                b = _Batch()
                self._whole_prompts(b)
                if b.chunks:
                    new.append(self._make_op(DECODE_STREAM, Phase.PREFILL, b, now))
                elif self.n_run or self.joining:
                    self._merge_joining(b)
                    new.append(self._make_op(DECODE_STREAM, Phase.DECODE, b, now))
        else:  # split: a decode client and a prefill client
            if self.role != "prefill" and (self.n_run or self.joining) and self._stream_free(DECODE_STREAM):
                b = _Batch()
                self._merge_joining(b)
                new.append(self._make_op(DECODE_STREAM, Phase.DECODE, b, now))
            if self.role != "decode" and self.waiting and self._stream_free(PREFILL_STREAM):
                b = _Batch()
                self._whole_prompts(b)
                if b.chunks:
                    new.append(self._make_op(PREFILL_STREAM, Phase.PREFILL, b, now))
        return new

    # -- dispatch ----------------------------------------------------------------------------------

    def _others_active(self, stream: int) -> bool:
        """Whether another stream's work is actually running (not paused) on the chip."""
        return any(s != stream and not self.chip.is_paused(s) for s in self.running_ops)

    def _start(self, now: float, op: OpRecord) -> None:
        self.running_ops[op.stream] = op
        self.chip.start(op.stream, op.payload[1], op)

    def _release(self, now: float, op: OpRecord) -> None:
        self.pending.remove(op)
        if self.exclusive and self._others_active(op.stream):
            self.queued[op.stream] = op
        else:
            self._start(now, op)

    def _boundary_delay(self, stream: int) -> float:
        """Time until the running work on ``stream`` reaches its next dispatch boundary."""
        op = self.running_ops.get(stream)
        if op is None or self.units_of is None:
            return 0.0
        units = op.units
        done = self.chip.progress(stream) * units
        nxt = math.ceil(done - 1e-9)
        if nxt <= done + 1e-9:
            return 0.0
        rate = self.chip.rate(stream)
        if rate <= 0.0:
            return 0.0
        return (nxt - done) / units * op.est_s / rate

    def _apply_limit(self, stream: int, share: float | None) -> None:
        if self.chip.core_limit(stream) != share:
            self.chip.set_core_limit(stream, share)
            if stream in self.running_ops and self.cluster.config.switch_s > 0:
                self.chip.add_latency(stream, self.cluster.config.switch_s)

    def _apply_pause(self, stream: int) -> None:
        if stream in self.running_ops:
            self.chip.pause(stream)

    def _decide(self, now: float) -> None:
        d = self.policy.decide(now, self.view)
        for stream, share in d.core_limits.items():
            if self.limits.get(stream) == share:
                continue
            self.limits[stream] = share
            delay = self._boundary_delay(stream)
            if delay <= 0.0:
                self._apply_limit(stream, share)
            else:
                self.deferred.append((now + delay, stream, "limit", share))
        for stream in d.pause:
            if stream in self.paused or stream not in self.running_ops:
                continue
            self.paused.add(stream)
            delay = self._boundary_delay(stream)
            if delay <= 0.0:
                self._apply_pause(stream)
            else:
                self.deferred.append((now + delay, stream, "pause", None))
        for stream in d.resume:
            if stream in self.paused:
                self.paused.discard(stream)
                self.deferred = [x for x in self.deferred if not (x[1] == stream and x[2] == "pause")]
                if stream in self.running_ops:
                    self.chip.resume(stream)
                    if self.cluster.config.switch_s > 0:
                        self.chip.add_latency(stream, self.cluster.config.switch_s)
        for op in d.release:
            self._release(now, op)
        self.policy_wake = d.wake_at if d.wake_at is not None and d.wake_at > now else math.inf
        self._start_queued(now)

    def _start_queued(self, now: float) -> None:
        for stream in list(self.queued):
            if not self._others_active(stream):
                self._start(now, self.queued.pop(stream))

    # -- completion --------------------------------------------------------------------------------

    def _complete(self, t: float, op: OpRecord) -> None:
        b: _Batch = op.payload[0]
        cl = self.cluster
        if b.n_decode:
            n = b.n_decode
            self.dec_steps += 1
            self.kv_sum += n
            joined = len(b.joined)
            for r in b.joined:
                cl.itl.add(t - r.first_token)
            if n > joined:
                cl.itl.add(t - self.last_dec_end, n - joined)
            self.last_dec_end = t
            if t <= cl.duration:
                cl.tokens_in_window += n
            heap = self.finish_heap
            while heap and heap[0][0] <= self.dec_steps:
                r = heapq.heappop(heap)[2]
                self.n_run -= 1
                self.kv_sum -= r.kv_len + r.decode_left
                self._finish(t, r)
        for r in b.completing:
            r.first_token = t
            cl.first_token[r.rid] = t
            r.kv_len = r.prompt + 1
            if t <= cl.duration:
                cl.tokens_in_window += 1
            if r.decode_left <= 0:
                self._finish(t, r)
            elif self.role == "prefill":
                cl.transfer(t, self, r)
            else:
                self.joining.append(r)
        self.policy.on_op_completed(t, op)

    def _finish(self, t: float, r: _Req) -> None:
        cl = self.cluster
        cl.finish[r.rid] = t
        cl.n_finished += 1
        if self.role == "prefill":  # a one-token answer never leaves the prefill instance
            self.release_prefill_hold(r)
        else:
            self.seats -= 1
            self.kv_used -= r.prompt + r.output
        self.policy.on_request_finished(t, RequestInfo(r.rid, 0, r.prompt, r.output, r.arrival))
        if self.role == "decode":
            cl.decode_capacity_freed(t)

    def release_prefill_hold(self, r: _Req) -> None:
        """The KV cache of ``r`` left this prefill instance."""
        self.seats -= 1
        self.kv_used -= r.prompt

    # -- the event handler -------------------------------------------------------------------------

    def wake(self, now: float) -> None:
        for stream, op, t in self.chip.advance(now):
            del self.running_ops[stream]
            self.paused.discard(stream)
            self.deferred = [x for x in self.deferred if x[1] != stream]
            lim = self.limits.get(stream)
            if self.chip.core_limit(stream) != lim:
                self._apply_limit(stream, lim)
            self._complete(t, op)
        if self.deferred:
            due = [x for x in self.deferred if x[0] <= now + 1e-12]
            if due:
                self.deferred = [x for x in self.deferred if x[0] > now + 1e-12]
                for _t, stream, kind, value in due:
                    if kind == "limit":
                        self._apply_limit(stream, value)
                    else:
                        self._apply_pause(stream)
        self.step(now)

    def _fast_decode(self, now: float) -> float:
        """Run decode steps inline while the chip holds nothing else and no event can reach this instance
        before they end; return the time reached.

        A lone decode step on an idle chip leaves a policy nothing to decide (every policy releases it at
        once, unlimited), so the policy still sees each step arrive and complete but is not asked to
        decide -- which lets long decode-only stretches run without a trip through the event queue.
        """
        cl = self.cluster
        t = now
        while (not self.waiting and (self.n_run or self.joining) and not self.running_ops and not self.pending
               and not self.queued and not self.deferred and math.isinf(self.policy_wake)
               and self.chip.core_limit(DECODE_STREAM) is None and self.role != "prefill"):
            n = self.n_run + len(self.joining)
            kv = self.kv_sum + sum(r.kv_len for r in self.joining) + n
            work = self.coster.decode_work(n, float(kv))
            t_end = t + work.alone_s
            if t_end >= cl.horizon():
                break
            b = _Batch()
            self._merge_joining(b)
            cl.op_seq += 1
            op = OpRecord(seq=cl.op_seq, client=DECODE_STREAM, stream=DECODE_STREAM, phase=Phase.DECODE,
                          est_s=work.alone_s, demand=work.demand, tokens=n, name="decode", arrived_s=t,
                          payload=(b, work))
            self.policy.on_op_arrived(t, op)
            self.chip.advance(t_end)
            self._complete(t_end, op)
            t = t_end
        return t

    def step(self, now: float) -> None:
        """Form new steps, let the policy decide, start work; then schedule the next wake-up."""
        if self.n_run and not self.running_ops:
            now = self._fast_decode(now)
        new = self._form(now)
        for op in new:
            self.pending.append(op)
            self.policy.on_op_arrived(now, op)
        if new or self.pending or self.running_ops or self.policy_wake <= now:
            self._decide(now)
        self._start_queued(now)
        nxt = min(self.chip.next_completion(), self.policy_wake,
                  min((x[0] for x in self.deferred), default=math.inf))
        if not math.isinf(nxt):
            self.cluster.schedule(max(nxt, now), self)


class Cluster:
    """Instances over ``config.chips`` chips serving one workload."""

    def __init__(self, config: SimConfig, workload: Workload):
        self.config = config
        self.workload = workload
        self.model = get_model(config.model)
        self.chip = get_chip(config.chip)
        if config.link_bw is not None:
            self.chip = replace(self.chip, link_bw=config.link_bw)
        self.instance_chips = config.instance_chips or self.model.default_instance_chips
        if config.chips % self.instance_chips:
            raise ValueError(f"{config.chips} chips do not split into instances of {self.instance_chips}")
        self.n_instances = config.chips // self.instance_chips
        eff = Efficiency(config.compute_eff, config.memory_eff, config.link_eff)
        self.eff = eff
        self.coster = StepCoster(self.model, self.chip, eff, self.instance_chips, config.host_overhead_s)
        self.kv_capacity = self.model.kv_capacity_tokens(self.chip, self.instance_chips)
        self.duration = workload.duration_s
        n = len(workload)
        self.first_token = np.full(n, np.nan)
        self.finish = np.full(n, np.nan)
        self.tokens_in_window = 0
        self.itl = LogHistogram()
        self.n_finished = 0
        self.op_seq = 0
        self._heap: list[tuple[float, int, Instance | Any, int]] = []
        self._cross: list[tuple[float, int, int, Instance | None]] = []
        self._next_arrival = math.inf
        self._seq = 0
        self.events = 0
        self.pd_ratio: tuple[int, int] | None = None
        probe = make_policy(config.policy)
        self.disaggregated = probe.engine.disaggregated
        if self.disaggregated:
            self.pd_ratio = config.pd_ratio or default_pd_ratio(self, workload)
            n_p, n_d = self.pd_ratio
            if n_p + n_d != self.n_instances or min(n_p, n_d) < 1:
                raise ValueError(f"pd ratio {n_p}:{n_d} does not match {self.n_instances} instances")
            roles = ["prefill"] * n_p + ["decode"] * n_d
        else:
            roles = ["both"] * self.n_instances
        self.instances = [Instance(i, self, role) for i, role in enumerate(roles)]
        self.front = [i for i in self.instances if i.role != "decode"]
        self.back = [i for i in self.instances if i.role == "decode"]
        self._xfer_wait: deque[tuple[Instance, _Req]] = deque()
        kv_bytes = self.model.kv_bytes_per_token()
        self._xfer_s_per_token = kv_bytes / (self.chip.link_bw * eff.link)

    # -- events ------------------------------------------------------------------------------------

    def schedule(self, t: float, inst: Instance) -> None:
        inst.version += 1
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, inst, inst.version))
        if self.disaggregated and inst.role == "prefill":
            heapq.heappush(self._cross, (t, self._seq, inst.version, inst))

    def horizon(self) -> float:
        """Earliest time something outside a decoding instance can touch it.  Co-located instances
        interact only through routing at arrivals.  Decode instances of disaggregated pools are touched
        by prefill instances (a finished prefill picks a decode instance by its load) and by KV
        transfers, the events kept in ``_cross``."""
        if not self.disaggregated:
            return self._next_arrival
        cross = self._cross
        while cross and cross[0][2] != -1 and cross[0][2] != cross[0][3].version:
            heapq.heappop(cross)  # a superseded wake-up
        return cross[0][0] if cross else math.inf

    def _schedule_call(self, t: float, fn: Any) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (t, self._seq, fn, -1))
        if self.disaggregated:
            heapq.heappush(self._cross, (t, self._seq, -1, None))

    def _route(self, r: _Req) -> Instance:
        return min(self.front, key=lambda i: (i.waiting_tokens, i.held(), i.idx))

    def transfer(self, t: float, src: Instance, r: _Req) -> None:
        """Move ``r``'s KV cache from a prefill instance to a decode instance over the link."""
        need = r.prompt + r.output
        best = None
        for inst in self.back:
            if inst.seats < inst.max_seqs and inst.kv_used + need <= inst.kv_capacity and (
                    best is None or (inst.seats, inst.idx) < (best.seats, best.idx)):
                best = inst
        if best is None:
            self._xfer_wait.append((src, r))
            return
        best.seats += 1
        best.kv_used += need
        r.admitted = True
        done = t + self.config.kv_transfer_latency_s + r.prompt * self._xfer_s_per_token

        def arrive(now: float, dst: Instance = best) -> None:
            src.release_prefill_hold(r)
            dst.add_decode(now, r)
            dst.wake(now)
            src.wake(now)

        self._schedule_call(done, arrive)

    def decode_capacity_freed(self, t: float) -> None:
        if self._xfer_wait:
            src, r = self._xfer_wait.popleft()
            self.transfer(t, src, r)

    # -- run ---------------------------------------------------------------------------------------

    def run(self, progress: bool = False) -> SimResult:
        t0 = time.perf_counter()
        w = self.workload
        arrivals = w.arrivals
        n = len(arrivals)
        drain = self.config.drain_s if self.config.drain_s is not None else 30.0 + 0.5 * w.duration_s
        end = w.duration_s + drain
        bar = _progress(progress, w.duration_s + drain)
        heap = self._heap
        k = 0
        now = 0.0
        last_bar = 0.0
        while True:
            t_arr = float(arrivals[k]) if k < n else math.inf
            self._next_arrival = t_arr
            t_evt = heap[0][0] if heap else math.inf
            now = min(t_arr, t_evt)
            if now > end or math.isinf(now):
                break
            if k >= n and self.n_finished >= n:
                break
            self.events += 1
            if t_arr <= t_evt:
                r = _Req(k, t_arr, int(w.prompt[k]), int(w.output[k]))
                k += 1
                inst = self._route(r)
                inst.add_request(now, r)
                inst.wake(now)
            else:
                _t, _s, target, version = heapq.heappop(heap)
                if version == -1:
                    target(now)
                elif version == target.version:
                    target.wake(now)
            if bar is not None and now - last_bar >= 1.0:
                bar.update(now - last_bar)
                last_bar = now
        if bar is not None:
            bar.update(max(0.0, min(now, end) - last_bar))
            bar.close()
        rec = RunRecord(w.arrivals, w.output.astype(np.int64), self.first_token, self.finish, w.duration_s,
                        self.tokens_in_window, self.itl)
        metrics = summarize(rec, self.config.ttft_slo_s, self.config.tpot_slo_s)
        wall = time.perf_counter() - t0
        notes = {
            "model": self.model.name, "chip": self.chip.name, "chips": self.config.chips,
            "instance_chips": self.instance_chips, "instances": self.n_instances,
            "policy_detail": self.instances[0].policy.describe(), "workload": w.name,
            "duration_s": w.duration_s, "ttft_slo_s": self.config.ttft_slo_s,
            "tpot_slo_s": self.config.tpot_slo_s, "sim_wall_s": wall, "events": self.events,
        }
        if self.pd_ratio:
            notes["pd_ratio"] = f"{self.pd_ratio[0]}:{self.pd_ratio[1]}"
        return SimResult(self.config, w.name, metrics, rec, wall, self.events, notes)


def default_pd_ratio(cluster: Cluster, workload: Workload) -> tuple[int, int]:
    """Pools balanced for the workload's mean request (:func:`flexnpu.sched.size_pools`): prefill
    instance-seconds per request from a full prefill batch of mean prompts, decode instance-seconds per
    request at the largest batch whose step still meets the TPOT SLO (at the mean context)."""
    p_mean, o_mean = mean_mix(workload)
    return size_pools(cluster.n_instances, *per_request_costs(cluster, p_mean, o_mean))


def per_request_costs(cluster: Cluster, prompt_mean: float, output_mean: float) -> tuple[float, float]:
    coster, cfg = cluster.coster, cluster.config
    prompt = max(1, round(prompt_mean))
    per_batch = max(1, MAX_PREFILL_TOKENS * cluster.instance_chips // prompt)
    pre = coster.seconds(BatchShape(prefill=((prompt, prompt),) * per_batch)) / per_batch
    ctx = prompt_mean + output_mean / 2.0
    best_b, best_s = 1, coster.seconds(BatchShape(n_decode=1, decode_kv=ctx))
    b = 1
    limit = cfg.max_seqs_per_chip * cluster.instance_chips
    while b * 2 <= limit:
        s = coster.seconds(BatchShape(n_decode=b * 2, decode_kv=ctx * b * 2))
        if s > cfg.tpot_slo_s * 0.9:
            break
        b, best_b, best_s = b * 2, b * 2, s
    dec = max(0.0, output_mean - 1.0) * best_s / best_b
    return pre, dec


def _progress(enabled: bool, total: float):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=round(total), unit="sim-s", desc="simulating", leave=False, disable=None,
                bar_format="{l_bar}{bar}| {n:.0f}/{total:.0f} sim-s [{elapsed}<{remaining}]")


def simulate(config: SimConfig, workload: Workload, progress: bool = False) -> SimResult:
    """Run one simulation."""
    return Cluster(config, workload).run(progress)
