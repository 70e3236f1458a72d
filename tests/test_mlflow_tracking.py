"""MLflow runs of a sweep: against a real ``mlflow server`` (SQLite backend store) on 127.0.0.1, the parent run of
the sweep with sweep.json and the report, one run per trial with its parameters, tags and metric history; and a
tracking server that is down costs warnings, never a Parquet row."""

from __future__ import annotations

import json
import warnings
from types import SimpleNamespace

import pytest

pytest.importorskip("mlflow")

from tracked_sweep import free_port, tracked_sweep  # noqa: E402

from raysweep.config import compose_trial, validate  # noqa: E402
from sweep_helpers import tiny_sweep  # noqa: E402


@pytest.fixture(scope="session")
def sweep(ray_session, tmp_path_factory, request):
    return tracked_sweep(tmp_path_factory, request)


def test_each_trial_is_a_run_under_the_sweeps_run(sweep):
    from mlflow import MlflowClient

    from raysweep.results import read_results, read_sweep_meta

    tables = read_results(sweep["out"] / "results")
    trials, curves = tables["trials"], tables["curves"]
    meta = read_sweep_meta(sweep["out"] / "results")
    client = MlflowClient(tracking_uri=sweep["mlflow"].url)
    exp = client.get_experiment_by_name("tiny-tracked")
    runs = client.search_runs([exp.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("role") == "sweep"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.data.tags["sweep_id"] == meta["sweep_id"] and parent.info.status == "FINISHED"
    children = {r.data.tags["trial_id"]: r for r in runs if r is not parent}
    assert set(children) == set(trials.trial_id)  # both stages, no run more, none less
    assert all(r.data.tags["mlflow.parentRunId"] == parent.info.run_id for r in children.values())

    for row in trials.itertuples():
        run = children[row.trial_id]
        tags = run.data.tags
        for key in ("dataset", "arch", "loss", "family", "stage"):
            assert tags[key] == str(getattr(row, key)), (row.trial_id, key)
        assert tags["seed"] == str(row.seed) and tags["replicate"] == str(row.replicate)
        assert tags["status"] == row.status
        assert run.data.params == {**{k: str(v) for k, v in json.loads(row.params).items()},
                                   "budget_steps": str(row.budget_steps)}
        history = client.get_metric_history(run.info.run_id, row.primary_metric)
        evaluations = curves[curves.trial_id == row.trial_id].sort_values("step")
        assert len(history) == len(evaluations) >= 1, row.trial_id
        assert [m.step for m in sorted(history, key=lambda m: m.step)] == list(evaluations.step)
        assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx(list(evaluations.metric))
        assert run.info.status == ("FINISHED" if row.status == "completed" else "KILLED")

    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"sweep.json", sweep["report"].name} <= artifacts
    local = client.download_artifacts(parent.info.run_id, sweep["report"].name)
    assert open(local).read() == sweep["report"].read_text()


def test_a_tracking_server_that_is_down_costs_warnings_not_rows(tmp_path):
    """Trials handed to the callback as Tune would, with tracking pointed at a port nothing listens on: every trial
    is in Parquet, the failure is a warning, and tracking turns itself off instead of retrying each trial."""
    from raysweep import results
    from raysweep.sweep import ResultsCallback
    from raysweep.sweep.tracking import tracker_for

    cfg = validate(tiny_sweep(tracking={"mlflow": {"tracking_uri": f"http://127.0.0.1:{free_port()}"}}))
    tracker = tracker_for(cfg, "dead")
    callback = ResultsCallback(tmp_path / "results", tmp_path / "overlays", sweep_id="dead", stage="tune", planned=3,
                               versions={"torch": "x"}, progress=False, tracker=tracker)
    group = cfg.groups()[0]
    ids = ["a", "b", "c"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        callback.on_step_begin(0, [])
        for k, trial_id in enumerate(ids):
            config = compose_trial(cfg, group, {}, seed=0, stage="tune", proposal="default")
            trial = SimpleNamespace(trial_id=trial_id, status="TERMINATED", config=config, path=None, storage=None,
                                    last_result={"status": "completed", "step": 4, "score": 0.5 + k / 10,
                                                 "dice": 0.5 + k / 10, "primary_metric": "dice",
                                                 "training_iteration": 2})
            for it in (1, 2):
                callback.on_trial_result(0, [trial], trial, {**trial.last_result, "training_iteration": it,
                                                             "step": 2 * it})
            callback.on_trial_complete(0, [trial], trial)
    tables = results.read_results(tmp_path / "results")
    assert sorted(tables["trials"].trial_id) == ids and len(tables["curves"]) == 6
    messages = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
    assert len(messages) == 1 and "tracking is off for the rest of this stage" in messages[0], messages
    assert tracker.off is not None
