"""The ``flexnpu`` command.

Each feature registers its own sub-commands (``register(subparsers)`` in the module named in
``_COMMAND_MODULES``) so that this file stays a switchboard; registration modules keep their
imports light and import the heavy machinery inside the handler.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# Modules that contribute sub-commands, in the order `flexnpu --help` lists them.
_COMMAND_MODULES = [
    "flexnpu.commands.daemon",
    "flexnpu.commands.status",
    "flexnpu.commands.run",
    "flexnpu.commands.shm",
    "flexnpu.sim.cli",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flexnpu",
        description="Transparent user-space virtualization of Ascend NPUs.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _version() -> str:
    from flexnpu import __version__

    return f"flexnpu {__version__}"


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        rc = args.func(args)
    except KeyboardInterrupt:
        return 130
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
