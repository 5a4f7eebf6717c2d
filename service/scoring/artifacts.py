"""Content-versioned artifact folders beside the model registry: <root>/<version>/ and a CURRENT pointer.

The related-party graph (graph.py) and the fraud model (fraud.py) are published this way: each version's folder is
never changed once written, a decision records the version it used, and CURRENT names the one the service loads.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

CURRENT_FILE = "CURRENT"


def publish_artifact(root: Path | str, write: Callable[[Path], str]) -> str:
    """Write an artifact with ``write(folder) -> version`` into a staging folder under ``root``, move it to
    ``root/<version>`` (kept as it is when that version exists: the same content) and point ``root/CURRENT`` at
    it, each step atomic. Old versions stay: a decision names the version it used and its replay loads that one."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=root))
    try:
        staging.chmod(0o755)
        version = write(staging)
        if not version or "/" in version or version.startswith("."):
            raise ValueError(f"not a version name: {version!r}")
        target = root / version
        if target.exists():
            shutil.rmtree(staging)
        else:
            os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    pointer = root / f".{CURRENT_FILE}.tmp"
    pointer.write_text(version + "\n")
    os.replace(pointer, root / CURRENT_FILE)
    return version


def current_version(root: Path | str) -> str | None:
    """The version ``root/CURRENT`` names, None when nothing was published."""
    try:
        return (Path(root) / CURRENT_FILE).read_text().strip() or None
    except FileNotFoundError:
        return None


def artifact_folder(root: Path | str, version: str, prefix: str) -> Path | None:
    """``root/version`` when ``version`` is a name of this kind of artifact (``prefix``) and that folder exists."""
    if not version.startswith(prefix) or "/" in version or version in (".", ".."):
        return None
    folder = Path(root) / version
    return folder if folder.is_dir() else None


def published(root: Path | str, version: str | None, prefix: str, error: type[Exception], what: str) -> Path | None:
    """The folder of ``version`` (None: the one CURRENT names) under ``root``, or None when nothing was published;
    ``error`` naming ``what`` when a version is named but is not there (a replay needs exactly that one)."""
    version = version or current_version(root)
    if version is None:
        return None
    folder = artifact_folder(root, version, prefix)
    if folder is None:
        raise error(f"no {what} {version!r} in {root}")
    return folder
