"""The tuning studies in a real Optuna storage: optuna-dashboard, started on the sweep's journal file, lists one study
per group with the trials table's counts; a resumed sweep adds no trial; a restored searcher settles the trials asked
after its snapshot; studies of another output folder are refused; a database URL works as the journal does."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

optuna = pytest.importorskip("optuna")

from tracked_sweep import dashboard, get_json, tracked_sweep  # noqa: E402

from raysweep.config import Group, validate  # noqa: E402
from sweep_helpers import tiny_sweep  # noqa: E402

DOCS = Path(__file__).resolve().parents[1] / "docs"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def sweep(ray_session, tmp_path_factory, request):
    return tracked_sweep(tmp_path_factory, request)


def _tune_counts(out: Path) -> tuple[dict, dict]:
    """Per group key, the tune-stage trial ids of the ``trials`` table; per trial id, its evaluations' iterations."""
    from raysweep.results import read_results

    tables = read_results(out / "results")
    tune = tables["trials"][tables["trials"].stage == "tune"]
    groups: dict[str, set] = {}
    for row in tune.itertuples():
        key = Group(row.dataset, row.arch, row.loss, row.variant or "", int(row.replicate)).key
        groups.setdefault(key, set()).add(row.trial_id)
    curves = tables["curves"]
    iterations = {t: sorted(curves[curves.trial_id == t].training_iteration) for t in tune.trial_id}
    return groups, iterations


def _dashboard_studies(url: str) -> dict[str, dict]:
    """Study name -> the dashboard's study detail (its trials included), through its JSON API."""
    summaries = get_json(f"{url}/api/studies")["study_summaries"]
    return {s["study_name"]: {**get_json(f"{url}/api/studies/{s['study_id']}"), "study_id": s["study_id"],
                              "user_attrs": {a["key"]: a["value"] for a in s["user_attrs"]}} for s in summaries}


def test_dashboard_lists_a_study_per_group_with_the_tables_trials(sweep, tmp_path):
    out = sweep["out"]
    groups, iterations = _tune_counts(out)
    assert set(groups) == {"synthetic/cnn/tversky", "synthetic/cnn/ce"}
    server = dashboard(out / "optuna.journal", tmp_path / "dashboard.log")
    try:
        studies = _dashboard_studies(server.url)
        assert set(studies) == set(groups)
        for key, study in studies.items():
            trials = study["trials"]
            assert len(trials) == len(groups[key]), key  # the dashboard's count is the table's
            assert {t["state"] for t in trials} <= {"Complete", "Pruned"}
            by_id = {a["value"]: t for t in trials for a in t["user_attrs"] if a["key"] == "trial_id"}
            assert set(by_id) == groups[key]  # each study trial names its row
            for trial_id, t in by_id.items():  # an intermediate value per evaluation, at its index
                assert sorted(v["step"] for v in t["intermediate_values"]) == iterations[trial_id], trial_id
            attrs = study["user_attrs"]
            assert (attrs["dataset"], attrs["arch"], attrs["loss"], attrs["stage"]) == (*key.split("/"), "tune")
            assert attrs["family"] == {"tversky": "region", "ce": "pixel"}[attrs["loss"]]
        tversky = studies["synthetic/cnn/tversky"]
        assert {p["name"] for t in tversky["trials"] for p in t["params"]} >= {"alpha", "beta"}
        _screenshot(f"{server.url}/dashboard/studies/{tversky['study_id']}", tmp_path)
    finally:
        server.stop()


def _screenshot(url: str, tmp_path: Path) -> None:
    """The study page in headless Chromium; ``RAYSWEEP_UPDATE_SCREENSHOTS=1`` writes docs/optuna-dashboard.png."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not installed (Debian: apt-get install chromium): no dashboard screenshot")
    png = tmp_path / "optuna-dashboard.png"
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
         "--disable-background-networking", "--disable-component-update", f"--user-data-dir={tmp_path / 'profile'}",
         "--window-size=1400,1000", "--virtual-time-budget=20000", "--hide-scrollbars", f"--screenshot={png}",
         "--dump-dom", url], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "synthetic/cnn/tversky" in proc.stdout  # the page rendered the study, not a blank shell
    assert png.stat().st_size > 20_000
    if os.environ.get("RAYSWEEP_UPDATE_SCREENSHOTS"):
        shutil.copy(png, DOCS / "optuna-dashboard.png")


def test_a_resumed_sweep_adds_no_trial_to_its_studies(sweep):
    from raysweep.cli import main

    def counts():
        storage = optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(sweep["out"] / "optuna.journal")))
        return {s.study_name: s.n_trials for s in optuna.get_all_study_summaries(storage)}

    before = counts()
    assert main(["run", "--config", str(sweep["config"]), "--out", str(sweep["out"]), "--report",
                 str(sweep["report"]), "--skip-data-check"]) == 0
    assert counts() == before and sum(before.values()) == sum(len(v) for v in _tune_counts(sweep["out"])[0].values())


def _searcher(cfg, storage):
    from raysweep.sweep import GroupSearcher

    return GroupSearcher(cfg, storage=storage)


def test_a_restored_searcher_settles_the_trials_asked_after_its_snapshot(tmp_path):
    """Tune restores the searcher from its last snapshot; trials asked after it (a driver killed in between) are
    unknown to the restored experiment. They are marked FAIL ('superseded') and the fixed points among them are
    queued again, so the restored searcher still tries the defaults and every branch, in order."""
    from raysweep.sweep.studies import tune_studies

    cfg = validate(tiny_sweep(losses=["tversky", "ce"], tuning={"trials_per_group": 4}))
    storage = tune_studies(cfg, tmp_path)
    first = _searcher(cfg, storage)
    asked = {t: first.suggest(t)["tags"] for t in ("t0", "t1")}  # tversky's defaults, ce's one trial
    first.on_trial_result("t0", {"score": 0.4, "training_iteration": 1, "step": 2})
    first.save(str(tmp_path / "searcher.pkl"))
    late = first.suggest("t2")["tags"]  # tversky's branch point, asked after the snapshot
    assert late["proposal"] == "branch"

    restored = _searcher(cfg, None)
    restored.restore(str(tmp_path / "searcher.pkl"))
    again = restored.suggest("t3")["tags"]
    assert again["proposal"] == "branch" and again["params"] == late["params"]
    study = optuna.load_study(study_name="synthetic/cnn/tversky", storage=storage)
    states = {t.user_attrs["trial_id"]: t for t in study.trials}
    assert states["t2"].state.name == "FAIL" and "superseded" in states["t2"].user_attrs
    assert states["t0"].state.name == "RUNNING" and states["t0"].intermediate_values == {1: 0.4}
    assert states["t3"].state.name == "RUNNING" and asked["t0"]["proposal"] == "default"


def test_studies_belong_to_one_output_folder_and_a_database_url_works(tmp_path):
    from raysweep.sweep.studies import open_storage, prepare_studies, tune_studies

    url = f"sqlite:///{tmp_path / 'studies.db'}"
    cfg = validate(tiny_sweep(tuning={"storage": url}))
    storage = tune_studies(cfg, tmp_path / "a")
    assert isinstance(storage, optuna.storages.RDBStorage)
    searcher = _searcher(cfg, storage)
    searcher.suggest("x")
    # The stage starting over in the same folder replaces its studies: no trial of the earlier attempt stays.
    prepare_studies(open_storage(url, tmp_path / "a"), cfg, tmp_path / "a")
    assert all(s.n_trials == 0 for s in optuna.get_all_study_summaries(storage))
    with pytest.raises(ValueError, match="another sweep .*give this sweep its own database"):
        prepare_studies(storage, cfg, tmp_path / "b")

