"""Resume after the driver is killed: `raysweep run` is SIGKILLed mid-tuning, run again on the same --out, and the
sweep completes with every planned trial exactly once and the searchers' history kept (issue 5, acceptance).

The sweep runs in subprocesses (the driver must be killable); the Ray processes the killed driver started are found
as its descendants and killed by pid, so the test never touches another Ray instance on the machine.
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
import time
from pathlib import Path

from sweep_helpers import kill_tree, sweep_env, tiny_sweep

TINY = tiny_sweep(name="resume", tuning={"trials_per_group": 3, "seed": 0, "grace_period": 1, "reduction_factor": 2},
                  trial={"train": {"steps": 6, "batch_size": 2}, "eval": {"every": 2, "overlays": 0}})


def run_cmd(config: Path, out: Path) -> list[str]:
    # --address local: a private Ray instance even if a `ray start` cluster runs on this machine.
    return [sys.executable, "-m", "raysweep.cli", "run", "--config", str(config), "--out", str(out),
            "--address", "local"]


def parquet_parts(results: Path, table: str) -> list[Path]:
    return sorted((results / table).glob("part-*.parquet"))


def snapshot_trials(exp: Path) -> set[str] | None:
    """Trial ids the experiment's last snapshot knows (its searcher's ``owner`` map), or None before the first."""
    files = sorted(exp.glob("searcher-state-*.pkl"))  # one per driver session, named by its start time
    if not files:
        return None
    try:
        return set(pickle.loads(files[-1].read_bytes())["owner"])
    except (OSError, EOFError, pickle.UnpicklingError):
        return None


def test_killed_sweep_resumes_without_losing_or_duplicating_trials(tmp_path):
    import pyarrow.parquet as pq
    import yaml

    from raysweep.results import read_results, read_sweep_meta

    config = tmp_path / "resume.yaml"
    config.write_text(yaml.safe_dump(TINY))
    out = tmp_path / "out"
    results = out / "results"
    exp = out / "ray" / f"{TINY['name']}-tune"
    planned_tune = 6
    log1 = (tmp_path / "first.log").open("w")
    t0 = time.time()
    # Snapshots every 30 s rather than Tune's ~10 s: trials ending between two snapshots become likely.
    first = subprocess.Popen(run_cmd(config, out), stdout=log1, stderr=subprocess.STDOUT,
                             env=sweep_env(TUNE_GLOBAL_CHECKPOINT_S="30"), cwd=tmp_path)
    # Kill mid-tuning, at best just after a trial ended that Tune's last experiment snapshot (taken every ~10 s)
    # does not know yet: the hardest case (its row exists, the restored searcher never heard of it).
    before: set[str] = set()
    snapshot: set[str] | None = None
    try:
        deadline = time.time() + 240
        while time.time() < deadline and first.poll() is None:
            ids = {p.name[len("part-"):-len(".parquet")] for p in parquet_parts(results, "trials")}
            if ids:
                snapshot = snapshot_trials(exp)
                if snapshot is not None and len(ids) >= 2 and (ids - snapshot or len(ids) >= planned_tune - 2):
                    before = ids
                    break
            time.sleep(0.1)
    finally:
        leftovers = kill_tree(first) if first.poll() is None else []
        log1.close()
    first_log = (tmp_path / "first.log").read_text()
    assert before, f"the first run never reached mid-tuning (rc {first.returncode}):\n{first_log[-3000:]}"
    t_kill = time.time() - t0
    meta = read_sweep_meta(results)
    planned = meta["planned"]
    assert planned == {"tune": planned_tune, "confirm": 2}
    state = json.loads((out / "state.json").read_text())
    assert not state.get("tune_done"), "killed after tuning: the test did not interrupt the tune stage"
    snapshot = snapshot_trials(exp)  # what the restored experiment will know
    assert 2 <= len(before) < planned["tune"] and snapshot
    orphans = before - snapshot  # ended after the last snapshot

    # Run the same command again on the same folder: it resumes (no --fresh) and completes.
    second = subprocess.run(run_cmd(config, out), capture_output=True, text=True, env=sweep_env(), cwd=tmp_path,
                            timeout=300)
    second_log = second.stdout + second.stderr
    assert second.returncode == 0, second_log[-4000:]
    assert "Restarting experiment" not in second_log, second_log[-4000:]  # Tune's fallback when restore fails
    t_all = time.time() - t0

    # Every Parquet file is readable on its own, and the tables hold every planned trial exactly once.
    for table in ("trials", "curves", "cases"):
        for part in parquet_parts(results, table):
            pq.read_table(part)
    tables = read_results(results)
    trials = tables["trials"]
    assert trials.trial_id.is_unique
    assert len(parquet_parts(results, "trials")) == len(trials)
    tune, confirm = trials[trials.stage == "tune"], trials[trials.stage == "confirm"]
    assert (len(tune), len(confirm)) == (planned["tune"], planned["confirm"]), (len(tune), len(confirm), planned)
    # Equal budgets survive the restart: each group has exactly its quota of tuning trials, its defaults once.
    per_group = tune.groupby(["arch", "loss"]).size().to_dict()
    assert per_group == {("cnn", "tversky"): 3, ("cnn", "focal"): 3}, per_group
    assert tune.groupby("loss").is_default.sum().to_dict() == {"tversky": 1, "focal": 1}
    assert set(trials.sweep_id) == {meta["sweep_id"]}
    curves = tables["curves"]
    assert not curves.duplicated(["trial_id", "training_iteration"]).any()
    assert set(curves.trial_id) == set(trials.trial_id)
    assert set(tables["cases"].trial_id) == set(trials.trial_id)  # tune: selection cases; confirm: ranking cases
    assert not [p for p in (results / "curves").glob("part-*.parquet") if p.stem[5:] not in set(trials.trial_id)]

    # The searchers kept their history: every trial of the killed run's last snapshot is in the final tables under
    # its own id (finished ones kept, running ones resumed), and the final searcher knows exactly the tune rows:
    # each study holds its quota of finished trials, not quota + the trials done before the kill.
    final_ids = set(tune.trial_id)
    assert snapshot <= final_ids, (snapshot, final_ids)
    assert not orphans & final_ids  # rows of trials the restored experiment did not know were replaced
    searcher = pickle.loads(sorted(exp.glob("searcher-state-*.pkl"))[-1].read_bytes())
    assert set(searcher["owner"]) == final_ids
    assert searcher["issued"] == {"synthetic/cnn/tversky": 3, "synthetic/cnn/focal": 3}
    from raysweep.sweep.studies import current_trials

    for key, sub in searcher["subs"].items():
        # The stored study also keeps the trials asked after the snapshot: settled as FAIL and marked superseded, or,
        # when they had already finished (an Optuna trial cannot change then), listed in the study's
        # superseded_trials. Without those, what the study holds is exactly the quota, every point of it finished.
        study_trials = sub._ot_study.trials
        kept = current_trials(sub._ot_study)
        assert len(kept) == 3 and all(t.state.is_finished() for t in kept), (key, study_trials)
        assert all(t.state.name == "FAIL" for t in study_trials if "superseded" in t.user_attrs), key
        _, arch, loss = key.split("/")[:3]
        ids = set(tune[(tune.arch == arch) & (tune.loss == loss)].trial_id)
        assert {t.user_attrs["trial_id"] for t in kept} == ids, key
    # The fixed points (defaults, the categorical branch) are each tried once in the final tables, kill or not.
    for loss, branch in (("tversky", "per_image"),):
        rows = tune[tune.loss == loss]
        points = [json.loads(p) if isinstance(p, str) else p for p in rows.params]
        assert sorted(str(p.get(branch)) for p in points if p.get("alpha") == 0.3 and p.get("beta") == 0.7
                      ) == ["False", "True"], points

    print(f"\nkilled at {t_kill:.0f} s with {len(before)} tune rows ({len(orphans)} unknown to the last snapshot, "
          f"{len(snapshot)} trials in it; {len(leftovers)} Ray processes killed after the driver); resumed and "
          f"completed at {t_all:.0f} s")


def test_an_interrupted_sweep_is_not_marked_done_and_resumes(tmp_path):
    """Ctrl+C (SIGINT to the driver) mid-tuning: Tune saves the experiment and returns normally; the run must then
    stop with exit code 130 and a resume hint, mark no stage done, keep the checkpoints, and the same command must
    complete the sweep with every planned trial once."""
    import signal

    import yaml

    from raysweep.results import read_results

    config = tmp_path / "interrupt.yaml"
    config.write_text(yaml.safe_dump({**TINY, "name": "interrupt"}))
    out = tmp_path / "out"
    log = (tmp_path / "first.log").open("w")
    first = subprocess.Popen(run_cmd(config, out), stdout=log, stderr=subprocess.STDOUT, env=sweep_env(), cwd=tmp_path)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and first.poll() is None and not parquet_parts(out / "results", "trials"):
            time.sleep(0.1)
        assert first.poll() is None, "the sweep ended before the first trial row"
        first.send_signal(signal.SIGINT)
        first.wait(timeout=120)
    finally:
        if first.poll() is None:
            kill_tree(first)
        log.close()
    text = (tmp_path / "first.log").read_text()
    assert first.returncode == 130, text[-3000:]
    assert "interrupted" in text and "run the same command again to resume" in text, text[-3000:]
    state = json.loads((out / "state.json").read_text())
    assert not state.get("tune_done") and not state.get("confirm_done")
    assert len(parquet_parts(out / "results", "trials")) < 6

    second = subprocess.run(run_cmd(config, out), capture_output=True, text=True, env=sweep_env(), cwd=tmp_path,
                            timeout=300)
    assert second.returncode == 0, (second.stdout + second.stderr)[-4000:]
    trials = read_results(out / "results")["trials"]
    assert trials.trial_id.is_unique and (trials.stage == "tune").sum() == 6 and (trials.stage == "confirm").sum() == 2
