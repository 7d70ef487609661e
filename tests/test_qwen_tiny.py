"""The qwen_tiny example: its numpy reference, and the example itself run through ``flexnpu run
--direct`` (pyACL bound in-process to the emulated device) giving the reference's token ids."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from flexnpu.examples.qwen_reference import QwenConfig, QwenReference, generate, make_prompt, make_weights

# Small enough for CI's two cores; the same flags go to the example.
SMALL = QwenConfig(layers=2, hidden=128, heads=4, kv_heads=2, head_dim=32, intermediate=256, vocab=512)
SMALL_FLAGS = [
    "--layers",
    "2",
    "--hidden",
    "128",
    "--heads",
    "4",
    "--kv-heads",
    "2",
    "--head-dim",
    "32",
    "--intermediate",
    "256",
    "--vocab",
    "512",
]
PROMPT_LEN, TOKENS = 8, 8


def test_reference_is_deterministic_and_depends_on_the_seed():
    first = generate(SMALL, 0, PROMPT_LEN, TOKENS)
    assert first == generate(SMALL, 0, PROMPT_LEN, TOKENS)
    assert len(first) == TOKENS and all(0 <= t < SMALL.vocab for t in first)
    assert generate(SMALL, 1, PROMPT_LEN, TOKENS) != first
    np.testing.assert_array_equal(make_prompt(SMALL, PROMPT_LEN, 0), make_prompt(SMALL, PROMPT_LEN, 0))


def test_reference_kv_cache_agrees_with_recomputing_the_whole_sequence():
    weights = make_weights(SMALL, 3)
    prompt = make_prompt(SMALL, PROMPT_LEN, 3)
    tokens = QwenReference(SMALL, weights, PROMPT_LEN + TOKENS).generate(prompt, TOKENS)
    sequence = np.concatenate([prompt, np.array(tokens[:-1], np.int32)])
    logits = QwenReference(SMALL, weights, len(sequence)).forward(sequence, 0)
    assert np.isfinite(logits).all()
    assert logits[PROMPT_LEN - 1 :].argmax(axis=-1).tolist() == tokens


def test_reference_is_causal():
    weights = make_weights(SMALL, 0)
    sequence = make_prompt(SMALL, 10, 0)
    changed = sequence.copy()
    changed[-1] = (changed[-1] + 1) % SMALL.vocab
    a = QwenReference(SMALL, weights, 10).forward(sequence, 0)
    b = QwenReference(SMALL, weights, 10).forward(changed, 0)
    np.testing.assert_array_equal(a[:-1], b[:-1])  # earlier positions never see a later token
    assert not np.allclose(a[-1], b[-1])


def test_example_in_direct_mode_gives_the_reference_tokens():
    example = [
        sys.executable,
        "-m",
        "flexnpu.examples.qwen_tiny",
        "--tokens",
        str(TOKENS),
        "--prompt-len",
        str(PROMPT_LEN),
        "--seed",
        "5",
        "--json",
        *SMALL_FLAGS,
    ]
    command = [sys.executable, "-m", "flexnpu.cli", "run", "--direct", "--", *example]
    env = dict(os.environ, FLEXNPU_MODE="direct")
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = generate(SMALL, 5, PROMPT_LEN, TOKENS)
    assert len(set(expected)) > TOKENS // 2  # seed 5 gives varied tokens: many decisions compared
    assert result["tokens"] == expected
    # each step: 3 gathers (embedding, cos, sin), 15 per layer, final norm, lm_head, argmax
    assert result["ops_launched"] == TOKENS * (3 + 15 * SMALL.layers + 3)
    assert result["ttft_s"] > 0 and result["decode_tokens_per_s"] > 0


# ---- the example's handling of ACL errors, against a minimal recording acl -----------------------------


def fake_acl(fail_at: str, code: int = 100000):
    """An `acl` whose calls are recorded and where the call named `fail_at` returns `code`."""
    calls = []

    def call(name, result):
        def fn(*args):
            calls.append(name)
            if name == fail_at:
                return (0, code) if isinstance(result, tuple) else code
            return result

        return fn

    acl = types.SimpleNamespace(init=call("acl.init", 0), finalize=call("acl.finalize", 0))
    acl.rt = types.SimpleNamespace(
        set_device=call("acl.rt.set_device", 0),
        create_context=call("acl.rt.create_context", (11, 0)),
        create_stream=call("acl.rt.create_stream", (12, 0)),
        malloc=call("acl.rt.malloc", (0, 0)),
        destroy_stream=call("acl.rt.destroy_stream", 0),
        destroy_context=call("acl.rt.destroy_context", 0),
        reset_device=call("acl.rt.reset_device", 0),
    )
    return acl, calls


@pytest.mark.parametrize(
    "fail_at, cleanup",
    [
        ("acl.init", []),
        ("acl.rt.create_context", ["acl.rt.reset_device", "acl.finalize"]),
        (
            "acl.rt.malloc",
            ["acl.rt.destroy_stream", "acl.rt.destroy_context", "acl.rt.reset_device", "acl.finalize"],
        ),
    ],
)
def test_example_names_the_failing_acl_call_and_cleans_up(fail_at, cleanup, monkeypatch, capsys):
    acl, calls = fake_acl(fail_at, 207001)
    monkeypatch.setitem(sys.modules, "acl", acl)
    qwen_tiny = importlib.reload(importlib.import_module("flexnpu.examples.qwen_tiny"))
    assert qwen_tiny.main(["--tokens", "2", *SMALL_FLAGS]) == 1
    assert f"{fail_at} failed with error 207001" in capsys.readouterr().err
    assert calls[calls.index(fail_at) + 1 :] == cleanup
