"""Chip profiles and efficiency parameters for the roofline timing model.

Every figure carries its source. Sources are the ones listed in
``../shared/reference/anchors_pd_serving.md`` (S-numbers) and ``../shared/reference/acl_api.md`` §6
("CANN platform config"), which derives Ascend peaks as AI cores x 8192 FP16 FLOP/cycle x cube clock
from ``hicann/runtime:src/platform/platform_config/cann/<SoC>.ini``.

Dense FP16/BF16 peaks only (no sparsity).  Where sources disagree the comment says which one we took.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

TERA = 1e12
GIGA = 1e9
GB = 1e9
GiB = 1024**3


@dataclass(frozen=True)
class ChipProfile:
    """Peak figures of one device as the runtime sees it (one die for 910B / one 910C die, one package
    for the two-die ``910C``)."""

    name: str
    peak_flops: float  # dense FP16/BF16 matrix-unit FLOP/s (cube / tensor cores)
    vector_flops: float  # FLOP/s of the vector units, used by element-wise operators
    hbm_bw: float  # bytes/s
    hbm_bytes: float  # capacity in bytes
    ai_cores: int  # matrix (cube) cores or SMs: the unit aclrtSetStreamResLimit / green contexts split
    link_bw: float  # chip-to-chip bytes/s per direction, used for KV transfer and all-to-all
    launch_s: float  # device-side cost of dispatching one operator (graph / task-sink mode)

    @property
    def ridge(self) -> float:
        """FLOP per byte where an operator turns from memory-bound to compute-bound (at peak)."""
        return self.peak_flops / self.hbm_bw


@dataclass(frozen=True)
class Efficiency:
    """Fractions of peak that real kernels reach.  Defaults are the midpoints of the ranges in the
    evaluation recipe (anchors §7 Tier A.1: eta_c in [0.4, 0.7], eta_m in [0.5, 0.8]); they are inputs,
    not fitted to any result."""

    compute: float = 0.55
    memory: float = 0.65
    link: float = 0.65  # same as memory: no separate source for collective efficiency

    def __post_init__(self):
        for name in ("compute", "memory", "link"):
            v = getattr(self, name)
            if not 0.0 < v <= 1.0:
                raise ValueError(f"efficiency {name}={v} must be in (0, 1]")


# Launch cost per operator: no published Ascend figure was found; 5 us is our assumption for a
# device-side task queue in graph mode (NVIDIA kernel launch through CUDA graphs is of the same order).
_LAUNCH_S = 5e-6

# Ascend 910B2: 24 AI cores @ 1.8 GHz -> 353.9 TFLOPS cube (CANN platform config; S38 gives 353.9 cube,
# 376 incl. vector, so vector = 22.1 TFLOPS).  64 GiB HBM (CANN config), 1.6 TB/s (S38).
# Link: HCCS bandwidth is unconfirmed (acl_api §6); we take 56 GB/s x 7 links = 392 GB/s per card,
# the figure usually quoted for Atlas 800 A2 boards, and flag it as unconfirmed.
ASCEND_910B2 = ChipProfile(
    name="910B2", peak_flops=353.9 * TERA, vector_flops=22.1 * TERA, hbm_bw=1.6e12, hbm_bytes=64 * GiB,
    ai_cores=24, link_bw=392 * GB, launch_s=_LAUNCH_S,
)

# Ascend 910B3: 20 AI cores @ 1.8 GHz -> 294.9 TFLOPS (CANN config); vector scaled by cores from the
# 910B2 figure (20/24 x 22.1).  HBM 64 GiB (CANN config); bandwidth assumed equal to 910B2 (same HBM
# stacks; no separate source).  Link as 910B2 (unconfirmed).
ASCEND_910B3 = ChipProfile(
    name="910B3", peak_flops=294.9 * TERA, vector_flops=18.4 * TERA, hbm_bw=1.6e12, hbm_bytes=64 * GiB,
    ai_cores=20, link_bw=392 * GB, launch_s=_LAUNCH_S,
)

# Ascend 910C, one die (910_9382 in the CANN configs): 24 AI cores @ 1.8 GHz -> 353.9 TFLOPS, 64 GiB.
# Package figures: 3.2 TB/s over 8 HBM2E stacks (S40) -> 1.6 TB/s per die; 400 GB/s chip-to-chip per
# package (S40, secondary) -> 200 GB/s per die.  (S27 quotes 752 TFLOPS per package, i.e. cube+vector.)
ASCEND_910C_DIE = ChipProfile(
    name="910C-die", peak_flops=353.9 * TERA, vector_flops=22.1 * TERA, hbm_bw=1.6e12, hbm_bytes=64 * GiB,
    ai_cores=24, link_bw=200 * GB, launch_s=_LAUNCH_S,
)

# Ascend 910C package = two dies driven together (as CloudMatrix counts one "NPU").
ASCEND_910C = ChipProfile(
    name="910C", peak_flops=2 * 353.9 * TERA, vector_flops=2 * 22.1 * TERA, hbm_bw=3.2e12,
    hbm_bytes=128 * GiB, ai_cores=48, link_bw=400 * GB, launch_s=_LAUNCH_S,
)

# NVIDIA H100 SXM: 989 TFLOPS dense BF16, 80 GB HBM3 at 3.35 TB/s (anchors §5); 132 SMs; 133.8 TFLOPS
# non-tensor FP16 (NVIDIA H100 datasheet); NVLink 4: 900 GB/s bidirectional = 450 GB/s per direction.
NVIDIA_H100 = ChipProfile(
    name="H100", peak_flops=989 * TERA, vector_flops=133.8 * TERA, hbm_bw=3.35e12, hbm_bytes=80 * GB,
    ai_cores=132, link_bw=450 * GB, launch_s=_LAUNCH_S,
)

# NVIDIA H200 SXM: same compute as H100, 141 GB HBM3e at 4.8 TB/s (anchors §5, S42/S43).
NVIDIA_H200 = replace(NVIDIA_H100, name="H200", hbm_bw=4.8e12, hbm_bytes=141 * GB)

CHIPS: dict[str, ChipProfile] = {
    c.name.lower(): c
    for c in (ASCEND_910B2, ASCEND_910B3, ASCEND_910C_DIE, ASCEND_910C, NVIDIA_H100, NVIDIA_H200)
}


def get_chip(name: str) -> ChipProfile:
    """Look a profile up by name, case-insensitively (``910B2``, ``910c-die``, ``h100`` ...)."""
    try:
        return CHIPS[name.lower()]
    except KeyError:
        known = ", ".join(c.name for c in CHIPS.values())
        raise ValueError(f"unknown chip {name!r}; known: {known}") from None
