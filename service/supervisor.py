"""Several worker processes, each with its own listening socket on the same port (SO_REUSEPORT).

uvicorn's own multi-worker mode shares one listening socket: the worker that wakes first accepts every
connection waiting (an event loop accepts in a loop), so kept-alive connections pile onto one worker while the
other idles (32 wrk connections landed 23/9 on two workers here; 61/64 has been seen). With a socket per
worker the kernel spreads new connections across them by a hash of the client's address and port.

The supervisor restarts a worker that dies (a request may have killed it) and stops them all on SIGINT or
SIGTERM, each finishing its requests in flight (uvicorn's graceful shutdown). A worker that fails to start
(bad settings, an unreachable database) stops the whole service instead of restarting in a loop.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.synchronize
import os
import signal
import socket
import time
from collections.abc import Callable

log = logging.getLogger("smecredit.supervisor")
STARTUP_FAILURE = 3  # as uvicorn: the exit code when the server could not start
CHECK_SECONDS = 0.5


def reuse_port_socket(host: str, port: int, backlog: int = 2048) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.listen(backlog)
    sock.set_inheritable(True)
    return sock


def _worker(host: str, port: int, config_kwargs: dict, started: multiprocessing.synchronize.Event) -> None:
    import uvicorn

    from service import logs
    from service.config import get_settings

    settings = get_settings()  # a spawned interpreter: the parent's logging configuration did not come along
    logs.configure(settings.log_level, settings.log_format_in_effect)

    class Server(uvicorn.Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets)
            if self.started:  # the app was created (migrations, champion) and the socket serves
                started.set()

    sock = reuse_port_socket(host, port)
    Server(uvicorn.Config(**config_kwargs)).run(sockets=[sock])


class Supervisor:
    def __init__(self, host: str, port: int, workers: int, config_kwargs: dict, stop_seconds: float = 40.0) -> None:
        self.host, self.port, self.workers, self.config_kwargs = host, port, workers, config_kwargs
        self.stop_seconds = stop_seconds
        self._context = multiprocessing.get_context("spawn")  # a fresh interpreter: no state forked mid-flight
        self._stopping = False

    def _start(self) -> tuple[multiprocessing.Process, multiprocessing.synchronize.Event]:
        started = self._context.Event()
        proc = self._context.Process(target=_worker, args=(self.host, self.port, self.config_kwargs, started),
                                     name="smecredit-worker")
        proc.start()
        return proc, started

    def run(self) -> int:
        """Serve until SIGINT or SIGTERM; the exit code (STARTUP_FAILURE when a worker could not start)."""
        # A taken port fails here, before any worker starts: the probe binds without SO_REUSEPORT, so it also
        # refuses a port that another instance's reuse-port workers hold (the kernel would split the traffic).
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((self.host, self.port))
        previous: dict[int, Callable] = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, self._stop)
        log.info("serving on http://%s:%d with %d workers (pid %d)", self.host, self.port, self.workers, os.getpid())
        started = [self._start() for _ in range(self.workers)]
        procs = [p for p, _ in started]
        code = 0
        try:
            while not self._stopping:
                time.sleep(CHECK_SECONDS)
                for k, (proc, ready) in enumerate(started):
                    if proc.is_alive() or self._stopping:
                        continue
                    if not ready.is_set():  # it never served: another would fail the same way
                        log.error("a worker could not start (exit code %s); stopping", proc.exitcode)
                        self._stopping, code = True, STARTUP_FAILURE
                        break
                    log.warning("worker %d exited with %s; starting another", proc.pid, proc.exitcode)
                    started[k] = self._start()
                    procs[k] = started[k][0]
        finally:
            for proc in procs:
                if proc.is_alive():
                    os.kill(proc.pid, signal.SIGTERM)  # graceful: requests in flight are finished
            deadline = time.monotonic() + self.stop_seconds
            for proc in procs:
                proc.join(max(0.0, deadline - time.monotonic()))
                if proc.is_alive():
                    proc.kill()
                    proc.join()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        return code

    def _stop(self, signum: int, _frame: object) -> None:
        log.info("received %s; stopping the workers", signal.Signals(signum).name)
        self._stopping = True
