"""The daemon with real clients: attach and reclaim, faults, isolation between tenants, the CLI."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from acl_support import download, upload
from daemon_support import DaemonProcess, daemon_segments, make_client, runtime_dir_env
from flexnpu._proto import Completion

from flexnpu import _proto as P
from flexnpu import control, shm
from flexnpu.acl import constants as C
from flexnpu.ring import RECORD_DTYPE, Ring

MiB = 1 << 20


@pytest.fixture
def rtdir(tmp_path):
    with runtime_dir_env(str(tmp_path / "rt")):
        yield tmp_path / "rt"


@pytest.fixture
def daemon(rtdir):
    d = DaemonProcess(memory=256 << 20)
    yield d
    assert d.stop() == 0, "the daemon did not exit cleanly"


def client(**env):
    acl = make_client(**env)
    assert acl.init() == 0
    assert acl.rt.set_device(0) == 0
    return acl


def add_on_device(acl, a: np.ndarray, b: np.ndarray, stream=0) -> np.ndarray:
    """a + b computed by the device through `acl` (float32)."""
    pa, pb, pc = upload(acl, a), upload(acl, b), upload(acl, np.zeros_like(a))
    desc = acl.create_tensor_desc(C.ACL_FLOAT, list(a.shape), C.ACL_FORMAT_ND)
    bufs = [acl.create_data_buffer(p, a.nbytes) for p in (pa, pb, pc)]
    assert acl.op.execute_v2("Add", [desc, desc], bufs[:2], [desc], bufs[2:], 0, stream) == 0
    assert acl.rt.synchronize_stream(stream) == 0
    out = download(acl, pc, a.shape, a.dtype)
    for b_ in bufs:
        acl.destroy_data_buffer(b_)
    acl.destroy_tensor_desc(desc)
    for p in (pa, pb, pc):
        assert acl.rt.free(p) == 0
    return out


def test_attach_status_and_reclaim_on_finalize(daemon):
    base_segments = daemon_segments(daemon.pid)
    acl = client(FLEXNPU_PHASE="decode")
    _ptr, ret = acl.rt.malloc(10 * MiB, 0)
    assert ret == 0
    st = daemon.wait_for_clients(1)
    (c,) = st["clients"]
    assert c["pid"] == os.getpid() and c["uid"] == os.getuid() and c["phase"] == "decode"
    assert c["memory"]["used"] >= 10 * MiB
    assert st["memory"]["used"] >= 10 * MiB
    assert len(daemon_segments(daemon.pid)) > len(base_segments)  # ring, completion, staging
    assert acl.finalize() == 0
    st = daemon.wait_for_clients(0, timeout=1.0)  # reclaimed within one second
    assert st["clients"] == [] and st["memory"]["used"] == 0
    assert daemon_segments(daemon.pid) == base_segments


CLIENT_LOOP = textwrap.dedent("""
    import sys, numpy as np
    from flexnpu import acl
    from flexnpu.acl import constants as C
    assert acl.init() == 0 and acl.rt.set_device(0) == 0
    n = 1 << 16
    ptrs = [acl.rt.malloc(n * 4, 0)[0] for _ in range(3)]
    big, _ = acl.rt.malloc(32 << 20, 0)
    stream, _ = acl.rt.create_stream()
    desc = acl.create_tensor_desc(C.ACL_FLOAT, [n], C.ACL_FORMAT_ND)
    bufs = [acl.create_data_buffer(p, n * 4) for p in ptrs]
    i = 0
    while True:
        assert acl.op.execute_v2("Add", [desc, desc], bufs[:2], [desc], bufs[2:], 0, stream) == 0
        i += 1
        if i == 200:
            print("LAUNCHING", flush=True)
""")


def test_client_killed_mid_launch_stream_is_reclaimed_and_others_carry_on(daemon):
    survivor = client()
    base_segments = daemon_segments(daemon.pid)
    proc = subprocess.Popen([sys.executable, "-c", CLIENT_LOOP], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "FLEXNPU_MODE": "daemon"})
    try:
        assert proc.stdout.readline().strip() == "LAUNCHING"
        st = daemon.wait_for_clients(2)
        victim = next(c for c in st["clients"] if c["pid"] == proc.pid)
        assert victim["memory"]["used"] >= 32 * MiB
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        t0 = time.monotonic()
        st = daemon.wait_for_clients(1, timeout=2.0)
        assert time.monotonic() - t0 < 1.0, "a dead client's resources must be reclaimed within 1 s"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
    assert [c["pid"] for c in st["clients"]] == [os.getpid()]
    assert st["memory"]["used"] == st["clients"][0]["memory"]["used"] == 0
    assert daemon_segments(daemon.pid) == base_segments
    a = np.arange(1000, dtype=np.float32)
    np.testing.assert_array_equal(add_on_device(survivor, a, a * 2), a * 3)
    assert survivor.finalize() == 0


def test_daemon_killed_blocking_calls_return_an_error_not_a_hang(rtdir):
    d = DaemonProcess()
    try:
        acl = client()
        pa = upload(acl, np.ones(1 << 16, np.float32))
        desc = acl.create_tensor_desc(C.ACL_FLOAT, [1 << 16], C.ACL_FORMAT_ND)
        buf = acl.create_data_buffer(pa, 1 << 18)
        for _ in range(50):
            assert acl.op.execute_v2("Add", [desc, desc], [buf, buf], [desc], [buf], 0, 0) == 0
        os.kill(d.pid, signal.SIGKILL)
        d.proc.wait(10)
        t0 = time.monotonic()
        assert acl.rt.synchronize_stream(0) == 507899
        assert "died" in acl.get_recent_err_msg()
        assert acl.rt.malloc(1024, 0)[1] == 507899
        assert time.monotonic() - t0 < 2.0
        acl.finalize()
    finally:
        d.stop()
        removed = {s.name.lstrip("/") for s in shm.gc()}
    assert daemon_segments(d.pid) == set()
    assert removed, "the dead daemon's segments are for shm gc"
    assert not control.is_running(0)


def _raw_attach():
    conn = control.Connection(0)
    info = conn.request({"op": "attach", "version": control.PROTOCOL_VERSION, "name": "raw"})
    return conn, Ring.attach(info["ring"]), Completion.attach(info["completion"])


def _record(opcode, stream=0, args=(), flags=0):
    rec = np.zeros(1, RECORD_DTYPE)
    rec["opcode"], rec["stream"], rec["flags"] = opcode, stream, flags
    rec["args"][0, : len(args)] = args
    return rec


def test_malformed_records_get_error_codes_and_hurt_no_one_else(daemon):
    other = client()
    conn, ring, comp = _raw_attach()
    try:
        op = P.OPCODES
        slot = 5
        # every record's seq is its ring position + 1 (the ring stamps it): the first is 1
        # an unknown opcode that asks for a reply
        ring.push_many(_record(60, args=(0, 0, 0, 0, 0, slot), flags=P.FLAG_REPLY))
        assert comp.wait_reply(slot, 1, timeout=5) == P.WAIT_OK
        assert comp.reply_of(slot)[0] == C.ACL_ERROR_INVALID_PARAM
        # a tensor desc claiming 3 dims with no payload (seq 2): dropped; then a launch (seq 3)
        # naming undefined objects fails on its stream
        ring.push_many(_record(op["CREATE_DESC"], args=(1, 0, 2, 3)))
        ring.push_many(_record(op["LAUNCH"], stream=0, args=(99 | 7 << 32, 1 | 1 << 16, 1, 2)))
        assert comp.wait_stream(0, 3, timeout=5) == P.WAIT_OK
        assert comp.error(0) == (3, C.ACL_ERROR_INVALID_RESOURCE_HANDLE)
        # work on a stream that does not exist (seq 4); a message whose continuation count is
        # garbage (seqs 5 and 6)
        ring.push_many(_record(op["MEMSET_ASYNC"], stream=77, args=(0, 0, 16)))
        assert comp.wait_stream(77, 4, timeout=5) == P.WAIT_OK and comp.error(77)[0] == 4
        garbage = np.zeros(2, RECORD_DTYPE)
        garbage["opcode"], garbage["flags"] = op["SET_ATTR"], 1
        ring.push_many(garbage)
        # the daemon still serves this client (seq 7) ...
        ring.push_many(_record(op["PING"], args=(0, 0, 0, 0, 0, slot), flags=P.FLAG_REPLY))
        assert comp.wait_reply(slot, 7, timeout=5) == P.WAIT_OK and comp.reply_of(slot)[0] == 0
        st = daemon.status()
        raw = next(c for c in st["clients"] if c["name"] == "raw")
        assert raw["malformed_records"] >= 2
        # ... and every other client as before
        a = np.linspace(0, 1, 257, dtype=np.float32)
        np.testing.assert_array_equal(add_on_device(other, a, a), a + a)
    finally:
        ring.close()
        comp.close()
        conn.close()
        other.finalize()


def test_exceeding_memory_is_an_allocation_error_and_loses_nothing(rtdir):
    d = DaemonProcess(memory=64 << 20)
    try:
        acl = client()
        keep = upload(acl, np.arange(100, dtype=np.int64))
        ptr, ret = acl.rt.malloc(100 * MiB, 0)
        assert (ptr, ret) == (0, C.ACL_ERROR_RT_MEMORY_ALLOCATION)
        assert acl.get_recent_err_msg()
        np.testing.assert_array_equal(download(acl, keep, (100,), np.int64), np.arange(100))
        assert acl.rt.malloc(MiB, 0)[1] == 0
        limited = client(FLEXNPU_MEMORY_QUOTA="8MiB")
        free, total, ret = limited.rt.get_mem_info(C.ACL_HBM_MEM)
        assert ret == 0 and total == 8 * MiB and free <= 8 * MiB
        assert limited.rt.malloc(16 * MiB, 0)[1] == C.ACL_ERROR_RT_MEMORY_ALLOCATION
        assert "quota" in limited.get_recent_err_msg()
        assert limited.rt.malloc(4 * MiB, 0)[1] == 0
        limited.finalize()
        acl.finalize()
    finally:
        assert d.stop() == 0


def test_two_clients_memory_never_overlaps_or_aliases(daemon):
    a, b = client(), client()
    try:
        pa = [upload(a, np.full(4096, i, np.int32)) for i in range(4)]
        pb = [upload(b, np.full(4096, 100 + i, np.int32)) for i in range(4)]
        assert not set(pa) & set(pb)
        spans = sorted((p, p + 4096 * 4) for p in pa + pb)
        assert all(end <= nxt for (_, end), (nxt, _) in zip(spans, spans[1:])), "ranges overlap"
        for i, p in enumerate(pa):
            assert (download(a, p, (4096,), np.int32) == i).all()
        for i, p in enumerate(pb):
            assert (download(b, p, (4096,), np.int32) == 100 + i).all()
        # b cannot name a's memory, by copy or through an operator
        out = np.zeros(4096, np.int32)
        assert b.rt.memcpy(out.ctypes.data, out.nbytes, pa[0], out.nbytes, C.ACL_MEMCPY_DEVICE_TO_HOST) \
            == C.ACL_ERROR_INVALID_PARAM
        desc = b.create_tensor_desc(C.ACL_INT32, [4096], C.ACL_FORMAT_ND)
        stolen = b.create_data_buffer(pa[1], 4096 * 4)
        mine = b.create_data_buffer(pb[0], 4096 * 4)
        assert b.op.execute_v2("Add", [desc, desc], [mine, mine], [desc], [stolen], 0, 0) == 0
        assert b.rt.synchronize_stream(0) == C.ACL_ERROR_INVALID_PARAM
        assert (download(a, pa[1], (4096,), np.int32) == 1).all(), "b wrote into a's memory"
        assert b.rt.synchronize_stream(0) == 0  # the error was reported once
    finally:
        a.finalize()
        b.finalize()


def test_ipc_memory_is_shared_between_clients_without_a_copy(daemon):
    a, b = client(), client()
    try:
        src = np.arange(1024, dtype=np.float32)
        pa = upload(a, src)
        key, ret = a.rt.ipc_mem_get_export_key(pa, src.nbytes, 0)
        assert ret == 0 and key
        assert b.rt.ipc_mem_import_by_key(key, 0)[1] != 0, "import before the whitelist must fail"
        assert a.rt.ipc_mem_set_import_pid(key, [os.getpid()]) == 0
        pb, ret = b.rt.ipc_mem_import_by_key(key, 0)
        assert ret == 0 and pb != pa
        np.testing.assert_array_equal(download(b, pb, (1024,), np.float32), src)
        assert b.rt.memcpy(pb, 4, np.float32([-1]).ctypes.data, 4, C.ACL_MEMCPY_HOST_TO_DEVICE) == 0
        assert download(a, pa, (1,), np.float32)[0] == -1, "b's write is visible to a: same memory"
        assert b.rt.ipc_mem_close(key) == 0
        assert b.rt.memcpy(pb, 4, np.float32([0]).ctypes.data, 4, C.ACL_MEMCPY_HOST_TO_DEVICE) != 0
        assert a.rt.ipc_mem_close(key) == 0
        assert a.rt.free(pa) == 0
    finally:
        a.finalize()
        b.finalize()


def _flexnpu(*args, env=None, timeout=120):
    return subprocess.run([sys.executable, "-m", "flexnpu.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def test_cli_daemon_start_status_stop(rtdir):
    r = _flexnpu("daemon", "start", "--device", "3", "--memory", "128MiB")
    assert r.returncode == 0, r.stderr
    assert "started" in r.stdout
    try:
        assert _flexnpu("daemon", "start", "--device", "3").returncode == 1  # already running
        st = json.loads(_flexnpu("status", "--json").stdout)
        (d,) = st["daemons"]
        assert d["device"] == 3 and d["memory"]["total"] == 128 * MiB and d["backend"] == "emulated"
        table = _flexnpu("status").stdout
        assert "device 3" in table and "128.0 MiB" in table
    finally:
        r = _flexnpu("daemon", "stop", "--device", "3")
    assert r.returncode == 0 and "stopped" in r.stdout
    assert json.loads(_flexnpu("status", "--json").stdout)["daemons"] == []
    assert _flexnpu("daemon", "stop", "--device", "3").returncode == 1


def test_daemon_started_inside_a_foreign_checkout_imports_the_installed_package(rtdir, tmp_path, monkeypatch):
    # `python -m` puts the working directory first on sys.path: a daemon started there would import
    # these broken packages instead of the installed ones, and never come up
    for package in ("flexnpu", "flexnpu_daemon"):
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("raise ImportError('a source checkout, not built')\n")
    monkeypatch.chdir(tmp_path)
    d = DaemonProcess()
    try:
        assert control.request(d.device, {"op": "ping"})["pid"] == d.pid
    finally:
        assert d.stop() == 0


def test_runtime_dir_is_private(rtdir):
    path = control.runtime_dir()
    assert os.stat(path).st_mode & 0o777 == 0o700


PROBE = "import acl; print(acl.__name__, acl.rt.malloc.__qualname__, acl.constants.ACL_FLOAT16)"


def test_flexnpu_run_makes_import_acl_flexnpus_and_disable_leaves_it_alone(rtdir):
    r = _flexnpu("run", "--direct", "--", sys.executable, "-c", PROBE)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["acl", "DirectRuntime.malloc", "1"]
    r = _flexnpu("run", "--", sys.executable, "-c", PROBE)  # embedded daemon, then stopped
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[1] == "DaemonRuntime.malloc"
    assert "embedded emulated daemon" in r.stderr
    assert not control.is_running(0)
    r = _flexnpu("run", "--", sys.executable, "-c", PROBE, env={"FLEXNPU_DISABLE": "1"})
    assert r.returncode == 1 and "No module named 'acl'" in r.stderr


def test_missing_daemon_is_a_clear_error_naming_the_fix(rtdir):
    acl = make_client()
    assert acl.init() == 0
    assert acl.rt.set_device(0) == C.ACL_ERROR_RT_NO_DEVICE
    assert "flexnpu daemon start --device 0" in acl.get_recent_err_msg()
    acl.finalize()


def test_unpacked_reply_values_round_trip():
    from flexnpu_daemon.client import pack_text

    values = pack_text("flexnpu-ipc-0123456789abcdef01234567")
    assert struct.pack("<6Q", *values).rstrip(b"\0").decode() == "flexnpu-ipc-0123456789abcdef01234567"


MULTI_DEVICE = textwrap.dedent("""
    import json, numpy as np, acl
    from flexnpu import control
    assert acl.init() == 0
    count, ret = acl.rt.get_device_count()
    ptrs, seen = [], []
    for dev in range(count):
        assert acl.rt.set_device(dev) == 0
        data = np.full(256, dev + 1, np.int32)
        p, ret = acl.rt.malloc(data.nbytes, 0)
        assert ret == 0
        assert acl.rt.memcpy(p, data.nbytes, data.ctypes.data, data.nbytes, 1) == 0
        ptrs.append(p)
    for dev, p in enumerate(ptrs):
        assert acl.rt.set_device(dev) == 0
        out = np.zeros(256, np.int32)
        assert acl.rt.memcpy(out.ctypes.data, out.nbytes, p, out.nbytes, 2) == 0
        seen.append(int(out[0]))
    physical = [int(d) for d in __import__("os").environ["FLEXNPU_VISIBLE_DEVICES"].split(",")]
    clients = [len(control.request(d, {"op": "status"})["clients"]) for d in physical]
    print(json.dumps({"count": count, "seen": seen, "clients": clients, "distinct": len(set(ptrs)) == count}))
""")


def test_flexnpu_run_maps_visible_devices_to_their_daemons(rtdir):
    r = _flexnpu("run", "--device", "1,2", "--memory", "64MiB", "--", sys.executable, "-c", MULTI_DEVICE)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out == {"count": 2, "seen": [1, 2], "clients": [1, 1], "distinct": True}
    assert r.stderr.count("embedded emulated daemon") == 2
    assert not control.is_running(1) and not control.is_running(2)


def test_long_operands_cross_continuation_records_intact(daemon):
    """8-D descs (64 bytes of dims), a long list attr and a long op name span several
    continuation records, each of which gives its seq word to the ring."""
    acl = client()
    try:
        shape = (2, 1, 3, 1, 2, 1, 2, 3)
        perm = [7, 6, 5, 4, 3, 2, 1, 0]
        x = np.arange(np.prod(shape), dtype=np.float32).reshape(shape)
        px, py = upload(acl, x), upload(acl, np.zeros_like(x))
        dx = acl.create_tensor_desc(C.ACL_FLOAT, list(shape), C.ACL_FORMAT_ND)
        dy = acl.create_tensor_desc(C.ACL_FLOAT, [shape[p] for p in perm], C.ACL_FORMAT_ND)
        bx, by = acl.create_data_buffer(px, x.nbytes), acl.create_data_buffer(py, x.nbytes)
        attr = acl.op.create_attr()
        assert acl.op.set_attr_list_int(attr, "perm", perm) == 0
        assert acl.op.set_attr_string(attr, "unused_but_long_" + "x" * 100, "y" * 150) == 0
        assert acl.op.set_attr_list_float(attr, "unused_floats", [0.5] * 40) == 0
        assert acl.op.execute_v2("Transpose", [dx], [bx], [dy], [by], attr, 0) == 0
        assert acl.rt.synchronize_stream(0) == 0
        out = download(acl, py, tuple(shape[p] for p in perm), np.float32)
        np.testing.assert_array_equal(out, x.transpose(perm))
        assert acl.op.execute_v2("NoSuchOperator" + "Z" * 90, [dx], [bx], [dy], [by], 0, 0) == 0
        assert acl.rt.synchronize_stream(0) == C.ACL_ERROR_OP_NOT_FOUND
    finally:
        acl.finalize()


def test_killed_flexnpu_run_takes_its_embedded_daemon_and_program_down(rtdir):
    program = "import acl, time; acl.init(); acl.rt.set_device(0); print('UP', flush=True); time.sleep(30)"
    proc = subprocess.Popen([sys.executable, "-m", "flexnpu.cli", "run", "--memory", "64MiB", "--",
                             sys.executable, "-c", program], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "UP"
        daemon_pid = control.request(0, {"op": "ping"})["pid"]
        assert daemon_segments(daemon_pid)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 10
        while (control.is_running(0) or daemon_segments(daemon_pid)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not control.is_running(0), "the embedded daemon outlived the killed flexnpu run"
        assert daemon_segments(daemon_pid) == set(), "its segments must be unlinked on the way out"
        assert proc.stdout.read() == ""  # the program was terminated too (its pipe closed)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
