"""Device backends: the registry the daemon and ``flexnpu run --direct`` build devices from."""

from __future__ import annotations

from typing import Any

from .base import Device

BACKENDS = ("emulated", "ascend")


def make_device(backend: str, device_id: int, memory_bytes: int, **options: Any) -> Device:
    """A Device of the named backend.

    ``options`` go to the backend's constructor (emulated: soc_name, workers, pacer).  An unknown
    name is a ValueError listing the known ones; so is "ascend" until that backend exists.
    """
    if backend == "emulated":
        from .emulated import EmulatedDevice

        return EmulatedDevice(device_id=device_id, memory_bytes=memory_bytes, **options)
    if backend == "ascend":
        raise ValueError("the ascend backend (the real NPU through libascendcl) is not implemented yet")
    raise ValueError(f"unknown device backend {backend!r}; known: {', '.join(BACKENDS)}")
