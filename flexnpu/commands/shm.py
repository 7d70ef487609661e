"""``flexnpu shm ls`` and ``flexnpu shm gc``: inspect and clean FlexNPU shared-memory segments."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("shm", help="list or clean up FlexNPU shared-memory segments")
    shm_sub = p.add_subparsers(dest="shm_command", metavar="ACTION")
    shm_sub.required = True

    ls = shm_sub.add_parser("ls", help="list this user's segments and whether their owner lives")
    ls.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ls.set_defaults(func=_ls)

    gc = shm_sub.add_parser("gc", help="unlink segments whose owning process is dead")
    gc.add_argument("--dry-run", action="store_true", help="only print what would be removed")
    gc.add_argument("--json", action="store_true", help="print JSON")
    gc.set_defaults(func=_gc)


def _rows(segments):
    return [
        {"name": s.name, "kind": s.kind, "owner_pid": s.owner_pid, "owner_alive": s.owner_alive,
         "size": s.size}
        for s in segments
    ]


def _ls(args) -> int:
    import os

    from flexnpu import shm

    rows = _rows(shm.list_segments(os.getuid()))
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            state = "alive" if r["owner_alive"] else "DEAD"
            print(f"{r['name']:<48} {r['kind']:<8} pid {r['owner_pid']:<8} {state:<6} {r['size']:>12} B")
        if not rows:
            print("no FlexNPU segments")
    return 0


def _gc(args) -> int:
    from flexnpu import shm

    removed = _rows(shm.gc(dry_run=args.dry_run))
    if args.json:
        print(json.dumps({"dry_run": args.dry_run, "removed": removed}, indent=2))
    else:
        verb = "would remove" if args.dry_run else "removed"
        for r in removed:
            print(f"{verb} {r['name']} (owner pid {r['owner_pid']} is dead)")
        print(f"{len(removed)} segment(s) {verb}")
    return 0
