"""The servability check, run as a child process: ``python -m service.scoring.canary <bundle folder>``.

It loads the bundle exactly as the service does (digests, metadata, LightGBM parse, and the engine for a catalog
model), scores the canary rows stored at training time and compares the raw margin and TreeSHAP contributions
with the stored ones. LightGBM may abort this process on a malformed model; the parent
(``bundle.check_servable``) turns that, a timeout or a mismatch into a ``BundleError``.

Output: lines starting with ``bundle.VERDICT_PREFIX`` followed by JSON, first the manifest digest verified (before
anything is parsed), then ``{"ok": true}`` or ``{"ok": false, "reason": ...}``. Exit code 0 only when servable.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import lightgbm as lgb

from service.scoring.bundle import VERDICT_PREFIX, BundleError, canary_mismatch, load_bundle, verify_with_digest
from service.scoring.engine import Engine


def _say(**verdict: object) -> None:
    print(VERDICT_PREFIX + json.dumps(verdict), flush=True)


def check(folder: Path) -> str | None:
    """None when servable, otherwise why not."""
    _, manifest_digest = verify_with_digest(folder)
    _say(manifest_sha256=manifest_digest)
    bundle = load_bundle(folder, check=False)
    if bundle.kind == "catalog":
        Engine(bundle)
    elif bundle.kind != "table":
        return f"unknown model kind {bundle.kind!r}"
    return canary_mismatch(bundle)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m service.scoring.canary <bundle folder>", file=sys.stderr)
        return 2
    try:
        reason = check(Path(argv[0]))
    except BundleError as exc:
        reason = str(exc).split(": ", 1)[-1]  # the parent names the bundle
    except lgb.basic.LightGBMError as exc:
        reason = f"LightGBM: {(str(exc).strip().splitlines() or ['error'])[0]}"
    except (OSError, ValueError, KeyError, TypeError, IndexError) as exc:
        reason = f"{type(exc).__name__}: {exc}"
    if reason is None:
        _say(ok=True)
        return 0
    _say(ok=False, reason=reason)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
