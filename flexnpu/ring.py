"""Public API of the shared-memory ring.

    from flexnpu.ring import Ring, Doorbell, RECORD_DTYPE, RECORD_SIZE

See ``flexnpu/_c/fx_ring.h`` for the protocol and ``flexnpu/_ring.pyx`` for the Python mapping.
"""

from flexnpu._ring import DEFAULT_SPIN_NS, MAX_CAPACITY, RECORD_DTYPE, RECORD_SIZE, Doorbell, Ring, Segment

__all__ = ["DEFAULT_SPIN_NS", "MAX_CAPACITY", "RECORD_DTYPE", "RECORD_SIZE", "Doorbell", "Ring", "Segment"]
