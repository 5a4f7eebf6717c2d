"""`smecredit serve --workers 2`: a socket per worker, so that connections spread over the workers; a worker
that dies is replaced; SIGTERM stops every worker; a worker that cannot start stops the service."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.api_fixtures import UNLIMITED_ADDRESSES, free_port, wait_ready

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc to find the workers")


def children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(entry.name))
    return out


def socket_inodes(pid: int) -> set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            found.add(target[8:-1])
    return found


def established_to(port: int) -> set[str]:
    """Inodes of the established TCP connections accepted on ``port`` (IPv4 loopback: /proc/net/tcp)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local_port, state, inode = int(fields[1].split(":")[1], 16), fields[3], fields[9]
        if local_port == port and state == "01":  # 01: ESTABLISHED
            inodes.add(inode)
    return inodes


def serve(tmp_path: Path, registry: Path, port: int, **env: str) -> subprocess.Popen:
    environ = {**os.environ, "SMECREDIT_DATABASE_URL": f"sqlite:///{tmp_path}/db.sqlite",
               "SMECREDIT_REGISTRY": str(registry), "SMECREDIT_ENVIRONMENT": "test",
               **{f"SMECREDIT_{k.upper()}": str(v) for k, v in UNLIMITED_ADDRESSES.items()}, **env}
    smecredit = str(Path(sys.executable).with_name("smecredit"))
    return subprocess.Popen([smecredit, "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],  # noqa: S603
                            env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def workers_of(proc: subprocess.Popen, n: int = 2, seconds: float = 60) -> list[int]:
    """The worker processes (the supervisor's children running uvicorn; not multiprocessing's tracker)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = [c for c in children(proc.pid) if b"smecredit" in Path(f"/proc/{c}/cmdline").read_bytes()
                 or b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
        found = [c for c in found if b"resource_tracker" not in Path(f"/proc/{c}/cmdline").read_bytes()]
        if len(found) == n:
            return found
        time.sleep(0.2)
    raise AssertionError(f"expected {n} workers under {proc.pid}")


def test_connections_spread_over_workers_and_a_dead_worker_is_replaced(champion_registry: Path,
                                                                        tmp_path: Path) -> None:
    port = free_port()
    proc = serve(tmp_path, champion_registry, port)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc, seconds=90)
        workers = workers_of(proc)
        conns = []
        for _ in range(32):  # kept-alive connections, as a load generator holds them
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request("GET", "/healthz")
            assert c.getresponse().status == 200
            conns.append(c)
        accepted = established_to(port)
        held = {w: len(socket_inodes(w) & accepted) for w in workers}
        assert sum(held.values()) == 32, held
        assert min(held.values()) >= 6, f"connections did not spread over the workers: {held}"
        for c in conns:
            c.close()

        os.kill(workers[0], signal.SIGKILL)  # a worker dies: another takes its place, the service answers
        replaced = workers_of(proc)
        assert workers[0] not in replaced
        wait_ready(base, proc, seconds=90)
        for _ in range(20):
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            c.request("GET", "/healthz")
            assert c.getresponse().status == 200
            c.close()
        workers = replaced
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0
    assert not [w for w in workers if Path(f"/proc/{w}").exists()], "SIGTERM left workers behind"


def test_a_worker_that_cannot_start_stops_the_service(champion_registry: Path, tmp_path: Path) -> None:
    """Workers that fail while starting (here: no database) are not restarted in a loop: the service exits 3."""
    proc = serve(tmp_path, champion_registry, free_port(),
                 SMECREDIT_DATABASE_URL="postgresql+psycopg://postgres@127.0.0.1:1/none?connect_timeout=2")
    assert proc.wait(timeout=120) == 3
