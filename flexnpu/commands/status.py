"""``flexnpu status [--json]``: every running daemon, its clients, their memory and activity."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="show each device daemon: clients, memory per client, ops/s, queue depth")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.set_defaults(func=_status)


def collect() -> dict:
    from flexnpu import control
    from flexnpu.errors import DaemonError

    daemons = []
    for device in control.running_devices():
        try:
            reply = control.request(device, {"op": "status"}, timeout=5.0)
        except DaemonError as exc:
            daemons.append({"device": device, "error": str(exc)})
            continue
        reply.pop("ok", None)
        daemons.append(reply)
    return {"runtime_dir": control.runtime_dir(), "daemons": daemons}


def _status(args) -> int:
    state = collect()
    if args.json:
        print(json.dumps(state, indent=2))
        return 0
    print(render(state))
    return 0


def render(state: dict) -> str:
    from tabulate import tabulate

    from flexnpu.sizes import format_size

    if not state["daemons"]:
        return f"no FlexNPU daemon is running (runtime directory {state['runtime_dir']})"
    out = []
    for d in state["daemons"]:
        if "error" in d:
            out.append(f"device {d['device']}: not responding ({d['error']})")
            continue
        mem = d["memory"]
        totals = d.get("totals", {})
        out.append(
            f"device {d['device']}: {d['backend']} {d['soc_name']}, daemon pid {d['daemon_pid']}, "
            f"up {d['uptime_s']:.0f} s, memory {format_size(mem['used'])} of {format_size(mem['total'])} used, "
            f"{len(d['clients'])} client(s); {totals.get('launches', 0)} operators dispatched in all"
        )
        rows = []
        for c in d["clients"]:
            lat = c["ring_wait_us_mean"]
            rows.append([
                c["pid"], c["uid"], c["phase"], c["name"][:32],
                f"{format_size(c['memory']['used'])} / {format_size(c['memory']['quota'])}",
                c["launches"], f"{c['ops_per_s']:.0f}", c["queue_depth"],
                "-" if lat is None else f"{lat:.1f} / {c['ring_wait_us_max']:.0f}",
                c["stream_failures"],
            ])
        if rows:
            out.append(tabulate(rows, headers=["pid", "uid", "phase", "command", "memory used / quota", "ops",
                                               "ops/s", "queue", "ring wait µs mean / max", "errors"]))
    return "\n".join(out)
