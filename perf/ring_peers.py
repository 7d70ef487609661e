#!/usr/bin/env python3
"""FlexNPU's shared-memory ring against the IPC a Python user would otherwise pick, and against the floor.

Measured side by side in one run on one machine (issue 2, section 4), and printed as ONE JSON object on
stdout (``--table`` adds a human-readable table on stderr):

* the physical floor, from two small C programs built here (``perf/c``, gcc -std=gnu11 -O2 -Wall -Wextra
  -Werror, on the project's own fx_atomic.h): a cache line ping-ponged between two processes with busy
  polling, and a raw shared-futex ping-pong (both sides parked in FUTEX_WAIT);
* ours: the cost of one ``Ring.push`` from Python while a consumer process drains; batched cross-process
  throughput (push_many / pop_many, batches of 256); one-way throughput with one call per record on
  both sides; the cross-process round trip of one record over two rings, spinning and parked
  (``spin_ns = 0``);
* the peers, round trip and one-way throughput of 64-byte records: multiprocessing.Pipe (send_bytes /
  recv_bytes), multiprocessing.Queue, posix_ipc.MessageQueue, sysv_ipc.MessageQueue and
  socket.socketpair (AF_UNIX stream, recv with MSG_WAITALL); and ratios of each to ours.

Method: the ``spawn`` multiprocessing context; parent and child pinned to two distinct cores when the
process may use two or more (``machine.pinned``); warm-up before every timed series; medians over
repetitions; the garbage collector off inside timed loops (as timeit does).  The floors and the ring
figures they are compared with are measured in alternating rounds so that slow drift of a shared
machine hits both.  Every segment, message queue and child process is removed even on error; each
experiment runs under a watchdog.

Goals (from the issue; shown here, never asserted): spinning round trip within 3x of the C cache-line
floor and >= 50x faster than the best peer; one push < 100 ns with a live consumer; batched throughput
> 30 M records/s; parked round trip within 1.5x of the raw futex ping-pong.

usage: python perf/ring_peers.py [--quick] [--table] [--no-pin] [--reps N] [--fast-reps N] [--rounds N]
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import itertools
import json
import math
import multiprocessing as mp
import multiprocessing.connection
import os
import platform
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

# One BLAS thread: numpy's OpenBLAS pool would otherwise spin on these two cores at start-up, in the
# parent and in every spawned child (which inherits this environment).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import posix_ipc
import sysv_ipc

from flexnpu.ring import DEFAULT_SPIN_NS, RECORD_DTYPE, RECORD_SIZE, Ring

HERE = Path(__file__).resolve().parent
C_DIR = HERE / "c"
C_PROGRAMS = ("cacheline_pingpong", "futex_pingpong")
C_FLAGS = ["-std=gnu11", "-O2", "-Wall", "-Wextra", "-Werror"]

REC = bytes(range(RECORD_SIZE))  # one 64-byte record
BATCH = 256
RING_CAPACITY = 4096
# "Spinning": long enough that a waiting call never parks during a round trip.
SPIN_FOREVER_NS = 200_000_000
PEERS = ("pipe", "queue", "posix_mq", "sysv_mq", "socketpair")
# A non-root user gets at most /proc/sys/fs/mqueue/msg_max (default 10) messages per POSIX queue.
POSIX_MQ_DEPTH = 10
MQ_PREFIX = "flexnpubench-"
# Our rings get names of their own, not the project's "flexnpu-" ones: the test suite's leak guard
# (tests/conftest.py) unlinks every new "flexnpu-*" segment it sees, so a test run in parallel with
# this benchmark would otherwise remove a ring before the child has attached it.  We unlink ours in
# `finally`, and sweep_stale() removes those of a benchmark that was SIGKILLed.
SEG_PREFIX = "flexnpubench-"
TMP_PREFIX = "flexnpu-perf-"  # the build directory of the C floors: <tmp>/flexnpu-perf-<uid>-<pid>-*
SHM_DIR = Path("/dev/shm")


# Every named resource this process creates, so that the run can prove it removed them all.
CREATED: dict[str, set] = {"shm": set(), "posix_mq": set(), "sysv_mq": set()}


def seg_name(kind: str) -> str:
    return f"/{SEG_PREFIX}{os.getuid()}-{os.getpid()}-{kind}-{random.getrandbits(48):012x}"


def new_ring(capacity: int = RING_CAPACITY) -> Ring:
    ring = Ring.create(name=seg_name("ring"), capacity=capacity)
    CREATED["shm"].add(ring.name)
    return ring


def leftovers() -> list[str]:
    """Resources this process created that still exist (empty after a clean run)."""
    left = [n for n in CREATED["shm"] if (SHM_DIR / n.lstrip("/")).exists()]
    for name in CREATED["posix_mq"]:
        try:
            posix_ipc.MessageQueue(name).close()
            left.append(name)
        except posix_ipc.ExistentialError:
            pass
    for key in CREATED["sysv_mq"]:
        try:
            sysv_ipc.MessageQueue(key)
            left.append(f"sysv msg queue key {key}")
        except sysv_ipc.ExistentialError:
            pass
    return sorted(left)


def sweep_stale() -> list[str]:
    """Remove benchmark segments, POSIX queues and build directories whose creating process is dead."""
    removed = []
    for d, prefix in ((SHM_DIR, SEG_PREFIX), (Path("/dev/mqueue"), MQ_PREFIX),
                      (Path(tempfile.gettempdir()), TMP_PREFIX)):
        with contextlib.suppress(OSError):
            for entry in d.iterdir():
                parts = entry.name[len(prefix):].split("-") if entry.name.startswith(prefix) else []
                if len(parts) < 2 or not parts[1].isdigit() or parts[0] != str(os.getuid()):
                    continue
                pid = int(parts[1])
                try:
                    os.kill(pid, 0)
                    continue  # alive (ours or another run's)
                except PermissionError:
                    continue
                except ProcessLookupError:
                    pass
                with contextlib.suppress(OSError):
                    if entry.is_dir():
                        shutil.rmtree(entry)
                    else:
                        entry.unlink()
                    removed.append(str(entry))
    return removed


@dataclass(frozen=True)
class Plan:
    """How much to measure.  A timed repetition runs `*_iters` / `*_records` operations after an
    untimed warm-up of `warm_frac` of that.  Sub-microsecond series use many short repetitions
    (`fast_reps`, a few ms each) so that a repetition hit by another process on a shared box is an
    outlier the median ignores; the slow (parked, syscall) series use `reps`."""

    reps: int = 11  # repetitions of the slow series (parked round trips, peers)
    fast_reps: int = 41  # repetitions of the sub-microsecond series
    rounds: int = 7  # alternating (floor, ours) rounds for the round-trip comparisons
    cacheline_iters: int = 10_000
    futex_iters: int = 1_000
    spin_rtt_iters: int = 2_000
    parked_rtt_iters: int = 1_000
    push_iters: int = 20_000
    batch_records: int = 256_000
    oneway_records: int = 20_000
    peer_rtt_iters: int = 1_500
    peer_oneway_records: int = 15_000
    probe_iters: int = 5_000  # the short cache-line probe run next to each of our cross-core series
    probe_reps: int = 11
    warm_frac: float = 0.2
    timeout_s: float = 120.0  # watchdog per experiment


QUICK = Plan(
    reps=3,
    fast_reps=5,
    rounds=1,
    cacheline_iters=5_000,
    futex_iters=100,
    spin_rtt_iters=1_000,
    parked_rtt_iters=100,
    push_iters=10_000,
    batch_records=51_200,
    oneway_records=5_000,
    peer_rtt_iters=100,
    peer_oneway_records=1_000,
    probe_iters=2_000,
    probe_reps=3,
    timeout_s=60.0,
)


def warm(n: int, plan: Plan) -> int:
    return max(1, int(n * plan.warm_frac))


class BenchError(Exception):
    """An experiment ran past its watchdog, or one of its children died."""


_abort_reason: list[str] = []  # set by a child monitor thread before it signals the main thread
_watchdogs = [0]  # how many watchdog blocks are active (the main thread's only)


def _abort_main(reason: str) -> None:
    """Wake the main thread out of a blocking wait, if a watchdog is there to turn it into BenchError
    (without one, SIGALRM's default action would kill the process: Children.join_ok reports instead)."""
    _abort_reason.append(reason)
    if _watchdogs[0]:
        signal.pthread_kill(threading.main_thread().ident, signal.SIGALRM)


# ---------------------------------------------------------------------------------------------------
# processes, pinning, watchdog


def _pin(cpu: int | None) -> None:
    if cpu is not None:
        os.sched_setaffinity(0, {cpu})


def _die_with_parent() -> None:
    """Linux: the child gets SIGKILL if the parent dies, so nothing outlives a killed benchmark."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@contextlib.contextmanager
def watchdog(seconds: float, what: str):
    """Raise BenchError in the main thread if the block runs longer than `seconds`.

    Blocking calls of every transport used here retry on EINTR after running Python signal handlers
    (PEP 475, posix_ipc, sysv_ipc, Ring's waits), so the exception reaches us.  A child that dies
    with an error fires the same alarm early (see Children), so a dead peer never costs the timeout.
    """
    _abort_reason.clear()

    def fire(signum, frame):
        if _abort_reason:
            raise BenchError(f"{what}: {_abort_reason.pop()}")
        raise BenchError(f"{what} did not finish within {seconds:.0f} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    _watchdogs[0] += 1
    try:
        yield
    finally:
        _watchdogs[0] -= 1
        signal.setitimer(signal.ITIMER_REAL, 0)
        # A child monitor may still fire once after we return: never let that kill the process.
        signal.signal(signal.SIGALRM, signal.SIG_IGN if old in (signal.SIG_DFL, None) else old)


class Children:
    """Spawned children that are terminated, then killed, and always joined on exit."""

    def __init__(self, ctx, cpu: int | None):
        self.ctx = ctx
        self.cpu = cpu
        self.procs: list = []
        self.closing = False

    def start(self, target, *args):
        p = self.ctx.Process(target=_child_entry, args=(target, self.cpu, *args), daemon=True)
        p.start()
        self.procs.append(p)
        threading.Thread(target=self._monitor, args=(p,), daemon=True).start()
        return p

    def _monitor(self, p) -> None:
        """Blocks (no polling) until the child exits; a failed child aborts the parent's wait."""
        mp.connection.wait([p.sentinel])
        if self.closing:
            return
        try:  # WNOWAIT: read the status without reaping; the main thread's join() still works
            info = os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            return  # already joined by the main thread, which checks the exit code itself
        if info is not None and not (info.si_code == os.CLD_EXITED and info.si_status == 0):
            how = "exit code" if info.si_code == os.CLD_EXITED else "signal"
            _abort_main(f"child {p.name} died ({how} {info.si_status})")

    def join_ok(self, timeout: float = 30.0) -> None:
        for p in self.procs:
            p.join(timeout)
            if p.exitcode != 0:
                raise RuntimeError(f"benchmark child {p.name} exited with {p.exitcode}")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.closing = True
        for p in self.procs:
            if p.is_alive():
                p.terminate()
                p.join(2.0)
            if p.is_alive():
                p.kill()
            p.join()
            with contextlib.suppress(ValueError):
                p.close()
        self.procs.clear()


def _child_entry(target, cpu, *args):
    _die_with_parent()
    _pin(cpu)
    gc.disable()
    target(*args)


def _timed(fn, n: int, reps: int, n_warm: int) -> list[float]:
    """Run fn(n_warm) untimed, then fn(n) `reps` times; returns ns per operation of each repetition."""
    fn(n_warm)
    out = []
    gc.disable()
    try:
        for _ in range(reps):
            t0 = time.perf_counter_ns()
            fn(n)
            out.append((time.perf_counter_ns() - t0) / n)
    finally:
        gc.enable()
    return out


def med(xs) -> float:
    return float(statistics.median(xs))


def spread(xs) -> float:
    """Relative spread of a series: (max - min) / median."""
    m = med(xs)
    return float((max(xs) - min(xs)) / m) if m else 0.0


# ---------------------------------------------------------------------------------------------------
# transports: a parent end (sends down, receives up) and a child end (receives down, sends up)


class RingChannel:
    """Two rings owned by the parent: `down` (parent -> child) and `up` (child -> parent)."""

    kind = "ring"

    def __init__(self, ctx, spin_ns: int, capacity: int = RING_CAPACITY):
        self.down = new_ring(capacity)
        try:
            self.up = new_ring(capacity)
        except BaseException:
            self.down.close()
            self.down.unlink()
            raise
        self.spin_ns = spin_ns
        self.down.spin_ns = self.up.spin_ns = spin_ns

    def child_spec(self):
        return (self.down, self.up, self.spin_ns)  # pickling a Ring attaches it in the child

    def close(self):
        for r in (self.down, self.up):
            r.close()
            r.unlink()

    # parent side
    def rtt(self, n):
        push, pop = self.down.push, self.up.pop
        for _ in itertools.repeat(None, n):
            push(REC)
            pop(None)

    def rtt_poll(self, n):
        """Round trip whose wait is a Python loop over pop(timeout=0): the GIL is never released."""
        push, pop = self.down.push, self.up.pop
        for _ in itertools.repeat(None, n):
            push(REC)
            while pop() is None:
                pass

    def recv_n(self, n):
        pop = self.up.pop
        for _ in itertools.repeat(None, n):
            pop(None)


class RingChild:
    def __init__(self, spec):
        self.down, self.up, spin_ns = spec
        self.down.spin_ns = self.up.spin_ns = spin_ns

    def close(self):
        self.down.close()
        self.up.close()

    def echo(self, total):
        push, pop = self.up.push, self.down.pop
        for _ in itertools.repeat(None, total):
            push(pop(None))

    def echo_poll(self, total):
        push, pop = self.up.push, self.down.pop
        for _ in itertools.repeat(None, total):
            while (rec := pop()) is None:
                pass
            push(rec)

    def produce(self, total):
        push = self.up.push
        for _ in itertools.repeat(None, total):
            push(REC)


class PeerParent:
    """The parent's loops over a peer transport; subclasses give `_ends() -> (send_down, recv_up)`,
    bound methods taken once so the timed loop pays nothing beyond the transport's own calls."""

    def rtt(self, n):
        send, recv = self._ends()
        for _ in itertools.repeat(None, n):
            send(REC)
            recv()

    def recv_n(self, n):
        recv = self._ends()[1]
        for _ in itertools.repeat(None, n):
            recv()


class PeerChild:
    """The child's loops; subclasses give `_ends() -> (send_up, recv_down)`."""

    def echo(self, total):
        send, recv = self._ends()
        for _ in itertools.repeat(None, total):
            send(recv())

    def produce(self, total):
        send = self._ends()[0]
        for _ in itertools.repeat(None, total):
            send(REC)


class PipeChannel(PeerParent):
    """multiprocessing.Pipe(duplex=False) x 2, raw bytes (send_bytes / recv_bytes: no pickling)."""

    kind = "pipe"

    def __init__(self, ctx):
        self.child_r, self.parent_w = ctx.Pipe(duplex=False)
        self.parent_r, self.child_w = ctx.Pipe(duplex=False)

    def child_spec(self):
        return (self.child_r, self.child_w)

    def after_start(self):
        # Drop our copies of the child's ends: a dead child then gives EOFError instead of a hang.
        self.child_r.close()
        self.child_w.close()

    def close(self):
        for c in (self.child_r, self.child_w, self.parent_r, self.parent_w):
            c.close()

    def _ends(self):
        return self.parent_w.send_bytes, self.parent_r.recv_bytes


class PipeChild(PeerChild):
    def __init__(self, spec):
        self.r, self.w = spec

    def close(self):
        self.r.close()
        self.w.close()

    def _ends(self):
        return self.w.send_bytes, self.r.recv_bytes


class QueueChannel(PeerParent):
    """multiprocessing.Queue x 2 (a pipe plus a feeder thread that pickles)."""

    kind = "queue"

    def __init__(self, ctx):
        self.down = ctx.Queue()
        self.up = ctx.Queue()

    def child_spec(self):
        return (self.down, self.up)

    def close(self):
        for q in (self.down, self.up):
            q.cancel_join_thread()
            q.close()

    def _ends(self):
        return self.down.put, self.up.get


class QueueChild(PeerChild):
    def __init__(self, spec):
        self.down, self.up = spec

    def close(self):
        self.down.close()
        self.up.close()
        self.up.join_thread()  # flush what we put before exiting

    def _ends(self):
        return self.up.put, self.down.get


class PosixMQChannel(PeerParent):
    """posix_ipc.MessageQueue x 2 (mq_send / mq_receive), removed by the parent."""

    kind = "posix_mq"

    def __init__(self, ctx):
        tag = f"{os.getpid()}-{random.getrandbits(32):08x}"
        self.names = [f"/{MQ_PREFIX}{os.getuid()}-{tag}-down", f"/{MQ_PREFIX}{os.getuid()}-{tag}-up"]
        self.queues = []
        try:
            for name in self.names:
                self.queues.append(
                    posix_ipc.MessageQueue(name, posix_ipc.O_CREX, max_messages=POSIX_MQ_DEPTH,
                                           max_message_size=RECORD_SIZE))
                CREATED["posix_mq"].add(name)
        except BaseException:
            self.close()
            raise
        self.down, self.up = self.queues

    def child_spec(self):
        return tuple(self.names)

    def close(self):
        for name, q in itertools.zip_longest(self.names, self.queues):
            if q is not None:
                q.close()
            with contextlib.suppress(posix_ipc.ExistentialError):
                posix_ipc.unlink_message_queue(name)
        self.queues = []

    def _ends(self):
        return self.down.send, self.up.receive


class PosixMQChild(PeerChild):
    def __init__(self, spec):
        self.down, self.up = (posix_ipc.MessageQueue(name) for name in spec)

    def close(self):
        self.down.close()
        self.up.close()

    def _ends(self):
        return self.up.send, self.down.receive

    def echo(self, total):  # receive() returns (message, priority) here, (message, type) in SysV
        send, recv = self._ends()
        for _ in itertools.repeat(None, total):
            send(recv()[0])


class SysvMQChannel(PeerParent):
    """sysv_ipc.MessageQueue x 2 (msgsnd / msgrcv), removed by the parent."""

    kind = "sysv_mq"

    def __init__(self, ctx):
        self.queues = []
        try:
            while len(self.queues) < 2:
                key = random.randint(1 << 20, (1 << 31) - 1)
                with contextlib.suppress(sysv_ipc.ExistentialError):
                    self.queues.append(sysv_ipc.MessageQueue(key, sysv_ipc.IPC_CREX, mode=0o600))
                    CREATED["sysv_mq"].add(key)
        except BaseException:
            self.close()
            raise
        self.down, self.up = self.queues

    def child_spec(self):
        return tuple(q.key for q in self.queues)

    def close(self):
        for q in self.queues:
            with contextlib.suppress(sysv_ipc.ExistentialError):
                q.remove()
        self.queues = []

    def _ends(self):
        return self.down.send, self.up.receive


class SysvMQChild(PosixMQChild):
    def __init__(self, spec):
        self.down, self.up = (sysv_ipc.MessageQueue(key) for key in spec)

    def close(self):
        pass  # SysV queues have no per-process handle to close; the parent removes them


class SocketpairChannel:
    """socket.socketpair() (AF_UNIX, SOCK_STREAM): sendall, recv(64, MSG_WAITALL)."""

    kind = "socketpair"

    def __init__(self, ctx):
        self.parent_sock, self.child_sock = socket.socketpair()

    def child_spec(self):
        return self.child_sock

    def after_start(self):
        self.child_sock.close()

    def close(self):
        self.parent_sock.close()
        self.child_sock.close()

    def rtt(self, n):
        send, recv, waitall = self.parent_sock.sendall, self.parent_sock.recv, socket.MSG_WAITALL
        for _ in itertools.repeat(None, n):
            send(REC)
            if len(recv(RECORD_SIZE, waitall)) != RECORD_SIZE:
                raise EOFError("socketpair peer closed")

    def recv_n(self, n):
        recv, waitall = self.parent_sock.recv, socket.MSG_WAITALL
        for _ in itertools.repeat(None, n):
            if len(recv(RECORD_SIZE, waitall)) != RECORD_SIZE:
                raise EOFError("socketpair peer closed")


class SocketpairChild(PeerChild):
    def __init__(self, spec):
        self.sock = spec

    def close(self):
        self.sock.close()

    def _ends(self):
        return self.sock.sendall, None

    def echo(self, total):
        send, recv, waitall = self.sock.sendall, self.sock.recv, socket.MSG_WAITALL
        for _ in itertools.repeat(None, total):
            send(recv(RECORD_SIZE, waitall))


CHANNELS = {
    "pipe": (PipeChannel, PipeChild),
    "queue": (QueueChannel, QueueChild),
    "posix_mq": (PosixMQChannel, PosixMQChild),
    "sysv_mq": (SysvMQChannel, SysvMQChild),
    "socketpair": (SocketpairChannel, SocketpairChild),
}


# ---------------------------------------------------------------------------------------------------
# child bodies (module level: the spawn context pickles them by reference)


def child_transport(kind: str, spec, mode: str, total: int) -> None:
    end = RingChild(spec) if kind == "ring" else CHANNELS[kind][1](spec)
    try:
        getattr(end, mode)(total)
    finally:
        end.close()


def child_ring_drain(ring: Ring, spin_ns: int, total: int, max_batch: int) -> None:
    """Consume exactly `total` records with pop_many(max_batch, timeout=None)."""
    ring.spin_ns = spin_ns
    try:
        pop_many = ring.pop_many
        got = 0
        while got < total:
            got += len(pop_many(max_batch, None))
    finally:
        ring.close()


def child_ring_push_many(ring: Ring, spin_ns: int, total_batches: int) -> None:
    ring.spin_ns = spin_ns
    batch = np.zeros(BATCH, dtype=RECORD_DTYPE)
    batch["args"][:, 0] = np.arange(BATCH)
    try:
        push_many = ring.push_many
        for _ in itertools.repeat(None, total_batches):
            push_many(batch)
    finally:
        ring.close()


# ---------------------------------------------------------------------------------------------------
# the C floors


def build_c(tmp: Path) -> dict[str, Path]:
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not cc:
        raise RuntimeError("no C compiler (gcc or $CC) to build the floor programs")
    include = HERE.parent / "flexnpu" / "_c"
    exes = {}
    for prog in C_PROGRAMS:
        exe = tmp / prog
        cmd = [cc, *C_FLAGS, f"-I{include}", "-o", str(exe), str(C_DIR / f"{prog}.c")]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"building {prog} failed:\n{' '.join(cmd)}\n{res.stderr}")
        exes[prog] = exe
    return exes


def run_c(exe: Path, iters: int, reps: int, cpus, timeout: float) -> dict:
    cmd = [str(exe), str(iters), str(reps)]
    if cpus is not None:
        cmd += [str(cpus[0]), str(cpus[1])]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise RuntimeError(f"{exe.name} failed ({res.returncode}): {res.stderr.strip()}")
    return json.loads(res.stdout)


# ---------------------------------------------------------------------------------------------------
# experiments (parent side)


class Bench:
    def __init__(self, plan: Plan, cpus):
        self.plan = plan
        self.cpus = cpus  # (parent, child) or None
        self.ctx = mp.get_context("spawn")

    def children(self):
        return Children(self.ctx, self.cpus[1] if self.cpus else None)

    def _channel(self, kind: str, spin_ns: int):
        return RingChannel(self.ctx, spin_ns) if kind == "ring" else CHANNELS[kind][0](self.ctx)

    # -- round trips ------------------------------------------------------------------------------
    def rtt(self, kind: str, n: int, reps: int, *, spin_ns: int = SPIN_FOREVER_NS,
            poll: bool = False) -> list[float]:
        """ns per round trip of one 64-byte record: the parent sends, the child echoes it back."""
        n_warm = warm(n, self.plan)
        total = n_warm + n * reps
        with watchdog(self.plan.timeout_s, f"{kind} round trip"), contextlib.ExitStack() as stack:
            ch = self._channel(kind, spin_ns)
            stack.callback(ch.close)
            kids = stack.enter_context(self.children())
            kids.start(child_transport, kind, ch.child_spec(), "echo_poll" if poll else "echo", total)
            if hasattr(ch, "after_start"):
                ch.after_start()
            out = _timed(ch.rtt_poll if poll else ch.rtt, n, reps, n_warm)
            kids.join_ok()
        return out

    # -- one-way throughput, one call per record on each side ------------------------------------------
    def oneway(self, kind: str, n: int, reps: int) -> list[float]:
        """Records/s received by the parent while the child sends one record per call."""
        n_warm = warm(n, self.plan)
        total = n_warm + n * reps
        with watchdog(self.plan.timeout_s, f"{kind} one-way"), contextlib.ExitStack() as stack:
            ch = self._channel(kind, DEFAULT_SPIN_NS)
            stack.callback(ch.close)
            kids = stack.enter_context(self.children())
            kids.start(child_transport, kind, ch.child_spec(), "produce", total)
            if hasattr(ch, "after_start"):
                ch.after_start()
            ns = _timed(ch.recv_n, n, reps, n_warm)
            kids.join_ok()
        return [1e9 / x for x in ns]

    # -- ours only ------------------------------------------------------------------------------------
    def push_live_consumer(self) -> list[float]:
        """ns per Ring.push(64 bytes) from Python while a child process drains (pop_many, default spin)."""
        p = self.plan
        n = p.push_iters
        n_warm = warm(n, p)
        total = n_warm + n * p.fast_reps
        with watchdog(p.timeout_s, "push with a live consumer"), contextlib.ExitStack() as stack:
            ring = stack.enter_context(new_ring())
            kids = stack.enter_context(self.children())
            kids.start(child_ring_drain, ring, DEFAULT_SPIN_NS, total, RING_CAPACITY)
            push = ring.push

            def run(k):
                for _ in itertools.repeat(None, k):
                    push(REC)

            out = _timed(run, n, p.fast_reps, n_warm)
            kids.join_ok()
        return out

    def push_local(self) -> list[float]:
        """ns per Ring.push with nobody else touching the ring (no cache line crosses cores).

        The ring is emptied with one pop_into of 2048 records after every 2048 pushes (included:
        under 1 ns per record), so every slot stays in this core's cache.
        """
        p = self.plan
        chunk = 2048
        with new_ring(2 * chunk) as ring:
            push, pop_into = ring.push, ring.pop_into
            buf = np.empty(chunk, dtype=RECORD_DTYPE)

            def run(k):
                for _ in range(k // chunk):
                    for _ in itertools.repeat(None, chunk):
                        push(REC)
                    pop_into(buf)

            n = max(chunk, p.push_iters // chunk * chunk)
            return _timed(run, n, p.fast_reps, chunk)

    def call_floor(self) -> list[float]:
        """ns per iteration of the same Python loop calling a builtin that does nothing (id)."""
        p = self.plan

        def run(k):
            f = id
            for _ in itertools.repeat(None, k):
                f(REC)

        return _timed(run, p.push_iters, p.fast_reps, warm(p.push_iters, p))

    def batched(self, use_pop_into: bool) -> list[float]:
        """Records/s: a child pushes batches of 256 (push_many); the parent pops up to 256 per call."""
        p = self.plan
        n = p.batch_records
        n_warm = warm(n, p)
        total_batches = -(-(n_warm + n * p.fast_reps) // BATCH)
        what = "pop_into" if use_pop_into else "pop_many"
        with watchdog(p.timeout_s, f"batched {what}"), contextlib.ExitStack() as stack:
            ring = stack.enter_context(new_ring())
            ring.spin_ns = DEFAULT_SPIN_NS
            kids = stack.enter_context(self.children())
            kids.start(child_ring_push_many, ring, DEFAULT_SPIN_NS, total_batches)
            buf = np.empty(BATCH, dtype=RECORD_DTYPE)
            pop_many, pop_into = ring.pop_many, ring.pop_into
            # A pop may return part of a batch, so a repetition can end a few records past its
            # target; count against a running total so the next one starts where this one ended.
            count = [0, 0]  # records popped so far, target so far

            def run(k):
                got, target = count[0], count[1] + k
                if use_pop_into:
                    while got < target:
                        got += pop_into(buf, None)
                else:
                    while got < target:
                        got += len(pop_many(BATCH, None))
                count[:] = [got, target]

            ns = _timed(run, n, p.fast_reps, n_warm)
            left = total_batches * BATCH - count[0]  # drain the rest so the producer can finish
            while left > 0:
                left -= len(pop_many(BATCH, None))
            kids.join_ok()
        return [1e9 / x for x in ns]


def machine_info(cpus) -> dict:
    model = "unknown"
    hypervisor = None
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError):
        flags = Path("/proc/cpuinfo").read_text()
        hypervisor = " hypervisor" in flags
    idle = None
    with contextlib.suppress(OSError):
        idle = Path("/sys/devices/system/cpu/cpuidle/current_driver").read_text().strip()
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "usable_cpus": sorted(os.sched_getaffinity(0)),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "python_impl": platform.python_implementation(),
        "numpy": np.__version__,
        "virtualized": hypervisor,
        "cpuidle_driver": idle,
        "loadavg_at_start": list(os.getloadavg()),
        "pinned": cpus is not None,
        "cpus": list(cpus) if cpus else None,
        "pinning": (f"parent on cpu {cpus[0]}, child on cpu {cpus[1]} (os.sched_setaffinity; the C floors"
                    " pin the same way)") if cpus else "not pinned (fewer than 2 usable cpus, or --no-pin)",
    }


def series(xs, unit: str) -> dict:
    return {"median": med(xs), "min": float(min(xs)), "max": float(max(xs)), "spread": spread(xs),
            "reps": [float(x) for x in xs], "unit": unit}


def goal(value: float, op: str, target: float, what: str) -> dict:
    met = value <= target if op == "<=" else value >= target
    return {"value": value, "target": f"{op} {target:g}", "met": bool(met), "what": what}


def run_all(plan: Plan, cpus, only_peers=PEERS) -> dict:
    t_start = time.monotonic()
    sweep_stale()
    if cpus:
        _pin(cpus[0])
    b = Bench(plan, cpus)
    res: dict = {"schema": "flexnpu.ring_peers/1", "machine": machine_info(cpus), "plan": asdict(plan)}
    fr, sr = plan.fast_reps, plan.reps

    with tempfile.TemporaryDirectory(prefix=f"{TMP_PREFIX}{os.getuid()}-{os.getpid()}-") as tmp:
        exes = build_c(Path(tmp))
        probes: list[dict] = []

        def probe(label: str) -> float:
            """A short C cache-line ping-pong: what a line transfer costs right now."""
            r = run_c(exes["cacheline_pingpong"], plan.probe_iters, plan.probe_reps, cpus, plan.timeout_s)
            probes.append({"label": label, "rtt_ns": r["rtt_ns"]})
            return r["rtt_ns"]

        def measured(label: str, unit: str, fn) -> dict:
            """A series of ours with the cache-line floor probed just before and just after it."""
            before = probe(label)
            out = series(fn(), unit)
            out["floor_probe_ns"] = [before, probe(label)]
            return out

        # Floors and the ring round trips they are compared with, in alternating rounds: on a shared
        # (and here virtualized) machine the cost of a line transfer or of a wake-up drifts over
        # seconds, so each goal ratio is taken within a round and the median over rounds reported.
        rounds = []
        for _ in range(plan.rounds):
            cl = run_c(exes["cacheline_pingpong"], plan.cacheline_iters, fr, cpus, plan.timeout_s)
            spin = b.rtt("ring", plan.spin_rtt_iters, fr, spin_ns=SPIN_FOREVER_NS)
            fx = run_c(exes["futex_pingpong"], plan.futex_iters, sr, cpus, plan.timeout_s)
            parked = b.rtt("ring", plan.parked_rtt_iters, sr, spin_ns=0)
            rounds.append({"cacheline": cl, "futex": fx, "spin": spin, "parked": parked})
        pool = {k: [x for r in rounds for x in (r[k]["rtt_ns_reps"] if k in ("cacheline", "futex") else r[k])]
                for k in ("cacheline", "futex", "spin", "parked")}

        ours = {
            "rtt_spin_ns": series(pool["spin"], "ns"),
            "rtt_spin_poll_ns": measured("rtt_spin_poll_ns", "ns", lambda: b.rtt(
                "ring", plan.spin_rtt_iters, fr, spin_ns=SPIN_FOREVER_NS, poll=True)),
            "rtt_parked_ns": series(pool["parked"], "ns"),
            "push_ns": measured("push_ns", "ns", b.push_live_consumer),
            "push_local_ns": series(b.push_local(), "ns"),
            "python_call_floor_ns": series(b.call_floor(), "ns"),
            "batch_rps": measured("batch_rps", "records/s", lambda: b.batched(use_pop_into=False)),
            "batch_pop_into_rps": measured("batch_pop_into_rps", "records/s",
                                           lambda: b.batched(use_pop_into=True)),
            "oneway_rps": measured("oneway_rps", "records/s",
                                   lambda: b.oneway("ring", plan.oneway_records, fr)),
        }

        # Each peer is measured next to a fresh measurement of ours, and compared with that: the cost
        # of a line transfer on a virtualized host can change several-fold within a run (see "noise").
        peers = {}
        for kind in only_peers:
            peers[kind] = {
                "ours_rtt_spin_ns": measured(f"{kind}: ours_rtt_spin_ns", "ns", lambda: b.rtt(
                    "ring", plan.spin_rtt_iters, fr, spin_ns=SPIN_FOREVER_NS)),
                "rtt_ns": series(b.rtt(kind, plan.peer_rtt_iters, sr), "ns"),
                "oneway_rps": series(b.oneway(kind, plan.peer_oneway_records, sr), "records/s"),
                "ours_oneway_rps": measured(f"{kind}: ours_oneway_rps", "records/s",
                                            lambda: b.oneway("ring", plan.oneway_records, fr)),
            }

    res["floor"] = {
        "cacheline_rtt_ns": series(pool["cacheline"], "ns"),
        "futex_rtt_ns": series(pool["futex"], "ns"),
        "futex_wait_calls_per_side_per_rtt": float(statistics.mean(
            (r["futex"]["parent_wait_calls_per_rtt"] + r["futex"]["child_wait_calls_per_rtt"]) / 2
            for r in rounds)),
        "build": " ".join(["gcc", *C_FLAGS, "-Iflexnpu/_c"]),
    }
    per_round = {
        "spin_vs_cacheline": [med(r["spin"]) / r["cacheline"]["rtt_ns"] for r in rounds],
        "parked_vs_futex": [med(r["parked"]) / r["futex"]["rtt_ns"] for r in rounds],
        "cacheline_rtt_ns": [r["cacheline"]["rtt_ns"] for r in rounds],
        "ring_spin_rtt_ns": [med(r["spin"]) for r in rounds],
        "futex_rtt_ns": [r["futex"]["rtt_ns"] for r in rounds],
        "ring_parked_rtt_ns": [med(r["parked"]) for r in rounds],
    }
    res["rounds"] = per_round
    res["ours"] = ours
    res["peers"] = peers

    o_park = ours["rtt_parked_ns"]["median"]
    res["ratios_peer_to_ours"] = {
        kind: {
            "rtt_vs_ours_spin": v["rtt_ns"]["median"] / v["ours_rtt_spin_ns"]["median"],
            "rtt_vs_ours_parked": v["rtt_ns"]["median"] / o_park,
            "ours_oneway_vs_peer": v["ours_oneway_rps"]["median"] / v["oneway_rps"]["median"],
            "ours_batch_vs_peer": ours["batch_rps"]["median"] / v["oneway_rps"]["median"],
        }
        for kind, v in peers.items()
    }
    best_kind = min(peers, key=lambda k: res["ratios_peer_to_ours"][k]["rtt_vs_ours_spin"])
    floors = per_round["cacheline_rtt_ns"] + [pr["rtt_ns"] for pr in probes]
    changed = max(floors) > 2 * min(floors)
    res["noise"] = {
        "cacheline_floor_min_ns": min(floors),
        "cacheline_floor_max_ns": max(floors),
        "placement_changed": changed,
        "floor_probes": probes,
        "note": ("the C cache-line floor moved more than 2x during the run (on a virtualized host the"
                 " vCPUs' placement, hence the cost of a line transfer, changes over seconds to minutes):"
                 " compare each figure with its floor_probe_ns, and ratios within a round only")
        if changed else "cache-line floor stable within 2x during the run",
    }
    res["goals"] = {
        "rtt_spin_vs_cacheline_floor": goal(
            med(per_round["spin_vs_cacheline"]), "<=", 3,
            "spinning ring round trip / C cache-line ping-pong (median over rounds of the in-round ratio)"),
        "best_peer_rtt_vs_rtt_spin": goal(
            res["ratios_peer_to_ours"][best_kind]["rtt_vs_ours_spin"], ">=", 50,
            f"round trip of the peer closest to ours ({best_kind}) / spinning ring round trip measured"
            " next to it"),
        "push_ns": goal(ours["push_ns"]["median"], "<=", 100, "one push from Python, live consumer (ns)"),
        "batch_mrps": goal(ours["batch_rps"]["median"] / 1e6, ">=", 30,
                           "push_many/pop_many 256, cross-process (M records/s)"),
        "rtt_parked_vs_futex_floor": goal(
            med(per_round["parked_vs_futex"]), "<=", 1.5,
            "parked ring round trip / raw futex ping-pong (median over rounds of the in-round ratio)"),
    }
    res["floor"]["raw"] = {"cacheline_pingpong": [r["cacheline"] for r in rounds],
                           "futex_pingpong": [r["futex"] for r in rounds]}
    res["machine"]["loadavg_at_end"] = list(os.getloadavg())
    res["elapsed_s"] = time.monotonic() - t_start
    return res


def table(res: dict) -> str:
    def ns(x):
        return f"{x / 1000:.2f} us" if x >= 10_000 else f"{x:.0f} ns"

    def rps(x):
        return f"{x / 1e6:.1f} M/s"

    def fl(sr):
        return "[floor " + "/".join(f"{x:.0f}" for x in sr["floor_probe_ns"]) + " ns]"

    m, o, rd = res["machine"], res["ours"], res["rounds"]
    lines = [
        f"machine: {m['cpu_model']}, {m['cores']} cores, Linux {m['kernel']}, Python {m['python']}"
        f" (virtualized: {m['virtualized']}, cpuidle: {m['cpuidle_driver']}); {m['pinning']}",
        "",
        "round trips, alternating rounds (median of each round's repetitions):",
        f"  {'round':>5} {'C cache line':>13} {'ring spin':>10} {'ratio':>6}   {'C futex':>9}"
        f" {'ring parked':>11} {'ratio':>6}",
    ]
    for i in range(len(rd["cacheline_rtt_ns"])):
        lines.append(f"  {i + 1:>5} {ns(rd['cacheline_rtt_ns'][i]):>13} {ns(rd['ring_spin_rtt_ns'][i]):>10}"
                     f" {rd['spin_vs_cacheline'][i]:6.2f}   {ns(rd['futex_rtt_ns'][i]):>9}"
                     f" {ns(rd['ring_parked_rtt_ns'][i]):>11} {rd['parked_vs_futex'][i]:6.2f}")
    lines += [
        "",
        "ours (each with the C cache-line round trip probed just before/after it):",
        f"  round trip, spinning, a pop(timeout=0) loop instead of pop(None):"
        f" {ns(o['rtt_spin_poll_ns']['median'])} {fl(o['rtt_spin_poll_ns'])}",
        f"  push from Python, live consumer: {ns(o['push_ns']['median'])} {fl(o['push_ns'])}",
        f"    nobody reading the ring: {ns(o['push_local_ns']['median'])};"
        f" the same loop calling id(): {ns(o['python_call_floor_ns']['median'])}",
        f"  push_many/pop_many 256: {rps(o['batch_rps']['median'])} {fl(o['batch_rps'])}",
        f"  push_many/pop_into 256: {rps(o['batch_pop_into_rps']['median'])} {fl(o['batch_pop_into_rps'])}",
        f"  one-way, one push/pop per record: {rps(o['oneway_rps']['median'])} {fl(o['oneway_rps'])}",
        "",
        f"  {'peer':11} {'round trip':>10} {'ours next to it':>16} {'peer/ours':>9}   {'one-way':>9}"
        f" {'ours 1/call':>11} {'ours/peer':>9}",
    ]
    for kind, v in res["peers"].items():
        r = res["ratios_peer_to_ours"][kind]
        lines.append(f"  {kind:11} {ns(v['rtt_ns']['median']):>10} {ns(v['ours_rtt_spin_ns']['median']):>16}"
                     f" {r['rtt_vs_ours_spin']:9.0f}   {rps(v['oneway_rps']['median']):>9}"
                     f" {rps(v['ours_oneway_rps']['median']):>11} {r['ours_oneway_vs_peer']:9.1f}"
                     f"   {fl(v['ours_rtt_spin_ns'])}")
    lines += ["", f"noise: {res['noise']['note']}", "", "goals:"]
    for k, g in res["goals"].items():
        lines.append(f"  {'MET ' if g['met'] else 'MISS'} {k:28} {g['value']:9.2f}  target {g['target']:7}"
                     f"  {g['what']}")
    lines.append(f"elapsed {res['elapsed_s']:.1f} s")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CI smoke: tiny counts, a few seconds, noisy")
    ap.add_argument("--table", action="store_true", help="also print a human-readable table on stderr")
    ap.add_argument("--no-pin", action="store_true", help="do not pin parent and child to distinct cores")
    ap.add_argument("--reps", type=int, help="repetitions of the slow series (default 11; --quick 3)")
    ap.add_argument("--fast-reps", type=int, help="repetitions of the sub-us series (default 41; --quick 5)")
    ap.add_argument("--rounds", type=int, help="alternating floor/ours rounds (default 7; --quick 1)")
    ap.add_argument("--peers", default=",".join(PEERS), help=f"comma-separated subset of {','.join(PEERS)}")
    args = ap.parse_args(argv)

    plan = QUICK if args.quick else Plan()
    if args.reps:
        plan = replace(plan, reps=args.reps)
    if args.fast_reps:
        plan = replace(plan, fast_reps=args.fast_reps)
    if args.rounds:
        plan = replace(plan, rounds=args.rounds)
    peers = tuple(p for p in args.peers.split(",") if p)
    unknown = set(peers) - set(PEERS)
    if unknown or not peers:
        ap.error(f"unknown peers: {sorted(unknown)}" if unknown else "need at least one peer")
    usable = sorted(os.sched_getaffinity(0))
    cpus = None if args.no_pin or len(usable) < 2 else (usable[0], usable[1])

    # SIGTERM (e.g. a CI timeout) unwinds through every `finally`, so nothing is left behind.
    signal.signal(signal.SIGTERM, lambda s, f: sys.exit(128 + s))
    try:
        res = run_all(plan, cpus, peers)
    finally:
        left = leftovers()
        if left:
            print(f"ring_peers: resources left behind: {left}", file=sys.stderr)
    res["leftovers"] = left
    res["resources_created"] = {k: sorted(v) for k, v in CREATED.items()}
    json.dump(res, sys.stdout, allow_nan=False)
    sys.stdout.write("\n")
    sys.stdout.flush()
    if args.table:
        print(table(res), file=sys.stderr)
    bad = [k for k, v in _numbers(res) if not (math.isfinite(v) and v > 0)]
    if bad:
        print(f"non-positive or non-finite figures: {bad}", file=sys.stderr)
    return 1 if bad or left else 0


def _numbers(res: dict):
    """(key, value) of every headline figure (what the smoke test checks)."""
    for sect in ("floor", "ours"):
        for k, v in res[sect].items():
            if isinstance(v, dict) and "median" in v:
                yield f"{sect}.{k}", v["median"]
    for kind, v in res["peers"].items():
        for k, s in v.items():
            yield f"peers.{kind}.{k}", s["median"]
    for kind, v in res["ratios_peer_to_ours"].items():
        for k, x in v.items():
            yield f"ratios_peer_to_ours.{kind}.{k}", x
    for k, g in res["goals"].items():
        yield f"goals.{k}", g["value"]


if __name__ == "__main__":
    sys.exit(main())
