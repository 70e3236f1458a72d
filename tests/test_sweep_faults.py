"""Faults a long sweep must survive (issue 7): a killed driver (mid-Parquet-write and mid-confirmation), a second
driver on the same folder, a read-only or full disk, and trials that raise, diverge or run out of memory.

The kill tests run `raysweep run` in subprocesses (the driver must be killable); the Ray processes a killed driver
started are found as its descendants and killed by pid. The disk tests mount small tmpfs filesystems (real EROFS and
ENOSPC) where the test may mount (root with CAP_SYS_ADMIN, as in CI); elsewhere they simulate the error, with the
same assertions. The worker-node-loss test is in tests/test_sweep_multinode.py (it needs its own simulated cluster).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sweep_helpers import kill_tree, sweep_env, tiny_sweep

# 2 losses x 3 tuning trials, then 3 confirmation seeds each: long enough to kill the driver inside either stage.
KILLED = tiny_sweep(name="killed", confirmation={"seeds": 3},
                    tuning={"trials_per_group": 3, "seed": 0, "grace_period": 1, "reduction_factor": 2},
                    trial={"train": {"steps": 6, "batch_size": 2}, "eval": {"every": 2, "overlays": 0}})

# The driver, with Parquet writes made to die halfway: at the K-th `trials` file it writes the temporary file, then
# SIGKILLs itself before the rename, exactly where a power cut would hurt most.
KILL_MID_WRITE = textwrap.dedent('''
    import os, signal, sys
    from pathlib import Path

    import raysweep.results as results

    K = int(os.environ["KILL_AT_TRIALS_WRITE"])
    atomic_write, seen = results.store._atomic_write, [0]

    def dying_write(path, write):
        if Path(path).parent.name == "trials":
            seen[0] += 1
            if seen[0] == K:
                def write_then_die(tmp):
                    write(tmp)
                    os.kill(os.getpid(), signal.SIGKILL)
                return atomic_write(path, write_then_die)
        return atomic_write(path, write)

    results.store._atomic_write = dying_write
    from raysweep.cli import main
    sys.exit(main(sys.argv[1:]))
''')


def run_cmd(config: Path, out: Path) -> list[str]:
    # --address local: a private Ray instance even if a `ray start` cluster runs on this machine.
    return ["run", "--config", str(config), "--out", str(out), "--address", "local"]


def digest(folder: Path) -> dict[str, str]:
    """relative path -> sha1 of every file under ``folder``."""
    return {str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def parts(results: Path, table: str, pattern: str = "part-*.parquet") -> list[Path]:
    return sorted((results / table).glob(pattern))


def trial_ids(results: Path, table: str = "trials") -> set[str]:
    return {p.name[len("part-"):-len(".parquet")] for p in parts(results, table)}


def confirm_rows(results: Path) -> int:
    from raysweep.results import stage_trial_ids

    try:
        return len(stage_trial_ids(results, "confirm"))
    except OSError:  # a file replaced while being listed
        return 0


def assert_complete_and_exactly_once(out: Path, cfg: dict) -> None:
    """Every planned trial once, every Parquet file readable, no leftovers, searchers with their full history."""
    import pyarrow.parquet as pq

    from raysweep.results import read_results, read_sweep_meta

    results = out / "results"
    for table in ("trials", "curves", "cases"):
        for part in parts(results, table):
            pq.read_table(part)  # each file readable on its own
        assert not parts(results, table, ".part-*.tmp"), f"temporary files left in {table}/"
    meta = read_sweep_meta(results)
    tables = read_results(results)
    trials = tables["trials"]
    assert trials.trial_id.is_unique and len(parts(results, "trials")) == len(trials)
    tune, confirm = trials[trials.stage == "tune"], trials[trials.stage == "confirm"]
    assert (len(tune), len(confirm)) == (meta["planned"]["tune"], meta["planned"]["confirm"]), trials[
        ["stage", "loss", "trial_id"]]
    quota, seeds = cfg["tuning"]["trials_per_group"], cfg["confirmation"]["seeds"]
    assert set(tune.groupby("loss").size()) == {quota} and set(confirm.groupby("loss").size()) == {seeds}
    assert set(tune.groupby("loss").is_default.sum()) == {1}  # each group's defaults exactly once
    assert set(trials.status) <= {"completed", "stopped"}
    curves = tables["curves"]
    assert not curves.duplicated(["trial_id", "training_iteration"]).any()
    assert set(curves.trial_id) == set(trials.trial_id)
    for table in ("curves", "cases"):  # no file of a trial without a trials row
        assert trial_ids(results, table) <= set(trials.trial_id)
    assert set(tables["cases"].trial_id) == set(trials.trial_id)  # tune: selection cases; confirm: ranking
    # The searchers kept their history across the kills: the final searcher knows exactly the tune rows, and each
    # study holds its quota of finished trials (not quota + the trials of the killed sessions).
    exp = out / "ray" / f"{cfg['name']}-tune"
    searcher = pickle.loads(sorted(exp.glob("searcher-state-*.pkl"))[-1].read_bytes())
    assert set(searcher["owner"]) == set(tune.trial_id)
    assert set(searcher["issued"].values()) == {quota}
    from raysweep.sweep.studies import current_trials

    for key, sub in searcher["subs"].items():
        study = current_trials(sub._ot_study)  # without the trials a restore superseded (asked after a snapshot)
        assert len(study) == quota and all(t.state.is_finished() for t in study), (key, sub._ot_study.trials)
        _, arch, loss = key.split("/")[:3]
        ids = set(tune[(tune.arch == arch) & (tune.loss == loss)].trial_id)
        assert {t.user_attrs["trial_id"] for t in study} == ids, key
    # Finished stages keep no model checkpoints (they are never restored again; the default sweep wrote ~20 GB).
    assert not list((out / "ray").glob("*/*/checkpoint_*"))


# ---------------------------------------------------------------------------------------------------- kills


def test_driver_killed_mid_write_and_mid_confirmation_resumes_exactly_once(tmp_path):
    import yaml

    config = tmp_path / "killed.yaml"
    config.write_text(yaml.safe_dump(KILLED))
    out, script = tmp_path / "out", tmp_path / "kill_mid_write.py"
    script.write_text(KILL_MID_WRITE)
    results = out / "results"
    logs = []

    # 1. The driver dies while writing the third trial's Parquet rows (its curves file is written, its trials file
    #    only as a temporary file).
    log = tmp_path / "run1.log"
    with log.open("w") as f:
        first = subprocess.Popen([sys.executable, str(script), *run_cmd(config, out)], stdout=f,
                                 stderr=subprocess.STDOUT, env=sweep_env(KILL_AT_TRIALS_WRITE="3"), cwd=tmp_path)
        try:
            first.wait(timeout=300)
        finally:
            kill_tree(first)
    logs.append(log.read_text())
    assert first.returncode == -signal.SIGKILL, logs[-1][-3000:]
    assert len(trial_ids(results)) == 2, logs[-1][-3000:]
    assert parts(results, "trials", ".part-*.tmp"), "the kill did not happen mid-write"
    assert trial_ids(results, "curves") - trial_ids(results), "no curves file without its trials file"
    from raysweep.results import read_results

    assert len(read_results(results)["trials"]) == 2  # readers skip the half-written trial

    # 2. Resumed, then killed again once the confirmation stage has written its first trial.
    log = tmp_path / "run2.log"
    with log.open("w") as f:
        second = subprocess.Popen([sys.executable, "-m", "raysweep.cli", *run_cmd(config, out)], stdout=f,
                                  stderr=subprocess.STDOUT, env=sweep_env(), cwd=tmp_path)
        try:
            deadline = time.time() + 300
            while time.time() < deadline and second.poll() is None and confirm_rows(results) < 1:
                time.sleep(0.1)
        finally:
            kill_tree(second)
    logs.append(log.read_text())
    state = json.loads((out / "state.json").read_text())
    n_confirm = confirm_rows(results)
    assert state.get("tune_done") and not state.get("confirm_done"), logs[-1][-3000:]
    assert 1 <= n_confirm < 6, (n_confirm, logs[-1][-3000:])
    assert not parts(results, "trials", ".part-*.tmp")  # the resumed driver cleaned up run 1's leftovers

    # 3. The same command again completes the sweep.
    third = subprocess.run([sys.executable, "-m", "raysweep.cli", *run_cmd(config, out)], capture_output=True,
                           text=True, env=sweep_env(), cwd=tmp_path, timeout=300)
    logs.append(third.stdout + third.stderr)
    assert third.returncode == 0, logs[-1][-4000:]
    assert all("Restarting experiment" not in text for text in logs)  # Tune's fallback when a restore fails
    assert_complete_and_exactly_once(out, KILLED)
    assert json.loads((out / "state.json").read_text())["confirm_done"]


# ---------------------------------------------------------------------------------------------------- the lock


def test_second_run_on_the_same_output_refuses(tmp_path):
    import yaml

    from raysweep.sweep import OutputInUse, OutputLock

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_sweep()))
    out = tmp_path / "out"
    out.mkdir()
    (out / "state.json").write_text("{}")
    with OutputLock(out):
        proc = subprocess.run([sys.executable, "-m", "raysweep.cli", *run_cmd(config, out)], capture_output=True,
                              text=True, env=sweep_env(), timeout=120)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert f"is in use by another `raysweep run` (pid {os.getpid()} on " in proc.stderr
        assert "Traceback" not in proc.stderr
        with pytest.raises(OutputInUse, match="choose another --out"):
            OutputLock(out).__enter__()  # in-process too
    assert sorted(p.name for p in out.iterdir()) == [".lock", "state.json"]  # nothing started, nothing written
    assert (out / "state.json").read_text() == "{}"


def test_lock_of_a_killed_driver_is_released(tmp_path):
    from raysweep.sweep import OutputLock

    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f'''
        import sys, time
        from raysweep.sweep import OutputLock
        with OutputLock({str(tmp_path)!r}):
            print("locked", flush=True)
            time.sleep(600)
    ''')], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OSError, match=f"pid {holder.pid}"):
            OutputLock(tmp_path).__enter__()
    finally:
        holder.kill()
        holder.wait()
    with OutputLock(tmp_path) as lock:  # no stale lock after SIGKILL
        assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid() and lock.fd is not None


# ---------------------------------------------------------------------------------------------------- disks


@pytest.fixture
def tmpfs():
    """``mount(path, size_mib, ro=False)``: a real tmpfs, or ``None`` where this process may not mount."""
    mounted: list[Path] = []

    def mount(path: Path, size_mib: int, ro: bool = False) -> Path | None:
        path.mkdir(parents=True, exist_ok=True)
        opts = f"size={size_mib}m" + (",ro" if ro else "")
        try:
            rc = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
                                capture_output=True).returncode
        except OSError:
            return None
        if rc != 0:
            return None
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def previous_sweep(out: Path) -> None:
    """A folder as an earlier sweep leaves it: state.json, sweep.json and one trial's Parquet files."""
    from test_results import CASES, CURVES, TRIAL  # the results tests' valid rows

    from raysweep.results import write_sweep_meta, write_trial_rows

    out.mkdir(parents=True, exist_ok=True)
    write_trial_rows(out / "results", "t0", {**TRIAL, "trial_id": "t0"}, CURVES, CASES)
    write_sweep_meta(out / "results", {"sweep_id": "s1", "config": {"name": "tiny"}})
    (out / "state.json").write_text(json.dumps({"sweep_id": "s1"}))


def test_read_only_output_fails_before_any_work_and_changes_nothing(tmp_path, tmpfs, monkeypatch):
    import yaml

    from raysweep.config import validate
    from raysweep.sweep import ResultsWriteError, SweepRunner

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_sweep()))
    out = tmp_path / "out"
    real = tmpfs(out, 16)
    previous_sweep(out)
    before = digest(out)
    if real:
        subprocess.run(["mount", "-o", "remount,ro", str(out)], check=True)
        proc = subprocess.run([sys.executable, "-m", "raysweep.cli", *run_cmd(config, out)], capture_output=True,
                              text=True, env=sweep_env(), timeout=120)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert f"the output folder {out} is not writable (Read-only file system)" in proc.stderr
    else:  # simulated: every file opened for writing in `out` fails as on a read-only filesystem
        import builtins

        real_open = builtins.open

        def read_only_open(file, mode="r", *args, **kwargs):
            if str(file).startswith(str(out)) and any(c in mode for c in "wax+"):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(file))
            return real_open(file, mode, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", read_only_open)
        with pytest.raises(ResultsWriteError, match="is not writable \\(Read-only file system\\)"):
            SweepRunner(validate(tiny_sweep()), out, progress=False).run()
    assert digest(out) == before


def test_full_disk_fails_before_any_work(tmp_path, tmpfs, monkeypatch):
    import shutil

    import yaml

    from raysweep.config import validate
    from raysweep.sweep import ResultsWriteError, SweepRunner

    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_sweep()))
    out = tmp_path / "out"
    if tmpfs(out, 64):  # a real 64 MiB filesystem: less than the 256 MiB a sweep asks for
        previous_sweep(out)
        before = digest(out)
        proc = subprocess.run([sys.executable, "-m", "raysweep.cli", *run_cmd(config, out)], capture_output=True,
                              text=True, env=sweep_env(), timeout=120)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
        assert "MiB free under" in proc.stderr and "needs at least 256 MiB" in proc.stderr
    else:
        previous_sweep(out)
        before = digest(out)
        usage = shutil.disk_usage(out)
        monkeypatch.setattr(shutil, "disk_usage", lambda p: usage._replace(free=10 * 2**20))
        with pytest.raises(ResultsWriteError, match="only 10 MiB free under .* needs at least 256 MiB"):
            SweepRunner(validate(tiny_sweep()), out, progress=False).run()
    assert digest(out) == before


def test_disk_full_mid_sweep_stops_cleanly_and_resumes(ray_session, tmp_path, tmpfs, monkeypatch):
    """The disk fills up after two trials: the sweep stops with a clear error, the two trials' files are intact, and
    the same command, once space is freed, completes with every trial exactly once (the trial whose write failed
    included)."""
    import raysweep.results as results
    from raysweep.config import validate
    from raysweep.sweep import ResultsWriteError, SweepRunner

    cfg_dict = tiny_sweep(name="diskfull")
    out = tmp_path / "out"
    real = tmpfs(out, 300)  # the results here; Tune's checkpoints (--storage) on the normal disk
    storage = str(tmp_path / "ray")
    filler = out / "filler"
    writes = {"n": 0, "full": False}
    write_trial_rows, write_table = results.write_trial_rows, results.store.pq.write_table

    def fill_after_two(*args, **kwargs):
        written = write_trial_rows(*args, **kwargs)
        writes["n"] += 1
        if writes["n"] == 2:  # the disk fills up
            writes["full"] = True
            if real:
                with open(filler, "wb") as f:
                    free = os.statvfs(out).f_bavail * os.statvfs(out).f_frsize
                    os.posix_fallocate(f.fileno(), 0, free)
        return written

    def write_table_on_full_disk(table, where, **kwargs):
        if writes["full"] and not real:  # simulated ENOSPC where no tmpfs can be mounted
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(where))
        return write_table(table, where, **kwargs)

    monkeypatch.setattr(results, "write_trial_rows", fill_after_two)
    monkeypatch.setattr(results.store.pq, "write_table", write_table_on_full_disk)
    cfg = validate(cfg_dict)
    with pytest.raises(ResultsWriteError, match="could not write the results of trial .*No space left on device.*"
                                                "run the same command again to resume"):
        SweepRunner(cfg, out, progress=False, storage=storage).run()
    kept = {p: h for p, h in digest(out / "results").items() if p.startswith(("trials", "curves", "cases"))}
    assert len([p for p in kept if p.startswith("trials/")]) == 2  # the two trials written before the disk filled
    assert not list((out / "results").rglob(".part-*.tmp"))

    # Space freed: the same command resumes and completes; the two early trials' files were never rewritten.
    filler.unlink(missing_ok=True)
    writes["full"] = False
    monkeypatch.setattr(results, "write_trial_rows", write_trial_rows)
    state = SweepRunner(cfg, out, progress=False, storage=storage).run()
    assert state["confirm_done"]
    after = digest(out / "results")
    assert all(after[p] == h for p, h in kept.items())
    frames = results.read_results(out / "results")
    trials = frames["trials"]
    meta = results.read_sweep_meta(out / "results")
    assert trials.trial_id.is_unique
    assert (trials.stage == "tune").sum() == meta["planned"]["tune"]
    assert (trials.stage == "confirm").sum() == meta["planned"]["confirm"]
    assert set(frames["curves"].trial_id) == set(trials.trial_id)


# ---------------------------------------------------------------------------------------------------- failing trials


def faulty_trainable(config: dict) -> None:
    """The sweep's trainable, with a fault planted per loss: tversky raises, focal runs out of memory, dice
    diverges (NaN loss); ce is left alone. Pickled by value into the Ray workers."""
    import torch

    from raysweep.losses import LOSSES
    from raysweep.sweep import sweep_trainable

    loss = config["tags"]["loss"]
    if loss == "tversky":
        raise RuntimeError("injected failure in the tversky trial")
    if loss == "focal":
        def oom(self, logits, t, **extra):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB (injected)")
        LOSSES["focal"].cls.compute = oom
    if loss == "dice":
        def nan(self, logits, t, **extra):
            return logits.sum() * float("nan")
        LOSSES["dice"].cls.compute = nan
    sweep_trainable(config)


def test_failing_trials_are_recorded_and_the_sweep_goes_on(ray_session, tmp_path):
    from raysweep.config import validate
    from raysweep.report import build_report
    from raysweep.results import read_results
    from raysweep.sweep import SweepRunner

    ray_session.cloudpickle.register_pickle_by_value(sys.modules[__name__])

    class FaultyRunner(SweepRunner):
        trainable = staticmethod(faulty_trainable)

    cfg = validate(tiny_sweep(name="faulty", losses=["tversky", "focal", "dice", "ce"],
                                 confirmation={"seeds": 1, "underpowered": "warn"}))
    out = tmp_path / "out"
    state = FaultyRunner(cfg, out, progress=False).run()
    assert state["confirm_done"]
    trials = read_results(out / "results")["trials"]
    assert trials.trial_id.is_unique and len(trials) == 3 * 2 + 1 + 4  # ce has nothing to tune: one trial
    status = trials.groupby("loss").status.agg(lambda s: sorted(set(s))).to_dict()
    assert status == {"tversky": ["error"], "focal": ["oom"], "dice": ["diverged"],
                      "ce": sorted(set(trials[trials.loss == "ce"].status))}
    assert set(status["ce"]) <= {"completed", "stopped"}
    errors = trials.set_index("loss").error
    # the exception line first, then the attempts (Tune retried it twice) and where the tracebacks are
    assert errors.loc["tversky"].str.match(r"RuntimeError: injected failure in the tversky trial \(3 attempts; "
                                           r"tracebacks in .*error\.txt\)$").all(), errors.loc["tversky"].tolist()
    assert errors.loc["focal"].str.contains("OutOfMemoryError: CUDA out of memory").all()
    assert errors.loc["dice"].str.match(r"diverged at step \d+").all()
    assert trials[trials.loss == "dice"].final_metric.eq(0.0).all()  # diverged: the worst score, ranked last
    assert trials[trials.loss == "focal"].final_metric.isna().all()  # OOM: no score, not ranked

    html = build_report(out / "results").read_text()
    n_failed = trials.status.isin(["error", "oom", "diverged"]).sum()
    assert n_failed == 9  # 3 losses x (2 tuning trials + 1 confirmation seed)
    assert f"{n_failed} failed trials (diverged, out of memory, errors)" in html
    for text in ("injected failure in the tversky trial", "CUDA out of memory", "diverged at step"):
        assert text in html, text
