"""Device backends: the registry the daemon and ``flexnpu run --direct`` build devices from."""

from __future__ import annotations

from typing import Any

from .base import Device

BACKENDS = ("emulated", "ascend")


def make_device(backend: str, device_id: int, memory_bytes: int, **options: Any) -> Device:
    """A Device of the named backend.

    ``options`` go to the backend's constructor (emulated: soc_name, workers, pacer; ascend: none,
    and it takes the memory size from the runtime).  An unknown name is a ValueError listing the
    known ones.
    """
    if backend == "emulated":
        from .emulated import EmulatedDevice

        return EmulatedDevice(device_id=device_id, memory_bytes=memory_bytes, **options)
    if backend == "ascend":
        from .ascend import AscendDevice

        return AscendDevice(device_id=device_id, memory_bytes=memory_bytes, **options)
    raise ValueError(f"unknown device backend {backend!r}; known: {', '.join(BACKENDS)}")
