"""The sweep: config validation, resources, the multiplexing searcher (Ray-free), and one end-to-end Ray run."""

import json
import os
from argparse import ArgumentTypeError
from pathlib import Path

import pytest

from raysweep.config import compose_trial, load_config, validate
from raysweep.search import GroupSpace, companion_for
from raysweep.sweep import GroupSearcher, trial_resources

TINY = {
    "name": "tiny",
    "datasets": {"synthetic": {"options": {"image_size": 32, "depth": 4, "num_volumes": 3},
                               # 6 ranking volumes: the fewest with which Wilcoxon can separate 2 losses
                               "select_options": {"num_volumes": 1}, "eval_options": {"num_volumes": 6}}},
    "architectures": {"cnn": {"arch": "Unet", "encoder": "resnet18",
                              "options": {"encoder_depth": 3, "decoder_channels": [32, 16, 8]}},
                      "transformer": {"arch": "Segformer", "encoder": "mit_b0"}},
    "losses": ["tversky", "ce"],
    "tuning": {"trials_per_group": 2, "seed": 0, "grace_period": 1, "reduction_factor": 2},
    "confirmation": {"seeds": 1},
    "resources": {"cpus_per_trial": 1},
    "trial": {"train": {"steps": 4, "batch_size": 2}, "eval": {"every": 2, "overlays": 0}},
}


def write(tmp_path, data):
    import yaml

    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


# ---------------------------------------------------------------------------------------------------- config


def test_default_config_covers_every_survey_loss_and_both_models():
    from raysweep.losses import LOSSES

    cfg = load_config()
    assert set(cfg.losses) == {n for n, s in LOSSES.items() if s.in_survey}
    assert set(cfg.architectures) == {"cnn", "transformer"}
    assert cfg.tuning.replicates >= 3  # the ranking's test holds tuning and training variance
    assert len(cfg.groups()) == 2 * len(cfg.losses) * cfg.tuning.replicates


def _flat_config(path) -> dict:
    from benchmarks.replication import flat_config  # the flattening the replication benchmark compares designs with
    from raysweep.config import read_yaml_mapping

    return {k: json.loads(v) for k, v in flat_config(read_yaml_mapping(Path(path), "sweep config")).items()}


def test_the_default_is_the_measured_design_and_quick_the_same_design_made_smaller():
    """docs/protocol.md reports the three sweeps of benchmarks/measured/replication-d14/design.yaml as what the default
    delivers: the default must be that design (only its name and tuning seed may differ), and configs/quick.yaml the
    default with fewer replicates and steps, nothing else."""
    default = _flat_config("configs/default.yaml")
    measured = _flat_config("benchmarks/measured/replication-d14/design.yaml")
    quick = _flat_config("configs/quick.yaml")

    def differs(a, b):
        return {k for k in a.keys() | b.keys() if a.get(k, "(absent)") != b.get(k, "(absent)")}

    assert differs(default, measured) <= {"name", "tuning.seed"}
    assert default["tuning.seed"] == 100  # make run reproduces the measured seed-100 sweep, the committed report
    assert differs(default, quick) == {"name", "tuning.seed", "tuning.replicates", "trial.train.steps",
                                       "trial.eval.every"}
    assert (quick["tuning.replicates"], quick["trial.train.steps"]) < (default["tuning.replicates"],
                                                                       default["trial.train.steps"])
    # both evaluate the ranking volumes at the same fractions of training (5 evaluations, the last at the end)
    assert quick["trial.train.steps"] / quick["trial.eval.every"] == default["trial.train.steps"] / default[
        "trial.eval.every"]


@pytest.mark.parametrize(
    "change,match",
    [
        ({"tunning": {}}, "unknown key 'tunning' \\(did you mean 'tuning'\\?\\)"),
        ({"losses": ["dicee"]}, "unknown loss 'dicee' \\(did you mean 'dice'\\?\\)"),
        ({"datasets": {"mnist": {}}}, "unknown dataset 'mnist'"),
        ({"architectures": {"resnet": {}}}, "unknown model 'resnet'"),
        ({"tuning": {"trials_per_group": 0}}, "tuning.trials_per_group must be an integer >= 1"),
        ({"tuning": {"scheduler": "pbt"}}, "tuning.scheduler must be one of"),
        ({"tuning": {"replicates": 0}}, "tuning.replicates must be an integer >= 1"),
        ({"confirmation": {"seeds": -1}}, "confirmation.seeds"),
        ({"resources": {"gpus_per_trial": -0.5}}, "resources.gpus_per_trial"),
        ({"pairing": "focal"}, "pairing must be one of"),
        ({"trial": {"loss": {"name": "dice"}}}, "trial.loss is set by the sweep"),
        ({"trial": {"train": {"stepz": 3}}}, "stepz"),
        ({"datasets": {"synapse": {}}}, "synapse.root is required"),
        ({"datasets": {"synapse": {"root": "/nonexistent/Synapse"}}}, "is not a folder"),
        ({"name": "a b"}, "name must be"),
    ],
)
def test_config_errors_name_the_key(change, match):
    with pytest.raises((ValueError, FileNotFoundError), match=match):
        validate({**TINY, **change})


def test_config_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(bad)


def test_cli_subsets_keep_the_config_sections():
    full = load_config()
    cfg = load_config(select={"architectures": ["cnn"], "losses": ["dice", "ce"]})
    assert cfg.architectures == {"cnn": full.architectures["cnn"]}  # the file's shallow resnet18, not MODELS'
    assert cfg.datasets == full.datasets and cfg.losses == ["dice", "ce"]
    with pytest.raises(ValueError, match="unknown loss 'dicee'"):
        load_config(select={"losses": ["dicee"]})


def test_shipped_configs_validate_up_to_their_data_roots():
    for name in ("synapse", "cityscapes", "nnunet-example", "folder-example"):
        with pytest.raises(FileNotFoundError, match="root: data/"):
            load_config(f"configs/{name}.yaml")


# ---------------------------------------------------------------------------------------------------- search


def test_group_space_defaults_first_and_pairing():
    space = GroupSpace("tversky", "ce")
    assert space.companion == "ce" and space.defaults()["alpha"] == 0.3 and "companion_weight" in space.defaults()
    assert companion_for("ce", "focal") is None  # focal already is a CE
    assert GroupSpace("ce", "none").is_empty()
    cfg = validate({**TINY, "pairing": "dice"})
    group = cfg.groups()[0]
    envelope = compose_trial(cfg, group, {"alpha": 0.5, "companion_weight": 2.0}, seed=7, stage="tune")
    trial, tags = envelope["trial"], envelope["tags"]
    assert trial["loss"] == {"name": "tversky", "params": {"alpha": 0.5}}
    assert trial["companions"] == [{"name": "dice", "weight": 2.0}]
    assert trial["seed"] == 7 and tags["stage"] == "tune" and tags["params"] == {"alpha": 0.5, "companion_weight": 2.0}
    assert not tags["is_default"] and tags["family"] == "region" and tags["budget_steps"] == 4
    assert compose_trial(cfg, group, GroupSpace("tversky", "dice").defaults(), seed=7, stage="tune")["tags"][
        "is_default"]


def test_searcher_gives_equal_quotas_round_robin_with_defaults_first():
    cfg = validate(TINY)
    searcher = GroupSearcher(cfg)
    assert searcher.total == 2 * 2 + 2 * 1  # tversky: 2 trials per model; ce has nothing to tune: 1
    configs = []
    for i in range(searcher.total):
        config = searcher.suggest(f"t{i}")
        assert isinstance(config, dict)
        configs.append(config["tags"])
        searcher.on_trial_complete(f"t{i}", {"score": 0.1 * i, "step": 4})
    assert searcher.suggest("extra") == searcher.FINISHED
    keys = [f"{c['arch']}/{c['loss']}" for c in configs]
    assert keys[:4] == ["cnn/tversky", "cnn/ce", "transformer/tversky", "transformer/ce"]  # round robin
    first_tversky = next(c for c in configs if c["loss"] == "tversky")
    assert first_tversky["params"] == GroupSpace("tversky", "none").defaults()
    tversky_points = [c["params"] for c in configs if c["loss"] == "tversky"]  # cnn, transformer, cnn, transformer
    defaults = GroupSpace("tversky", "none").defaults()
    assert tversky_points == [defaults, defaults, {**defaults, "per_image": True}, {**defaults, "per_image": True}]


def test_replicates_are_independent_pipelines_with_their_own_studies_and_seeds():
    """tuning.replicates: each (group, replicate) has its own study and sampler seed, the same quota, its own
    training seeds (a block per replicate: tuning seed, then confirmation seeds, none shared), and the replicate in
    its tags; replicate 0 keeps the keys and seeds of a sweep from before replicates."""
    from raysweep.config import confirmation_seeds, tuning_seed

    cfg = validate({**TINY, "architectures": ["cnn"], "tuning": {**TINY["tuning"], "replicates": 3, "seed": 7},
                    "confirmation": {"seeds": 2}})
    assert [g.key for g in cfg.groups()] == ["synthetic/cnn/tversky", "synthetic/cnn/tversky/r1",
                                             "synthetic/cnn/tversky/r2", "synthetic/cnn/ce", "synthetic/cnn/ce/r1",
                                             "synthetic/cnn/ce/r2"]
    blocks = [[tuning_seed(cfg, r), *confirmation_seeds(cfg, r)] for r in range(3)]
    assert blocks == [[7, 8, 9], [10, 11, 12], [13, 14, 15]]
    searcher = GroupSearcher(cfg)
    assert searcher.total == 3 * 2 + 3 * 1 and set(searcher.subs) == {"synthetic/cnn/tversky",
                                                                       "synthetic/cnn/tversky/r1",
                                                                       "synthetic/cnn/tversky/r2"}
    samplers = {k: sub._sampler._rng.rng.random() for k, sub in searcher.subs.items()}
    assert len(set(samplers.values())) == 3  # three sampler seeds: three independent draws
    tags = []
    for i in range(searcher.total):
        env = searcher.suggest(f"t{i}")
        tags.append(env["tags"])
        assert env["trial"]["seed"] == tuning_seed(cfg, env["tags"]["replicate"])
        searcher.on_trial_complete(f"t{i}", {"score": 0.1, "step": 4})
    assert searcher.suggest("x") == searcher.FINISHED
    per = {}
    for t in tags:
        per.setdefault((t["loss"], t["replicate"]), []).append(t["proposal"])
    assert per == {("tversky", r): ["default", "branch"] for r in range(3)} | {("ce", r): ["fixed"] for r in range(3)}


def test_a_part_of_the_replicates_is_the_same_groups_seeds_and_branches_as_in_the_whole_sweep(tmp_path):
    """raysweep run --replicates 3:5 on a config of 3 replicates: the groups, training seeds, tags and start-up
    branches of replicates 3 and 4 of a sweep of 5, its config recording tuning.first_replicate (a config without it
    keeps the dict a sweep from before it wrote, so it resumes); its protocol lists those replicates' seeds and states
    the power of the 5 replicates it completes. Bad --replicates values are refused, naming the fix."""
    from raysweep.cli import parse_replicates
    from raysweep.config import confirmation_seeds, tuning_seed
    from raysweep.sweep.records import protocol

    base = {**TINY, "architectures": ["cnn"], "tuning": {**TINY["tuning"], "replicates": 3, "seed": 7}}
    whole = validate({**base, "tuning": {**base["tuning"], "replicates": 5}})
    path = write(tmp_path, base)
    part = load_config(path, {"replicates": parse_replicates("3:5")})
    assert (part.tuning.first_replicate, part.tuning.replicates, part.replicate_ids()) == (3, 2, range(3, 5))
    assert [g for g in whole.groups() if g.replicate >= 3] == part.groups()
    assert [(tuning_seed(part, r), confirmation_seeds(part, r)) for r in (3, 4)] == [
        (tuning_seed(whole, r), confirmation_seeds(whole, r)) for r in (3, 4)]
    first = {}
    for cfg in (whole, part):  # the first suggestion of each replicate of tversky: its defaults, then its branch
        searcher = GroupSearcher(cfg)
        for i in range(searcher.total):
            env = searcher.suggest(f"t{i}")
            first.setdefault(id(cfg), {}).setdefault((env["tags"]["loss"], env["tags"]["replicate"]), []).append(
                (env["trial"]["seed"], env["tags"]["proposal"], json.dumps(env["tags"]["params"], sort_keys=True)))
    assert {k: v for k, v in first[id(whole)].items() if k[1] >= 3} == first[id(part)]
    assert part.to_dict()["tuning"]["first_replicate"] == 3 and "first_replicate" not in whole.to_dict()["tuning"]
    p = protocol(part)
    assert p["tuning"]["replicates"] == 2 and p["tuning"]["first_replicate"] == 3
    assert list(p["confirmation"]["replicate_seeds"]) == ["3", "4"]
    assert p["power"]["synthetic/cnn"]["replicates"] == 5 == protocol(whole)["power"]["synthetic/cnn"]["replicates"]
    assert load_config(path, {"replicates": parse_replicates("4")}).replicate_ids() == range(0, 4)
    for bad, match in (("5:3", "0 <= K < N"), ("a:3", "give N or K:N"), ("3:3", "0 <= K < N")):
        with pytest.raises(ArgumentTypeError, match=match):
            parse_replicates(bad)


def test_two_replicates_are_warned_about_before_anything_runs():
    with pytest.warns(UserWarning, match="tuning.replicates is 2"):
        validate({**TINY, "tuning": {**TINY["tuning"], "replicates": 2}})
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        validate({**TINY, "tuning": {**TINY["tuning"], "replicates": 3}})


def test_stratified_start_up_tries_every_categorical_branch_before_tpe():
    space = GroupSpace("boundary", "none")
    d = space.defaults()
    assert space.branch_points() == [{**d, "region": "dice"}, {**d, "schedule": "increase"}]
    assert space.branch_points(rotate=1) == [{**d, "schedule": "increase"}, {**d, "region": "dice"}]
    wce = GroupSpace("wce", "none").branch_points()
    assert [p["weighting"] for p in wce] == ["sqrt_inverse", "log_inverse"]
    assert GroupSpace("focal", "none").branch_points() == []  # no categorical dimension
    cfg = validate({**TINY, "architectures": ["cnn"], "losses": ["boundary"],
                    "tuning": {**TINY["tuning"], "trials_per_group": 4}})
    searcher = GroupSearcher(cfg)
    points = []
    for i in range(4):
        env = searcher.suggest(f"t{i}")
        points.append((env["tags"]["proposal"], env["tags"]["params"]))
        searcher.on_trial_complete(f"t{i}", {"score": 0.1, "step": 4})
    assert [p for p, _ in points] == ["default", "branch", "branch", "model"]  # 3 finished >= 2 start-up trials
    assert {(q["region"], q["schedule"]) for _, q in points[:3]} == {("generalized_dice", "rebalance"),
                                                                    ("dice", "rebalance"),
                                                                    ("generalized_dice", "increase")}


# ---------------------------------------------------------------------------------------------------- resources


def test_resources_cpu_cluster_never_requests_a_gpu():
    cfg = validate({**TINY, "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0.5}})
    res, slots = trial_resources(cfg, {"CPU": 2.0})
    assert res == {"cpu": 1.0, "gpu": 0.0} and slots == 2


def test_resources_cuda_demanded_on_a_cpu_cluster_is_an_error():
    cfg = validate({**TINY, "trial": {**TINY["trial"], "train": {**TINY["trial"]["train"], "device": "cuda"}}})
    with pytest.raises(ValueError, match="trial.train.device is 'cuda' but the Ray cluster has no GPU"):
        trial_resources(cfg, {"CPU": 2.0})
    assert trial_resources(cfg, {"CPU": 2.0, "GPU": 1.0})[0]["gpu"] == 1.0


def test_resources_fractional_gpus_set_concurrency():
    cfg = validate({**TINY, "resources": {"cpus_per_trial": 2, "gpus_per_trial": 0.5}})
    res, slots = trial_resources(cfg, {"CPU": 32.0, "GPU": 4.0})
    assert res == {"cpu": 2.0, "gpu": 0.5} and slots == 8
    with pytest.raises(ValueError, match="cpus_per_trial=64"):
        trial_resources(validate({**TINY, "resources": {"cpus_per_trial": 64}}), {"CPU": 2.0})


# ---------------------------------------------------------------------------------------------------- end to end


TINY_E2E = {**TINY, "trial": {**TINY["trial"], "eval": {**TINY["trial"]["eval"], "overlays": 1}}}


@pytest.fixture(scope="module")
def tiny_whole(ray_session, tmp_path_factory):
    """The tiny two-model sweep, run whole once for the tests below: (config, --out folder, state)."""
    from raysweep.sweep import SweepRunner

    cfg = validate(TINY_E2E)
    out = tmp_path_factory.mktemp("whole") / "out"
    return cfg, out, SweepRunner(cfg, out, progress=False).run()


def test_end_to_end_sweep_writes_three_tables_and_resumes(tiny_whole, tmp_path):
    from raysweep.results import read_results, read_sweep_meta
    from raysweep.sweep import SweepRunner

    cfg, out, state = tiny_whole
    assert state["tune_done"] and state["confirm_done"]
    tables = read_results(out / "results")
    trials = tables["trials"]
    tune, confirm = trials[trials.stage == "tune"], trials[trials.stage == "confirm"]
    assert len(tune) == 6 and len(confirm) == 4  # 4 groups x 1 seed
    assert trials.trial_id.is_unique
    assert set(trials.loss) == {"tversky", "ce"} and set(trials.arch) == {"cnn", "transformer"}
    assert set(trials.status) <= {"completed", "stopped"}
    assert tune[tune.loss == "tversky"].is_default.sum() == 2  # the defaults were evaluated in both models
    assert confirm.final_metric.notna().all() and (confirm.steps_done == 4).all()
    assert len(tables["curves"]) >= len(trials)
    cases = tables["cases"]
    assert set(cases.trial_id) == set(trials.trial_id) and cases.dice.notna().any()
    meta = read_sweep_meta(out / "results")
    assert meta["planned"] == {"tune": 6, "confirm": 4} and meta["ended_at"]

    # Selection never on the ranking cases: tune trials scored only the val volumes, confirmation runs only the test
    # volumes, exactly the lists sweep.json records.
    protocol = meta["protocol"]
    selection = set(protocol["selection"]["synthetic"]["cases"])
    ranking = set(protocol["ranking"]["synthetic"]["cases"])
    assert protocol["selection"]["synthetic"]["split"] == "val" and protocol["ranking"]["synthetic"]["split"] == "test"
    assert len(selection) == 1 and len(ranking) == 6 and not selection & ranking
    assert set(cases[cases.stage == "tune"].case) == selection
    assert set(cases[cases.stage == "confirm"].case) == ranking
    assert protocol["early_stopping"]["scope"] == "group" and protocol["early_stopping"]["rungs"] == [1]
    assert protocol["power"]["synthetic/cnn"]["declarable"]
    stats = meta["datasets"]["synthetic"]  # what the ranking holds for (raysweep data inspect)
    assert len(stats["per_class"]) == 9 and stats["splits"] == {"train": 3, "val": 1, "test": 6}
    # Who proposed each tuning trial: every searchable group starts from its defaults; ce has nothing to tune.
    assert set(tune[tune.loss == "ce"].proposal) == {"fixed"}
    assert sorted(tune[tune.loss == "tversky"].proposal) == ["branch", "branch", "default", "default"]
    assert (trials.replicate == 0).all() and meta["protocol"]["tuning"]["replicates"] == 1
    assert confirm.proposal.isna().all()

    # A hyperparameter keeps its name from the search space to the table; sweep.json records each loss's space.
    from raysweep.losses import LOSSES

    assert {tuple(sorted(json.loads(p))) for p in tune[tune.loss == "tversky"].params} == {
        tuple(sorted(LOSSES["tversky"].space))}
    assert meta["spaces"]["tversky"] == {k: d.to_dict() for k, d in LOSSES["tversky"].space.items()}
    # Every trial that ran its budget brought its final overlays to where the report reads them (from any node:
    # they travel with the final report); checkpoints are gone once the stages end.
    for trial_id in trials[trials.status == "completed"].trial_id:
        assert list((out / "overlays" / trial_id).glob("*.png")), trial_id
    assert not list((out / "ray").rglob("checkpoint_*"))
    from raysweep.report import build_report

    html = build_report(out, tmp_path / "report.html").read_text()
    assert 'class="overlay"' in html and "Predictions of the best and the worst loss" in html

    # The README's schema section comes from real rows: what this sweep wrote has the documented structure.
    from raysweep.results.examples import example_from, structure

    documented = Path(__file__).resolve().parents[1] / "docs" / "results-example.json"
    if os.environ.get("RAYSWEEP_UPDATE_EXAMPLE"):
        documented.write_text(json.dumps(example_from(out), indent=1, sort_keys=True, default=str) + "\n")
    assert structure(example_from(out)) == structure(json.loads(documented.read_text())), (
        "the results a sweep writes changed: regenerate docs/results-example.json (RAYSWEEP_UPDATE_EXAMPLE=1 pytest "
        "tests/test_sweep.py -k end_to_end) and the README (make readme)")

    # Running again on the same folder finds both stages done: nothing is rerun or duplicated.
    SweepRunner(cfg, out, progress=False).run()
    assert len(read_results(out / "results")["trials"]) == len(trials)
    # A different config in the same folder is refused, before any work.
    with pytest.raises(ValueError, match="different config"):
        SweepRunner(validate({**TINY, "losses": ["dice"]}), out, progress=False).run()
    assert json.loads((out / "state.json").read_text())["confirm_done"]


def test_a_sweep_run_in_parts_merges_into_what_the_whole_run_wrote(tiny_whole, tmp_path):
    """The same config run one architecture at a time (raysweep run --arch), then merged: the same groups, seeds and
    protocol as the whole run, the same score wherever a group confirmed the same configuration (ce has one, so
    both models are compared), and one report of both cells."""
    import shutil

    import pandas as pd

    from raysweep.cli import main
    from raysweep.results import merge_results, read_results, read_sweep_meta, write_sweep_meta
    from raysweep.sweep import SweepRunner

    _, whole, _ = tiny_whole
    path = write(tmp_path, TINY_E2E)
    parts = []
    for arch in ("cnn", "transformer"):
        parts.append(tmp_path / arch)
        SweepRunner(load_config(path, {"architectures": [arch]}), parts[-1], progress=False).run()
    assert main(["merge", *map(str, parts), "--out", str(tmp_path / "merged"), "-o", str(tmp_path / "m.html")]) == 0
    a, b = read_sweep_meta(whole / "results"), read_sweep_meta(tmp_path / "merged" / "results")
    assert b["config"] == a["config"] and b["planned"] == a["planned"]
    key = lambda g: sorted(json.dumps(x, sort_keys=True) for x in g)  # noqa: E731
    assert key(b["groups"]) == key(a["groups"]) and b["spaces"] == a["spaces"]
    assert {k: v for k, v in b["protocol"].items() if k != "data_check"} == {
        k: v for k, v in a["protocol"].items() if k != "data_check"}
    assert [p["cells"] for p in b["parts"]] == [["synthetic/cnn"], ["synthetic/transformer"]]
    assert b["wall_s"] == pytest.approx(sum(p["wall_s"] for p in b["parts"]))
    cols = ["stage", "arch", "loss", "replicate", "seed"]
    ta, tb = (read_results(d / "results")["trials"] for d in (whole, tmp_path / "merged"))
    assert len(ta) == 10 and sorted(map(tuple, ta[cols].values.tolist())) == sorted(map(tuple, tb[cols].values.tolist()))
    both = pd.merge(ta[ta.stage == "confirm"], tb[tb.stage == "confirm"], on=cols + ["params"])
    assert set(both.loss) >= {"ce"} and set(both.arch) == {"cnn", "transformer"}
    assert both.final_metric_x.tolist() == pytest.approx(both.final_metric_y.tolist(), abs=1e-6)
    html = (tmp_path / "m.html").read_text()
    assert "synthetic / cnn" in html and "synthetic / transformer" in html
    assert "<dt>part 2</dt><dd>" + b["parts"][1]["sweep_id"] + ": synthetic/transformer replicate 0, started" in html
    # Not one sweep: the same cell twice, or parts of different configs, are refused and nothing is written.
    with pytest.raises(ValueError, match="cell synthetic/cnn, replicate 0 is in two parts"):
        merge_results([whole, parts[0]], tmp_path / "again")
    shutil.copytree(parts[0] / "results", tmp_path / "other")
    meta = read_sweep_meta(tmp_path / "other")
    write_sweep_meta(tmp_path / "other", {**meta, "config": {**meta["config"], "losses": ["ce"]}})
    with pytest.raises(ValueError, match="config.losses is"):
        merge_results([tmp_path / "other", parts[1]], tmp_path / "again")
    assert not (tmp_path / "again").exists()


def test_replicated_sweep_tunes_and_confirms_each_replicate_on_its_own(ray_session, tmp_path):
    """Two replicates end to end: every row carries its replicate, each replicate's trials train with its own seeds,
    each replicate confirms the best of its own tuning trials, and the report tests with the replicates."""
    from raysweep.config import confirmation_seeds, tuning_seed
    from raysweep.report import paired, stats
    from raysweep.results import read_results, read_sweep_meta
    from raysweep.sweep import SweepRunner

    with pytest.warns(UserWarning, match="replicates is 2"):  # two keep the run short; the test is weak with two
        cfg = validate({**TINY, "architectures": ["cnn"], "tuning": {**TINY["tuning"], "replicates": 2}})
    out = tmp_path / "out"
    state = SweepRunner(cfg, out, progress=False).run()
    tables = read_results(out / "results")
    trials = tables["trials"]
    tune, confirm = trials[trials.stage == "tune"], trials[trials.stage == "confirm"]
    assert len(tune) == 2 * 2 + 2 * 1 and len(confirm) == 2 * 2  # (tversky 2 + ce 1) per replicate; 4 groups
    for r in (0, 1):
        assert set(tune[tune.replicate == r].seed) == {tuning_seed(cfg, r)}
        assert set(confirm[confirm.replicate == r].seed) == set(confirmation_seeds(cfg, r))
        # Replicate r's confirmation uses the best full-budget point of replicate r's own tuning trials.
        own = tune[(tune.replicate == r) & (tune.loss == "tversky") & (tune.status == "completed")]
        best = json.loads(own.sort_values("final_metric").params.iloc[-1])
        key = "synthetic/cnn/tversky" + ("/r1" if r else "")
        assert state["best"][key] == best
        assert json.loads(confirm[(confirm.replicate == r) & (confirm.loss == "tversky")].params.iloc[0]) == best
    for name in ("curves", "cases"):
        merged = tables[name].merge(trials[["trial_id", "replicate"]], on="trial_id", suffixes=("", "_t"))
        assert (merged.replicate == merged.replicate_t).all()
    meta = read_sweep_meta(out / "results")
    assert meta["protocol"]["tuning"]["replicates"] == 2
    assert [g["replicate"] for g in meta["groups"]] == [0, 1, 0, 1]
    frames = stats.cell_view(tables)
    cell = stats.cell_stats(frames["trials"], frames["cases"], "synthetic", "cnn", n_boot=50)
    assert cell.n_replicates == 2 and cell.test_method == paired.WELCH and not cell.replication_warning

    # One more replicate, run apart (raysweep run --replicates 2:3) and merged: the sweep a run of 3 makes.
    from raysweep.results import merge_results
    from raysweep.sweep.records import protocol

    three = validate({**TINY, "architectures": ["cnn"], "tuning": {**TINY["tuning"], "replicates": 3}})
    more = validate({**TINY, "architectures": ["cnn"], "tuning": {**TINY["tuning"], "replicates": 1,
                                                                    "first_replicate": 2}})
    SweepRunner(more, tmp_path / "more", progress=False).run()
    merged = merge_results([out, tmp_path / "more"], tmp_path / "merged")
    meta = read_sweep_meta(merged)
    assert meta["config"] == three.to_dict() and [p["replicates"] for p in meta["parts"]] == [[0, 1], [2, 2]]
    assert {k: v for k, v in meta["protocol"].items() if k != "data_check"} == {
        k: v for k, v in protocol(three).items() if k != "data_check"}
    trials = read_results(merged)["trials"]
    assert set(trials[trials.replicate == 2].seed) == {tuning_seed(three, 2), *confirmation_seeds(three, 2)}
    frames = stats.cell_view(read_results(merged))
    assert stats.cell_stats(frames["trials"], frames["cases"], "synthetic", "cnn", n_boot=50).n_replicates == 3
    from raysweep.report import build_report

    html = build_report(merged, tmp_path / "merged.html").read_text()  # the report lists each part's replicates
    assert ": synthetic/cnn replicates 0-1, started" in html and ": synthetic/cnn replicate 2, started" in html


@pytest.mark.parametrize("path", ["cluster/cluster.yaml", "cluster/local.yaml"])
def test_cluster_yamls_pass_rays_own_validation(path):
    import copy

    import yaml

    util = pytest.importorskip("ray.autoscaler._private.util")
    config = yaml.safe_load(open(path))
    util.validate_config(util.prepare_config(copy.deepcopy(config)))  # raises on an invalid launcher config
    # raysweep's own expectations: token auth set alike on every node, the dashboard on localhost only.
    starts = config["head_start_ray_commands"] + config["worker_start_ray_commands"]
    assert all("RAY_AUTH_MODE=" in c for c in starts if c.strip().startswith(("RAY_", "ray start")))
    assert any("--dashboard-host=127.0.0.1" in c for c in config["head_start_ray_commands"])


# ---------------------------------------------------------------------------------------------------- the protocol


def _fake_trial(trial_id, loss, arch="cnn"):
    from types import SimpleNamespace

    return SimpleNamespace(trial_id=trial_id, config={"tags": {"dataset": "synthetic", "arch": arch, "loss": loss}})


def _full_budget_trials(scheduler, offsets, qualities, max_t):
    """Run each group's trials in turn (group A's k-th trial, then B's k-th, ...), each reporting score
    ``quality * t / max_t + offset`` at t = 1..max_t until the scheduler stops it; count full-budget trials."""
    full = {loss: 0 for loss in offsets}
    for k, q in enumerate(qualities):
        for loss, offset in offsets.items():
            trial = _fake_trial(f"{loss}-{k}", loss)
            scheduler.on_trial_add(None, trial)
            for t in range(1, max_t + 1):
                result = {"training_iteration": t, "score": q * t / max_t + offset}
                action = scheduler.on_trial_result(None, trial, result)
                if action == scheduler.STOP:
                    break
            scheduler.on_trial_complete(None, trial, result)
            full[loss] += t == max_t
    return full


def test_early_stopping_compares_a_trial_only_with_its_own_group():
    """Two groups whose scores differ by a constant get the same number of full-budget trials (a slow-starting loss
    is not cut for being behind another loss); one ASHA over both would starve the lower group."""
    from ray.tune.schedulers import AsyncHyperBandScheduler

    from raysweep.sweep import GroupScheduler

    qualities = [0.5, 0.7, 0.3, 0.9, 0.6, 0.8, 0.4, 0.65]
    offsets = {"dice": 0.3, "boundary": 0.0}
    per_group = _full_budget_trials(GroupScheduler(max_t=8, grace_period=1, reduction_factor=2), offsets,
                                    qualities, 8)
    assert per_group["dice"] == per_group["boundary"] >= 1
    shared = AsyncHyperBandScheduler(metric="score", mode="max", max_t=8, grace_period=1, reduction_factor=2)
    across = _full_budget_trials(shared, offsets, qualities, 8)
    assert across["boundary"] < per_group["boundary"]  # the defect the per-group scheduler removes


def test_group_scheduler_rungs_match_rays_bracket():
    from ray.tune.schedulers.async_hyperband import _Bracket

    from raysweep.sweep import asha_rungs

    for max_t, grace, rf in [(10, 1, 2), (10, 4, 2), (7, 2, 3), (100, 1, 4), (4, 4, 2)]:
        ray_rungs = sorted(m for m, _ in _Bracket(grace, max_t, rf, 0)._rungs if m < max_t)
        assert asha_rungs(max_t, grace, rf) == ray_rungs


def test_searcher_proposals_startup_trials_and_pruned_stops():
    """The defaults come first, then every categorical branch, then TPE samples at random until n_startup_trials of
    the group finished; a trial that
    early stopping ended is told to Optuna as PRUNED, not as a COMPLETE score of the full budget."""
    import optuna

    from raysweep.config import n_startup_trials

    cfg = validate({**TINY, "architectures": ["cnn"], "losses": ["tversky"],
                    "tuning": {**TINY["tuning"], "trials_per_group": 6}})
    assert n_startup_trials(cfg) == 2 and validate({**TINY, "tuning": {"n_startup_trials": 5}}).tuning.n_startup_trials == 5
    searcher = GroupSearcher(cfg)
    proposals = []
    for i in range(6):
        config = searcher.suggest(f"t{i}")
        proposals.append(config["tags"]["proposal"])
        stopped = i == 1
        searcher.on_trial_complete(f"t{i}", {"score": 0.1 * i, "step": 2 if stopped else 4,
                                             "status": "running" if stopped else "completed"})
    # tversky's one categorical (per_image) has one branch besides the default: tried second (stratified start-up).
    assert proposals == ["default", "branch", "model", "model", "model", "model"]
    study = searcher.subs["synthetic/cnn/tversky"]._ot_study
    states = [t.state for t in study.trials]
    assert states[1] == optuna.trial.TrialState.PRUNED and states.count(optuna.trial.TrialState.COMPLETE) == 5


def test_a_groups_proposals_do_not_depend_on_the_groups_beside_it():
    """A group's sampler is seeded by its key, not its place in the list: the transformer's groups propose the same
    points in the whole two-model sweep as in a transformer-only part (raysweep run --arch; raysweep merge), and a
    sweep of 4 replicates repeats the proposals of a sweep of 3 for replicates 0 to 2. A new tuning.seed proposes
    anew."""
    def proposals(cfg):
        searcher, out = GroupSearcher(cfg), {}
        for i in range(searcher.total):
            tags = searcher.suggest(f"t{i}")["tags"]
            # a score that depends on the point alone (as training does), not on when the trial ran
            searcher.on_trial_complete(f"t{i}", {"score": 1 / (1 + abs(tags["params"]["gamma"] - 1)), "step": 4})
            if tags["proposal"] in ("random", "model"):
                out.setdefault(f"{tags['arch']}/r{tags['replicate']}", []).append(tags["params"])
        return out

    base = {**TINY, "losses": ["focal"], "tuning": {**TINY["tuning"], "trials_per_group": 5}}  # no categorical
    whole = proposals(validate(base))
    part = proposals(validate({**base, "architectures": {"transformer": TINY["architectures"]["transformer"]}}))
    assert part["transformer/r0"] == whole["transformer/r0"] and len(part["transformer/r0"]) == 4
    three = proposals(validate({**base, "tuning": {**base["tuning"], "replicates": 3}}))
    four = proposals(validate({**base, "tuning": {**base["tuning"], "replicates": 4}}))
    assert len(three) == 6 and all(four[k] == three[k] for k in three) and four["cnn/r3"] != four["cnn/r2"]
    assert four["cnn/r0"] == whole["cnn/r0"]  # replicate 0 keeps the key of a sweep from before replicates
    other = proposals(validate({**base, "tuning": {**base["tuning"], "seed": 7}}))
    assert other["cnn/r0"] != whole["cnn/r0"]


def test_confirmation_picks_among_full_budget_trials_only():
    from types import SimpleNamespace

    from raysweep.sweep import best_points

    cfg = validate(TINY)  # 4 steps per trial

    def result(loss, point, score, step, status):
        return SimpleNamespace(config={"tags": {"dataset": "synthetic", "arch": "cnn", "loss": loss,
                                                 "params": point}},
                               metrics={"score": score, "step": step, "status": status})

    grid = [result("tversky", {"alpha": 0.1}, 0.9, 2, "running"),   # stopped early: never chosen
            result("tversky", {"alpha": 0.2}, 0.5, 4, "completed"),
            result("tversky", {"alpha": 0.3}, 0.4, 4, "completed"),
            result("tversky", {"alpha": 0.4}, 0.0, 3, "diverged"),
            result("ce", {}, 0.7, 2, "running")]                         # no full-budget trial: absent
    assert best_points(grid, cfg) == {"synthetic/cnn/tversky": {"alpha": 0.2}}


def test_confirmation_seeds_are_distinct_and_not_the_tuning_seed():
    from raysweep.sweep import confirmation_seeds

    cfg = validate({**TINY, "tuning": {**TINY["tuning"], "seed": 5}, "confirmation": {"seeds": 4}})
    seeds = confirmation_seeds(cfg)
    assert len(set(seeds)) == 4 and 5 not in seeds
    group = cfg.groups()[0]
    configs = [compose_trial(cfg, group, {}, seed=s, stage="confirm") for s in seeds]
    assert sorted(c["trial"]["seed"] for c in configs) == sorted(seeds)


def test_tuning_selects_on_validation_cases_and_confirmation_ranks_on_test_cases():
    from raysweep.config import protocol_cases

    cfg = validate(TINY)
    group = cfg.groups()[0]
    tune = compose_trial(cfg, group, {}, seed=0, stage="tune")["trial"]
    confirm = compose_trial(cfg, group, {}, seed=1, stage="confirm")["trial"]
    assert (tune["eval"]["split"], tune["dataset"]["eval_options"]) == ("val", {"num_volumes": 1})
    assert (confirm["eval"]["split"], confirm["dataset"]["eval_options"]) == ("test", {"num_volumes": 6})
    cases = protocol_cases(cfg)
    assert cases["selection"]["synthetic"]["cases"] == ["val000"]
    assert cases["ranking"]["synthetic"]["cases"] == [f"test{i:03d}" for i in range(6)]
    with pytest.raises(ValueError, match="trial.eval.split is set by the sweep"):
        validate({**TINY, "trial": {**TINY["trial"], "eval": {"split": "test"}}})


def test_a_design_that_cannot_separate_losses_is_refused_before_any_trial():
    """5 ranking cases can never give a two-sided Wilcoxon p below 2/32 = 0.0625: refused, naming the cases needed;
    `underpowered: warn` runs it with a warning."""
    five = {"synthetic": {**TINY["datasets"]["synthetic"], "eval_options": {"num_volumes": 5}}}
    with pytest.raises(ValueError, match=r"cannot separate any two losses in cell synthetic/cnn.*"
                                         r"smallest adjusted p-value any pair can reach is 0\.0625.*at least 6"):
        validate({**TINY, "datasets": five})
    with pytest.warns(UserWarning, match="cannot separate any two losses"):
        validate({**TINY, "datasets": five, "confirmation": {"seeds": 1, "underpowered": "warn"}})
    # 26 losses make 325 comparisons: 6 cases were enough for 2 losses, 14 are needed for 26.
    with pytest.raises(ValueError, match="at least 14"):
        validate({**TINY, "losses": "survey"})
    validate({**TINY, "datasets": five, "confirmation": {"seeds": 0}})  # nothing is ranked: nothing to refuse


def test_resume_drops_the_rows_of_a_trial_the_restored_experiment_does_not_know(tmp_path):
    """The orphaned-row case, made deterministic: a trial whose row was written after the last experiment snapshot
    (the driver was killed in between) is unknown to the restored experiment, whose searcher proposes a replacement.
    Reconciling at the first step of the resumed driver removes its rows and keeps the known trials' rows; a known
    trial that ended but has no row is written then."""
    from types import SimpleNamespace

    from raysweep import results
    from raysweep.results import trial_rows
    from raysweep.sweep import ResultsCallback

    cfg = validate(TINY)
    group = cfg.groups()[0]
    config = compose_trial(cfg, group, {"alpha": 0.3, "beta": 0.7}, seed=0, stage="tune", proposal="default")
    result = {"status": "completed", "step": 4, "score": 0.5, "dice": 0.5, "primary_metric": "dice",
              "training_iteration": 2}
    rdir = tmp_path / "results"
    for trial_id in ("known", "orphan"):
        results.write_trial_rows(rdir, trial_id, *trial_rows("s", trial_id, config["tags"], result,
                                                             [{"training_iteration": 1, "step": 2, "metric": 0.4}],
                                                             versions={"torch": "x"}))
    assert results.stage_trial_ids(rdir, "tune") == {"known", "orphan"}

    def trial(trial_id, status):
        return SimpleNamespace(trial_id=trial_id, status=status, config=config, last_result=dict(result),
                               path=None, storage=None)

    callback = ResultsCallback(rdir, tmp_path / "overlays", sweep_id="s", stage="tune", planned=3,
                               versions={"torch": "x"}, progress=False)
    callback.on_step_begin(0, [trial("known", "TERMINATED"), trial("unwritten", "TERMINATED"),
                               trial("running", "RUNNING")])
    assert results.stage_trial_ids(rdir, "tune") == {"known", "unwritten"}
    tables = results.read_results(rdir)
    assert set(tables["curves"].trial_id) == {"known"} and "orphan" not in set(tables["cases"].trial_id)
    assert not list((rdir / "curves").glob("part-orphan*"))
    callback.on_step_begin(0, [])  # once per driver session: a second call changes nothing
    assert results.stage_trial_ids(rdir, "tune") == {"known", "unwritten"}


def test_callback_deletes_a_checkpoint_only_once_no_restore_can_need_it(tmp_path):
    """Disk bookkeeping across experiment snapshots (Tune calls ``get_state`` at each one). A running trial's
    checkpoint goes only once a snapshot has named a newer one and that snapshot is itself one snapshot old; an ended
    trial's checkpoints go one snapshot after the snapshot that recorded it ended. Tune's ``num_to_keep=2`` deleted
    checkpoint 0 when checkpoint 2 arrived, while the snapshot on storage still named checkpoint 0: a driver killed
    then left a trial that could not be restored."""
    import pickle
    from types import SimpleNamespace

    from pyarrow import fs as pafs

    from raysweep.sweep import ResultsCallback

    cfg = validate(TINY)
    config = compose_trial(cfg, cfg.groups()[0], {"alpha": 0.3, "beta": 0.7}, seed=0, stage="tune",
                           proposal="default")
    fs, trial_dir = pafs.LocalFileSystem(), tmp_path / "ray" / "trial"
    t = SimpleNamespace(trial_id="t", status="RUNNING", config=config, last_result=None, path=str(trial_dir),
                        storage=SimpleNamespace(storage_filesystem=fs), checkpoint=None)
    callback = ResultsCallback(tmp_path / "results", tmp_path / "overlays", sweep_id="s", stage="tune", planned=1,
                               versions={"torch": "x"}, progress=False)

    def save(i):  # the trial writes checkpoint i, Tune tells the callback, then registers it as the latest
        ckpt = SimpleNamespace(path=str(trial_dir / f"checkpoint_{i:06d}"), filesystem=fs)
        (trial_dir / f"checkpoint_{i:06d}").mkdir(parents=True)
        (trial_dir / f"checkpoint_{i:06d}" / "state.pt").write_bytes(b"x")
        callback.on_checkpoint(0, [t], t, ckpt)
        t.checkpoint = ckpt

    def on_disk():
        return sorted(p.name[-1] for p in trial_dir.glob("checkpoint_*"))

    save(0)
    callback.get_state()  # snapshot 1 names checkpoint 0
    save(1), save(2)
    callback.get_state()  # snapshot 2 names checkpoint 2; snapshot 1 may still be the one on storage
    assert on_disk() == ["0", "1", "2"]
    save(3)
    callback.get_state()  # snapshot 2 is on storage by now: nothing before checkpoint 2 can be restored
    assert on_disk() == ["2", "3"]
    assert pickle.loads(pickle.dumps(callback))._running == {}  # session bookkeeping, not experiment state

    t.status, t.last_result = "TERMINATED", {"status": "completed", "step": 4, "score": 0.5, "dice": 0.5,
                                             "primary_metric": "dice", "training_iteration": 4}
    callback.on_trial_complete(0, [t], t)
    callback.get_state()  # this snapshot records the trial as ended; the one on storage may not yet
    assert on_disk() == ["2", "3"]
    callback.get_state()
    assert on_disk() == [] and callback._running == {}


def test_variants_are_cells_of_their_own():
    """A dataset's variants (here the synthetic data's own label noise) each become a cell: every loss is tuned and
    confirmed in each, with the variant's options merged over the dataset's; keys and the protocol name the cell."""
    from raysweep.config import power_limits, protocol_cases

    variants = {"clean": {}, "noisy": {"axis": "label noise", "level": 0.3, "train_options": {"label_noise": 0.3}}}
    cfg = validate({**TINY, "datasets": {"synthetic": {**TINY["datasets"]["synthetic"], "variants": variants}}})
    assert cfg.cells() == [("synthetic", "clean"), ("synthetic", "noisy")]
    assert len(cfg.groups()) == 2 * len(validate(TINY).groups())
    noisy = next(g for g in cfg.groups() if g.variant == "noisy")
    assert noisy.key == f"synthetic:noisy/{noisy.arch}/{noisy.loss}"
    envelope = compose_trial(cfg, noisy, {}, seed=0, stage="tune")
    section = envelope["trial"]["dataset"]
    assert section["train_options"]["label_noise"] == 0.3 and "variants" not in section
    assert envelope["tags"]["variant"] == "noisy"
    clean = compose_trial(cfg, next(g for g in cfg.groups() if g.variant == "clean"), {}, seed=0, stage="tune")
    assert "label_noise" not in clean["trial"]["dataset"].get("train_options", {})
    assert set(protocol_cases(cfg)["ranking"]) == {"synthetic:clean", "synthetic:noisy"}
    assert "synthetic:noisy/cnn" in power_limits(cfg)


@pytest.mark.parametrize("variants, match", [
    ({"a": {"axis": "x", "level": 1}}, "exactly one variant without an axis"),
    ({"clean": {}, "b": {}}, "exactly one variant without an axis"),
    ({"clean": {}, "b": {"axis": "noise"}}, "variants.b.level.*needs a level"),
    ({"clean": {}, "b": {"axis": "noise", "level": 1, "train_options": {"label_nosie": 0.1}}},
     "variants.b.train_options.*label_nosie"),
    ({"clean": {}, "bad name": {"axis": "noise", "level": 1}}, "variants"),
])
def test_bad_variants_are_refused(variants, match):
    with pytest.raises(ValueError, match=match):
        validate({**TINY, "datasets": {"synthetic": {**TINY["datasets"]["synthetic"], "variants": variants}}})


def test_the_progress_line_of_a_resumed_stage_counts_what_ended_before(capsys, monkeypatch):
    """A stage resumed after 6 of 10 trials ended: the next line says 7/10, counts the groups already complete, and
    times the ETA on this session's trials only (not on the time since the stage first started)."""
    from types import SimpleNamespace

    from raysweep.sweep import callback

    progress = callback._Progress("tune", planned=10, enabled=True)
    progress.t0 = 0.0  # as unpickled from the stage's first session, long before
    clock = iter([1000.0, 1060.0])  # the session starts at 1000 s; its first trial ends a minute later
    monkeypatch.setattr(callback, "time", SimpleNamespace(time=lambda: next(clock)))
    progress.resume(["a"] * 2 + ["b"] * 2 + ["c"] * 2)
    progress.finished("c", 0.5, "completed", running=1, group_quota=2)
    line = capsys.readouterr().out
    assert line.startswith("[tune] 7/10 trials, 3 groups done, 1 running") and "1.0 min elapsed, ~3.0 min left" in line


def test_a_driver_stopped_in_confirmation_keeps_the_tuning_stages_time_on_record(tmp_path, monkeypatch):
    """sweep.json's wall_s sums the stages that finished over every session of a resumed sweep: a driver stopped in
    confirmation must not lose the (long) tuning stage's time. Ray and the stages are stand-ins: this is bookkeeping."""
    import ray

    from raysweep.sweep import SweepRunner, runner
    from raysweep.sweep.records import read_state

    clock = {"now": 1000.0}
    monkeypatch.setattr(runner.time, "time", lambda: clock["now"])
    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 2.0})
    monkeypatch.setattr(runner, "trial_resources", lambda cfg, cluster: ({"CPU": 1}, 2))
    monkeypatch.setattr(runner, "sweep_meta", lambda *a, **k: {"wall_s": None})
    monkeypatch.setattr(SweepRunner, "_prepare_losses", lambda self: {})

    class Stages:
        stopped = True

        def __init__(self, *a, **k):
            pass

        def tune(self):
            clock["now"] += 3000.0
            return {}

        def confirm(self):
            clock["now"] += 500.0
            if Stages.stopped:
                raise KeyboardInterrupt  # the driver is stopped part-way through confirmation

        def prune_checkpoints(self, stage):
            pass

    monkeypatch.setattr(runner, "Stages", Stages)
    cfg = validate(TINY)
    with pytest.raises(KeyboardInterrupt):
        SweepRunner(cfg, tmp_path, progress=False).run()
    assert read_state(tmp_path / "state.json")["wall_s"] == 3000.0  # the finished stage, not the stopped one
    Stages.stopped = False
    state = SweepRunner(cfg, tmp_path, progress=False).run()  # resumed: confirmation is run again, to its end
    assert state["wall_s"] == 3500.0
