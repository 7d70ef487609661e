"""FlexNPU's pyACL-compatible ``acl`` module.

Under ``flexnpu run`` a program's ``import acl`` resolves to this module.  Each pyACL function is
bound to the process's runtime (see ``flexnpu/acl/_api.py``): the daemon runtime by default, the
in-process emulated device with ``FLEXNPU_MODE=direct`` (``flexnpu run --direct``).  The runtime
is made on first use, so importing ``flexnpu.acl.constants`` (as the daemon does) costs nothing.

    import acl
    acl.init()
    acl.rt.set_device(0)
    ptr, ret = acl.rt.malloc(1 << 20, 0)
"""

from __future__ import annotations

import sys
import threading
import types

from flexnpu.acl import constants, util
from flexnpu.acl._api import OP_NAMES, RT_NAMES, TOP_NAMES

_bind_lock = threading.Lock()


def _bind() -> None:
    """Make this process's runtime and bind every pyACL name to it (once)."""
    with _bind_lock:
        if "runtime" in globals():
            return
        from flexnpu.acl._select import make_runtime

        runtime = make_runtime()
        for name, names in (("rt", RT_NAMES), ("op", OP_NAMES)):
            module = types.ModuleType(f"{__name__}.{name}", f"acl.{name}")
            for n in names:
                setattr(module, n, getattr(runtime, n))
            sys.modules[module.__name__] = module
            globals()[name] = module
        globals().update({n: getattr(runtime, n) for n in TOP_NAMES})
        globals()["runtime"] = runtime


def __getattr__(name: str):
    if name in ("rt", "op", "runtime") or name in TOP_NAMES:
        _bind()
        return globals()[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["constants", "op", "rt", "runtime", "util", *TOP_NAMES]
