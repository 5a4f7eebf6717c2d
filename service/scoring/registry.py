"""The model registry: immutable versioned bundles, a champion alias, an append-only event log.

    <root>/<version>/        model.txt, metadata.json, model_card.html, model_card.json, manifest.json
    <root>/champion.json     the alias the service loads (rewritten atomically)
    <root>/events.jsonl      append-only: registrations, promotions and rollbacks, who, when and why
"""

from __future__ import annotations

import datetime as dt
import getpass
import json
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

from service.scoring.bundle import (
    MANIFEST_FILE,
    METADATA_FILE,
    MODEL_FILE,
    BundleError,
    canonical_json,
    sha256_file,
    verify,
    version_of,
)

CHAMPION_FILE = "champion.json"
EVENTS_FILE = "events.jsonl"


class RegistryError(ValueError):
    """A registry operation cannot be done; the message says why."""


def default_registry() -> Path:
    return Path(os.environ.get("SMECREDIT_REGISTRY", "models"))


def _fsync_write(path: Path, data: bytes) -> None:
    with path.open("wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


@dataclass(frozen=True)
class Event:
    event: str  # register | promote | rollback
    version: str
    at: str
    by: str
    reason: str
    previous: str | None = None


class Registry:
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    # --- writing -----------------------------------------------------------------------------------------
    def register(self, files: dict[str, bytes], *, by: str | None = None) -> tuple[str, bool]:
        """Write a bundle atomically; returns (version, created). Re-registering identical content is a no-op."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f".tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            for name, data in files.items():
                _fsync_write(tmp / name, data)
            digests = {name: sha256_file(tmp / name) for name in sorted(files)}
            version = version_of(digests[MODEL_FILE], digests[METADATA_FILE])
            _fsync_write(tmp / MANIFEST_FILE, canonical_json({"version": version, "algorithm": "sha256",
                                                              "files": digests}))
            target = self.root / version
            if target.exists():
                verify(target)  # same content already registered: it must still be intact
                return version, False
            tmp.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self._log(Event("register", version, _now(), by or _who(), "trained"))
        return version, True

    def promote(self, version: str, *, by: str | None = None, reason: str) -> Event:
        if not reason.strip():
            raise RegistryError("a promotion needs a reason")
        self.verify(version)
        current = self.champion()
        if current == version:
            raise RegistryError(f"{version} is already the champion")
        event = Event("promote", version, _now(), by or _who(), reason, previous=current)
        self._set_champion(version)
        self._log(event)
        return event

    def rollback(self, *, by: str | None = None, reason: str) -> Event:
        """Make the champion before the current one champion again."""
        if not reason.strip():
            raise RegistryError("a rollback needs a reason")
        stack = self._champion_stack()
        if len(stack) < 2:
            raise RegistryError("no earlier champion to roll back to")
        target = stack[-2]
        self.verify(target)
        event = Event("rollback", target, _now(), by or _who(), reason, previous=stack[-1])
        self._set_champion(target)
        self._log(event)
        return event

    # --- reading -----------------------------------------------------------------------------------------
    def versions(self) -> list[str]:
        """Registered versions, oldest first (by registration event)."""
        seen = [e.version for e in self.events() if e.event == "register"]
        on_disk = {p.name for p in self.root.iterdir() if p.is_dir() and not p.name.startswith(".")} \
            if self.root.exists() else set()
        return [v for v in dict.fromkeys(seen) if v in on_disk] + sorted(on_disk - set(seen))

    def path(self, version: str) -> Path:
        path = self.root / version
        if not version or "/" in version or version.startswith(".") or not path.is_dir():
            raise RegistryError(f"no model version {version!r} in {self.root}")
        return path

    def verify(self, version: str) -> dict[str, str]:
        try:
            return verify(self.path(version))
        except BundleError as exc:
            raise RegistryError(str(exc)) from exc

    def metadata(self, version: str) -> dict:
        return json.loads((self.path(version) / METADATA_FILE).read_text(encoding="utf-8"))

    def champion(self) -> str | None:
        path = self.root / CHAMPION_FILE
        if not path.exists():
            return None
        return json.loads(path.read_text(encoding="utf-8"))["version"]

    def events(self) -> list[Event]:
        path = self.root / EVENTS_FILE
        if not path.exists():
            return []
        return [Event(**json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]

    # --- internals ---------------------------------------------------------------------------------------
    def _champion_stack(self) -> list[str]:
        stack: list[str] = []
        for e in self.events():
            if e.event == "promote":
                stack.append(e.version)
            elif e.event == "rollback" and stack:
                stack.pop()
        return stack

    def _set_champion(self, version: str) -> None:
        tmp = self.root / f".{CHAMPION_FILE}.{os.getpid()}"
        _fsync_write(tmp, canonical_json({"version": version}))
        tmp.replace(self.root / CHAMPION_FILE)

    def _log(self, event: Event) -> None:
        line = json.dumps(event.__dict__, ensure_ascii=False, sort_keys=True) + "\n"
        with (self.root / EVENTS_FILE).open("a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def _who() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
