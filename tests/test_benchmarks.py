"""The benchmarks (``python -m benchmarks.<name>``) import as a package and their measurements run on the CPU at tiny
sizes: a smoke check that a refactor of raysweep has not broken them, not a measurement."""

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:  # `python -m pytest` has the repository root on the path; a bare `pytest` has only tests/
    sys.path.insert(0, ROOT)

MODULES = ["_common", "losses", "maps", "loss_step", "data", "train", "precision", "gpu_check", "fractional",
           "gpu_session", "gpu_sweep", "pack", "replication",
           "convergence"]


@pytest.mark.parametrize("name", MODULES)
def test_imports_without_touching_sys_path(name):
    before = list(sys.path)
    module = importlib.import_module(f"benchmarks.{name}")
    assert sys.path == before
    if name != "_common":
        assert callable(module.main)


def test_fake_extras_follow_the_registry():
    from benchmarks._common import blob_batch, fake_extras, label_maps
    from raysweep.losses import LOSSES

    logits, target = blob_batch(2, 4, 16, 16)
    assert logits.shape == (2, 4, 16, 16) and target.shape == (2, 16, 16) and (target == 255).any()
    dist = torch.zeros(2, 4, 16, 16)
    for name, spec in LOSSES.items():
        ex = fake_extras(name, logits, dist)
        assert set(ex) == set(spec.needs) & {"dist_map", "aux_logits", "features"}, name
    assert fake_extras("conditional_boundary", logits)["features"].shape == (2, 16, 16, 16)
    assert fake_extras("conditional_boundary", logits, features="small")["features"].shape == (2, 8, 8, 8)
    maps = label_maps(2, 5, 32)
    assert maps.shape == (2, 32, 32) and maps.dtype.name == "int64" and maps.max() < 5


def test_loss_measurements_run_on_cpu():
    from benchmarks import losses

    rows = list(losses.time_losses(["ce", "boundary"], {"tiny": (2, 3, 16, 16)}, torch.device("cpu"), repeats=1))
    assert [r["loss"] for r in rows] == ["ce", "boundary"]  # ce: torch's peer; boundary: none
    assert rows[0]["peer"] == "torch.cross_entropy" and rows[0]["ms"] > 0 and rows[0]["peer_ms"] > 0
    out = losses.device_timing({}, ["dice", "boundary", "ce"], (2, 3, 16, 16), torch.device("cpu"), 2,
                               autocast=True, skip={"dice": "not here"}, log=lambda *a: None)
    assert list(out["timing"]) == ["ce", "dice", "boundary"]
    assert out["timing"]["dice"] == {"skipped": "not here"}
    b = out["timing"]["boundary"]
    assert {"fp32", "bf16_autocast", "fp32_maps_on_the_fly", "ratio_to_ce"} <= set(b)
    assert set(b["fp32"]) == {"ms", "ms_min", "reps", "first_call_ms", "peak_extra_mib"}


def test_3d_loss_measurements_run_on_cpu(tmp_path, capsys):
    """The 3-D rows at a tiny volume: MONAI peers (value checked first, focal = C x MONAI), hausdorff also with its
    maps on the fly, a loss without a peer alone, the 2-D-only losses left out and named."""
    from benchmarks import losses

    names = ["ce", "focal", "dice", "tversky", "dice_ce", "hausdorff", "conditional_boundary", "active_boundary"]
    rows = list(losses.time_losses_3d(names, (1, 2, 8, 8, 8), torch.device("cpu"), repeats=2))
    assert [r["loss"] for r in rows] == ["ce", "focal", "dice", "tversky", "dice_ce", "hausdorff",
                                         "hausdorff (maps on the fly)", "conditional_boundary"]
    assert {r["size"] for r in rows} == {"1x2x8x8x8"}  # SMALL_3D never enlarges a smaller volume
    peered = {r["loss"]: r["peer"] for r in rows if r["peer"] != "-"}
    assert peered == {"focal": "monai (x2 = ours)", "dice": "monai", "tversky": "monai", "dice_ce": "monai",
                      "hausdorff": "monai", "hausdorff (maps on the fly)": "monai"}
    assert all(r["ms"] > 0 for r in rows) and all(r["peer_ms"] > 0 for r in rows if r["peer"] != "-")
    logits, target = losses.blob_volume(1, 3, 8, 8, 8)
    assert logits.shape == (1, 3, 8, 8, 8) and target.shape == (1, 8, 8, 8) and target.max() < 3  # no ignored voxel

    out = tmp_path / "losses.md"
    assert losses.main(["--dims", "3", "--size-3d", "1x2x8x8x8", "--repeats", "1", "--loss", "dice",
                        "--loss", "inverseform", "--out", str(out)]) == 0
    text = out.read_text()
    assert "3-D, 1x2x8x8x8" in text and "no ignored voxels" in text and "2-D only (LossSpec.dims): inverseform" in text
    assert "| dice | 1x2x8x8x8 |" in text and "| monai |" in text and "8x9x224x224" not in text
    assert "| dice | 1x2x8x8x8 |" in capsys.readouterr().out


def test_precision_and_maps_on_cpu():
    from benchmarks import maps, precision
    from benchmarks._common import jsonable

    rows = precision.agreement(["ce", "hausdorff"], torch.device("cpu"), log=lambda *a: None)
    for row in rows.values():
        assert row["fp32"]["value_abs_diff"] == 0 and row["bf16"]["grad_finite"], row
    box = maps.on_device(torch.device("cpu"), b=1, c=3, size=32, reps=1, log=lambda *a: None)
    assert box["masks_shape"] == [3, 32, 32] and box["cupyx_edt"] == {"skipped": "needs CUDA"}
    json.dumps(jsonable({"rows": rows, "maps": box, "nan": float("nan"), "inf": float("inf")}), allow_nan=False)
    assert jsonable([float("nan"), torch.tensor(2.0)]) == ["nan", 2.0]


def test_one_trial_config_resolves():
    from benchmarks.train import trial_config
    from raysweep.trial import resolve_config

    cfg = resolve_config(trial_config("cnn", "dice_ce", 32, 2, 5, 5, 0, 1, "cpu", amp="off", depth=8,
                                      arch={"encoder": "resnet18", "options": {"encoder_depth": 3}}))
    assert cfg["train"]["steps"] == 10 and cfg["eval"]["every"] == 5 and cfg["train"]["amp"] == "off"
    assert cfg["dataset"]["options"] == {"image_size": 32, "depth": 8} and cfg["model"]["encoder"] == "resnet18"


def test_gpu_session_help(capsys):
    from benchmarks import gpu_session

    with pytest.raises(SystemExit) as exit_:
        gpu_session.main(["--help"])
    assert exit_.value.code == 0 and "--smoke" in capsys.readouterr().out


def _planted_cell_writer():
    """tests/report_fixture.py's ``write_planted_cell`` (the tests folder is not a package)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        from report_fixture import write_planted_cell
    finally:
        sys.path.remove(str(Path(__file__).resolve().parent))
    return write_planted_cell


def test_replication_tables_from_two_planted_sweeps(tmp_path):
    """benchmarks.replication's tables on two planted sweeps (3 replicates): A ranks x > y > z with large gaps, B ranks
    y > x > z: one claim contradicted (x vs y), two replicated; each winner outside the other's top group."""
    import numpy as np

    write_planted_cell = _planted_cell_writer()
    from benchmarks.replication import markdown, summarise

    rng = np.random.default_rng(0)
    base = rng.uniform(0.3, 0.5, 12)
    folders = {}
    for seed, levels in ((1, {"x": 0.4, "y": 0.2, "z": 0.0}), (2, {"x": 0.2, "y": 0.4, "z": 0.0})):
        folder = tmp_path / f"s{seed}"
        write_planted_cell(folder / "results", {k: np.vstack([base + v + rng.normal(0, 0.002, 12) for _ in range(3)])
                                                for k, v in levels.items()}, replicates=3)
        (folder / "state.json").write_text(json.dumps({"wall_s": 600.0 * seed}))
        folders[seed] = folder
    runs, pairs = summarise(folders)
    assert [(r["seed"], r["minutes"], r["top"], r["losses"], r["winner"]) for r in runs] == [
        (1, 10.0, 1, 3, "x"), (2, 20.0, 1, 3, "y")]
    (pair,) = pairs
    assert (pair["replicated"], pair["open"], pair["contradicted"]) == (2, 0, 1)
    assert pair["a_winner_in_b_top"] is False and pair["b_winner_in_a_top"] is False
    assert pair["tau"] == pytest.approx(1 / 3)
    assert all(r["kendall_w"] == pytest.approx(1.0) for r in runs)  # every replicate orders the losses alike
    text = markdown(runs, pairs)
    assert "| 1 vs 2 | d/m | 2 / 0 / 1 (A: x > y, B: y > x) | no | 0.333 |" in text
    assert "Kendall's W |" in text and text.count(" | 1.000 |") == 2


def test_design_tradeoff_pools_independent_replicates(tmp_path):
    """benchmarks.replication --design: two planted sweeps of 2 replicates each pool into 4 per loss; designs of R
    replicates are drawn from the pool, timed at the median minutes per replicate, and two disjoint 2-replicate
    designs of a clear ranking (x > y > z) agree; sweeps that share a seed are refused."""
    import numpy as np

    write_planted_cell = _planted_cell_writer()
    from benchmarks.replication import design_markdown, design_tradeoff, pooled_scores

    rng = np.random.default_rng(1)
    base = rng.uniform(0.3, 0.5, 16)
    folders = {}
    for k, sweep_seed in enumerate((100, 200)):
        folder = tmp_path / f"s{sweep_seed}"
        write_planted_cell(folder / "results", {name: np.vstack([base + v + rng.normal(0, 0.01, 16) for _ in range(2)])
                                                for name, v in {"x": 0.3, "y": 0.15, "z": 0.0}.items()},
                           replicates=2)
        seeds = {str(r): {"tune": sweep_seed + 2 * r, "confirm": [sweep_seed + 2 * r + 1]} for r in range(2)}
        (folder / "results" / "sweep.json").write_text(json.dumps({"protocol": {
            "tuning": {"seed": sweep_seed}, "confirmation": {"seeds": [sweep_seed + 1], "replicate_seeds": seeds}}}))
        (folder / "state.json").write_text(json.dumps({"wall_s": 600.0 * (k + 1)}))  # 5 and 10 min per replicate
        folders[sweep_seed] = folder
    pools, per_replicate = pooled_scores(folders)
    assert list(pools) == ["d/m"] and per_replicate == pytest.approx(7.5)
    assert pooled_scores(folders, timed=[100])[1] == pytest.approx(5.0)  # only the sweeps timed on an idle machine
    pool = pools["d/m"]
    assert pool.shape == (16, 12)
    assert sorted(set(pool.columns.get_level_values("replicate"))) == [0, 1, 2, 3]
    # replicates 2 and 3 are the second sweep's 0 and 1
    second = pooled_scores({200: folders[200]})[0]["d/m"]
    np.testing.assert_allclose(pool.xs(2, axis=1, level="replicate")["x"], second.xs(0, axis=1, level="replicate")["x"])
    rows = design_tradeoff(pools, per_replicate, draws=5)
    assert [(r["R"], r["minutes"], r["losses"]) for r in rows] == [(2, 15.0, 3), (3, 22.5, 3), (4, 30.0, 3)]
    assert [r["pairs"] for r in rows] == [5, 0, 0]  # two disjoint designs only fit for R = 2
    assert all(r["top_max"] == 1 for r in rows[1:])  # x is separable from y and z once 3+ replicates are pooled
    two = rows[0]
    assert two["contra_mean"] == 0 and two["tau_min"] == pytest.approx(1.0) and two["winners_inside"] == 1.0
    assert two["tau_below"] == 0.0 and "| d/m | 2 | 15 |" in design_markdown(rows)
    assert [r["R"] for r in design_tradeoff(pools, per_replicate, draws=5, sizes=[3, 9])] == [3]  # 9: pool too small
    # z made y plus a per-replicate offset: of the three ways to split 4 replicates into two designs of 2, two order
    # y and z oppositely (tau 1/3: x stays first) and one alike (tau 1); the share below the target counts the first
    # kind (40 draws: all of one kind has odds under (2/3)^40).
    tied = pool.copy()
    for r, offset in enumerate([0.03, 0.01, -0.005, -0.02]):
        tied[("z", r)] = pool[("y", r)] + offset
    (row,) = design_tradeoff({"d/m": tied}, 1.0, draws=40, sizes=[2])
    assert row["tau_min"] == pytest.approx(1 / 3) and 0 < row["tau_below"] < 1
    shared = json.loads((folders[200] / "results" / "sweep.json").read_text())
    shared["protocol"]["confirmation"]["replicate_seeds"]["0"]["tune"] = 101  # sweep 100's confirmation seed
    (folders[200] / "results" / "sweep.json").write_text(json.dumps(shared))
    with pytest.raises(ValueError, match="seed 101 is also used by the sweep of tuning.seed 100"):
        pooled_scores(folders)


def test_nested_designs_are_the_sweeps_a_smaller_run_would_have_made(tmp_path):
    """benchmarks.replication --nested: each sweep cut to its first R replicates ranks and compares as the sweeps of R
    replicates do when written alone (summarise, the report's statistics and raysweep compare, computed apart). Planted:
    sweep 2's third replicate lifts y above x, so the two sweeps agree at R = 2 (tau 1) and not at R = 3 (tau 1/3);
    R beyond the sweeps' replicates is skipped."""
    import numpy as np

    write_planted_cell = _planted_cell_writer()
    from benchmarks.replication import nested_designs, nested_markdown, summarise

    rng = np.random.default_rng(3)
    base = rng.uniform(0.3, 0.5, 12)
    levels = {1: [{"x": 0.4, "y": 0.2, "z": 0.0}] * 3,
              2: [{"x": 0.4, "y": 0.2, "z": 0.0}] * 2 + [{"x": 0.4, "y": 1.0, "z": 0.0}]}

    def write(folder, sweep, n):
        write_planted_cell(folder / "results", {k: np.vstack([base + levels[sweep][r][k] + noise[sweep][r]
                                                              for r in range(n)]) for k in "xyz"}, replicates=n)
        seeds = {str(r): {"tune": 100 * sweep + 2 * r, "confirm": [100 * sweep + 2 * r + 1]} for r in range(n)}
        (folder / "results" / "sweep.json").write_text(json.dumps({"protocol": {
            "tuning": {"seed": 100 * sweep}, "confirmation": {"seeds": [1], "replicate_seeds": seeds}}}))
        (folder / "state.json").write_text(json.dumps({"wall_s": 60.0 * n}))
        return folder

    noise = {sweep: [rng.normal(0, 0.01, 12) for _ in range(3)] for sweep in (1, 2)}
    whole = {sweep: write(tmp_path / f"s{sweep}", sweep, 3) for sweep in (1, 2)}
    cut = {sweep: write(tmp_path / f"s{sweep}-r2", sweep, 2) for sweep in (1, 2)}
    rows = nested_designs(whole, [2, 3, 5])
    assert [(r["cell"], r["R"], r["losses"]) for r in rows] == [("d/m", 2, 3), ("d/m", 3, 3)]
    for row, folders in zip(rows, (cut, whole)):
        runs, pairs = summarise(folders)
        assert row["top"] == {r["seed"]: r["top"] for r in runs}
        assert row["winner"] == {r["seed"]: r["winner"] for r in runs}
        (mine,), (theirs,) = row["pairs"], pairs
        assert mine["contradicted"] == theirs["contradicted"] and mine["tau"] == pytest.approx(theirs["tau"])
        assert mine["winners_inside"] == (theirs["a_winner_in_b_top"] and theirs["b_winner_in_a_top"])
    assert [r["pairs"][0]["tau"] for r in rows] == pytest.approx([1.0, 1 / 3])
    assert rows[1]["winner"] == {1: "x", 2: "y"}
    text = nested_markdown(rows)
    assert "| d/m | 2 | " in text and "1 vs 2: 0; 1.000" in text and "**0.333**" in text


def test_convergence_gain_is_the_reports_last20_check_on_a_real_run():
    """benchmarks.convergence: the last-20% gain of a curve as the report computes it, and one real confirmation run
    of the default config's CNN cell (20 steps, 5 evaluations at 4, 8, ..., 20): its reports are recorded in order."""
    from benchmarks.convergence import last20_gain, markdown, measure

    assert last20_gain([(100, 0.7), (20, 0.1), (80, 0.65), (60, 0.5)]) == pytest.approx(0.05)
    assert last20_gain([(30, 0.6), (150, 0.7), (120, 0.66)]) == pytest.approx(0.04)
    (row,) = measure(Path("configs/default.yaml"), "cnn", ["dice"], [20], [1])
    assert (row["loss"], row["steps"], row["seeds"]) == ("dice", 20, 1)
    assert 0 <= row["final_mean"] <= 1 and row["gain_max"] == row["gain_mean"]
    assert "| dice | 20 |" in markdown([row])


def test_replication_compares_one_design_and_archives_what_it_reads(tmp_path):
    """Sweeps whose configs differ beyond name and tuning.seed are refused, naming the key; --archive copies what the
    tables are computed from (not Ray's trial folders), and the copies summarise exactly as the originals."""
    import numpy as np

    write_planted_cell = _planted_cell_writer()
    from benchmarks.replication import (archive, check_one_design, design_differences, parts_of, seed_folder,
                                        summarise, sweep_minutes)

    rng = np.random.default_rng(2)
    base = rng.uniform(0.3, 0.5, 12)
    folders = {}
    for seed in (100, 200):
        folder = tmp_path / "runs" / f"seed{seed}" / "sweep"
        write_planted_cell(folder / "results", {k: np.vstack([base + v + rng.normal(0, 0.01, 12) for _ in range(3)])
                                                for k, v in {"x": 0.3, "y": 0.0}.items()}, replicates=3)
        meta = {"protocol": {"tuning": {"seed": seed}, "confirmation": {"seeds": [seed + 1]}}}
        meta["config"] = {"name": f"d-seed{seed}", "tuning": {"seed": seed, "replicates": 3},
                          "trial": {"train": {"steps": 200}}}
        (folder / "results" / "sweep.json").write_text(json.dumps(meta))
        (folder / "state.json").write_text(json.dumps({"wall_s": 60.0}))
        (folder.parent / "config.json").write_text("{}")
        (folder / "ray").mkdir()
        (folder / "ray" / "checkpoint.pt").write_bytes(b"0" * 1000)
        folders[seed] = folder
    assert design_differences(folders) == {}
    check_one_design(folders)
    assert parts_of(tmp_path / "runs", 100) == [folders[100]]
    copies = dict(zip(folders, archive(list(folders.values()), tmp_path / "runs", tmp_path / "kept")))
    assert copies[100] == tmp_path / "kept" / "seed100" / "sweep"
    assert sorted(p.name for p in copies[100].iterdir()) == ["results", "state.json"]
    assert (tmp_path / "kept" / "seed200" / "config.json").is_file()
    same = [json.dumps(summarise(f), default=str, sort_keys=True) for f in (copies, folders)]  # NaN == NaN here
    assert same[0] == same[1] and '"winner": "x"' in same[0]
    with pytest.raises(FileNotFoundError, match="seed300: no sweep"):
        parts_of(tmp_path / "runs", 300)
    # A sweep merged from parts: each cell's time is that of the part that ran it; the sweep's, their sum.
    (tmp_path / "merged" / "results").mkdir(parents=True)
    (tmp_path / "merged" / "results" / "sweep.json").write_text(json.dumps({"wall_s": 300.0, "parts": [
        {"cells": ["d/a"], "wall_s": 120.0}, {"cells": ["d/b"], "wall_s": 180.0}]}))
    assert (sweep_minutes(tmp_path / "merged", "d/b"), sweep_minutes(tmp_path / "merged")) == (3.0, 5.0)
    # A cell whose replicates ran in two parts (--replicates K:N): the time of both.
    (tmp_path / "merged" / "results" / "sweep.json").write_text(json.dumps({"wall_s": 360.0, "parts": [
        {"cells": ["d/a"], "wall_s": 120.0}, {"cells": ["d/b"], "wall_s": 180.0}, {"cells": ["d/a"], "wall_s": 60.0}]}))
    assert sweep_minutes(tmp_path / "merged", "d/a") == 3.0
    # Where the parts of a seed run, and which of them hold an architecture.
    assert seed_folder(tmp_path, 100, ["transformer"], range(10, 14)) == tmp_path / "seed100" / "transformer-r10-13"
    assert seed_folder(tmp_path, 100, [], range(10, 14)) == tmp_path / "seed100" / "r10-13"
    assert seed_folder(tmp_path, 100, ["cnn"]) == tmp_path / "seed100" / "cnn"
    for name, arch in (("cnn", "cnn"), ("transformer", "transformer"), ("transformer-r10-13", "transformer")):
        (tmp_path / "p" / "seed100" / name / "sweep" / "results").mkdir(parents=True)
        (tmp_path / "p" / "seed100" / name / "sweep" / "results" / "sweep.json").write_text(json.dumps(
            {"config": {"architectures": {arch: {}}}}))
    assert [p.parent.name for p in parts_of(tmp_path / "p", 100, ["transformer"])] == ["transformer",
                                                                                      "transformer-r10-13"]
    assert len(parts_of(tmp_path / "p", 100)) == 3

    meta = json.loads((folders[200] / "results" / "sweep.json").read_text())
    meta["config"]["trial"]["train"]["steps"] = 100
    (folders[200] / "results" / "sweep.json").write_text(json.dumps(meta))
    assert design_differences(folders) == {"trial.train.steps": {"100", "200"}}
    meta["config"]["trial"]["train"]["steps"] = 200  # a sweep of one architecture is compared on that one
    meta["config"]["architectures"] = {"cnn": {"arch": "Unet"}}
    (folders[200] / "results" / "sweep.json").write_text(json.dumps(meta))
    first = json.loads((folders[100] / "results" / "sweep.json").read_text())
    first["config"]["architectures"] = {"cnn": {"arch": "Unet"}, "vit": {"arch": "Segformer"}}
    (folders[100] / "results" / "sweep.json").write_text(json.dumps(first))
    assert design_differences(folders) == {}
    first["config"]["architectures"]["cnn"]["arch"] = "FPN"
    (folders[100] / "results" / "sweep.json").write_text(json.dumps(first))
    assert design_differences(folders) == {"architectures.cnn.arch": {'"FPN"', '"Unet"'}}
    first["config"]["architectures"]["cnn"]["arch"] = "Unet"
    (folders[100] / "results" / "sweep.json").write_text(json.dumps(first))
    meta["config"]["trial"]["train"]["steps"] = 100
    (folders[200] / "results" / "sweep.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"not one design .*trial\.train\.steps: 100 vs 200"):
        check_one_design(folders)
