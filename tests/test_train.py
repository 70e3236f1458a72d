"""The training trial: every loss trains with both default models, reproducibility, resume, failures, the combined
objective and its schedules, config errors, the CLI, and one run under Ray Tune."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch
import yaml

from raysweep.cli import main
from raysweep.losses import LOSSES, build_loss
from raysweep.trial import DEFAULTS, CombinedObjective, resolve_config, schedule_weight, train_trial

# Tiny sizes: 32 x 32 slices, 4 slices per volume, one training volume (2 batches of 2 per epoch), one test volume.
TINY = {
    "dataset": {"options": {"image_size": 32, "depth": 4}, "train_options": {"num_volumes": 1},
                "eval_options": {"num_volumes": 1}},
    "model": {"name": "cnn", "encoder": "resnet18"},
    "train": {"steps": 2, "batch_size": 2, "progress": False},
    "eval": {"every": None, "overlays": 0},
}
#: Keys that measure the machine, not the training.
TIMING = ("steps_per_s", "peak_memory_mb")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(**dotted):
    """TINY with dotted overrides, e.g. ``tiny(**{"train.steps": 4})``."""
    return {**TINY, **dotted}


def scores(result):
    return {k: v for k, v in result.items() if not k.startswith("time/") and k not in TIMING}


def finite(x):
    return isinstance(x, float) and math.isfinite(x)


# -- every loss, both models ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("model", ["cnn", "transformer"])
@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_every_loss_trains_with_both_default_models(loss, model, request):
    try:
        build_loss(loss)
    except FileNotFoundError:  # a loss that needs a prepared artefact (inverseform's InverseNet): the shared one
        request.getfixturevalue("inversenet_cache")
    overrides = {"loss.name": loss, "model.name": model}
    if model == "transformer":
        overrides["model.encoder"] = None  # the named default: Segformer / mit_b0
    r = train_trial(tiny(**overrides))
    assert r["status"] == "completed" and r["step"] == 2 and r["training_iteration"] == 1
    assert r["primary_metric"] == "dice"
    for key in ("loss", f"loss/{loss}", "dice", "iou", "hd95", "miou", "lr", "time/forward_ms", "steps_per_s"):
        assert finite(r[key]), (key, r[key])
    assert 0.0 <= r["dice"] <= 1.0 and r[f"weight/{loss}"] == 1.0
    assert all(finite(r[f"dice/{c}"]) for c in ("lobe", "vessel", "specks"))
    rows = json.loads(r["cases"])
    assert {row["case"] for row in rows} == {"test000"} and len(rows) == 8  # one volume x 8 organs


def test_learnable_loss_parameters_are_optimised(tmp_path):
    spec = next(s for s in LOSSES.values() if s.has_parameters)  # t_loss's nu
    r = train_trial(tiny(**{"loss.name": spec.name, "output_dir": str(tmp_path)}))
    assert r["status"] == "completed"
    state = torch.load(tmp_path / "checkpoint_000002" / "state.pt", weights_only=True)
    initial = build_loss(spec.name).state_dict()
    trained = {k.split(".", 2)[2]: v for k, v in state["objective"].items()}
    assert trained.keys() == initial.keys()
    assert any(not torch.equal(trained[k], initial[k]) for k in initial)
    assert any(g.get("weight_decay") == 0.0 for g in state["optimizer"]["param_groups"])


# -- reproducibility and resume ------------------------------------------------------------------------------------


def test_same_config_and_seed_give_identical_metrics():
    config = tiny(**{"train.steps": 3, "model.name": "transformer", "model.encoder": None})
    a, b = train_trial(config), train_trial(config)
    assert scores(a) == scores(b)
    c = train_trial({**config, "seed": 1})
    assert scores(c)["loss"] != scores(a)["loss"]


def test_data_workers_do_not_change_the_result():
    # Each item's augmentation is seeded from (seed, epoch, position): the batches do not depend on the workers.
    config = tiny(**{"train.steps": 3, "model.name": "transformer", "model.encoder": None})
    assert scores(train_trial(config)) == scores(train_trial({**config, "train.num_workers": 2}))


def test_resume_from_a_checkpoint_equals_the_uninterrupted_run(tmp_path):
    config = tiny(**{"train.steps": 6, "eval.every": 3, "model.name": "transformer", "model.encoder": None,
                     "dataset.train_options": {"num_volumes": 2}})  # 4 steps per epoch: resume mid-epoch
    full = train_trial({**config, "output_dir": str(tmp_path / "full")})
    assert sorted(p.name for p in (tmp_path / "full").glob("checkpoint_*")) == ["checkpoint_000003",
                                                                                  "checkpoint_000006"]
    resumed = train_trial({**config, "output_dir": str(tmp_path / "resumed"),
                           "checkpoint.resume": str(tmp_path / "full" / "checkpoint_000003")})
    assert {**scores(resumed), "resumed_from_step": 0} == scores(full)
    assert resumed["training_iteration"] == full["training_iteration"] == 2
    assert (resumed["resumed_from_step"], full["resumed_from_step"]) == (3, 0)


def test_resume_refuses_a_checkpoint_of_another_config(tmp_path):
    config = tiny(**{"output_dir": str(tmp_path)})
    train_trial(config)
    with pytest.raises(ValueError, match="different config.*optimizer.lr"):
        train_trial({**config, "optimizer.lr": 0.5, "checkpoint.resume": str(tmp_path / "checkpoint_000002")})
    with pytest.raises(FileNotFoundError, match="no state.pt"):
        train_trial({**config, "checkpoint.resume": str(tmp_path)})


def test_outputs_checkpoints_overlays_and_result(tmp_path):
    from PIL import Image

    r = train_trial(tiny(**{"train.steps": 4, "eval.every": 1, "eval.overlays": 1, "checkpoint.keep": 2,
                            "output_dir": str(tmp_path)}))
    assert r["training_iteration"] == 4
    assert sorted(p.name for p in tmp_path.glob("checkpoint_*")) == ["checkpoint_000003", "checkpoint_000004"]
    assert json.loads((tmp_path / "result.json").read_text())["step"] == 4
    png = Image.open(tmp_path / "overlays" / "test000.png")
    assert png.mode == "RGB" and png.width == 3 * png.height  # image | truth | prediction
    assert (tmp_path / "checkpoint_000004" / "overlays" / "test000.png").is_file()


def test_checkpoints_by_time_and_at_the_end(tmp_path, monkeypatch):
    """`checkpoint.every: 0` with `every_s` checkpoints only once that many seconds passed (here: a clock that
    advances 10 s per report), and `at_end` decides the final one."""
    import itertools

    import raysweep.trial.checkpoint as train_mod

    clock = itertools.count(0.0, 5.0)  # every reading of the clock advances it 5 s
    monkeypatch.setattr(train_mod.time, "perf_counter", lambda: next(clock))
    base = tiny(**{"train.steps": 6, "eval.every": 1, "checkpoint.every": 0, "checkpoint.keep": 10})
    train_trial({**base, "checkpoint.every_s": 1e6, "checkpoint.at_end": False, "output_dir": str(tmp_path / "a")})
    assert not list((tmp_path / "a").glob("checkpoint_*"))
    train_trial({**base, "checkpoint.every_s": 1e6, "output_dir": str(tmp_path / "b")})
    assert [p.name for p in (tmp_path / "b").glob("checkpoint_*")] == ["checkpoint_000006"]
    train_trial({**base, "checkpoint.every_s": 1, "checkpoint.at_end": False, "output_dir": str(tmp_path / "c")})
    assert len(list((tmp_path / "c").glob("checkpoint_*"))) == 6  # the fake clock passes >= 1 s between reports
    with pytest.raises(ValueError, match="checkpoint.every_s"):
        resolve_config({"checkpoint": {"every_s": 0}})


def test_evaluation_packs_volumes_without_changing_the_scores():
    """Several small volumes share a forward pass: the same per-case scores as one pass per slice; HD95 only at the
    last evaluation with `eval.hd95: final`."""
    config = tiny(**{"train.steps": 2, "dataset.eval_options": {"num_volumes": 5}, "eval.report_cases": True})
    packed = train_trial({**config, "eval.batch_size": 16})
    single = train_trial({**config, "eval.batch_size": 1})
    a, b = json.loads(packed["cases"]), json.loads(single["cases"])
    assert len(a) == len(b) > 0 and {r["case"] for r in a} == {f"test{i:03d}" for i in range(5)}
    for x, y in zip(a, b):
        assert x["case"] == y["case"] and x["class_id"] == y["class_id"]
        assert x["dice"] == pytest.approx(y["dice"], abs=1e-6, nan_ok=True)
    steps = {**config, "train.steps": 4, "eval.every": 2, "eval.hd95": "final"}
    reports = []
    import raysweep.trial.loop as train_mod

    report = train_mod.Trial.report

    def keep(self, status):
        reports.append(report(self, status))
        return reports[-1]

    with pytest.MonkeyPatch.context() as m:
        m.setattr(train_mod.Trial, "report", keep)
        train_trial(steps)
    assert len(reports) == 2 and math.isnan(reports[0]["hd95"]) and math.isfinite(reports[1]["hd95"])


def test_the_optimiser_step_is_fused_unless_asked_otherwise(monkeypatch):
    seen = []
    adamw = torch.optim.AdamW

    def spy(*args, **kwargs):
        seen.append(kwargs.get("fused"))
        return adamw(*args, **kwargs)

    monkeypatch.setattr(torch.optim, "AdamW", spy)
    train_trial(tiny(**{"train.steps": 1}))
    train_trial(tiny(**{"train.steps": 1, "optimizer.fused": False}))
    assert seen == [True, None]


# -- failures end the trial, never the sweep -----------------------------------------------------------------------


def test_divergence_ends_the_trial_with_status_and_step():
    r = train_trial(tiny(**{"optimizer.lr": 1e6, "scheduler.name": "constant", "train.steps": 5}))
    assert r["status"] == "diverged"
    assert 1 <= r["diverged_step"] <= 5 and r["step"] < r["diverged_step"]
    assert r["dice"] == 0.0  # the worst score, so a searcher learns to avoid the region


@pytest.mark.parametrize("sync_every", [1, 4])
def test_divergence_step_is_exactly_the_first_non_finite_loss(monkeypatch, sync_every):
    """A loss that turns NaN at its 3rd call: the trial ends diverged at step 3 (1-based), whether the losses are checked
    at every step or 4 at a time (then step 4 meets the NaN logits the NaN update made, and the pending losses are
    checked first)."""
    forward = CombinedObjective.forward
    calls = []

    def nan_at_third(self, outputs, mask, maps, step):
        calls.append(step)
        total, values = forward(self, outputs, mask, maps, step)
        if len(calls) == 3:
            total = total * float("nan")
        return total, values

    monkeypatch.setattr(CombinedObjective, "forward", nan_at_third)
    r = train_trial(tiny(**{"train.steps": 6, "train.sync_every": sync_every}))
    assert r["status"] == "diverged" and r["diverged_step"] == 3 and r["step"] == 3
    assert calls[:3] == [0, 1, 2]  # 0-based steps passed to the objective


def test_out_of_memory_ends_the_trial_with_status_oom(monkeypatch):
    def oom(self, *args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(CombinedObjective, "forward", oom)
    r = train_trial(tiny())
    assert r["status"] == "oom" and r["oom_step"] == 1 and math.isnan(r["dice"])


# -- the combined objective -----------------------------------------------------------------------------------------


def test_schedules():
    const = {"kind": "constant"}
    assert schedule_weight(0.7, const, 99, 100, 10) == 0.7
    ramp = resolve_config({"loss": {"schedule": {"kind": "linear", "to": 0.0, "begin": 0.5}}})["loss"]["schedule"]
    assert [schedule_weight(1.0, ramp, s, 100, 10) for s in (0, 50, 75, 100)] == [1.0, 1.0, 0.5, 0.0]
    # Kervadec et al.: the boundary term gains 0.01 per epoch, the region term loses it down to 0.1.
    region = {"kind": "steal", "delta": -0.01, "every": None, "floor": 0.1, "ceiling": None}
    boundary = {"kind": "steal", "delta": 0.01, "every": None, "floor": None, "ceiling": None}
    assert schedule_weight(1.0, region, 9, 10_000, 10) == 1.0  # still epoch 0
    assert schedule_weight(1.0, region, 50, 10_000, 10) == pytest.approx(0.95)
    assert schedule_weight(1.0, region, 5000, 10_000, 10) == pytest.approx(0.1)
    assert schedule_weight(0.01, boundary, 100, 10_000, 10) == pytest.approx(0.11)
    assert schedule_weight(0.01, {**boundary, "every": 1, "ceiling": 0.5}, 100, 10_000, 10) == 0.5


def test_combined_objective_is_the_weighted_sum_of_its_terms():
    terms = resolve_config({"loss": {"name": "dice", "weight": 0.25},
                            "companions": [{"name": "focal", "params": {"gamma": 1.0}, "weight": 2.0},
                                           {"name": "ce", "weight": 1.0,
                                            "schedule": {"kind": "linear", "to": 0.0, "end": 0.5}}]})
    objective = CombinedObjective([terms["loss"], *terms["companions"]], steps=10, steps_per_epoch=5)
    assert objective.names == ["dice", "focal", "ce"]
    g = torch.Generator().manual_seed(0)
    logits, target = torch.randn(2, 3, 8, 8, generator=g), torch.randint(0, 3, (2, 8, 8), generator=g)
    expected = {n: build_loss(n, **p)(logits, target) for n, p in (("dice", {}), ("focal", {"gamma": 1.0}),
                                                                      ("ce", {}))}
    total, values = objective({"logits": logits}, target, {}, step=2)
    assert objective.weights(2) == [0.25, 2.0, pytest.approx(0.6)]
    assert torch.allclose(values, torch.stack(list(expected.values())))
    assert torch.allclose(total, 0.25 * expected["dice"] + 2.0 * expected["focal"] + 0.6 * expected["ce"])
    total, values = objective({"logits": logits}, target, {}, step=5)  # the ce weight has reached 0: not computed
    assert values[2] == 0 and torch.allclose(total, 0.25 * expected["dice"] + 2.0 * expected["focal"])


def test_objective_collects_what_the_terms_need():
    with_maps = [n for n, s in LOSSES.items() if s.needs & {"dist_map", "boundary", "rw_map"}]
    with_aux = [n for n, s in LOSSES.items() if "aux_logits" in s.needs]
    assert with_maps and with_aux
    terms = [{"name": n, "params": {}, "weight": 1.0, "schedule": {"kind": "constant"}}
             for n in ["dice", *with_maps[:2], *with_aux[:1]]]
    objective = CombinedObjective(terms, steps=4, steps_per_epoch=2, num_classes=3)
    mask = torch.randint(0, 3, (16, 16)).numpy()
    maps = objective.target_maps(mask)  # what the DataLoader workers compute per item
    needed = set().union(*(LOSSES[n].needs for n in with_maps[:2])) & {"dist_map", "boundary", "rw_map"}
    assert needed <= set(maps) and all(v.shape == (3, 16, 16) for v in maps.values())
    assert objective.aux_channels == build_loss(with_aux[0]).aux_channels
    assert CombinedObjective(terms[:1], steps=4, steps_per_epoch=2, num_classes=3).target_maps is None


def test_losses_are_told_the_epoch_also_after_a_resume(tmp_path, monkeypatch):
    from raysweep.losses import SegLoss

    seen = []
    monkeypatch.setattr(SegLoss, "set_epoch", lambda self, epoch: seen.append(epoch))
    config = tiny(**{"train.steps": 5, "eval.every": 3, "output_dir": str(tmp_path)})  # 2 steps per epoch
    train_trial(config)
    assert seen == [0, 1, 2]
    seen.clear()
    train_trial({**config, "checkpoint.resume": str(tmp_path / "checkpoint_000003")})
    assert seen == [1, 2]  # step 3 is in epoch 1


def test_trial_reports_scheduled_weights_and_per_term_losses():
    r = train_trial(tiny(**{"train.steps": 4, "loss": {"name": "dice", "weight": 1.0,
                                                       "schedule": {"kind": "linear", "to": 0.5}},
                            "companions": [{"name": "ce", "weight": 0.01,
                                            "schedule": {"kind": "steal", "delta": 0.01, "every": 1}}]}))
    assert r["weight/dice"] == pytest.approx(1.0 - 0.5 * 3 / 4)  # at the last step, 3 of 4
    assert r["weight/ce"] == pytest.approx(0.04)
    assert finite(r["loss/dice"]) and finite(r["loss/ce"])


# -- config ----------------------------------------------------------------------------------------------------------


def test_defaults_are_complete_and_documented():
    import raysweep.trial.schema as train

    cfg = resolve_config()
    assert cfg["model"]["arch"] == "Unet" and cfg["optimizer"]["weight_decay"] == 0.01
    assert cfg["eval"]["split"] == "test"
    for section, value in DEFAULTS.items():
        keys = value.keys() if isinstance(value, dict) else [section]
        for key in keys:
            assert f"\n      {key}:" in train.__doc__ or f"\n    {key}:" in train.__doc__, key
    # Dotted keys and nested sections are the same thing.
    assert resolve_config({"train.steps": 7, "train": {"batch_size": 3}})["train"] == {
        **resolve_config()["train"], "steps": 7, "batch_size": 3}


@pytest.mark.parametrize("config, match", [
    ({"stpes": 3}, "unknown config key 'stpes'"),
    ({"train": {"stpes": 3}}, r"unknown config key 'train.stpes' \(did you mean 'train.steps'\?\)"),
    ({"train.steps": 0}, "train.steps must be a positive integer"),
    ({"optimizer.lr": -1}, "optimizer.lr must be a positive number"),
    ({"optimizer.name": "adam"}, "optimizer.name must be one of 'adamw', 'sgd'"),
    ({"loss.name": "dcie"}, "loss.name: unknown loss 'dcie'"),
    ({"loss.weight": -1.0}, "loss.weight must be a non-negative number"),
    ({"model.name": "vit"}, "model.name: unknown model 'vit'"),
    ({"dataset.name": "kitti"}, "dataset.name: unknown dataset 'kitti'"),
    ({"eval.split": "val2"}, "eval.split: synthetic has no split 'val2'"),
    ({"companions": {"name": "ce"}}, "companions must be a list"),
    ({"companions": [{"name": "ce", "wieght": 1.0}]},
     r"unknown config key 'companions\[0\]\.wieght' \(did you mean 'companions\[0\]\.weight'\?\)"),
    ({"loss.schedule": {"kind": "cosine"}}, "loss.schedule.kind: unknown schedule 'cosine'"),
    ({"loss.schedule": {"kind": "linear"}}, "a 'linear' schedule needs 'to'"),
    ({"loss.schedule": {"kind": "steal", "delta": 0.1, "floor": -1}}, "loss.schedule.floor must be"),
    ({"train.amp": "bf16"}, "train.amp='bf16' needs CUDA"),
    ({"train.steps": 10, "scheduler.pct_start": 0.1}, r"scheduler.pct_start x train.steps = 0.1 x 10 is a warm-up of "
                                                     r"exactly one step"),
])
def test_bad_config_raises_a_clear_value_error(config, match):
    with pytest.raises(ValueError, match=match):
        train_trial(config) if "amp" in str(config) else resolve_config(config)


def test_bad_options_of_the_builders_are_reported():
    with pytest.raises(ValueError, match="has no hyperparameter"):
        train_trial(tiny(**{"loss.params": {"gama": 2.0}, "loss.name": "focal"}))
    with pytest.raises(ValueError, match="unknown option"):
        train_trial(tiny(**{"dataset.options": {"imagesize": 32}}))
    with pytest.raises(ValueError, match="divisible by 32"):
        train_trial(tiny(**{"dataset.options": {"image_size": 40, "depth": 4}}))


# -- command line --------------------------------------------------------------------------------------------------


def test_cli_train(tmp_path, capsys):
    config = tmp_path / "trial.yaml"
    config.write_text(yaml.safe_dump(TINY))
    rc = main(["train", "--config", str(config), "--loss", "tversky", "--set", "loss.params.alpha=0.4",
               "--set", "train.steps=3"])
    out = capsys.readouterr().out
    assert rc == 0 and "status: completed  step: 3  dice:" in out and "vessel" in out
    assert main(["train", "--config", str(config), "--set", "train.stpes=3"]) == 2
    assert "did you mean 'train.steps'" in capsys.readouterr().err
    assert main(["train", "--config", str(tmp_path / "missing.yaml")]) == 2


# -- under Ray Tune --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def ray_local(ray_session):
    # The test trainable below lives in this test module, which the workers cannot import: ship it by value.
    ray_session.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    return ray_session


def crash_after_first_report(marker: Path, run):
    """``run()``, except that the first attempt (``marker`` not there yet) dies right after its first report (and
    checkpoint), as a node lost mid-trial. The marker keeps that first report's metrics (JSON): Tune's own history
    (``metrics_dataframe``) may lose it, since the driver restores progress.csv from storage it syncs lazily."""
    import ray.tune

    if marker.exists():
        return run()
    marker.touch()
    real = ray.tune.report

    def report_then_crash(metrics, checkpoint=None):
        real(metrics, checkpoint=checkpoint)
        marker.write_text(json.dumps(metrics, default=str))
        raise RuntimeError("simulated node failure after the first checkpoint")

    ray.tune.report = report_then_crash
    try:
        return run()
    finally:
        ray.tune.report = real


def crash_once_then_train(config):
    config = dict(config)
    marker = Path(config.pop("crash_marker"))
    return crash_after_first_report(marker, lambda: train_trial(config))


def test_tune_trial_reports_checkpoints_and_resumes_after_a_crash(ray_local, tmp_path):
    from ray import tune

    config = tiny(**{"train.steps": 6, "eval.every": 3, "eval.overlays": 1, "train.threads": 1,
                     "model.name": "transformer", "model.encoder": None,
                     "dataset.train_options": {"num_volumes": 2}})
    tuner = tune.Tuner(
        tune.with_resources(crash_once_then_train, {"cpu": 1}),
        param_space={**config, "crash_marker": str(tmp_path / "crashed")},
        run_config=tune.RunConfig(name="resume", storage_path=str(tmp_path), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=1)),
    )
    result = tuner.fit()[0]
    assert result.error is None and (tmp_path / "crashed").exists()
    m = result.metrics
    assert m["status"] == "completed" and m["step"] == 6
    assert m["training_iteration"] == 2 and m["iterations_since_restore"] == 1  # resumed, not restarted
    assert {"state.pt", "metrics.json"} <= {p.name for p in Path(result.checkpoint.path).iterdir()}
    # The final report carries the overlays to the driver (base64 PNGs); the earlier one rendered none.
    import base64

    pngs = json.loads(m["overlays"])
    assert len(pngs) == 1 and all(base64.b64decode(v).startswith(b"\x89PNG") for v in pngs.values())
    first = json.loads((tmp_path / "crashed").read_text())
    assert (first["step"], first["status"], first.get("overlays")) == (3, "running", None)
    direct = train_trial(config)  # same thread count as the Tune worker
    same = set(scores(direct)) - {"training_iteration", "resumed_from_step"}
    assert {k: m[k] for k in same} == {k: scores(direct)[k] for k in same}
    assert (m["resumed_from_step"], direct["resumed_from_step"]) == (3, 0)
