"""Discrete-event simulator of LLM serving clusters on modelled NPUs, running the policies of
:mod:`flexnpu.sched`."""

from __future__ import annotations

from flexnpu.sim.engine import Cluster, SimConfig, SimResult, simulate
from flexnpu.sim.workload import Trace, Workload, concat, load_trace, replay, synthetic

__all__ = ["Cluster", "SimConfig", "SimResult", "Trace", "Workload", "concat", "load_trace", "replay",
           "simulate", "synthetic"]
