"""Loaded at start-up of every Python process that ``flexnpu run`` starts (this directory heads
PYTHONPATH): makes ``import acl`` resolve to FlexNPU's ``flexnpu.acl``.  The program is not
modified.  ``FLEXNPU_DISABLE=1`` turns it off.  Any other sitecustomize on the path still runs.
"""

import os
import sys


def _install() -> None:
    import importlib.abc
    import importlib.util

    class _AclAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
        """``acl`` and ``acl.<sub>`` are FlexNPU's modules under pyACL's names."""

        def find_spec(self, fullname, path=None, target=None):
            if fullname == "acl" or fullname.startswith("acl."):
                return importlib.util.spec_from_loader(fullname, self, is_package=fullname == "acl")
            return None

        def create_module(self, spec):
            import flexnpu.acl as real

            if spec.name == "acl":
                return None  # a fresh module that forwards to flexnpu.acl (see exec_module)
            return getattr(real, spec.name.split(".", 1)[1])

        def exec_module(self, module):
            if module.__name__ != "acl":
                return
            import flexnpu.acl as real

            def __getattr__(name, _module=module, _real=real):
                value = getattr(_real, name)
                setattr(_module, name, value)  # later lookups are plain attribute reads
                return value

            module.__getattr__ = __getattr__
            module.__doc__ = real.__doc__
            module.__all__ = list(real.__all__)
            module.__path__ = []

    sys.meta_path.insert(0, _AclAlias())


def _chain() -> None:
    """Run the next sitecustomize on the path (the environment's own), if there is one."""
    here = os.path.dirname(os.path.abspath(__file__))
    saved = sys.path[:]
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    ours = sys.modules.pop("sitecustomize", None)
    try:
        import sitecustomize  # noqa: F401
    except ImportError:
        pass
    finally:
        sys.path[:] = saved
        if ours is not None and "sitecustomize" not in sys.modules:
            sys.modules["sitecustomize"] = ours


if os.environ.get("FLEXNPU_DISABLE") != "1":
    _install()
_chain()
