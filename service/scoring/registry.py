"""The model registry: immutable versioned bundles, a champion alias, an append-only event log.

    <root>/<version>/        model.txt (or a scorecard: scorecard.json, points.csv, iv.csv), metadata.json,
                             model_card.html, model_card.json, manifest.json
    <root>/champion.json     the alias the service loads (rewritten atomically)
    <root>/events.jsonl      append-only: registrations, promotions and rollbacks, who, when and why

Nothing lands under its version, and the champion pointer never moves, before the bundle has passed the
servability check (``bundle.check_servable``: parsed and test-scored in a child process). A champion must
also be a model the service can serve to applications: a catalog model trained with the running feature code.
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
    BundleError,
    canonical_json,
    check_servable,
    model_file_of,
    sha256_file,
    verify,
    version_of,
)
from service.scoring.catalog import FEATURE_CODE_VERSION

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
        staging = tmp / "staging"
        staging.mkdir(parents=True)
        try:
            for name, data in files.items():
                _fsync_write(staging / name, data)
            digests = {name: sha256_file(staging / name) for name in sorted(files)}
            version = version_of(digests[model_file_of(digests)], digests[METADATA_FILE])
            _fsync_write(staging / MANIFEST_FILE, canonical_json({"version": version, "algorithm": "sha256",
                                                                  "files": digests}))
            checked = staging.rename(tmp / version)  # a bundle's folder is named by its version
            try:
                check_servable(checked)  # before it lands: a bundle LightGBM cannot serve is never registered
            except BundleError as exc:
                raise RegistryError(str(exc).replace(f"bundle {version}", f"new bundle {version}", 1)) from exc
            target = self.root / version
            if target.exists():
                verify(target)  # same content already registered: it must still be intact
                return version, False
            checked.rename(target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self._log(Event("register", version, _now(), by or current_user(), "trained"))
        return version, True

    def promote(self, version: str, *, by: str | None = None, reason: str) -> Event:
        if not reason.strip():
            raise RegistryError("a promotion needs a reason")
        current = self.champion()
        if current == version:
            raise RegistryError(f"{version} is already the champion")
        self.check_champion(version)
        event = Event("promote", version, _now(), by or current_user(), reason, previous=current)
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
        self.check_champion(target)
        event = Event("rollback", target, _now(), by or current_user(), reason, previous=stack[-1])
        self._set_champion(target)
        self._log(event)
        return event

    # --- reading -----------------------------------------------------------------------------------------
    def versions(self) -> list[str]:
        """Registered versions, oldest first (by registration event)."""
        seen = [e.version for e in self.events() if e.event == "register"]
        # A bundle is a folder with a manifest: the registry's own folders (comparisons/) are not versions.
        on_disk = {p.name for p in self.root.iterdir()
                   if p.is_dir() and not p.name.startswith(".") and (p / MANIFEST_FILE).exists()} \
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

    def check(self, version: str) -> dict[str, str]:
        """Digests and servability (parsed and test-scored in a child process, memoised per content)."""
        digests = self.verify(version)
        try:
            check_servable(self.path(version))
        except BundleError as exc:
            raise RegistryError(str(exc)) from exc
        return digests

    def check_champion(self, version: str) -> None:
        """Raise RegistryError saying why ``version`` cannot be the champion the service loads."""
        self.check(version)
        md = self.metadata(version)
        if md["kind"] != "catalog":
            raise RegistryError(f"{version} is a '{md['kind']}' model and cannot be the champion: POST /v1/scores "
                                "needs a catalog model (smecredit train --data); score a table model with "
                                f"POST /v1/scores/features?model_version={version}")
        if md["feature_code_version"] != FEATURE_CODE_VERSION:
            raise RegistryError(f"{version} was trained with feature code {md['feature_code_version']}, this "
                                f"service computes {FEATURE_CODE_VERSION}; retrain it")

    def metadata(self, version: str) -> dict:
        return json.loads((self.path(version) / METADATA_FILE).read_text(encoding="utf-8"))

    def champion(self) -> str | None:
        path = self.root / CHAMPION_FILE
        if not path.exists():
            return None
        return json.loads(path.read_text(encoding="utf-8"))["version"]

    def champion_history(self) -> list[str]:
        """Every version that has been champion, most recently made champion first."""
        made = [e.version for e in self.events() if e.event in ("promote", "rollback")]
        return list(dict.fromkeys(reversed(made)))

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


def current_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
