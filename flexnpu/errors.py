"""FlexNPU's exception hierarchy (people and tools see these; applications calling `acl` get ACL
error codes instead, never exceptions)."""


class FlexNPUError(Exception):
    """Base class of every FlexNPU error."""


class RingFull(FlexNPUError):
    """A push found no free slot within its timeout (timeout=0: no free slot now)."""


class RingClosed(FlexNPUError):
    """The ring was closed by this process or its owner, or the process that drains it died."""


class RingCorrupt(FlexNPUError):
    """A shared-memory segment is not a FlexNPU ring of a compatible version, or is truncated."""


class DaemonError(FlexNPUError):
    """The device daemon is missing, refused a request, or died."""
