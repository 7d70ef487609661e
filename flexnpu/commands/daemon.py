"""``flexnpu daemon start|stop``: run or stop a device's daemon."""

from __future__ import annotations

import argparse
import os
import sys


def register(sub: argparse._SubParsersAction) -> None:
    from flexnpu.sizes import parse_size

    p = sub.add_parser("daemon", help="start or stop a device daemon")
    dsub = p.add_subparsers(dest="daemon_command", metavar="ACTION")
    dsub.required = True

    start = dsub.add_parser("start", help="start the daemon of one NPU")
    start.add_argument("--device", type=int, default=0, help="physical device id (default 0)")
    start.add_argument("--backend", default="emulated", choices=["emulated", "ascend"],
                       help="emulated (numpy, no NPU needed; default) or ascend (libascendcl)")
    start.add_argument("--memory", type=parse_size, default=parse_size("16GiB"),
                       help="device memory of the emulated backend (default 16GiB)")
    start.add_argument("--foreground", action="store_true", help="run in this process until stopped")
    start.set_defaults(func=_start)

    stop = dsub.add_parser("stop", help="stop a device's daemon (its clients are detached)")
    stop.add_argument("--device", type=int, default=0)
    stop.set_defaults(func=_stop)


def _start(args) -> int:
    from flexnpu import control, daemon_process
    from flexnpu.errors import DaemonError

    if args.foreground:
        os.chdir(daemon_process.DAEMON_CWD)
        os.execv(sys.executable, daemon_process.daemon_command(args.device, args.backend, args.memory))
    if control.is_running(args.device):
        print(f"flexnpu: a daemon already serves device {args.device}", file=sys.stderr)
        return 1
    log_path = os.path.join(control.runtime_dir(), f"device{args.device}.log")
    try:
        proc = daemon_process.spawn(args.device, args.backend, args.memory, detach=True, log_path=log_path)
    except DaemonError as exc:
        print(f"flexnpu: {exc}", file=sys.stderr)
        return 1
    print(f"daemon for device {args.device} started (pid {proc.pid}, {args.backend}); "
          f"socket {control.socket_path(args.device)}, log {log_path}")
    return 0


def _stop(args) -> int:
    from flexnpu import daemon_process

    if not daemon_process.stop(args.device):
        print(f"flexnpu: no daemon serves device {args.device}", file=sys.stderr)
        return 1
    print(f"daemon for device {args.device} stopped")
    return 0
