"""``flexnpu run [--device 0[,1]] [--phase prefill|decode|auto] [--direct] -- CMD [ARGS...]``

Runs CMD with FlexNPU's hooks preloaded, so that ``import acl`` inside it (and inside every Python
process it starts) is FlexNPU's pyACL-compatible module; the program is not modified.  A device
that no daemon serves gets an embedded daemon on the emulated backend, stopped afterwards.
``--direct`` binds the same ``acl`` module in-process to the emulated device: no daemon, no rings
(the passthrough baseline).  With ``FLEXNPU_DISABLE=1`` CMD runs untouched.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys


def register(sub: argparse._SubParsersAction) -> None:
    from flexnpu.sizes import parse_size

    p = sub.add_parser("run", help="run a program with its ACL calls going through FlexNPU",
                       description=__doc__.split("\n\n")[1])
    p.add_argument("--device", default="0", help="device id(s) the program sees, comma separated (default 0)")
    p.add_argument("--phase", default="auto", choices=["prefill", "decode", "mixed", "auto"],
                   help="declare the program's phase for scheduling (default auto: from its operators)")
    p.add_argument("--direct", action="store_true", help="no daemon: the in-process emulated device")
    p.add_argument("--memory", type=parse_size, default=parse_size("16GiB"),
                   help="device memory of an embedded emulated daemon, or of --direct (default 16GiB)")
    p.add_argument("--memory-quota", type=parse_size, default=None,
                   help="this program's device memory quota (default: the whole device)")
    p.add_argument("--quiet", action="store_true", help="no account of the daemon's work at the end")
    p.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD [ARGS...]")
    p.set_defaults(func=_run)


def preload_dir() -> str:
    import flexnpu

    return os.path.join(os.path.dirname(os.path.abspath(flexnpu.__file__)), "_preload")


def _run(args) -> int:
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        print("flexnpu run: give the program to run after --, e.g. flexnpu run -- python app.py", file=sys.stderr)
        return 2
    if os.environ.get("FLEXNPU_DISABLE") == "1":
        return _child(cmd, dict(os.environ))
    try:
        devices = [int(d) for d in args.device.split(",")]
    except ValueError:
        print(f"flexnpu run: --device takes ids like 0 or 0,1, not {args.device!r}", file=sys.stderr)
        return 2
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([preload_dir(), *filter(None, [env.get("PYTHONPATH")])])
    env["FLEXNPU_MODE"] = "direct" if args.direct else "daemon"
    env["FLEXNPU_VISIBLE_DEVICES"] = ",".join(map(str, devices))
    env["FLEXNPU_PHASE"] = args.phase
    env["FLEXNPU_MEMORY"] = str(args.memory)
    if args.memory_quota:
        env["FLEXNPU_MEMORY_QUOTA"] = str(args.memory_quota)
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(var, "1")  # the emulated device's numpy shares the machine with the program
    if args.direct:
        return _child(cmd, env)

    from flexnpu import control, daemon_process
    from flexnpu.errors import DaemonError

    env["FLEXNPU_RUNTIME_DIR"] = control.runtime_dir()
    embedded = {}
    try:
        for device in devices:
            if not control.is_running(device):
                embedded[device] = daemon_process.spawn(device, "emulated", args.memory)
        rc = _child(cmd, env)
        if not args.quiet:
            for device in devices:
                _account(device, device in embedded)
        return rc
    except DaemonError as exc:
        print(f"flexnpu run: {exc}", file=sys.stderr)
        return 1
    finally:
        for device, proc in embedded.items():
            daemon_process.stop(device, proc)


def _child(cmd: list[str], env: dict) -> int:
    from flexnpu.daemon_process import die_with_parent

    try:
        # if this wrapper is killed, the program goes too (it would be cut off from its daemon)
        proc = subprocess.Popen(cmd, env=env, preexec_fn=die_with_parent)
    except FileNotFoundError:
        print(f"flexnpu run: {cmd[0]}: command not found", file=sys.stderr)
        return 127
    forward = {sig: signal.signal(sig, lambda s, _f: proc.send_signal(s)) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        return proc.wait()
    finally:
        for sig, handler in forward.items():
            signal.signal(sig, handler)


def _account(device: int, embedded: bool) -> None:
    """One line on stderr: what the daemon did for this run."""
    from flexnpu import control
    from flexnpu.errors import DaemonError

    try:
        st = control.request(device, {"op": "status"}, timeout=5.0)
    except DaemonError:
        return
    t = st["totals"]
    lat = t["ring_wait_us_mean"]
    latency = (f"ring wait (submit -> taken by the daemon, queueing behind earlier work included) mean "
               f"{lat:.1f} µs, max {t['ring_wait_us_max']:.0f} µs" if lat else "no launches")
    kind = "embedded" if embedded else "running"
    print(f"flexnpu: device {device} ({kind} {st['backend']} daemon, pid {st['daemon_pid']}): "
          f"{t['launches']} operators from {t['clients_served']} client(s); {latency}", file=sys.stderr)
