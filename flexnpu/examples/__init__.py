"""Example programs written against the plain pyACL API (``import acl``), runnable unchanged on a
real Ascend NPU, under ``flexnpu run`` and under ``flexnpu run --direct``."""
