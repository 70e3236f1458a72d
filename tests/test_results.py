"""raysweep.results: the Parquet schema, its validation, atomic and idempotent writes, readers, sweep.json."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from datetime import datetime, timezone

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from raysweep import results

TRIAL = dict(sweep_id="s1", stage="confirm", dataset="synthetic", arch="cnn", loss="dice", loss_title="Dice",
             family="region", in_survey=True, params={"companions.ce.weight": 0.5}, is_default=False, seed=1,
             status="completed", budget_steps=100, steps_done=100, primary_metric="dice", final_metric=0.8,
             best_metric=0.81, dice=0.8, hd95=float("nan"), per_class={"dice/a": 0.7, "dice/b": 0.9},
             started_at="2026-01-01T12:00:00Z", ended_at=datetime(2026, 1, 1, 12, 1, tzinfo=timezone.utc),
             versions={"raysweep": "0.1.0"})
CURVES = [dict(training_iteration=i, step=50 * i, metric=0.4 * i, loss_value=1.0 / i) for i in (1, 2)]
CASES = [dict(case=f"c{i}", class_id=1, class_name="a", dice=0.5 + i / 10, gt_fraction=0.1) for i in range(3)]


def files(d):
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())


def test_schema_markdown_documents_every_column():
    md = results.schema_markdown()
    assert f"Schema version {results.SCHEMA_VERSION}" in md
    for name, schema in results.SCHEMAS.items():
        assert f"**`{name}`**" in md
        for f in schema:
            assert f"| `{f.name}` |" in md, f.name
            assert f.metadata[b"doc"], f"{name}.{f.name} has no description"
    for key in results.SWEEP_KEYS:
        assert f"| `{key}` |" in md
    # The three tables share the identity columns, so any of them groups without a join.
    for table in ("curves", "cases"):
        assert {"sweep_id", "trial_id", "stage", "dataset", "arch", "loss", "seed"} <= set(results.SCHEMAS[table].names)


def test_round_trip(tmp_path):
    written = results.write_trial_rows(tmp_path, "t-1", TRIAL, CURVES, CASES)
    assert written["trials"] == tmp_path / "trials" / "part-t-1.parquet"
    frames = results.read_results(tmp_path)
    t = frames["trials"]
    assert list(t.columns) == results.TRIALS.names and len(t) == 1
    row = t.iloc[0]
    assert row["trial_id"] == "t-1" and row["seed"] == 1 and row["final_metric"] == 0.8
    assert json.loads(row["params"]) == {"companions.ce.weight": 0.5}
    assert math.isnan(row["hd95"])  # NaN is stored as null
    assert row["started_at"] == datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
    assert str(row["ended_at"].tz) == "UTC"
    c = frames["curves"]
    assert list(c["step"]) == [50, 100]
    # Identity columns come from the trial row.
    assert set(c["trial_id"]) == {"t-1"} and set(c["loss"]) == {"dice"} and set(c["seed"]) == {1}
    assert len(frames["cases"]) == 3 and set(frames["cases"]["stage"]) == {"confirm"}
    meta = pq.read_schema(written["trials"]).metadata
    assert meta[b"raysweep.schema_version"] == str(results.SCHEMA_VERSION).encode()


def test_compact_copy_reads_back_as_the_original(tmp_path):
    """write_compact_copy: one file per table and sweep.json; read_results gives the same frames row for row, the
    files keep the schema version, and a curves file without its trials row (a killed writer) is still dropped."""
    import pandas as pd

    src = tmp_path / "src"
    for i in range(3):
        results.write_trial_rows(src, f"t-{i}", {**TRIAL, "seed": i, "final_metric": 0.1 * i}, CURVES, CASES)
    results.write_trial_rows(src, "t-9", TRIAL, CURVES, CASES)
    (src / "trials" / "part-t-9.parquet").unlink()  # its curves and cases outlive it
    results.write_sweep_meta(src, {"sweep_id": "s1"})
    dest = results.write_compact_copy(tmp_path / "src", tmp_path / "kept")
    assert files(dest) == ["cases/part-compact.parquet", "curves/part-compact.parquet", "sweep.json",
                           "trials/part-compact.parquet"]
    before, after = results.read_results(src), results.read_results(dest)
    for table in results.TABLES:
        key = ["trial_id"] + (["step"] if table == "curves" else ["case"] if table == "cases" else [])
        pd.testing.assert_frame_equal(before[table].sort_values(key).reset_index(drop=True),
                                      after[table].sort_values(key).reset_index(drop=True))
    assert len(after["trials"]) == 3 and set(after["curves"]["trial_id"]) == {"t-0", "t-1", "t-2"}
    meta = pq.read_schema(dest / "trials" / "part-compact.parquet").metadata
    assert meta[b"raysweep.schema_version"] == str(results.SCHEMA_VERSION).encode()
    assert results.read_sweep_meta(dest)["sweep_id"] == "s1"


def test_rewrite_is_idempotent_and_replaces(tmp_path):
    results.write_trial_rows(tmp_path, "t-1", TRIAL, CURVES, CASES)
    results.write_trial_rows(tmp_path, "t-1", TRIAL, CURVES, CASES)
    results.write_trial_rows(tmp_path, "t-2", {**TRIAL, "seed": 2}, CURVES, CASES)
    frames = results.read_results(tmp_path)
    assert len(frames["trials"]) == 2 and len(frames["curves"]) == 4 and len(frames["cases"]) == 6
    # The latest write of a trial is the truth: fewer curves, no cases -> the old cases file is gone.
    results.write_trial_rows(tmp_path, "t-1", {**TRIAL, "status": "diverged"}, CURVES[:1], [])
    frames = results.read_results(tmp_path)
    assert len(frames["curves"]) == 3 and len(frames["cases"]) == 3
    assert set(frames["cases"]["trial_id"]) == {"t-2"}
    assert dict(zip(frames["trials"]["trial_id"], frames["trials"]["status"])) == {"t-1": "diverged",
                                                                                    "t-2": "completed"}
    assert not [f for f in files(tmp_path) if ".tmp" in f]


def test_failed_write_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    results.write_trial_rows(tmp_path, "t-1", TRIAL, CURVES, CASES)
    before = (tmp_path / "trials" / "part-t-1.parquet").read_bytes()

    def crash(table, where, **kw):  # half a file, then the process "dies"
        with open(where, "wb") as f:
            f.write(b"PAR1 partial")
        raise OSError("disk full")

    monkeypatch.setattr(results.store.pq, "write_table", crash)
    with pytest.raises(OSError, match="disk full"):
        results.write_trial_rows(tmp_path, "t-1", {**TRIAL, "final_metric": 0.1}, CURVES, CASES)
    monkeypatch.undo()
    assert (tmp_path / "trials" / "part-t-1.parquet").read_bytes() == before
    assert not [f for f in files(tmp_path) if ".tmp" in f]
    assert results.read_results(tmp_path)["trials"]["final_metric"].tolist() == [0.8]


def test_invalid_rows_write_nothing(tmp_path):
    with pytest.raises(ValueError, match=r"cases row 1, column 'dice': expects a number"):
        results.write_trial_rows(tmp_path, "t-1", TRIAL, CURVES, [CASES[0], {**CASES[1], "dice": "high"}])
    assert files(tmp_path) == []  # all rows are validated before anything is written


@pytest.mark.parametrize("change, message", [
    ({"seed": "one"}, r"column 'seed': expects an integer, got 'one'"),
    ({"seed": True}, r"column 'seed': expects an integer"),
    ({"status": "weird"}, r"column 'status': must be one of completed, diverged, oom, error, stopped"),
    ({"stage": "search"}, r"column 'stage': must be one of tune, confirm"),
    ({"family": "other"}, r"column 'family': must be one of"),
    ({"loss": None}, r"column 'loss': required, got null"),
    ({"params": "{not json"}, r"column 'params': not valid JSON text"),
    ({"in_survey": "yes"}, r"column 'in_survey': expects true or false"),
    ({"started_at": "yesterday"}, r"column 'started_at': expects a timestamp"),
    ({"final_metric": "0.5"}, r"column 'final_metric': expects a number"),
    ({"learning_rate": 0.1}, r"unknown column\(s\) 'learning_rate'"),
])
def test_validation_names_the_column(tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        results.write_trial_rows(tmp_path, "t-1", {**TRIAL, **change})


def test_missing_required_column_and_identity_checks(tmp_path):
    row = dict(TRIAL)
    del row["budget_steps"]
    with pytest.raises(ValueError, match=r"trials row 0, column 'budget_steps': required"):
        results.write_trial_rows(tmp_path, "t-1", row)
    with pytest.raises(ValueError, match=r"differs from trial_id 't-1'"):
        results.write_trial_rows(tmp_path, "t-1", {**TRIAL, "trial_id": "t-2"})
    with pytest.raises(ValueError, match=r"curves row 0, column 'loss': 'ce' differs from the trial's 'dice'"):
        results.write_trial_rows(tmp_path, "t-1", TRIAL, [{**CURVES[0], "loss": "ce"}])
    with pytest.raises(ValueError, match=r"curves row 0, column 'step': required"):
        results.write_trial_rows(tmp_path, "t-1", TRIAL, [{"training_iteration": 1}])
    with pytest.raises(ValueError, match="not usable as a file name"):
        results.write_trial_rows(tmp_path, "../escape", {**TRIAL, "trial_id": "../escape"})
    with pytest.raises(ValueError, match="exactly one trials row"):
        results.write_trial_rows(tmp_path, "t-1", [TRIAL, TRIAL])
    with pytest.raises(ValueError, match="cannot be stored as JSON"):
        results.write_trial_rows(tmp_path, "t-1", {**TRIAL, "params": {"x": object()}})
    assert files(tmp_path) == []


def test_reader_drops_orphans_and_handles_versions(tmp_path):
    assert {k: len(v) for k, v in results.read_results(tmp_path).items()} == {"trials": 0, "curves": 0, "cases": 0}
    assert list(results.read_results(tmp_path)["cases"].columns) == results.CASES.names
    results.write_trial_rows(tmp_path, "t-1", TRIAL, CURVES, CASES)
    # A writer killed after curves but before trials: its curves are not shown until the trial is rewritten.
    results.write_trial_rows(tmp_path, "t-2", {**TRIAL, "seed": 2}, CURVES)
    (tmp_path / "trials" / "part-t-2.parquet").unlink()
    frames = results.read_results(tmp_path)
    assert set(frames["curves"]["trial_id"]) == {"t-1"}
    # An older file without a newer column reads with nulls there.
    t = pq.read_table(tmp_path / "cases" / "part-t-1.parquet").drop_columns(["gt_fraction"])
    pq.write_table(t.replace_schema_metadata({b"raysweep.schema_version": b"0"}),
                   tmp_path / "cases" / "part-t-1.parquet")
    assert results.read_results(tmp_path)["cases"]["gt_fraction"].isna().all()
    # A newer file is refused with a clear message.
    t = pq.read_table(tmp_path / "trials" / "part-t-1.parquet")
    pq.write_table(t.replace_schema_metadata({b"raysweep.schema_version": b"99"}),
                   tmp_path / "trials" / "part-t-1.parquet")
    with pytest.raises(ValueError, match="schema version 99 is newer"):
        results.read_results(tmp_path)


def test_validate_rows_returns_a_typed_table():
    t = results.validate_rows("cases", [dict(sweep_id="s", trial_id="t", stage="confirm", dataset="d", arch="a",
                                             loss="l", seed=0, case="c", class_id=2, class_name="x", dice=1)])
    assert isinstance(t, pa.Table) and t.schema.field("dice").type == pa.float64()
    assert t.column("dice")[0].as_py() == 1.0
    with pytest.raises(ValueError, match="unknown table"):
        results.validate_rows("runs", [])


def test_sweep_meta(tmp_path):
    assert results.read_sweep_meta(tmp_path) == {}
    results.write_sweep_meta(tmp_path, {"sweep_id": "s1", "config": {"a": 1}, "started_at": datetime(
        2026, 1, 1, tzinfo=timezone.utc), "ended_at": None, "planned": {"tune": 10, "confirm": 3},
        "custom": [1, 2], "wall_s": float("nan")})
    meta = results.read_sweep_meta(tmp_path)
    assert meta["schema_version"] == results.SCHEMA_VERSION and meta["started_at"] == "2026-01-01T00:00:00+00:00"
    assert meta["custom"] == [1, 2] and meta["wall_s"] is None
    meta = results.update_sweep_meta(tmp_path, ended_at="2026-01-01T01:00:00+00:00", wall_s=3600.0)
    assert meta["sweep_id"] == "s1" and meta["wall_s"] == 3600.0
    with pytest.raises(ValueError, match="sweep.json key 'config': expects dict"):
        results.write_sweep_meta(tmp_path, {"config": "a: 1"})
    with pytest.raises(ValueError, match="sweep.json key 'planned'"):
        results.write_sweep_meta(tmp_path, {"planned": {"tuning": 3}})
    assert not [f for f in files(tmp_path) if ".tmp" in f]
    (tmp_path / "sweep.json").write_text("[1")
    with pytest.raises(ValueError, match="not valid JSON"):
        results.read_sweep_meta(tmp_path)


def _part_meta(arch, sweep_id, **changes):
    """sweep.json of one part of a sweep run one architecture at a time."""
    meta = {"sweep_id": sweep_id, "config": {"name": "s", "losses": ["dice"], "datasets": {"synthetic": {"o": 1}},
                                             "architectures": {arch: {"arch": arch}}},
            "started_at": f"2026-01-0{1 if arch == 'cnn' else 2}T00:00:00+00:00",
            "ended_at": f"2026-01-0{1 if arch == 'cnn' else 2}T01:00:00+00:00", "wall_s": 3600.0 if arch == "cnn"
            else 1800.0, "git_commit": "abc", "versions": {"torch": "2.4"}, "hardware": {"cpus": 2 if arch == "cnn"
                                                                                          else 16},
            "planned": {"tune": 4, "confirm": 2}, "groups": [{"arch": arch, "loss": "dice"}],
            "protocol": {"alpha": 0.05, "power": {f"synthetic/{arch}": {"declarable": True}},
                         "data_check": {"status": "passed", "seconds": 2.0 if arch == "cnn" else 3.0}},
            "spaces": {"dice": {"smooth": {"type": "float"}}}}
    for key, value in changes.items():
        meta[key] = value
    return meta


def test_merge_sweep_meta_takes_the_union_of_the_parts_cells():
    """Two parts of one sweep (one architecture each): the config has both cells, times and counts add up, the
    protocol is the union (data-check seconds summed), differing hardware is kept per part, the parts are listed."""
    a, b = _part_meta("cnn", "p1"), _part_meta("transformer", "p2")
    m = results.merge_sweep_meta([a, b], ["A", "B"])
    assert m["config"]["architectures"] == {"cnn": {"arch": "cnn"}, "transformer": {"arch": "transformer"}}
    assert json.loads(m["config_text"]) == m["config"] and m["config"]["losses"] == ["dice"]
    assert m["sweep_id"] == "p1+p2" and m["wall_s"] == 5400.0 and m["planned"] == {"tune": 8, "confirm": 4}
    assert m["started_at"] == a["started_at"] and m["ended_at"] == b["ended_at"] and m["git_commit"] == "abc"
    assert m["groups"] == a["groups"] + b["groups"] and m["versions"] == {"torch": "2.4"}
    assert m["hardware"] == {"part 1 (p1)": {"cpus": 2}, "part 2 (p2)": {"cpus": 16}}
    assert set(m["protocol"]["power"]) == {"synthetic/cnn", "synthetic/transformer"}
    assert m["protocol"]["data_check"] == {"status": "passed", "seconds": 5.0} and m["spaces"] == a["spaces"]
    assert [p["cells"] for p in m["parts"]] == [["synthetic/cnn"], ["synthetic/transformer"]]
    # An unfinished part leaves the merged sweep unfinished, and its time unknown.
    m = results.merge_sweep_meta([a, {**b, "ended_at": None, "wall_s": None}], ["A", "B"])
    assert m["ended_at"] is None and m["wall_s"] is None


@pytest.mark.parametrize("change, match", [
    ({"config": {"name": "s", "losses": ["ce"], "datasets": {"synthetic": {"o": 1}},
                 "architectures": {"transformer": {}}}}, "config.losses is"),
    ({"config": {"name": "s", "losses": ["dice"], "datasets": {"synthetic": {"o": 2}},
                 "architectures": {"transformer": {}}}}, "config.datasets.synthetic.o is 1 in A but 2 in B"),
    ({"config": {"name": "s", "losses": ["dice"], "datasets": {"synthetic": {"o": 1}},
                 "architectures": {"cnn": {"arch": "cnn"}}}}, "cell synthetic/cnn, replicate 0 is in two parts"),
    ({"config": {"name": "s", "losses": ["dice"], "seed": 1, "datasets": {"synthetic": {"o": 1}},
                 "architectures": {"transformer": {}}}}, "config keys \\['seed'\\]"),
    ({"protocol": {"alpha": 0.01}}, "protocol.alpha is 0.05 in A but 0.01 in B"),
    ({"config": None}, "B: its sweep.json has no config"),
])
def test_merge_sweep_meta_refuses_parts_of_different_sweeps(change, match):
    with pytest.raises(ValueError, match=match):
        results.merge_sweep_meta([_part_meta("cnn", "p1"), _part_meta("transformer", "p2", **change)], ["A", "B"])


def _replicate_part(arch, sweep_id, first, count):
    """sweep.json of a part that holds replicates ``first`` to ``first + count - 1`` of one architecture."""
    from raysweep.power import power_limit

    meta = _part_meta(arch, sweep_id)
    tuning = {"seed": 100, "replicates": count, **({"first_replicate": first} if first else {})}
    meta["config"] = {**meta["config"], "tuning": tuning}
    meta["protocol"] = {**meta["protocol"], "tuning": {"seed": 100, **tuning},
                        "power": {f"synthetic/{arch}": power_limit(32, 26, 0.05, first + count).to_dict()},
                        "confirmation": {"seeds": [101], "replicate_seeds": {str(r): {
                            "tune": 100 + 2 * r, "confirm": [101 + 2 * r]} for r in range(first, first + count)}}}
    meta["groups"] = [{"arch": arch, "loss": "dice", "replicate": r} for r in range(first, first + count)]
    return meta


def test_merge_sweep_meta_joins_parts_that_hold_more_replicates_of_the_same_cells():
    """raysweep run --replicates 3:5 beside a sweep of 3: merged, the config and protocol are those of a sweep of 5
    (its power limit recomputed for 5 replicates, every replicate's seeds listed), the parts name their replicates.
    A replicate in two parts, or cells left with different replicates, are refused, naming them."""
    from raysweep.power import power_limit

    parts = [_replicate_part("cnn", "p1", 0, 3), _replicate_part("transformer", "p2", 0, 3),
             _replicate_part("cnn", "p3", 3, 2), _replicate_part("transformer", "p4", 3, 2)]
    m = results.merge_sweep_meta(parts, ["A", "B", "C", "D"])
    assert m["config"]["tuning"] == {"seed": 100, "replicates": 5} and set(m["config"]["architectures"]) == {
        "cnn", "transformer"}
    assert m["protocol"]["tuning"] == {"seed": 100, "replicates": 5}
    assert m["protocol"]["power"]["synthetic/cnn"] == power_limit(32, 26, 0.05, 5).to_dict()
    assert power_limit(32, 26, 0.05, 5).replicate_sd_multiple < power_limit(32, 26, 0.05, 3).replicate_sd_multiple
    assert sorted(m["protocol"]["confirmation"]["replicate_seeds"], key=int) == ["0", "1", "2", "3", "4"]
    assert m["protocol"]["confirmation"]["replicate_seeds"]["4"] == {"tune": 108, "confirm": [109]}
    assert [p["replicates"] for p in m["parts"]] == [[0, 2], [0, 2], [3, 4], [3, 4]]
    assert sorted(g["replicate"] for g in m["groups"] if g["arch"] == "cnn") == [0, 1, 2, 3, 4]
    assert m["wall_s"] == 2 * 3600.0 + 2 * 1800.0 and m["planned"] == {"tune": 16, "confirm": 8}
    # Only the added replicates, of one cell: their own sweep of replicates 3 and 4.
    m = results.merge_sweep_meta([parts[2], _replicate_part("transformer", "p4", 3, 2)], ["C", "D"])
    assert m["config"]["tuning"] == {"seed": 100, "replicates": 2, "first_replicate": 3}
    with pytest.raises(ValueError, match="cell synthetic/cnn, replicate 2 is in two parts \\(A and C\\)"):
        results.merge_sweep_meta([parts[0], _replicate_part("cnn", "p3", 2, 3)], ["A", "C"])
    with pytest.raises(ValueError, match="cell synthetic/transformer lacks replicate\\(s\\) 3, 4 of the 0 to 4"):
        results.merge_sweep_meta(parts[:3], ["A", "B", "C"])
    with pytest.raises(ValueError, match="cell synthetic/cnn lacks replicate\\(s\\) 3 of the 0 to 4"):
        results.merge_sweep_meta([parts[0], _replicate_part("cnn", "p3", 4, 1)], ["A", "C"])
    other = _replicate_part("cnn", "p3", 3, 2)
    other["config"]["tuning"]["seed"] = 200  # another tuning seed is another study, not more of this one
    with pytest.raises(ValueError, match="config.tuning.seed is 100 in A but 200 in C"):
        results.merge_sweep_meta([parts[0], other], ["A", "C"])


def test_merge_results_concatenates_the_tables_and_refuses_before_writing(tmp_path):
    for arch, sweep_id in (("cnn", "p1"), ("transformer", "p2")):
        for i in range(2):
            results.write_trial_rows(tmp_path / arch, f"{arch}-{i}", {**TRIAL, "arch": arch, "sweep_id": sweep_id,
                                                                      "seed": i}, CURVES, CASES)
        results.write_sweep_meta(tmp_path / arch, _part_meta(arch, sweep_id))
    out = results.merge_results([tmp_path / "cnn", tmp_path / "transformer"], tmp_path / "merged")
    assert out == tmp_path / "merged" / "results"
    frames = results.read_results(out)
    assert sorted(frames["trials"].trial_id) == ["cnn-0", "cnn-1", "transformer-0", "transformer-1"]
    assert len(frames["curves"]) == 8 and len(frames["cases"]) == 12 and set(frames["trials"].arch) == {
        "cnn", "transformer"}
    assert results.read_sweep_meta(out)["sweep_id"] == "p1+p2"
    # The merged table is as old as its oldest part file: readers upgrade by the version a file states.
    old = tmp_path / "transformer" / "trials" / "part-transformer-0.parquet"
    pq.write_table(pq.read_table(old).replace_schema_metadata({b"raysweep.schema_version": b"1"}), old)
    out = results.merge_results([tmp_path / "cnn", tmp_path / "transformer"], tmp_path / "merged-old")
    version = {t: pq.read_schema(out / t / "part-compact.parquet").metadata[b"raysweep.schema_version"]
               for t in results.TABLES}
    assert version == {"trials": b"1", "curves": str(results.SCHEMA_VERSION).encode(),
                       "cases": str(results.SCHEMA_VERSION).encode()}
    with pytest.raises(ValueError, match="is not empty"):  # nothing already written is overwritten
        results.merge_results([tmp_path / "cnn", tmp_path / "transformer"], tmp_path / "merged")
    with pytest.raises(ValueError, match="at least two parts"):
        results.merge_results([tmp_path / "cnn"], tmp_path / "one")
    results.write_trial_rows(tmp_path / "transformer", "cnn-0", {**TRIAL, "arch": "transformer"})
    with pytest.raises(ValueError, match="trial ids in more than one part \\(cnn-0\\)"):
        results.merge_results([tmp_path / "cnn", tmp_path / "transformer"], tmp_path / "dup")
    with pytest.raises(FileNotFoundError, match="no sweep results"):
        results.merge_results([tmp_path / "cnn", tmp_path / "nothing"], tmp_path / "none")
    assert not (tmp_path / "dup").exists() and not (tmp_path / "none").exists()


def test_resolve_results_dir_and_overlays(tmp_path):
    out = tmp_path / "sweep"
    results.write_trial_rows(out / "results", "t-1", TRIAL)
    assert results.resolve_results_dir(out) == out / "results"
    assert results.resolve_results_dir(out / "results") == out / "results"
    with pytest.raises(FileNotFoundError, match="no sweep results"):
        results.resolve_results_dir(tmp_path / "nothing")
    assert results.overlay_dirs(out / "results", "t-1") == []
    (out / "overlays" / "t-1").mkdir(parents=True)
    assert results.overlay_dirs(out / "results", "t-1") == [out / "overlays" / "t-1"]


def test_results_and_report_import_without_torch_or_ray():
    code = ("import sys, raysweep.results, raysweep.report, raysweep.report.stats, raysweep.report.plots; "
            "bad = [m for m in ('torch', 'ray', 'raysweep.losses', 'raysweep.data') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
