"""Choose this process's ACL runtime from the environment, once.

FLEXNPU_MODE=daemon (default): through the device daemon (rings, virtual objects).
FLEXNPU_MODE=direct: the in-process emulated device, no daemon (the passthrough baseline).
"""

from __future__ import annotations

import os

MODES = ("daemon", "direct")


def make_runtime(mode: str | None = None):
    mode = (mode or os.environ.get("FLEXNPU_MODE") or "daemon").lower()
    if mode == "direct":
        from flexnpu.acl._direct import DirectRuntime

        return DirectRuntime()
    if mode == "daemon":
        from flexnpu._acl_hooks import DaemonRuntime

        return DaemonRuntime()
    raise ValueError(f"FLEXNPU_MODE must be one of {', '.join(MODES)}, not {mode!r}")

