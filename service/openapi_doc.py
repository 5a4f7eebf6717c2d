"""The committed OpenAPI document: generated from the app with production-like settings, stable bytes."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from service.config import Settings


def openapi_json() -> str:
    from service.main import create_app

    with tempfile.TemporaryDirectory() as tmp:  # never written: building the app touches no database
        settings = Settings(database_url=f"sqlite:///{tmp}/openapi.db", registry=Path(tmp) / "models")
        app = create_app(settings)
        spec = app.openapi()
        app.state.engine.dispose()
        if any(Path(tmp).iterdir()):
            raise RuntimeError(f"building the app wrote {sorted(p.name for p in Path(tmp).iterdir())}")
    return json.dumps(spec, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
