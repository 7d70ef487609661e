"""A tiny Qwen2-architecture decoder run on an Ascend NPU through nothing but pyACL (``import acl``).

    python -m flexnpu.examples.qwen_tiny --tokens 32 [--prompt-len 16] [--layers 4] [--seed 0] [--json]
    flexnpu run -- python -m flexnpu.examples.qwen_tiny --tokens 32           # through FlexNPU
    flexnpu run --direct -- python -m flexnpu.examples.qwen_tiny --tokens 32  # in-process baseline

The weights (random, from --seed) are uploaded once.  The prompt runs as one prefill step with
PromptFlashAttention; then each greedy decode step runs one token with IncreFlashAttention over
the KV cache, which ScatterUpdate writes.  ArgMaxV2 picks the next token on the device; the token
id stays there as the next step's input and a 4-byte device-to-host copy brings it to the host.
Every operator is a CANN operator launched with acl.op.execute_v2 on one stream, all in float32;
flexnpu.examples.qwen_reference computes the same model in numpy and gives the same token ids.

Prints the token ids, the time to the first token (TTFT) and decode tokens/s; with --json one
JSON object with keys tokens, ttft_s, decode_tokens_per_s, ops_launched.  Every acl call's return
code is checked: a failure exits with status 1 and a message naming the call.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from typing import Any, Optional

import acl
import numpy as np

from flexnpu.acl.constants import (
    ACL_BOOL,
    ACL_FLOAT,
    ACL_FORMAT_ND,
    ACL_INT32,
    ACL_MEM_MALLOC_HUGE_FIRST,
    ACL_MEMCPY_DEVICE_TO_HOST,
    ACL_MEMCPY_HOST_TO_DEVICE,
    ACL_SUCCESS,
)
from flexnpu.examples.qwen_reference import (
    QwenConfig,
    QwenWeights,
    add_model_arguments,
    config_from_args,
    make_prompt,
    make_weights,
    rope_tables,
)

_ACL_DTYPES = {np.dtype(np.float32): ACL_FLOAT, np.dtype(np.int32): ACL_INT32, np.dtype(np.bool_): ACL_BOOL}
INT_MAX = 2147483647


class AclCallFailed(Exception):
    def __init__(self, call: str, code: Optional[int]):
        detail = "returned a null handle" if code is None else f"failed with error {code}"
        super().__init__(f"{call} {detail}")
        self.call, self.code = call, code


def check(ret: Any, call: str) -> None:
    """pyACL reports errors as return codes (some calls return None on success)."""
    if ret is not None and ret != ACL_SUCCESS:
        raise AclCallFailed(call, ret)


def check_handle(handle: Any, call: str) -> Any:
    if not handle:
        raise AclCallFailed(call, None)
    return handle


class Tensor:
    """Device memory with a tensor descriptor and a data buffer describing it."""

    __slots__ = ("buf", "desc", "dtype", "ptr", "shape")

    def __init__(self, ptr: int, shape: tuple[int, ...], dtype: np.dtype, desc: int, buf: int):
        self.ptr, self.shape, self.dtype, self.desc, self.buf = ptr, shape, dtype, desc, buf

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


class Npu:
    """One device, context and stream, and every ACL object made through them (released by close)."""

    def __init__(self, device_id: int):
        self.device_id = device_id
        self.ops_launched = 0
        self._allocations: list[int] = []
        self._views: dict[tuple, Tensor] = {}
        self._attrs: dict[tuple, int] = {}
        self._initialized = self._device_set = False
        self.context = self.stream = None

    def open(self) -> None:
        check(acl.init(), "acl.init")
        self._initialized = True
        check(acl.rt.set_device(self.device_id), "acl.rt.set_device")
        self._device_set = True
        context, ret = acl.rt.create_context(self.device_id)
        check(ret, "acl.rt.create_context")
        self.context = context
        stream, ret = acl.rt.create_stream()
        check(ret, "acl.rt.create_stream")
        self.stream = stream

    # ---- memory ----
    def alloc(self, shape: tuple[int, ...], dtype: Any) -> Tensor:
        dtype = np.dtype(dtype)
        ptr, ret = acl.rt.malloc(max(math.prod(shape) * dtype.itemsize, 1), ACL_MEM_MALLOC_HUGE_FIRST)
        check(ret, "acl.rt.malloc")
        self._allocations.append(ptr)
        return self.view_at(ptr, shape, dtype)

    def tensor(self, array: np.ndarray) -> Tensor:
        t = self.alloc(array.shape, array.dtype)
        self.upload(t, array)
        return t

    def view_at(self, ptr: int, shape: tuple[int, ...], dtype: Any) -> Tensor:
        """A descriptor and data buffer for the memory at ptr (made once per ptr/shape/dtype)."""
        dtype = np.dtype(dtype)
        key = (ptr, tuple(shape), dtype)
        t = self._views.get(key)
        if t is None:
            desc = check_handle(
                acl.create_tensor_desc(_ACL_DTYPES[dtype], list(shape), ACL_FORMAT_ND),
                "acl.create_tensor_desc",
            )
            nbytes = math.prod(shape) * dtype.itemsize
            buf = check_handle(acl.create_data_buffer(ptr, nbytes), "acl.create_data_buffer")
            t = self._views[key] = Tensor(ptr, tuple(shape), dtype, desc, buf)
        return t

    def view(self, t: Tensor, shape: tuple[int, ...], offset: int = 0) -> Tensor:
        """Another shape for t's memory, starting `offset` elements in (pointer arithmetic)."""
        return self.view_at(t.ptr + offset * t.dtype.itemsize, shape, t.dtype)

    def upload(self, t: Tensor, array: np.ndarray) -> None:
        host = np.ascontiguousarray(array, dtype=t.dtype)
        assert host.nbytes == t.nbytes, (host.shape, t.shape)
        ret = acl.rt.memcpy(
            t.ptr, t.nbytes, acl.util.numpy_to_ptr(host), host.nbytes, ACL_MEMCPY_HOST_TO_DEVICE
        )
        check(ret, "acl.rt.memcpy (host to device)")

    def download(self, t: Tensor) -> np.ndarray:
        host = np.empty(t.shape, t.dtype)
        ret = acl.rt.memcpy(
            acl.util.numpy_to_ptr(host), host.nbytes, t.ptr, t.nbytes, ACL_MEMCPY_DEVICE_TO_HOST
        )
        check(ret, "acl.rt.memcpy (device to host)")
        return host

    # ---- operators ----
    def attr(self, attrs: dict[str, Any]) -> int:
        """An operator attribute object holding attrs (made once per distinct set)."""
        key = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in attrs.items()))
        handle = self._attrs.get(key)
        if handle is None:
            handle = check_handle(acl.op.create_attr(), "acl.op.create_attr")
            self._attrs[key] = handle
            for name, value in attrs.items():
                if isinstance(value, bool):
                    call, ret = "set_attr_bool", acl.op.set_attr_bool(handle, name, value)
                elif isinstance(value, int):
                    call, ret = "set_attr_int", acl.op.set_attr_int(handle, name, value)
                elif isinstance(value, float):
                    call, ret = "set_attr_float", acl.op.set_attr_float(handle, name, value)
                elif isinstance(value, str):
                    call, ret = "set_attr_string", acl.op.set_attr_string(handle, name, value)
                else:
                    call, ret = "set_attr_list_int", acl.op.set_attr_list_int(handle, name, list(value))
                check(ret, f"acl.op.{call}({name})")
        return handle

    def launch(self, op_type: str, inputs: list[Tensor], outputs: list[Tensor], **attrs: Any) -> None:
        ret = acl.op.execute_v2(
            op_type,
            [t.desc for t in inputs],
            [t.buf for t in inputs],
            [t.desc for t in outputs],
            [t.buf for t in outputs],
            self.attr(attrs),
            self.stream,
        )
        check(ret, f"acl.op.execute_v2({op_type})")
        self.ops_launched += 1

    def synchronize(self) -> None:
        check(acl.rt.synchronize_stream(self.stream), "acl.rt.synchronize_stream")

    # ---- teardown ----
    def close(self) -> list[AclCallFailed]:
        """Release everything, carrying on past failures; returns them."""
        failures = []

        def attempt(ret: Any, call: str) -> None:
            if ret is not None and ret != ACL_SUCCESS:
                failures.append(AclCallFailed(call, ret))

        for handle in self._attrs.values():
            attempt(acl.op.destroy_attr(handle), "acl.op.destroy_attr")
        for t in self._views.values():
            attempt(acl.destroy_data_buffer(t.buf), "acl.destroy_data_buffer")
            attempt(acl.destroy_tensor_desc(t.desc), "acl.destroy_tensor_desc")
        for ptr in self._allocations:
            attempt(acl.rt.free(ptr), "acl.rt.free")
        self._attrs, self._views, self._allocations = {}, {}, []
        if self.stream is not None:
            attempt(acl.rt.destroy_stream(self.stream), "acl.rt.destroy_stream")
            self.stream = None
        if self.context is not None:
            attempt(acl.rt.destroy_context(self.context), "acl.rt.destroy_context")
            self.context = None
        if self._device_set:
            attempt(acl.rt.reset_device(self.device_id), "acl.rt.reset_device")
            self._device_set = False
        if self._initialized:
            attempt(acl.finalize(), "acl.finalize")
            self._initialized = False
        return failures


class QwenOnNpu:
    """The model's weights, KV cache and activations on the device, and its two kinds of step."""

    def __init__(self, npu: Npu, cfg: QwenConfig, weights: QwenWeights, prompt_len: int, max_positions: int):
        self.npu, self.cfg = npu, cfg
        f32, i32 = np.float32, np.int32
        self.embed = npu.tensor(weights.embed)
        self.layers = [
            {name: npu.tensor(getattr(lw, name)) for name in vars(lw)} for lw in weights.layers
        ]  # same names as LayerWeights
        self.final_norm = npu.tensor(weights.final_norm)
        self.lm_head = npu.tensor(weights.lm_head)
        cos, sin = rope_tables(cfg, max_positions)
        self.cos_table, self.sin_table = npu.tensor(cos), npu.tensor(sin)
        self.axis_zero = npu.tensor(np.array([0], i32))  # GatherV2's axis input
        self.last_dim = npu.tensor(np.array([1], i32))  # ArgMaxV2's dimension input
        q_dim, kv_dim = cfg.heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
        self.max_positions = max_positions
        self.k_cache = [npu.alloc((max_positions, kv_dim), f32) for _ in range(cfg.layers)]
        self.v_cache = [npu.alloc((max_positions, kv_dim), f32) for _ in range(cfg.layers)]
        # Activations, sized for the longest step (the prompt); decode steps use views of 1 row.
        s = prompt_len
        self.ids, self.positions = npu.alloc((s,), i32), npu.alloc((s,), i32)
        self.x, self.h, self.o = (npu.alloc((s, cfg.hidden), f32) for _ in range(3))
        self.q, self.attn = npu.alloc((s, q_dim), f32), npu.alloc((s, q_dim), f32)
        self.k, self.v = npu.alloc((s, kv_dim), f32), npu.alloc((s, kv_dim), f32)
        self.cos, self.sin = npu.alloc((s, cfg.head_dim), f32), npu.alloc((s, cfg.head_dim), f32)
        self.gate_up = npu.alloc((s, 2 * cfg.intermediate), f32)
        self.mlp = npu.alloc((s, cfg.intermediate), f32)
        self.last_h = npu.alloc((1, cfg.hidden), f32)
        self.logits = npu.alloc((1, cfg.vocab), f32)
        self.next_id = npu.alloc((1,), i32)  # ArgMaxV2 writes it; the next decode step reads it
        self.causal_mask = npu.tensor(np.triu(np.ones((s, s), np.bool_), k=1))  # True = masked

    def prefill(self, prompt: np.ndarray) -> int:
        n = len(prompt)
        self.npu.upload(self.npu.view(self.ids, (n,)), prompt)
        self.npu.upload(self.npu.view(self.positions, (n,)), np.arange(n, dtype=np.int32))
        self._step(self.npu.view(self.ids, (n,)), n, start=0)
        return self._next_token()

    def decode(self, position: int) -> int:
        """One token: the previous step's output at `position`."""
        self.npu.upload(self.npu.view(self.positions, (1,)), np.array([position], np.int32))
        self._step(self.next_id, 1, start=position)
        return self._next_token()

    def _next_token(self) -> int:
        self.npu.synchronize()
        return int(self.npu.download(self.next_id)[0])

    def _step(self, ids: Tensor, n: int, start: int) -> None:
        npu, cfg = self.npu, self.cfg
        V = npu.view
        q_dim, kv_dim = cfg.heads * cfg.head_dim, cfg.kv_heads * cfg.head_dim
        x, h, o = V(self.x, (n, cfg.hidden)), V(self.h, (n, cfg.hidden)), V(self.o, (n, cfg.hidden))
        q, k, v = V(self.q, (n, q_dim)), V(self.k, (n, kv_dim)), V(self.v, (n, kv_dim))
        attn, positions = V(self.attn, (n, q_dim)), V(self.positions, (n,))
        cos, sin = V(self.cos, (n, cfg.head_dim)), V(self.sin, (n, cfg.head_dim))
        gate_up, mlp = V(self.gate_up, (n, 2 * cfg.intermediate)), V(self.mlp, (n, cfg.intermediate))
        attention = dict(
            num_heads=cfg.heads,
            num_key_value_heads=cfg.kv_heads,
            scale_value=1.0 / math.sqrt(cfg.head_dim),
            input_layout="BSH",
        )
        npu.launch("GatherV2", [self.embed, ids, self.axis_zero], [x])
        npu.launch("GatherV2", [self.cos_table, positions, self.axis_zero], [cos])
        npu.launch("GatherV2", [self.sin_table, positions, self.axis_zero], [sin])
        for i, w in enumerate(self.layers):
            npu.launch("RmsNorm", [x, w["input_norm"]], [h], epsilon=cfg.rms_eps)
            npu.launch("MatMulV2", [h, w["q_weight"], w["q_bias"]], [q], transpose_x2=True)
            npu.launch("MatMulV2", [h, w["k_weight"], w["k_bias"]], [k], transpose_x2=True)
            npu.launch("MatMulV2", [h, w["v_weight"], w["v_bias"]], [v], transpose_x2=True)
            q4, k4 = V(q, (1, n, cfg.heads, cfg.head_dim)), V(k, (1, n, cfg.kv_heads, cfg.head_dim))
            rope = [V(cos, (1, n, 1, cfg.head_dim)), V(sin, (1, n, 1, cfg.head_dim))]
            npu.launch("ApplyRotaryPosEmb", [q4, k4, *rope], [q4, k4], layout=1)  # in place
            npu.launch("ScatterUpdate", [self.k_cache[i], positions, k], [self.k_cache[i]])
            npu.launch("ScatterUpdate", [self.v_cache[i], positions, v], [self.v_cache[i]])
            q3, attn3 = V(q, (1, n, q_dim)), V(attn, (1, n, q_dim))
            if start == 0:  # prefill (the whole prompt): it attends to itself, causally
                kv = [V(k, (1, n, kv_dim)), V(v, (1, n, kv_dim)), self.causal_mask]
                causal = dict(pre_tokens=INT_MAX, next_tokens=0, sparse_mode=0)
                npu.launch("PromptFlashAttention", [q3, *kv], [attn3], **causal, **attention)
            else:  # decode: one query row against the cache's first start + 1 positions
                caches = [V(c, (1, self.max_positions, kv_dim)) for c in (self.k_cache[i], self.v_cache[i])]
                lengths = [start + 1]
                npu.launch(
                    "IncreFlashAttention", [q3, *caches], [attn3], actual_seq_lengths=lengths, **attention
                )
            npu.launch("MatMulV2", [attn, w["o_weight"]], [o], transpose_x2=True)
            npu.launch("Add", [x, o], [x])
            npu.launch("RmsNorm", [x, w["post_norm"]], [h], epsilon=cfg.rms_eps)
            npu.launch("MatMulV2", [h, w["gate_up_weight"]], [gate_up], transpose_x2=True)
            npu.launch("SwiGlu", [gate_up], [mlp], dim=-1)
            npu.launch("MatMulV2", [mlp, w["down_weight"]], [o], transpose_x2=True)
            npu.launch("Add", [x, o], [x])
        last = V(x, (1, cfg.hidden), offset=(n - 1) * cfg.hidden)
        npu.launch("RmsNorm", [last, self.final_norm], [self.last_h], epsilon=cfg.rms_eps)
        npu.launch("MatMulV2", [self.last_h, self.lm_head], [self.logits], transpose_x2=True)
        npu.launch("ArgMaxV2", [self.logits, self.last_dim], [self.next_id], dtype=ACL_INT32)


def run(args: argparse.Namespace) -> dict[str, Any]:
    cfg = config_from_args(args)
    weights = make_weights(cfg, args.seed)
    prompt = make_prompt(cfg, args.prompt_len, args.seed)
    npu = Npu(args.device)
    try:
        npu.open()
        model = QwenOnNpu(npu, cfg, weights, args.prompt_len, args.prompt_len + args.tokens)
        t0 = time.perf_counter()
        tokens = [model.prefill(prompt)]
        t1 = time.perf_counter()
        for step in range(1, args.tokens):
            tokens.append(model.decode(args.prompt_len + step - 1))
        t2 = time.perf_counter()
        launched = npu.ops_launched
    finally:
        failures = npu.close()
        if sys.exc_info()[0] is not None:  # already failing: report the teardown's failures too
            for failure in failures:
                print(f"qwen_tiny: while cleaning up: {failure}", file=sys.stderr)
    if failures:
        raise failures[0]
    return {
        "tokens": tokens,
        "ttft_s": t1 - t0,
        "decode_tokens_per_s": (len(tokens) - 1) / (t2 - t1) if len(tokens) > 1 else None,
        "ops_launched": launched,
    }


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_model_arguments(parser)
    parser.add_argument("--device", type=int, default=0, help="device id (default 0)")
    args = parser.parse_args(argv)
    try:
        result = run(args)
    except AclCallFailed as exc:
        print(f"qwen_tiny: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result))
    else:
        print("tokens:", " ".join(map(str, result["tokens"])))
        tps = result["decode_tokens_per_s"]
        decode = f"{tps:.1f} tokens/s" if tps else "n/a (one token)"
        launched = result["ops_launched"]
        print(f"TTFT {1e3 * result['ttft_s']:.1f} ms, decode {decode}, {launched} operators launched")
    return 0


if __name__ == "__main__":
    sys.exit(main())
