"""A tiny Qwen2-architecture decoder in pure numpy: the reference ``qwen_tiny`` must agree with.

The model and its random weights are defined here once (``QwenConfig``, ``make_weights``,
``make_prompt``, ``rope_tables``); ``qwen_tiny`` uploads these very arrays to the device.
Architecture (as Qwen2): token embedding; per layer RMSNorm -> q/k/v projections with bias ->
rotary embedding (rotate-half, theta 1e6) -> causal grouped-query attention -> o projection ->
residual add -> RMSNorm -> fused gate/up projection -> SwiGLU -> down projection -> residual add;
final RMSNorm; an untied lm_head; greedy decoding.  Weights are in the Hugging Face orientation
(out_features, in_features).  Everything is float32, attention written as explicit loops over
heads with an explicit causal mask.

    python -m flexnpu.examples.qwen_reference --tokens 32 [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class QwenConfig:
    layers: int = 4
    hidden: int = 512
    heads: int = 8
    kv_heads: int = 2
    head_dim: int = 64
    intermediate: int = 1408
    vocab: int = 8192
    rope_theta: float = 1_000_000.0
    rms_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.heads % self.kv_heads or self.head_dim % 2:
            raise ValueError("heads must be a multiple of kv_heads and head_dim even")


@dataclass
class LayerWeights:
    input_norm: np.ndarray  # (hidden,)
    q_weight: np.ndarray  # (heads * head_dim, hidden)
    q_bias: np.ndarray
    k_weight: np.ndarray  # (kv_heads * head_dim, hidden)
    k_bias: np.ndarray
    v_weight: np.ndarray
    v_bias: np.ndarray
    o_weight: np.ndarray  # (hidden, heads * head_dim)
    post_norm: np.ndarray  # (hidden,)
    gate_up_weight: np.ndarray  # (2 * intermediate, hidden): gate rows, then up rows
    down_weight: np.ndarray  # (hidden, intermediate)


@dataclass
class QwenWeights:
    embed: np.ndarray  # (vocab, hidden)
    layers: list[LayerWeights]
    final_norm: np.ndarray  # (hidden,)
    lm_head: np.ndarray  # (vocab, hidden)


def make_weights(cfg: QwenConfig, seed: int = 0) -> QwenWeights:
    """Random float32 weights from `seed`, scaled so every layer moves the residual stream."""
    rng = np.random.default_rng(seed)

    def linear(out_features: int, in_features: int) -> np.ndarray:
        return (rng.standard_normal((out_features, in_features)) / np.sqrt(in_features)).astype(np.float32)

    def vector(n: int, center: float, spread: float) -> np.ndarray:
        return (center + spread * rng.standard_normal(n)).astype(np.float32)

    q_dim, kv_dim = cfg.heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
    embed = rng.standard_normal((cfg.vocab, cfg.hidden)).astype(np.float32)
    layers = [
        LayerWeights(
            input_norm=vector(cfg.hidden, 1.0, 0.1),
            q_weight=linear(q_dim, cfg.hidden),
            q_bias=vector(q_dim, 0.0, 0.1),
            k_weight=linear(kv_dim, cfg.hidden),
            k_bias=vector(kv_dim, 0.0, 0.1),
            v_weight=linear(kv_dim, cfg.hidden),
            v_bias=vector(kv_dim, 0.0, 0.1),
            o_weight=linear(cfg.hidden, q_dim),
            post_norm=vector(cfg.hidden, 1.0, 0.1),
            gate_up_weight=linear(2 * cfg.intermediate, cfg.hidden),
            down_weight=linear(cfg.hidden, cfg.intermediate),
        )
        for _ in range(cfg.layers)
    ]
    return QwenWeights(embed, layers, vector(cfg.hidden, 1.0, 0.1), linear(cfg.vocab, cfg.hidden))


def make_prompt(cfg: QwenConfig, prompt_len: int, seed: int = 0) -> np.ndarray:
    """The prompt's token ids (int32), drawn from a stream separate from the weights'."""
    return np.random.default_rng([seed, 1]).integers(0, cfg.vocab, prompt_len).astype(np.int32)


def rope_tables(cfg: QwenConfig, positions: int) -> tuple[np.ndarray, np.ndarray]:
    """cos and sin, each (positions, head_dim) float32, in the rotate-half arrangement."""
    inv_freq = 1.0 / (cfg.rope_theta ** (np.arange(0, cfg.head_dim, 2, dtype=np.float64) / cfg.head_dim))
    angles = np.outer(np.arange(positions, dtype=np.float64), inv_freq)
    angles = np.concatenate([angles, angles], axis=-1)
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)


def rms_norm(x: np.ndarray, gamma: np.ndarray, eps: float) -> np.ndarray:
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + np.float32(eps)) * gamma


def rotate(x: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """Rotary embedding of x (S, heads, D) with cos/sin (S, D)."""
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos[:, None] + rotated * sin[:, None]


def silu(x: np.ndarray) -> np.ndarray:
    return x / (np.float32(1.0) + np.exp(-x))


class QwenReference:
    """Greedy generation with a KV cache, one sequence."""

    def __init__(self, cfg: QwenConfig, weights: QwenWeights, max_positions: int):
        self.cfg, self.w = cfg, weights
        self.cos, self.sin = rope_tables(cfg, max_positions)
        shape = (cfg.layers, max_positions, cfg.kv_heads, cfg.head_dim)
        self.k_cache = np.zeros(shape, np.float32)
        self.v_cache = np.zeros(shape, np.float32)

    def _attention(self, q: np.ndarray, layer: int, positions: np.ndarray) -> np.ndarray:
        """q (S, heads, D) at `positions`; keys and values from the cache; causal."""
        cfg = self.cfg
        group = cfg.heads // cfg.kv_heads
        scale = np.float32(1.0 / np.sqrt(cfg.head_dim))
        kv_len = int(positions[-1]) + 1
        out = np.zeros_like(q)
        for h in range(cfg.heads):
            keys = self.k_cache[layer, :kv_len, h // group]  # (kv_len, D)
            values = self.v_cache[layer, :kv_len, h // group]
            scores = (q[:, h] @ keys.T) * scale  # (S, kv_len)
            future = np.arange(kv_len)[None, :] > positions[:, None]
            scores = np.where(future, -np.inf, scores)
            weights = np.exp(scores - scores.max(axis=-1, keepdims=True))
            out[:, h] = (weights / weights.sum(axis=-1, keepdims=True)) @ values
        return out

    def forward(self, tokens: np.ndarray, start: int) -> np.ndarray:
        """Run tokens at positions start.. through the model (filling the cache); logits (S, vocab)."""
        cfg, w = self.cfg, self.w
        positions = np.arange(start, start + len(tokens))
        cos, sin = self.cos[positions], self.sin[positions]
        x = w.embed[tokens]
        for i, lw in enumerate(w.layers):
            h = rms_norm(x, lw.input_norm, cfg.rms_eps)
            q = (h @ lw.q_weight.T + lw.q_bias).reshape(len(tokens), cfg.heads, cfg.head_dim)
            k = (h @ lw.k_weight.T + lw.k_bias).reshape(len(tokens), cfg.kv_heads, cfg.head_dim)
            v = (h @ lw.v_weight.T + lw.v_bias).reshape(len(tokens), cfg.kv_heads, cfg.head_dim)
            q, k = rotate(q, cos, sin), rotate(k, cos, sin)
            self.k_cache[i, positions] = k
            self.v_cache[i, positions] = v
            attn = self._attention(q, i, positions).reshape(len(tokens), -1)
            x = x + attn @ lw.o_weight.T
            h = rms_norm(x, lw.post_norm, cfg.rms_eps)
            gate, up = np.split(h @ lw.gate_up_weight.T, 2, axis=-1)
            x = x + (silu(gate) * up) @ lw.down_weight.T
        return rms_norm(x, w.final_norm, cfg.rms_eps) @ w.lm_head.T

    def stream(self, prompt: np.ndarray, n_tokens: int) -> Iterator[int]:
        """Greedy: the first token from the prompt's last logits, then one token per step."""
        token = int(np.argmax(self.forward(prompt, 0)[-1]))
        yield token
        for step in range(1, n_tokens):
            token = int(np.argmax(self.forward(np.array([token], np.int32), len(prompt) + step - 1)[-1]))
            yield token

    def generate(self, prompt: np.ndarray, n_tokens: int) -> list[int]:
        return list(self.stream(prompt, n_tokens))


def generate(cfg: QwenConfig, seed: int, prompt_len: int, n_tokens: int) -> list[int]:
    """The token ids qwen_tiny must produce for the same arguments."""
    model = QwenReference(cfg, make_weights(cfg, seed), prompt_len + n_tokens)
    return model.generate(make_prompt(cfg, prompt_len, seed), n_tokens)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The command-line flags shared by qwen_tiny and this reference."""
    d = QwenConfig()
    parser.add_argument("--tokens", type=int, default=32, help="tokens to generate (default 32)")
    parser.add_argument("--prompt-len", type=int, default=16, help="prompt length (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and the prompt")
    parser.add_argument("--layers", type=int, default=d.layers)
    parser.add_argument("--hidden", type=int, default=d.hidden)
    parser.add_argument("--heads", type=int, default=d.heads)
    parser.add_argument("--kv-heads", type=int, default=d.kv_heads)
    parser.add_argument("--head-dim", type=int, default=d.head_dim)
    parser.add_argument("--intermediate", type=int, default=d.intermediate)
    parser.add_argument("--vocab", type=int, default=d.vocab)
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def config_from_args(args: argparse.Namespace) -> QwenConfig:
    if args.tokens < 1 or args.prompt_len < 1:
        raise SystemExit("--tokens and --prompt-len must be at least 1")
    return QwenConfig(
        layers=args.layers,
        hidden=args.hidden,
        heads=args.heads,
        kv_heads=args.kv_heads,
        head_dim=args.head_dim,
        intermediate=args.intermediate,
        vocab=args.vocab,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    args = parser.parse_args(argv)
    cfg = config_from_args(args)
    model = QwenReference(cfg, make_weights(cfg, args.seed), args.prompt_len + args.tokens)
    prompt = make_prompt(cfg, args.prompt_len, args.seed)
    t0 = time.perf_counter()
    steps = model.stream(prompt, args.tokens)
    tokens = [next(steps)]
    t1 = time.perf_counter()
    tokens += steps
    t2 = time.perf_counter()
    result = {
        "tokens": tokens,
        "ttft_s": t1 - t0,
        "decode_tokens_per_s": (len(tokens) - 1) / (t2 - t1) if len(tokens) > 1 else None,
        "config": dataclasses.asdict(cfg),
    }
    if args.json:
        print(json.dumps(result))
    else:
        print("tokens:", " ".join(map(str, tokens)))
        tps = result["decode_tokens_per_s"]
        print(f"TTFT {1e3 * result['ttft_s']:.1f} ms, decode " + (f"{tps:.1f} tokens/s" if tps else "n/a"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
