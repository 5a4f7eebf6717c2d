"""Hardening, round two: a bundle LightGBM cannot serve never takes the process down, never becomes champion,
and a table model's column names may hold any character.

A malformed model can make LightGBM abort the process that parses it, so everything that could parse one
here either goes through the child-process check or runs against a real ``smecredit serve`` process.
"""

from __future__ import annotations

import html
import json
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from pathlib import Path
from types import SimpleNamespace
from typing import TypeVar

import httpx
import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select
from typer.testing import CliRunner

from service.cli import app as cli
from service.db.tables import AuditEvent
from service.runtime import BundleCache, Champion
from service.scoring import bundle as bundle_mod
from service.scoring.bundle import (
    CARD_FILES,
    MANIFEST_FILE,
    METADATA_FILE,
    MODEL_FILE,
    BundleError,
    canonical_json,
    check_servable,
    load_bundle,
    sha256_file,
    version_of,
)
from service.scoring.registry import Event, Registry, RegistryError
from tests.api_fixtures import make_api, running_service
from training.config import load_config
from training.dataset import from_table
from training.pipeline import train

runner = CliRunner()
SPECIAL = ' ():,/"[]{}'  # every character the issue lists, the space first
NAMES = ["debt / revenue (12m)", "[overdue, CNY]", 'ratio: "a" {b}', "region name"]


def flat(text: str) -> str:
    return " ".join(text.split())


def edit_first_leaf_value(text: str) -> str:
    start = text.index("leaf_value=")
    return text[:start] + "leaf_value=1 2 x" + text[text.index("\n", start):]


def not_a_model(_: str) -> str:
    return "tree\nversion=v4\nnot a model\n"


def plant(root: Path, source: str, *, model=None, metadata=None) -> str:  # noqa: ANN001
    """Copy bundle ``source`` with its model text / metadata edited and the manifest recomputed the way
    Registry.register computes it: every digest is consistent, only the content is bad. Returns the version."""
    files = {name: (root / source / name).read_bytes() for name in (MODEL_FILE, METADATA_FILE, *CARD_FILES)}
    if model is not None:
        files[MODEL_FILE] = model(files[MODEL_FILE].decode("utf-8")).encode("utf-8")
    if metadata is not None:
        files[METADATA_FILE] = canonical_json(metadata(json.loads(files[METADATA_FILE])))
    staging = root / ".planting"
    staging.mkdir()
    for name, data in files.items():
        (staging / name).write_bytes(data)
    digests = {name: sha256_file(staging / name) for name in sorted(files)}
    version = version_of(digests[MODEL_FILE], digests[METADATA_FILE])
    (staging / MANIFEST_FILE).write_bytes(canonical_json({"version": version, "algorithm": "sha256",
                                                          "files": digests}))
    staging.rename(root / version)
    return version


def append_event(root: Path, event: Event) -> None:
    with (root / "events.jsonl").open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(event.__dict__, sort_keys=True) + "\n")


def special_frame(n: int = 1000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    frame = pd.DataFrame({NAMES[0]: x, NAMES[1]: rng.gamma(2.0, size=n), NAMES[2]: rng.normal(size=n),
                          NAMES[3]: rng.choice(["north (a)", 'south "b"', "east/west"], size=n)})
    frame["defaulted"] = (x + rng.normal(size=n) > 1.2).astype(int)
    return frame


@pytest.fixture(scope="module")
def special_table(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("special") / "features.csv"
    special_frame().to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def plain_table_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A table model with plain column names (what could be trained before names were made safe)."""
    root = tmp_path_factory.mktemp("plain-table-models")
    path = root / "plain.csv"
    special_frame().set_axis(["debt_ratio", "overdue_cny", "ratio_a", "region", "defaulted"], axis=1).to_csv(
        path, index=False)
    return root / train(from_table(path, "defaulted"), load_config(None), Registry(root)).version


@pytest.fixture()
def registry_copy(champion_registry: Path, tmp_path: Path) -> Path:
    """A private copy of the served registry: these tests plant bad bundles and move the pointer."""
    return Path(shutil.copytree(champion_registry, tmp_path / "models"))


def promote_events(root: Path) -> list[Event]:
    return [e for e in Registry(root).events() if e.event != "register"]


# --- registering ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("edit", [edit_first_leaf_value, not_a_model], ids=["edited-leaf-value", "not-a-model"])
def test_a_bundle_lightgbm_cannot_parse_is_never_registered(registry_copy: Path, edit) -> None:  # noqa: ANN001
    registry = Registry(registry_copy)
    champion = registry.champion()
    files = {name: (registry_copy / champion / name).read_bytes() for name in (MODEL_FILE, METADATA_FILE,
                                                                               *CARD_FILES)}
    files[MODEL_FILE] = edit(files[MODEL_FILE].decode()).encode()
    before = sorted(p.name for p in registry_copy.iterdir())
    with pytest.raises(RegistryError, match=r"new bundle m[0-9a-f]{12}: not servable: ") as info:
        registry.register(files, by="tests")
    if edit is edit_first_leaf_value:  # LightGBM aborts on this one: the child died, its Fatal line is the reason
        assert "died (SIGABRT)" in str(info.value) and "[LightGBM] [Fatal] Model format error" in str(info.value)
    else:
        assert "LightGBM cannot parse model.txt" in str(info.value)
    assert str(registry_copy) not in str(info.value)  # no paths of the machine
    assert sorted(p.name for p in registry_copy.iterdir()) == before  # nothing landed, no staging left over
    assert [e.event for e in registry.events()] == ["register", "promote"]


# --- the servability check itself ---------------------------------------------------------------------------


class TestCheckServable:
    def test_a_good_bundle_passes_once_per_process(self, registry_copy: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
        folder = registry_copy / Registry(registry_copy).champion()
        digest = check_servable(folder)
        assert digest == bundle_mod.sha256_file(folder / MANIFEST_FILE)

        def no_child(*_a, **_k):  # noqa: ANN002, ANN003, ANN202
            raise AssertionError("a second child for the same content")

        monkeypatch.setattr(bundle_mod, "_run_child", no_child)
        assert check_servable(folder) == digest
        assert load_bundle(folder).version == folder.name

    def test_a_refusal_is_remembered_too(self, registry_copy: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        bad = plant(registry_copy, Registry(registry_copy).champion(), model=edit_first_leaf_value)
        with pytest.raises(BundleError, match=f"bundle {bad}: not servable"):
            check_servable(registry_copy / bad)
        monkeypatch.setattr(bundle_mod, "_run_child", lambda *_a, **_k: pytest.fail("forked again"))
        with pytest.raises(BundleError, match=f"bundle {bad}: not servable"):
            load_bundle(registry_copy / bad)  # never parsed in this process

    def test_a_killed_child_is_retried_later_an_aborted_one_never(self, registry_copy: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
        """SIGKILL (the out-of-memory killer) and a failed fork say nothing about the bundle; SIGABRT does."""
        folder = registry_copy / Registry(registry_copy).champion()  # a good bundle
        digest = bundle_mod.verify_with_digest(folder)[1]
        clock = [1000.0]
        monkeypatch.setattr(bundle_mod, "time", SimpleNamespace(monotonic=lambda: clock[0],
                                                                perf_counter=time.perf_counter))
        real_run, outcomes, forks = subprocess.run, [], []

        def run(args, **kwargs):  # noqa: ANN001, ANN003, ANN202
            forks.append(args)
            outcome = outcomes.pop(0)
            if outcome == "real":
                return real_run(args, **kwargs)
            if isinstance(outcome, OSError):
                raise outcome
            said = f"{bundle_mod.VERDICT_PREFIX}{json.dumps({'manifest_sha256': digest})}\n"  # before the parse
            return subprocess.CompletedProcess(args, outcome, said.encode(), b"")

        def planned(*planned_outcomes: object) -> None:
            monkeypatch.setattr(bundle_mod, "_VERDICTS", {})
            outcomes[:], forks[:] = planned_outcomes, []

        monkeypatch.setattr(bundle_mod.subprocess, "run", run)
        planned(-signal.SIGKILL, "real")
        with pytest.raises(BundleError, match=rf"bundle {folder.name}: not servable: .*died \(SIGKILL\)"):
            check_servable(folder)
        clock[0] += bundle_mod._RETRY_SECONDS - 1
        with pytest.raises(BundleError, match=r"died \(SIGKILL\)"):
            check_servable(folder)  # within the delay: remembered, like a timeout
        assert len(forks) == 1
        clock[0] += 2
        assert check_servable(folder) == digest and len(forks) == 2  # after it: checked again, and it passes

        planned(OSError(12, "Cannot allocate memory"), "real")
        with pytest.raises(BundleError, match=r"the check could not start \(OSError\)"):
            check_servable(folder)
        assert check_servable(folder) == digest and len(forks) == 2  # at once: no child ever ran

        planned(-signal.SIGABRT)
        for _ in range(2):
            with pytest.raises(BundleError, match=r"died \(SIGABRT\)"):
                check_servable(folder)
            clock[0] += 100 * bundle_mod._RETRY_SECONDS
        assert len(forks) == 1  # a malformed model aborts every time: remembered for good

    def test_a_canary_the_model_does_not_reproduce_is_refused(self, registry_copy: Path) -> None:
        def nudge(md: dict) -> dict:
            md["canary"]["margin"][0] += 1e-6
            return md

        bad = plant(registry_copy, Registry(registry_copy).champion(), metadata=nudge)
        with pytest.raises(BundleError, match=f"bundle {bad}: not servable: canary raw margin differ"):
            check_servable(registry_copy / bad)

    def test_the_canary_is_stored_with_nan_as_null(self, registry_copy: Path) -> None:
        md = Registry(registry_copy).metadata(Registry(registry_copy).champion())
        canary = md["canary"]
        assert len(canary["rows"]) == 5 and all(v is None for v in canary["rows"][-1])
        assert len(canary["contributions"][0]) == len(md["features"]) + 1
        np.testing.assert_allclose(np.sum(canary["contributions"], axis=1), canary["margin"], atol=1e-9)

    def test_a_bundle_trained_before_canaries_gets_a_smoke_test(self, registry_copy: Path) -> None:
        legacy = plant(registry_copy, Registry(registry_copy).champion(),
                       metadata=lambda md: {k: v for k, v in md.items() if k != "canary"})
        check_servable(registry_copy / legacy)
        result = runner.invoke(cli, ["models", "verify", legacy, "--registry", str(registry_copy)])
        assert result.exit_code == 0 and "no canary stored: retrain to store one" in flat(result.output)


# --- promoting ---------------------------------------------------------------------------------------------


class TestRefusedPromotion:
    def test_the_cli_refuses_and_says_why(self, registry_copy: Path) -> None:
        champion = Registry(registry_copy).champion()
        bad = plant(registry_copy, champion, model=edit_first_leaf_value)
        result = runner.invoke(cli, ["models", "promote", bad, "--reason", "try", "--registry", str(registry_copy)])
        assert result.exit_code == 2
        assert f"bundle {bad}: not servable: the check process died (SIGABRT)" in flat(result.output)
        assert Registry(registry_copy).champion() == champion and len(promote_events(registry_copy)) == 1
        verify = runner.invoke(cli, ["models", "verify", bad, "--registry", str(registry_copy)])
        assert verify.exit_code == 1 and f"FAILED bundle {bad}: not servable" in flat(verify.output)

    def test_the_api_refuses_with_the_reason_and_audits_nothing(self, database_url: str, registry_copy: Path,
                                                                 example_request: dict) -> None:
        champion = Registry(registry_copy).champion()
        bad = plant(registry_copy, champion, model=not_a_model)
        api = make_api(database_url, registry_copy)
        with api.client:
            r = api.client.post(f"/v1/models/{bad}/promote", json={"reason": "try it out"},
                                headers=api.headers("platform"))
            assert r.status_code == 422, r.text
            assert r.json()["detail"].startswith(f"bundle {bad}: not servable: LightGBM cannot parse model.txt")
            assert api.score(example_request).json()["model_version"] == champion
            ready = api.client.get("/readyz").json()
            assert ready["checks"]["model"] == f"ok: {champion}"
            with api.client.app.state.read_sessions() as s:
                assert s.scalars(select(AuditEvent.action).where(AuditEvent.subject == bad)).all() == []
        assert Registry(registry_copy).champion() == champion and len(promote_events(registry_copy)) == 1
        api.client.app.state.engine.dispose()

    def test_a_rollback_to_a_bad_bundle_is_refused(self, registry_copy: Path, second_catalog: Path) -> None:
        registry = Registry(registry_copy)
        good = registry.champion()
        bad = plant(registry_copy, good, model=edit_first_leaf_value)
        shutil.copytree(second_catalog, registry_copy / second_catalog.name)
        # the bad one was champion once (promoted before this check existed), then a good one replaced it
        append_event(registry_copy, Event("promote", bad, "2026-01-01T00:00:00+00:00", "old", "before", good))
        registry.promote(second_catalog.name, by="tests", reason="replace the bad one")
        with pytest.raises(RegistryError, match=f"bundle {bad}: not servable"):
            registry.rollback(reason="back")
        assert registry.champion() == second_catalog.name

    def test_a_table_model_cannot_be_champion(self, database_url: str, registry_copy: Path,
                                              plain_table_bundle: Path) -> None:
        table_bundle = plain_table_bundle
        champion = Registry(registry_copy).champion()
        version = table_bundle.name
        shutil.copytree(table_bundle, registry_copy / version)
        result = runner.invoke(cli, ["models", "promote", version, "--reason", "x", "--registry", str(registry_copy)])
        assert result.exit_code == 2
        why = (f"{version} is a 'table' model and cannot be the champion: POST /v1/scores needs a catalog model "
               f"(smecredit train --data); score a table model with POST /v1/scores/features?model_version={version}")
        assert why in flat(result.output)
        api = make_api(database_url, registry_copy)
        with api.client:
            r = api.client.post(f"/v1/models/{version}/promote", json={"reason": "table model as champion"},
                                headers=api.headers("platform"))
            assert r.status_code == 422 and r.json()["detail"] == why
            listed = api.client.get("/v1/models", headers=api.headers("score")).json()["items"]
            assert [m["version"] for m in listed if m["champion"]] == [champion]
            omitted = api.client.post("/v1/scores/features", headers=api.headers("score"),
                                      json={"features": {}, "application_ref": "x"})
            assert omitted.status_code == 422
            assert omitted.json()["detail"].startswith("query.model_version: required; the champion")
        assert Registry(registry_copy).champion() == champion
        api.client.app.state.engine.dispose()


@pytest.fixture(scope="module")
def second_catalog(small_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("second-catalog")
    from training.dataset import from_folder

    return root / train(from_folder(small_dir), load_config(None).model_copy(update={"seed": 5}),
                        Registry(root)).version


# --- serving -----------------------------------------------------------------------------------------------


def test_a_bad_bundle_scored_by_version_is_a_4xx_and_the_process_lives(database_url: str, registry_copy: Path,
                                                                       plain_table_bundle: Path) -> None:
    table_bundle = plain_table_bundle
    key = prepared_key(database_url, registry_copy)
    shutil.copytree(table_bundle, registry_copy / table_bundle.name)
    aborts = plant(registry_copy, table_bundle.name, model=edit_first_leaf_value)
    garbage = plant(registry_copy, table_bundle.name, model=not_a_model)
    with running_service(database_url, registry_copy) as (base, proc), httpx.Client(base_url=base) as client:
        for version in (aborts, garbage, aborts):  # the second time from the remembered verdict
            r = client.post(f"/v1/scores/features?model_version={version}", json={"features": {"debt_ratio": 1.0},
                            "application_ref": "x"}, headers={"Authorization": f"Bearer {key}"}, timeout=60)
            assert r.status_code == 422, r.text
            assert r.json()["detail"].startswith(f"query.model_version: bundle {version}: not servable")
            assert proc.poll() is None
        assert client.get("/healthz").json() == {"status": "ok"}
        ok = client.post(f"/v1/scores/features?model_version={table_bundle.name}", headers={
            "Authorization": f"Bearer {key}"}, json={"features": {"debt_ratio": 1.0}, "application_ref": "y"})
        assert ok.status_code == 200, ok.text


def test_a_pointer_to_a_bad_bundle_starts_on_the_last_good_champion(database_url: str, registry_copy: Path,
                                                                   example_request: dict) -> None:
    good = Registry(registry_copy).champion()
    bad = plant(registry_copy, good, model=edit_first_leaf_value)
    key = prepared_key(database_url, registry_copy)
    (registry_copy / "champion.json").write_text(json.dumps({"version": bad}))  # edited by hand, or a bad copy
    with running_service(database_url, registry_copy) as (base, proc), httpx.Client(base_url=base) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 200
        model = ready.json()["checks"]["model"]
        assert model.startswith(f"ok: {good} (last good champion; champion.json names {bad}, refused: bundle {bad}: "
                                "not servable: the check process died (SIGABRT)")
        r = client.post("/v1/scores", json=example_request, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        assert r.status_code == 200 and r.json()["model_version"] == good
        assert proc.poll() is None


def prepared_key(database_url: str, registry: Path) -> str:
    api = make_api(database_url, registry)
    api.client.app.state.engine.dispose()
    return api.keys["all"]


class TestChampionFallback:
    def test_a_bad_pointer_at_start_serves_the_newest_good_champion(self, registry_copy: Path,
                                                                  second_catalog: Path) -> None:
        registry = Registry(registry_copy)
        first = registry.champion()
        shutil.copytree(second_catalog, registry_copy / second_catalog.name)
        registry.promote(second_catalog.name, by="tests", reason="newer")
        bad = plant(registry_copy, first, model=not_a_model)
        (registry_copy / "champion.json").write_text(json.dumps({"version": bad}))
        champion = Champion(registry_copy, check_seconds=0)
        champion.refresh(force=True)
        assert champion.get().version == second_catalog.name and champion.refused == bad
        assert champion.last_error.startswith(f"champion.json names {bad}, refused: bundle {bad}: not servable")
        registry.rollback(reason="back to the first")  # the pointer moves to a good one: the refusal is over
        champion.refresh(force=True)
        assert champion.get().version == first and champion.refused is None and champion.last_error is None

    def test_a_table_model_named_by_the_pointer_is_refused(self, registry_copy: Path,
                                                           plain_table_bundle: Path) -> None:
        table_bundle = plain_table_bundle
        good = Registry(registry_copy).champion()
        shutil.copytree(table_bundle, registry_copy / table_bundle.name)
        (registry_copy / "champion.json").write_text(json.dumps({"version": table_bundle.name}))
        champion = Champion(registry_copy, check_seconds=0)
        champion.refresh(force=True)
        assert champion.get().version == good and champion.refused == table_bundle.name


# --- reloading never stalls the replica ---------------------------------------------------------------------

QUICK = 0.5  # seconds: what a request may take while another thread waits for a child check (about 1.5 s)
T = TypeVar("T")


def held(monkeypatch: pytest.MonkeyPatch, name: str, folder: Path) -> SimpleNamespace:
    """Wrap ``bundle.<name>`` (``check_servable`` or ``_run_child``) so that a call for ``folder`` waits until
    ``release`` is set: a slow check, without a slow test."""
    real, target = getattr(bundle_mod, name), folder.resolve()
    hold = SimpleNamespace(started=threading.Event(), release=threading.Event(), calls=0)

    def slow(checked: Path | str, *args: object, **kwargs: object) -> object:
        if Path(checked).resolve() == target:
            hold.calls += 1
            hold.started.set()
            hold.release.wait(60)
        return real(checked, *args, **kwargs)

    monkeypatch.setattr(bundle_mod, name, slow)
    return hold


def within(seconds: float, call: Callable[[], T]) -> T:
    """``call()``'s result, or a failure if it takes longer than ``seconds`` (it finishes in the background)."""
    pool = ThreadPoolExecutor(1)
    try:
        return pool.submit(call).result(timeout=seconds)
    except FutureTimeout:
        pytest.fail(f"waited more than {seconds} s behind another thread's check")
    finally:
        pool.shutdown(wait=False)


class TestReloadNeverStalls:
    def test_requests_keep_the_current_engine_while_a_new_champion_loads(
            self, registry_copy: Path, second_catalog: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        first = Registry(registry_copy).champion()
        champion = Champion(registry_copy, check_seconds=0)
        champion.refresh(force=True)
        new = Path(shutil.copytree(second_catalog, registry_copy / second_catalog.name))
        hold = held(monkeypatch, "check_servable", new)
        (registry_copy / "champion.json").write_text(json.dumps({"version": new.name}))  # promoted elsewhere
        loader = threading.Thread(target=champion.get)  # the request that notices the new champion loads it
        loader.start()
        try:
            assert hold.started.wait(60)
            for _ in range(3):
                assert within(QUICK, champion.get).version == first
            within(QUICK, champion.refresh)  # /readyz
            within(QUICK, lambda: champion.refresh(force=True))  # the promote handler, with a model serving
            assert champion.loaded.version == first
        finally:
            hold.release.set()
            loader.join(60)
        assert champion.get().version == new.name and hold.calls == 1

    def test_cached_versions_are_served_while_another_version_loads(
            self, registry_copy: Path, second_catalog: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        cache, first = BundleCache(), Registry(registry_copy).champion()
        cached = cache.get(registry_copy, first)
        new = Path(shutil.copytree(second_catalog, registry_copy / second_catalog.name))
        hold = held(monkeypatch, "check_servable", new)
        pool = ThreadPoolExecutor(2)
        try:
            loading = pool.submit(cache.get, registry_copy, new.name)
            assert hold.started.wait(60)
            waiting = pool.submit(cache.get, registry_copy, new.name)  # the same version: waits for that load
            assert within(QUICK, lambda: cache.get(registry_copy, first)) is cached
            assert not waiting.done()
        finally:
            hold.release.set()
            pool.shutdown(wait=True)
        assert loading.result().version == new.name and waiting.result() is loading.result() and hold.calls == 1

    def test_a_verified_bundle_never_waits_for_another_bundles_child(
            self, registry_copy: Path, second_catalog: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setattr(bundle_mod, "_VERDICTS", {})  # so that the second bundle's child runs here
        verified = registry_copy / Registry(registry_copy).champion()
        digest = check_servable(verified)
        new = Path(shutil.copytree(second_catalog, registry_copy / second_catalog.name))
        hold = held(monkeypatch, "_run_child", new)
        checking = threading.Thread(target=check_servable, args=(new,))
        checking.start()
        try:
            assert hold.started.wait(60)
            assert within(QUICK, lambda: check_servable(verified)) == digest
            assert within(QUICK, lambda: load_bundle(verified)).version == verified.name
        finally:
            hold.release.set()
            checking.join(60)
        assert check_servable(new) and hold.calls == 1


# --- column names with special characters -------------------------------------------------------------------


def test_any_column_name_trains_verifies_and_serves(special_table: Path, registry_copy: Path, tmp_path: Path) -> None:
    assert set(SPECIAL) <= set("".join(NAMES))
    result = runner.invoke(cli, ["train", "--table", str(special_table), "--target", "defaulted", "--registry",
                                 str(registry_copy)])
    assert result.exit_code == 0, result.output
    version = result.output.strip().splitlines()[-1]
    verify = runner.invoke(cli, ["models", "verify", version, "--registry", str(registry_copy)])
    assert verify.exit_code == 0 and "reproduces its canary rows" in flat(verify.output)
    md = Registry(registry_copy).metadata(version)
    assert [f["name"] for f in md["features"]] == NAMES
    assert [f["internal"] for f in md["features"]] == ["f000", "f001", "f002", "f003"]
    card = json.loads((registry_copy / version / "model_card.json").read_text())
    assert set(card["importance"]["mean_abs_contribution"]) == set(NAMES)
    page = (registry_copy / version / "model_card.html").read_text()
    assert all(html.escape(n, quote=False) in page for n in NAMES)  # the importance plot's labels (SVG text)
    api = make_api(f"sqlite:///{tmp_path}/db.sqlite", registry_copy)
    with api.client:
        features = {NAMES[0]: 2.5, NAMES[1]: 0.3, NAMES[3]: 'south "b"'}
        r = api.client.post(f"/v1/scores/features?model_version={version}", headers=api.headers("score"),
                            json={"features": features, "application_ref": "loan-1"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert list(body["contributions"]) == NAMES and 0 < body["pd"] < 1
        assert body["contributions"][NAMES[0]] != 0
        detail = api.client.get(f"/v1/models/{version}", headers=api.headers("score")).json()
        assert detail["features"] == NAMES
        unknown = api.client.post(f"/v1/scores/features?model_version={version}", headers=api.headers("score"),
                                  json={"features": {"f000": 1.0}, "application_ref": "loan-2"})
        assert unknown.status_code == 422 and unknown.json()["detail"].startswith("body.features.f000: not a")
    api.client.app.state.engine.dispose()


def test_the_model_list_pages(registry_copy: Path, plain_table_bundle: Path, second_catalog: Path,
                              database_url: str) -> None:
    """Every list endpoint pages with a cursor (hardening, round two, defect 4): the registry too."""
    for bundle in (plain_table_bundle, second_catalog):
        shutil.copytree(bundle, registry_copy / bundle.name)
    versions = Registry(registry_copy).versions()
    assert len(versions) >= 3
    api = make_api(database_url, registry_copy)
    with api.client:
        seen, cursor = [], None
        while True:
            r = api.client.get("/v1/models?limit=1" + (f"&cursor={cursor}" if cursor else ""), headers=api.headers())
            assert r.status_code == 200, r.text
            assert len(r.json()["items"]) == 1
            seen += [m["version"] for m in r.json()["items"]]
            cursor = r.json()["next_cursor"]
            if cursor is None:
                break
        assert seen == versions
        whole = api.client.get("/v1/models", headers=api.headers()).json()
        assert [m["version"] for m in whole["items"]] == versions and whole["next_cursor"] is None
        r = api.client.get("/v1/models?cursor=eyJhZnRlciI6ICJtMDAwIn0", headers=api.headers())  # {"after": "m000"}
        assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["query", "cursor"]
    api.client.app.state.engine.dispose()


def test_a_promotion_whose_audit_fails_is_undone(registry_copy: Path, second_catalog: Path, database_url: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The pointer and the audit chain cannot share a transaction: when the audit commit fails after the pointer
    moved, the pointer moves back (both moves in the registry's log), so no promotion stands unaudited."""
    from sqlalchemy.exc import OperationalError

    from service.usecases import champion as champion_usecase

    shutil.copytree(second_catalog, registry_copy / second_catalog.name)
    before = Registry(registry_copy).champion()
    api = make_api(database_url, registry_copy)
    with api.client:
        def fail(*_: object, **__: object) -> None:
            raise OperationalError("INSERT", {}, Exception("database went away"))

        monkeypatch.setattr(champion_usecase.repo, "append_audit", fail)
        r = api.client.post(f"/v1/models/{second_catalog.name}/promote", json={"reason": "try it out"},
                            headers=api.headers("platform"))
        assert r.status_code == 503
        assert Registry(registry_copy).champion() == before
        moves = [(e.event, e.version) for e in promote_events(registry_copy)][-2:]
        assert moves == [("promote", second_catalog.name), ("rollback", before)]
        assert "could not be recorded" in promote_events(registry_copy)[-1].reason
        monkeypatch.undo()
        r = api.client.post(f"/v1/models/{second_catalog.name}/promote", json={"reason": "now for real"},
                            headers=api.headers("platform"))
        assert r.status_code == 200 and Registry(registry_copy).champion() == second_catalog.name
        with api.client.app.state.read_sessions() as s:
            actions = [e.action for e in s.scalars(select(AuditEvent).order_by(AuditEvent.id))]
        assert actions.count("model.promoted") == 1
    api.client.app.state.engine.dispose()
