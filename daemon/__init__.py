"""The per-device FlexNPU daemon (installed as ``flexnpu_daemon``)."""
