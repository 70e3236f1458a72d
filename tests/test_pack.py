"""Trial packing (``resources.pack``, :mod:`raysweep.trial.pack`): a packed member trains exactly as it would alone,
a member that fails ends alone, a pack resumes from its members' checkpoints, the searcher and the per-group ASHA
treat each member as the trial it would be alone, and a sweep writes packed tuning and confirmation runs as the
trials they would have been."""

import json
import math
import sys
from pathlib import Path

import pytest
import torch

from raysweep.trial import CombinedObjective, train_trial
from raysweep.trial.objective import merge_target_maps
from raysweep.sweep.packing import pack_trials
from raysweep.trial.pack import check_pack, train_pack

from sweep_helpers import TINY_SWEEP, tiny_sweep
from test_train import crash_after_first_report

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


pytestmark = pytest.mark.usefixtures("one_torch_thread")


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


def test_the_pack_report_decodes_what_it_encodes():
    from raysweep.sweep.packing import PackReport

    reports = {1: {"status": "completed", "step": 4, "score": 0.5}, 0: {"status": "running", "step": 2, "score": 0.25}}
    encoded = PackReport(reports, live=[0], round="r1").encode()
    assert encoded["status"] == "running" and encoded["step"] == 4 and encoded["live"] == [0]
    assert [r["member"] for r in json.loads(encoded["pack"])] == [0, 1]  # the wire order is the members' order
    back = PackReport.of({**encoded, "time_total_s": 3.0})
    assert back.reports == reports and back.live == [0] and back.round == "r1"
    assert back.extra == {"status": "running", "step": 4, "time_total_s": 3.0}
    assert [(k, mid) for k, mid, _ in back.members("T")] == [(0, "T-0"), (1, "T-1")]
    assert PackReport(reports, live=[]).encode()["status"] == "completed"
    assert PackReport.of({"score": 0.5, "step": 4}) is None and PackReport.of(None) is None


def test_a_missed_stop_decision_is_a_warning_naming_the_pack_and_its_members(monkeypatch, caplog):
    import logging
    from types import SimpleNamespace

    import ray

    from raysweep.sweep.packing import TunePackSink

    sink = TunePackSink.__new__(TunePackSink)  # its channel only: no Tune session here
    sink.trial_id, sink.DECISION_TIMEOUT_S = "abc_00003", 0.05
    asked = []
    sink.channel = SimpleNamespace(get=SimpleNamespace(remote=lambda *a: asked.append(a) or (False, [1])))
    monkeypatch.setattr(ray, "get", lambda ref: ref)
    with caplog.at_level(logging.WARNING, logger="raysweep.sweep.packing"):
        assert sink._decision("r7", [0, 1, 2]) == [1]
    assert len(asked) > 1 and asked[-1] == ("abc_00003", "r7")
    warning = " ".join(r.getMessage() for r in caplog.records)
    assert "abc_00003" in warning and "abc_00003-0, abc_00003-1, abc_00003-2" in warning and "0 s" in warning
    caplog.clear()
    sink.channel = SimpleNamespace(get=SimpleNamespace(remote=lambda *a: (True, [2])))
    with caplog.at_level(logging.WARNING, logger="raysweep.sweep.packing"):
        assert sink._decision("r8", [0, 2]) == [2]
    assert not caplog.records  # a decision in time says nothing


def test_a_pack_inside_tune_without_the_tune_sink_is_refused(monkeypatch):
    from raysweep.trial import pack

    monkeypatch.setattr(pack, "in_tune", lambda: True)
    with pytest.raises(ValueError, match="TunePackSink"):
        train_pack([member("dice"), member("ce")])


# -- the tuning stage: searcher and scheduler per member -----------------------------------------------------------

# Three losses in two models, 8 ranking volumes (the fewest with which Wilcoxon-Holm can separate 3 losses).
SWEEP = tiny_sweep(name="packs", losses=["tversky", "ce", "focal"],
                   datasets={"synthetic": {"options": {"image_size": 32, "depth": 4, "num_volumes": 3},
                                           "select_options": {"num_volumes": 1}, "eval_options": {"num_volumes": 8}}},
                   architectures={**TINY_SWEEP["architectures"],
                                  "transformer": {"arch": "Segformer", "encoder": "mit_b0"}},
                   tuning={**TINY_SWEEP["tuning"], "trials_per_group": 3})


def test_a_packed_searcher_draws_each_pack_from_one_cell_and_keeps_every_quota():
    from raysweep.config import validate
    from raysweep.sweep import GroupSearcher
    from raysweep.sweep.packing import PackSearcher

    cfg = validate(SWEEP)
    alone, packed = GroupSearcher(cfg), PackSearcher(GroupSearcher(cfg), 2, stops="channel")
    issued = []
    for i in range(100):
        env = packed.suggest(f"p{i}")
        if env == packed.FINISHED:
            break
        assert env["stops"] == "channel" and env["tags"]["loss"] == "pack"
        cells = {(m["tags"]["dataset"], m["tags"]["arch"]) for m in env["members"]}
        assert len(cells) == 1 and 1 <= len(env["members"]) <= 2
        issued += [m["tags"]["loss"] + "/" + m["tags"]["arch"] for m in env["members"]]
        packed.on_trial_complete(f"p{i}", {"pack": json.dumps([
            {"member": k, "status": "completed", "score": 0.5, "step": 4, "training_iteration": 4}
            for k in range(len(env["members"]))]), "live": []})
    assert len(issued) == packed.total == alone.total == 2 * (3 + 1 + 3)
    assert sorted(set(issued)) == sorted(f"{loss}/{arch}" for loss in ("tversky", "ce", "focal")
                                          for arch in ("cnn", "transformer"))
    # Each member was told to its own study as a completed trial of its group.
    study = packed.inner.subs["synthetic/cnn/tversky"]._ot_study
    assert len(study.trials) == 3 and all(t.value == 0.5 for t in study.trials)


def _envelope(cfg, loss, arch="cnn"):
    from raysweep.config import Group, compose_trial
    from raysweep.search import GroupSpace

    return compose_trial(cfg, Group("synthetic", arch, loss, ""), GroupSpace(loss, "none").defaults(), seed=0,
                         stage="tune")


def test_the_scheduler_stops_a_packed_member_where_it_would_stop_alone():
    """One group's trials report in turn; the same reports, some of them from pack members, get the same decisions
    alone and packed, the pack hears them per round, and the pack stops as a whole once no member is left."""
    from types import SimpleNamespace

    from raysweep.config import validate
    from raysweep.sweep import GroupScheduler
    from raysweep.sweep.packing import PackScheduler

    cfg = validate(SWEEP)
    published = []
    scores = {"a": [0.9, 0.9, 0.9, 0.9], "b": [0.2, 0.3, 0.4, 0.5], "c": [0.95, 0.96, 0.97, 0.98],
              "d": [0.1, 0.1, 0.1, 0.1]}

    def decisions(packed: bool):
        s = GroupScheduler(max_t=4, grace_period=1, reduction_factor=2)
        if packed:
            s = PackScheduler(s, stops="channel")
        s._channel = SimpleNamespace(decide=SimpleNamespace(remote=lambda *a: published.append(a)))
        first = SimpleNamespace(trial_id="a", config=_envelope(cfg, "tversky"))
        s.on_trial_add(None, first)
        out = {}
        for t in (1, 2, 3, 4):
            out[("a", t)] = s.on_trial_result(None, first, {"training_iteration": t, "score": scores["a"][t - 1]})
        s.on_trial_complete(None, first, {"training_iteration": 4, "score": 0.9})
        names = ["b", "c", "d"]
        if packed:
            pack = SimpleNamespace(trial_id="P", config={"members": [_envelope(cfg, "tversky") for _ in names]})
            s.on_trial_add(None, pack)
            live = [0, 1, 2]
            for t in (1, 2, 3, 4):
                reports = [{"member": k, "status": "running" if t < 4 else "completed", "training_iteration": t,
                            "score": scores[names[k]][t - 1], "step": t} for k in live]
                action = s.on_trial_result(None, pack, {"pack": json.dumps(reports), "round": f"r{t}", "live": live})
                stopped = published[-1][2]
                for k in list(live):
                    out[(names[k], t)] = "STOP" if k in stopped else "CONTINUE"
                live = [k for k in live if k not in stopped]
                if action == s.STOP or not live:
                    break
            out["pack"] = action
        else:
            for name in names:
                trial = SimpleNamespace(trial_id=name, config=_envelope(cfg, "tversky"))
                s.on_trial_add(None, trial)
            for t in (1, 2, 3, 4):
                for name in names:
                    if any(out.get((name, u)) == "STOP" for u in range(1, t)):
                        continue
                    trial = SimpleNamespace(trial_id=name, config=_envelope(cfg, "tversky"))
                    out[(name, t)] = s.on_trial_result(None, trial, {"training_iteration": t,
                                                                     "score": scores[name][t - 1]})
        return out

    alone, packed = decisions(False), decisions(True)
    assert alone[("b", 1)] == "STOP" and alone[("d", 1)] == "STOP" and alone[("c", 3)] == "CONTINUE"
    # At max_t a trial ends either way (ASHA says STOP to a trial alone; a packed member reports itself completed).
    assert {k: v for k, v in packed.items() if k != "pack" and k[1] < 4} == {k: v for k, v in alone.items() if k[1] < 4}
    assert packed["pack"] == "STOP" and [p[:2] for p in published][:2] == [("P", "r1"), ("P", "r2")]


# -- under Ray Tune ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ray_local(ray_session):
    # The test trainables live in test modules, which the workers cannot import: ship them by value.
    ray_session.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    ray_session.cloudpickle.register_pickle_by_value(sys.modules["test_train"])
    return ray_session


def crash_once_then_pack(config):
    """train_pack, except that the first attempt dies right after its first report (and checkpoint)."""
    from raysweep.sweep.packing import TunePackSink

    return crash_after_first_report(Path(config["crash_marker"]),
                                    lambda: train_pack(config["members"], sink=TunePackSink(len(config["members"]))))


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


def test_a_packed_sweep_writes_every_member_as_the_trial_it_would_be_alone(ray_local, tmp_path):
    """resources.pack 2, both stages: tuning packs of one cell under the per-group ASHA (rungs at reports 1 and 2 of
    4) and packed confirmation runs. Every member lands as its own trial with the metrics it gets alone; a stopped
    member ends at a rung."""
    from raysweep.config import Group, compose_trial, validate
    from raysweep.results import read_results
    from raysweep.sweep import SweepRunner

    raw = tiny_sweep(name="packed", resources={"cpus_per_trial": 1, "pack": 2},
                     trial={"train": {"steps": 4, "batch_size": 2}, "eval": {"every": 1, "overlays": 1}})
    cfg = validate(raw)
    out = tmp_path / "out"
    runner = SweepRunner(cfg, out, progress=False)
    state = runner.run()
    trials = read_results(out / "results")["trials"]
    assert trials.trial_id.is_unique and all(t.rsplit("-", 1)[1] in ("0", "1") for t in trials.trial_id)
    tune, confirm = trials[trials.stage == "tune"], trials[trials.stage == "confirm"]
    assert sorted(tune.loss) == ["focal", "focal", "tversky", "tversky"]  # every group's quota
    assert set(tune.status) <= {"completed", "stopped"} and (tune[tune.status == "stopped"].steps_done < 4).all()
    assert len({t.rsplit("-", 1)[0] for t in confirm.trial_id}) == 1  # both confirmation runs in one pack
    # Members started with their pack; each one's wall_s is its share of the pack's time.
    assert confirm.started_at.nunique() == 1 and confirm.wall_s.nunique() == 1
    assert (confirm.status == "completed").all() and sorted(confirm.loss) == ["focal", "tversky"]
    for tid in confirm.trial_id:  # each member's overlays under its own id
        assert list((out / "overlays" / tid).glob("*.png")), tid
    from raysweep.sweep.stages import threaded_config

    threaded = threaded_config(runner.cfg, {"cpu": 1, "gpu": 0})
    for row in trials[trials.status == "completed"].itertuples():
        group = Group("synthetic", "cnn", row.loss, "")
        env = compose_trial(threaded, group, json.loads(row.params), seed=row.seed, stage=row.stage)
        alone = train_trial(env["trial"])
        same({"dice": row.final_metric, "hd95": float(row.hd95)},
             {"dice": alone["dice"], "hd95": alone["hd95"] if math.isfinite(alone["hd95"]) else float("nan")})
    for loss in ("tversky", "focal"):
        best = tune[(tune.loss == loss) & (tune.status == "completed")].sort_values("final_metric").iloc[-1]
        assert json.loads(best.params) == state["best"][f"synthetic/cnn/{loss}"]
