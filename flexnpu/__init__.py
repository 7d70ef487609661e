"""FlexNPU: transparent user-space virtualization of Ascend NPUs."""

__version__ = "0.1.0"
