"""Engines and sessions: SQLite by default, PostgreSQL through DATABASE_URL; schema by Alembic migrations."""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).with_name("migrations")
SQLITE_BUSY_TIMEOUT_S = 15


def normalise_url(url: str) -> str:
    """postgres:// and postgresql:// use psycopg 3 (the driver we install)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


class WriteTurn:
    """One writer at a time across the threads of this process (a lock; not an RLock, since a transaction may
    end in another thread than it began, as in FastAPI's teardown) and across processes (an flock)."""

    def __init__(self, lock_file: Path | None) -> None:
        self._thread = threading.Lock()
        self._file, self._fd = lock_file, None  # opened at the first write: creating an engine writes nothing

    def acquire(self) -> None:
        self._thread.acquire()
        if self._file is not None:
            if self._fd is None:  # under the thread lock: opened once
                self._fd = os.open(self._file, os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(self._fd, fcntl.LOCK_EX)

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._thread.release()


def make_engine(url: str, *, immediate: bool = True) -> Engine:
    """``immediate`` (SQLite): transactions take the write lock at BEGIN, for sessions that read then write.
    Read-only sessions use ``immediate=False`` so that they never queue behind a writer."""
    url = normalise_url(url)
    if url.startswith("sqlite"):
        path = url.split("///", 1)[-1]
        # hide_parameters: a failing statement's error (and so the log) never carries the values it bound
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_S},
                               hide_parameters=True)

        if path and path != ":memory:":
            @event.listens_for(engine, "do_connect")
            def _owner_only(*_: object) -> None:  # before SQLite creates the file, not when the engine is built
                _private_file(Path(path))

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(conn, _record) -> None:  # noqa: ANN001
            conn.isolation_level = None  # let SQLAlchemy's "begin" below open transactions, not pysqlite
            cur = conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
            cur.execute("PRAGMA synchronous=FULL")  # an acknowledged decision survives power loss
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA secure_delete=ON")  # purged personal data is overwritten, not left in free pages
            cur.close()

        if not immediate:
            @event.listens_for(engine, "begin")
            def _begin(conn) -> None:  # noqa: ANN001
                conn.exec_driver_sql("BEGIN")
            return engine

        # Write transactions take turns before SQLite's write lock, which BEGIN IMMEDIATE then takes at once: so
        # read-then-append (the audit chain) cannot interleave, and no request sleeps in SQLite's busy handler,
        # whose growing back-off gave second-long waits under load. Threads queue on a lock, worker processes
        # on an flock of a file beside the database. The turn is part of the transaction itself, so no write
        # path can forget it.
        turn = WriteTurn(Path(f"{path}.write-turn") if path and path != ":memory:" else None)

        @event.listens_for(engine, "begin")
        def _begin_immediate(conn) -> None:  # noqa: ANN001
            turn.acquire()
            conn.info["write_turn"] = True  # released once, by whichever of the paths below ends the turn
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                _end(conn)
                raise

        @event.listens_for(engine, "commit")
        @event.listens_for(engine, "rollback")
        def _end(conn) -> None:  # noqa: ANN001
            if conn.info.pop("write_turn", False):  # a failed BEGIN is rolled back too: release only once
                turn.release()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10, hide_parameters=True)


def _private_file(path: Path) -> None:
    """Create the database file readable by its owner only (SQLite gives its WAL and shared-memory files the
    same mode); tighten an existing one that others could read."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
    if path.stat().st_mode & 0o077:
        path.chmod(0o600)
        for companion in (Path(f"{path}-wal"), Path(f"{path}-shm")):
            if companion.exists():
                companion.chmod(0o600)


PURGE_CHECKPOINT_WAIT_MS = 200  # a truncating checkpoint blocks writers while it waits for readers: briefly


def checkpoint_after_purge(engine: Engine) -> None:
    """After deleting personal data on SQLite, fold the write-ahead log into the database and truncate it, so
    that purged rows do not linger in old log frames (secure_delete scrubs the database file itself). Best
    effort and brief: when readers hold old snapshots for longer than PURGE_CHECKPOINT_WAIT_MS, the frames
    are overwritten as the log is reused, and the next complete checkpoint truncates it."""
    if engine.dialect.name != "sqlite":
        return
    conn = engine.raw_connection()  # autocommit (isolation_level None): no transaction, no write turn
    try:
        cur = conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={PURGE_CHECKPOINT_WAIT_MS}")
        try:
            cur.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_S * 1000}")
    finally:
        conn.close()


def migrate(engine: Engine) -> None:
    """Bring the schema to the latest Alembic revision (idempotent)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    sqlite = engine.dialect.name == "sqlite"
    with engine.connect() as conn:
        if sqlite:  # SQLite alters a table by copying it: foreign keys off meanwhile, checked before commit
            conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                if engine.dialect.name == "postgresql":  # workers start together: one migrates, others wait
                    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7462)")
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                if sqlite and (broken := conn.exec_driver_sql("PRAGMA foreign_key_check").first()):
                    raise RuntimeError(f"migration left a dangling reference in table {broken[0]}")
        finally:
            if sqlite:
                conn.connection.dbapi_connection.execute("PRAGMA foreign_keys=ON")


def session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)
