"""Sub-commands of the ``flexnpu`` command, one module each (see ``flexnpu/cli.py``)."""
