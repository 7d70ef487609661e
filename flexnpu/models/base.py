"""What every model description provides, and the cached step-cost calculator built on it.

A model turns one engine step -- some prefill chunks and some decode requests, described by a
:class:`BatchShape` -- into the operator stream a chip of the serving instance issues
(:meth:`Model.step_ops`).  :class:`StepCoster` prices that stream with the roofline model; since all
but the attention-related operators depend only on token counts, it caches their cost per token count
and rebuilds only the context-dependent operators of one layer per step, which keeps a cluster-scale
simulation fast while staying equal to the operator-by-operator sum (tests check this).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace

from flexnpu.timing import ZERO_WORK, ChipProfile, Efficiency, Op, Work, cost_work, op_cost

# Engine overhead per step (scheduling, sampling, input preparation): the evaluation recipe gives 1-5 ms
# per step (anchors §7 Tier A.1); we take the midpoint.
DEFAULT_HOST_OVERHEAD_S = 3e-3

# HBM share an engine may fill with weights + KV cache (vLLM's gpu_memory_utilization default 0.9).
DEFAULT_MEMORY_UTILIZATION = 0.9


@dataclass(frozen=True)
class BatchShape:
    """One engine step of a serving instance.

    ``prefill``: ``(q_len, kv_len)`` per prefill chunk, ``kv_len`` counting the chunk itself;
    ``n_decode`` decode requests whose KV lengths (after this step's token) sum to ``decode_kv``;
    ``n_logits``: rows that need logits (decodes plus prompts finishing their prefill this step).
    """

    prefill: tuple[tuple[int, int], ...] = ()
    n_decode: int = 0
    decode_kv: float = 0.0
    n_logits: int = -1  # -1: every decode and every chunk

    @property
    def prefill_tokens(self) -> int:
        return sum(q for q, _ in self.prefill)

    @property
    def tokens(self) -> int:
        return self.prefill_tokens + self.n_decode

    @property
    def logits(self) -> int:
        return self.n_logits if self.n_logits >= 0 else self.n_decode + len(self.prefill)


@dataclass(frozen=True)
class ChipBatch:
    """The share of a step that the busiest chip of an instance runs (the whole step on one chip).

    ``group_tokens``: tokens of the whole instance (expert activation depends on it).
    """

    tokens: int
    logits: int
    group_tokens: int
    prefill: tuple[tuple[int, int], ...] = ()
    n_decode: int = 0
    decode_kv: float = 0.0
    chips: int = 1

    @property
    def token_key(self) -> tuple[int, int, int, int]:
        return (self.tokens, self.logits, self.group_tokens, self.chips)


class Model(ABC):
    """A decoder model as operator streams."""

    name: str
    n_layers: int
    default_instance_chips: int = 1
    # How the model is deployed on an instance of several chips, in one line for reports.
    parallelism: str = "one chip per instance"

    @abstractmethod
    def plan(self, batch: BatchShape, chips: int) -> ChipBatch:
        """Split a step over the ``chips`` of an instance; return the busiest chip's share."""

    @abstractmethod
    def layer_ops(self, cb: ChipBatch, layer: int, tokens: bool = True, context: bool = True) -> list[Op]:
        """Operators of one layer.  ``tokens``: those whose shapes depend only on ``cb.token_key``;
        ``context``: those that depend on the prefill chunks and decode KV lengths (attention), which
        must be the same for every layer."""

    @abstractmethod
    def embed_ops(self, cb: ChipBatch) -> list[Op]:
        """Operators before the first layer (token embedding)."""

    @abstractmethod
    def final_ops(self, cb: ChipBatch, tokens: bool = True, logits: bool = True) -> list[Op]:
        """Operators after the last layer: the final norm over all tokens (``tokens``), then the LM head
        and sampling over the rows that need logits (``logits``)."""

    @abstractmethod
    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes one token occupies on the chip that holds its request."""

    @abstractmethod
    def weight_bytes_per_chip(self, chips: int) -> float:
        """Weight bytes each chip of an instance of ``chips`` holds."""

    def layer_groups(self) -> list[tuple[int, int]]:
        """``(representative layer, count)`` for runs of layers with identical operators."""
        return [(0, self.n_layers)]

    def step_ops(self, batch: BatchShape, chips: int = 1) -> list[Op]:
        """The whole operator stream the busiest chip issues for one engine step, in order."""
        cb = self.plan(batch, chips)
        ops = self.embed_ops(cb)
        for layer in range(self.n_layers):
            ops += self.layer_ops(cb, layer)
        return ops + self.final_ops(cb)

    def kv_capacity_tokens(self, chip: ChipProfile, chips: int,
                           utilization: float = DEFAULT_MEMORY_UTILIZATION) -> int:
        """Tokens of KV cache an instance can hold after its weights."""
        free = chip.hbm_bytes * utilization - self.weight_bytes_per_chip(chips)
        if free <= 0:
            raise ValueError(f"{self.name} does not fit on {chips} x {chip.name}")
        return int(free // self.kv_bytes_per_token()) * chips


# KV lengths at which decode attention is priced to recover its affine cost (per chip, in tokens).
_KV_PROBE = (1024.0, 1 << 20)

# Token counts up to this are priced exactly; above it, by linear interpolation between exactly priced
# points at most 1/32 apart in relative terms (steps of 2**(floor(log2 T) - 5) tokens).  The token-only
# part of a step is a sum of per-operator maxima of affine functions of T, so the error is tiny; tests
# bound it.
EXACT_TOKENS = 512


@dataclass
class StepCoster:
    """Roofline cost of engine steps (see the module docstring).

    The operators of a step split into three groups priced separately: those depending on token counts
    only (cached per count, layers of a group priced once and multiplied), the LM head and sampling
    (cached per number of logit rows), and the context-dependent ones of one layer (attention; priced per
    step and multiplied by the number of layers).
    """

    model: Model
    chip: ChipProfile
    eff: Efficiency = field(default_factory=Efficiency)
    chips: int = 1
    host_overhead_s: float = DEFAULT_HOST_OVERHEAD_S
    _token_cache: dict[tuple[int, int], Work] = field(default_factory=dict, repr=False)
    _logit_cache: dict[int, Work] = field(default_factory=dict, repr=False)
    _decode_cache: dict[int, tuple[Work, list[tuple[float, ...]]]] = field(default_factory=dict, repr=False)

    def work(self, batch: BatchShape) -> Work:
        if batch.tokens == 0:
            return ZERO_WORK
        if not batch.prefill:
            return self.decode_work(batch.n_decode, batch.decode_kv)
        cb = self.model.plan(batch, self.chips)
        tok = self._tokens(cb.tokens, cb.group_tokens)
        logits = self._logit_cache.get(cb.logits)
        if logits is None:
            logits = self._sum(self.model.final_ops(self._probe(0, 0, cb.logits), tokens=False, logits=True))
            self._logit_cache[cb.logits] = logits
        ctx = self._sum(self.model.layer_ops(cb, 0, tokens=False, context=True)).scaled(self.model.n_layers)
        return (tok + logits + ctx).plus_latency(self.host_overhead_s)

    def seconds(self, batch: BatchShape) -> float:
        return self.work(batch).alone_s

    def decode_work(self, n_decode: int, decode_kv: float) -> Work:
        """A decode-only step, fast: per batch size, everything but the attention operators is cached,
        and the attention operators' compute, HBM and link times are affine in the KV length, so two
        pricings give each of them exactly (the per-operator roofline max is taken afterwards)."""
        entry = self._decode_cache.get(n_decode)
        if entry is None:
            probe = BatchShape(n_decode=n_decode, decode_kv=0.0)
            cb = self.model.plan(probe, self.chips)
            fixed = self._tokens(cb.tokens, cb.group_tokens) + self._sum(
                self.model.final_ops(self._probe(0, 0, cb.logits), tokens=False, logits=True))
            base, unit = _KV_PROBE
            lines = []
            per_chip = [self.model.plan(replace(probe, decode_kv=kv * self.chips), self.chips)
                        for kv in (base, base + unit)]
            ops0, ops1 = (self.model.layer_ops(cb_, 0, tokens=False, context=True) for cb_ in per_chip)
            for a, b in zip(ops0, ops1):
                wa = cost_work(op_cost(a), self.chip, self.eff)
                wb = cost_work(op_cost(b), self.chip, self.eff)
                lines.append((wa.compute_s - base * (wb.compute_s - wa.compute_s) / unit,
                              (wb.compute_s - wa.compute_s) / unit,
                              wa.mem_s - base * (wb.mem_s - wa.mem_s) / unit, (wb.mem_s - wa.mem_s) / unit,
                              wa.link_s - base * (wb.link_s - wa.link_s) / unit, (wb.link_s - wa.link_s) / unit,
                              wa.latency_s))
            entry = (fixed.plus_latency(self.host_overhead_s), lines)
            self._decode_cache[n_decode] = entry
        fixed, lines = entry
        kv = decode_kv / self.chips if self.chips > 1 else decode_kv  # the per-chip share, as plan() does
        layers = self.model.n_layers
        alone = compute = mem = link = lat = 0.0
        for c0, c1, m0, m1, l0, l1, la in lines:
            c, m, li = c0 + c1 * kv, m0 + m1 * kv, l0 + l1 * kv
            alone += max(c, m, li) + la
            compute += c
            mem += m
            link += li
            lat += la
        return Work(fixed.alone_s + alone * layers, fixed.compute_s + compute * layers,
                    fixed.mem_s + mem * layers, fixed.link_s + link * layers, fixed.latency_s + lat * layers,
                    fixed.n_ops + len(lines) * layers)

    def token_work_exact(self, tokens: int, group_tokens: int) -> Work:
        key = (tokens, group_tokens)
        w = self._token_cache.get(key)
        if w is None:
            cb = self._probe(tokens, group_tokens, 0)
            m = self.model
            w = self._sum(m.embed_ops(cb)) + self._sum(m.final_ops(cb, tokens=True, logits=False))
            for layer, count in m.layer_groups():
                w = w + self._sum(m.layer_ops(cb, layer, tokens=True, context=False)).scaled(count)
            self._token_cache[key] = w
        return w

    def _tokens(self, tokens: int, group_tokens: int) -> Work:
        if tokens <= EXACT_TOKENS:
            return self.token_work_exact(tokens, group_tokens)
        step = 1 << (tokens.bit_length() - 6)
        lo = tokens - tokens % step
        if lo == tokens:
            return self.token_work_exact(tokens, group_tokens)
        ratio = group_tokens / tokens
        if ratio != 1.0:
            ratio = round(ratio * 64) / 64  # keep the cache small for instances of many chips
        hi = lo + step
        a = self.token_work_exact(lo, max(lo, round(ratio * lo)))
        b = self.token_work_exact(hi, max(hi, round(ratio * hi)))
        f = (tokens - lo) / step
        return Work(a.alone_s + f * (b.alone_s - a.alone_s), a.compute_s + f * (b.compute_s - a.compute_s),
                    a.mem_s + f * (b.mem_s - a.mem_s), a.link_s + f * (b.link_s - a.link_s),
                    a.latency_s + f * (b.latency_s - a.latency_s), a.n_ops)

    def _probe(self, tokens: int, group_tokens: int, logits: int) -> ChipBatch:
        return ChipBatch(tokens=tokens, logits=logits, group_tokens=group_tokens, chips=self.chips)

    def _sum(self, ops: list[Op]) -> Work:
        total = ZERO_WORK
        for op in ops:
            total = total + cost_work(op_cost(op), self.chip, self.eff)
        return total
