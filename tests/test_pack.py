"""Trial packing (``resources.pack``, :mod:`raysweep.trial.pack`): a packed member trains exactly as it would alone,
a member that fails ends alone, a pack resumes from its members' checkpoints, and a sweep writes packed confirmation
runs as the trials they would have been."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from raysweep.config import pack_trials
from raysweep.trial import CombinedObjective, train_trial
from raysweep.trial.objective import merge_target_maps
from raysweep.trial.pack import check_pack, train_pack

# Segformer/MiT-B0 draws drop-path noise from the global torch RNG at every training forward: a member that used
# another member's RNG stream would train differently (checked by test_the_rng_swap_is_what_keeps_members_apart).
TINY = {
    "dataset": {"options": {"image_size": 32, "depth": 4}, "train_options": {"num_volumes": 1},
                "eval_options": {"num_volumes": 1}},
    "model": {"name": "transformer"},
    "train": {"steps": 4, "batch_size": 2, "progress": False, "threads": 1},
    "eval": {"every": 2, "overlays": 0},
}
#: Keys that measure the machine, not the training.
MACHINE = ("steps_per_s", "peak_memory_mb", "training_iteration")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def member(loss, **dotted):
    return {**TINY, "loss": {"name": loss}, **dotted}


def training(result):
    """A report without its timings: what must be identical packed and alone."""
    return {k: v for k, v in result.items() if not k.startswith("time/") and k not in MACHINE}


def same(a, b):
    """Equal reports, NaN equal to NaN."""
    assert set(a) == set(b)
    for k in a:
        x, y = a[k], b[k]
        if isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y):
            continue
        assert x == y, (k, x, y)


def test_packed_members_train_exactly_as_they_would_alone():
    """dice needs no target maps, boundary needs distance maps (the pack computes the union once), and the third
    member diverges at once (lr 1e6) and ends alone while the others carry on."""
    configs = [member("dice"), member("boundary"),
               member("focal", **{"optimizer.lr": 1e6, "scheduler.name": "constant"})]
    packed = train_pack(configs)
    alone = [train_trial(c) for c in configs]
    assert [r["status"] for r in packed] == ["completed", "completed", "diverged"]
    for p, a in zip(packed, alone):
        same(training(p), training(a))


def test_the_rng_swap_is_what_keeps_members_apart(monkeypatch):
    """Without each member's own RNG states, the second member's drop-path draws follow the first's: it trains
    differently. (The test above would fail the same way.)"""
    import contextlib

    from raysweep.trial import pack

    monkeypatch.setattr(pack._Member, "own_rng", lambda self: contextlib.nullcontext())
    configs = [member("dice"), member("ce")]
    packed = train_pack(configs)
    alone = [train_trial(c) for c in configs]
    assert training(packed[1])["dice"] != training(alone[1])["dice"]


def test_members_may_differ_in_loss_optimiser_and_schedule_only():
    check_pack([member("dice"), member("ce", **{"optimizer.lr": 0.1, "scheduler.name": "poly"})])
    with pytest.raises(ValueError, match=r"pack member 1 differs from member 0 in seed"):
        check_pack([member("dice"), member("ce", seed=3)])
    with pytest.raises(ValueError, match=r"train\.batch_size.*only loss, companions, optimizer"):
        check_pack([member("dice"), member("ce", **{"train.batch_size": 4})])
    with pytest.raises(ValueError, match=r"model"):
        check_pack([member("dice"), member("ce", **{"model.name": "cnn"})])
    with pytest.raises(ValueError, match="at least one"):
        check_pack([])


def test_a_member_that_raises_or_runs_out_of_memory_ends_alone(monkeypatch):
    """Member 0's loss raises at its third step, member 1 runs out of memory at its second, member 2 cannot even be
    built; member 3 trains to the end exactly as alone."""
    forward = CombinedObjective.forward

    def failing(self, outputs, mask, maps, step):
        if self.names == ["tversky"] and step == 2:
            raise RuntimeError("a bug in a loss")
        if self.names == ["focal"] and step == 1:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return forward(self, outputs, mask, maps, step)

    monkeypatch.setattr(CombinedObjective, "forward", failing)
    configs = [member("tversky"), member("focal"), member("ce", **{"loss.params": {"bogus": 1}}),
               member("dice")]
    r = train_pack(configs)
    assert r[0]["status"] == "error" and "RuntimeError: a bug in a loss" in r[0]["error"] and r[0]["step"] == 2
    assert r[1]["status"] == "oom" and r[1]["step"] == 1 and math.isnan(r[1]["dice"])
    assert r[2]["status"] == "error" and "no hyperparameter(s) bogus" in r[2]["error"] and r[2]["step"] == 0
    same(training(r[3]), training(train_trial(configs[3])))


def test_a_pack_resumes_from_its_members_checkpoints(tmp_path):
    def configs(resume=None):
        out = []
        for k, loss in enumerate(("dice", "hausdorff")):
            c = member(loss, output_dir=str(tmp_path / f"m{k}"), **{"checkpoint.every": 1, "checkpoint.keep": 5})
            if resume:
                c["checkpoint.resume"] = str(tmp_path / f"m{k}" / resume)
            out.append(c)
        return out

    full = train_pack(configs())
    assert all((tmp_path / f"m{k}" / "checkpoint_000002" / "state.pt").is_file() for k in range(2))
    assert all(json.loads((tmp_path / f"m{k}" / "result.json").read_text())["step"] == 4 for k in range(2))
    resumed = train_pack(configs("checkpoint_000002"))
    for a, b in zip(full, resumed):
        assert b["resumed_from_step"] == 2
        same({**training(a), "resumed_from_step": 2}, training(b))
    mixed = configs()
    mixed[0]["checkpoint.resume"] = str(tmp_path / "m0" / "checkpoint_000002")
    with pytest.raises(ValueError, match="different steps"):
        train_pack(mixed)


def test_target_maps_are_merged_once_and_clashes_refused():
    dice = CombinedObjective([{"name": "dice", "params": {}, "weight": 1.0, "schedule": {}}], 4, 2, num_classes=3)
    bnd = CombinedObjective([{"name": "boundary", "params": {}, "weight": 1.0, "schedule": {}}], 4, 2, num_classes=3)
    hd = CombinedObjective([{"name": "hausdorff", "params": {}, "weight": 1.0, "schedule": {}}], 4, 2, num_classes=3)
    assert merge_target_maps([dice]) is None
    merged = merge_target_maps([dice, bnd, hd])  # both need the same distance maps: computed once
    assert merged is bnd.target_maps or type(merged) is type(bnd.target_maps)
    other = CombinedObjective([{"name": "boundary", "params": {}, "weight": 1.0, "schedule": {}}], 4, 2,
                              num_classes=4)
    with pytest.raises(ValueError, match="different target maps"):
        merge_target_maps([bnd, other])


def test_pack_trials_groups_by_cell_and_seed():
    def env(loss, arch, seed):
        return {"trial": {"loss": {"name": loss}}, "tags": {"sweep": "s", "stage": "confirm", "dataset": "synthetic",
                                                            "variant": "", "arch": arch, "seed": seed,
                                                            "budget_steps": 4, "loss": loss}}

    envs = [env(loss, arch, seed) for arch in ("cnn", "transformer") for loss in ("a", "b", "c") for seed in (1, 2)]
    assert pack_trials(envs, 1) == envs
    packs = pack_trials(envs, 2)
    assert [p["tags"]["losses"] for p in packs] == [["a", "b"], ["c"], ["a", "b"], ["c"]] * 2
    for p in packs:
        assert len({(m["tags"]["arch"], m["tags"]["seed"]) for m in p["members"]}) == 1
        assert p["tags"]["loss"] == "pack"
    assert sorted(id(m) for p in packs for m in p["members"]) == sorted(id(e) for e in envs)


# -- under Ray Tune ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_local(ray_session):
    ray_session.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    return ray_session


def crash_once_then_pack(config):
    """train_pack, except that the first attempt dies right after its first report (and checkpoint)."""
    import ray.tune

    marker = Path(config["crash_marker"])
    members = config["members"]
    if marker.exists():
        return train_pack(members)
    marker.touch()
    real = ray.tune.report

    def report_then_crash(metrics, checkpoint=None):
        real(metrics, checkpoint=checkpoint)
        raise RuntimeError("simulated node failure after the first checkpoint")

    ray.tune.report = report_then_crash
    try:
        return train_pack(members)
    finally:
        ray.tune.report = real


def test_a_tune_pack_reports_its_members_and_resumes_after_a_crash(ray_local, tmp_path):
    from ray import tune

    members = [member(loss, **{"checkpoint.every": 1}) for loss in ("dice", "ce")]
    tuner = tune.Tuner(
        tune.with_resources(crash_once_then_pack, {"cpu": 1}),
        param_space={"members": members, "crash_marker": str(tmp_path / "crashed")},
        run_config=tune.RunConfig(name="pack", storage_path=str(tmp_path), verbose=0,
                                  failure_config=tune.FailureConfig(max_failures=1)),
    )
    result = tuner.fit()[0]
    assert result.error is None and (tmp_path / "crashed").exists()
    assert result.metrics["status"] == "completed" and result.metrics["iterations_since_restore"] == 1
    assert {p.name for p in Path(result.checkpoint.path).iterdir()} >= {"member_0", "member_1", "pack.json"}
    reports = json.loads(result.metrics["pack"])
    assert [r["member"] for r in reports] == [0, 1]
    for report, config in zip(reports, members):
        assert report["resumed_from_step"] == 2 and report["training_iteration"] == 2
        alone = train_trial(config)
        same({k: v for k, v in training(report).items() if k != "member"},
             {**training(alone), "resumed_from_step": 2})


def test_a_sweep_writes_packed_confirmation_runs_as_their_trials(ray_local, tmp_path):
    """resources.pack 2: the two losses' confirmation runs of each model share a Ray trial; each lands as its own
    trial, with the metrics it gets alone."""
    from raysweep.config import Group, compose_trial, validate
    from raysweep.results import read_results
    from raysweep.sweep import SweepRunner

    raw = {"name": "packed",
           "datasets": {"synthetic": {"options": {"image_size": 32, "depth": 4, "num_volumes": 3},
                                      "select_options": {"num_volumes": 1}, "eval_options": {"num_volumes": 6}}},
           "architectures": {"cnn": {"arch": "Unet", "encoder": "resnet18",
                                     "options": {"encoder_depth": 3, "decoder_channels": [32, 16, 8]}}},
           "losses": ["tversky", "ce"],
           "tuning": {"trials_per_group": 1, "seed": 0},
           "confirmation": {"seeds": 1},
           "resources": {"cpus_per_trial": 1, "pack": 2},
           "trial": {"train": {"steps": 4, "batch_size": 2}, "eval": {"every": 2, "overlays": 1}}}
    cfg = validate(raw)
    out = tmp_path / "out"
    runner = SweepRunner(cfg, out, progress=False)
    state = runner.run()
    trials = read_results(out / "results")["trials"]
    confirm = trials[trials.stage == "confirm"].set_index("loss")
    assert sorted(confirm.index) == ["ce", "tversky"] and (confirm.status == "completed").all()
    pack_ids = {tid.rsplit("-", 1)[0] for tid in confirm.trial_id}
    assert len(pack_ids) == 1 and sorted(t.rsplit("-", 1)[1] for t in confirm.trial_id) == ["0", "1"]
    for tid in confirm.trial_id:  # each member's overlays under its own id
        assert list((out / "overlays" / tid).glob("*.png")), tid
    threaded = runner._threaded_cfg({"cpu": 1, "gpu": 0})
    for loss in ("tversky", "ce"):
        group = Group("synthetic", "cnn", loss, "")
        env = compose_trial(threaded, group, state["best"][group.key], seed=1, stage="confirm")
        alone = train_trial(env["trial"])
        row = confirm.loc[loss]
        assert row.final_metric == alone["dice"] and row.hd95 == alone["hd95"], loss
        assert row.steps_done == 4 and json.loads(row.params) == state["best"][group.key]
