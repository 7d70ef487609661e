"""Model descriptions as operator streams: Qwen2.5-7B, a tiny Qwen2 for tests, DeepSeek-R1/V3."""

from __future__ import annotations

from flexnpu.models.base import (
    DEFAULT_HOST_OVERHEAD_S,
    DEFAULT_MEMORY_UTILIZATION,
    BatchShape,
    ChipBatch,
    Model,
    StepCoster,
)
from flexnpu.models.deepseek import DEEPSEEK_R1, DeepSeekConfig, DeepSeekModel
from flexnpu.models.qwen2 import QWEN2_TINY, QWEN25_7B, Qwen2Config, Qwen2Model

_FACTORIES = {
    "qwen2.5-7b": lambda: Qwen2Model(QWEN25_7B),
    "qwen2-tiny": lambda: Qwen2Model(QWEN2_TINY),
    "deepseek-r1": lambda: DeepSeekModel(DEEPSEEK_R1),
    "deepseek-v3": lambda: DeepSeekModel(DeepSeekConfig(name="deepseek-v3")),
}

MODEL_NAMES = tuple(_FACTORIES)


def get_model(name: str) -> Model:
    try:
        return _FACTORIES[name.lower()]()
    except KeyError:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODEL_NAMES)}") from None


__all__ = [
    "DEEPSEEK_R1",
    "DEFAULT_HOST_OVERHEAD_S",
    "DEFAULT_MEMORY_UTILIZATION",
    "MODEL_NAMES",
    "QWEN2_TINY",
    "QWEN25_7B",
    "BatchShape",
    "ChipBatch",
    "DeepSeekConfig",
    "DeepSeekModel",
    "Model",
    "Qwen2Config",
    "Qwen2Model",
    "StepCoster",
    "get_model",
]
