"""`raysweep plan`: the expected trials, steps, evaluations and hours of a sweep, checked against a hand computation;
one tiny calibration on the CPU; the command line with and without the data."""

import copy
import json

import pytest
import yaml

from raysweep.cli import main
from raysweep.config import validate
from raysweep.sweep.plan import expected_tune, make_plan, plan_as_text

# 3 losses (ce has nothing to tune: quota 1), one architecture; 90 steps evaluated every 10 (9 evaluations), ASHA
# rungs at 1 and 3 evaluations (grace 1, reduction factor 3); 2 confirmation seeds evaluated 3 times.
PLAN_SWEEP = {
    "name": "plan",
    "datasets": {"synthetic": {"options": {"image_size": 32, "depth": 4, "num_volumes": 2},
                               "select_options": {"num_volumes": 1}, "eval_options": {"num_volumes": 8}}},
    "architectures": {"cnn": {"arch": "Unet", "encoder": "resnet18",
                              "options": {"encoder_depth": 3, "decoder_channels": [16, 8, 4]}}},
    "losses": ["tversky", "focal", "ce"],
    "tuning": {"trials_per_group": 9, "seed": 0, "grace_period": 1, "reduction_factor": 3},
    "confirmation": {"seeds": 2, "evaluations": 3},
    "resources": {"cpus_per_trial": 1, "gpus_per_trial": 0.5},
    "trial": {"train": {"steps": 90, "batch_size": 2}, "eval": {"every": 10, "overlays": 0}},
}


def test_asha_expectation_by_hand():
    # 9 trials: 9 reach rung 1 (10 steps), 3 pass it, 1 passes rung 3 (30 steps) and runs all 90.
    e = expected_tune(9, 90, 10, "asha", 1, 3)
    assert e["rungs"] == [1, 3]
    assert e["full_budget"] == 1.0
    assert e["steps"] == 6 * 10 + 2 * 30 + 1 * 90
    assert e["evaluations"] == 6 * 1 + 2 * 3 + 1 * 9
    # A group with nothing to tune has one trial, which passes every rung (the first always does).
    assert expected_tune(1, 90, 10, "asha", 1, 3)["steps"] == 90
    # Without early stopping, or with one evaluation per trial, every trial runs the full budget.
    assert expected_tune(9, 90, 10, "none", 1, 3)["steps"] == 9 * 90
    assert expected_tune(9, 90, None, "asha", 1, 3) == {"trials": 9.0, "full_budget": 9.0, "steps": 810.0,
                                                        "evaluations": 9.0, "rungs": []}
    # Fractions below one trial: 4 trials, factor 3 -> 4, 4/3, then max(1, 4/9) = 1.
    e = expected_tune(4, 90, 10, "asha", 1, 3)
    assert e["full_budget"] == 1.0
    assert e["steps"] == pytest.approx((4 - 4 / 3) * 10 + (4 / 3 - 1) * 30 + 90)


def test_plan_arithmetic_with_given_rates():
    cfg = validate(copy.deepcopy(PLAN_SWEEP))
    plan = make_plan(cfg, gpus=2, steps_per_s=["10"], eval_s=["2"])
    assert plan["device"] == {"kind": "gpu", "devices": 2, "trials_per_device": 2, "source": "given (--gpus)"}
    tune, confirm = plan["stages"]
    # tune: tversky and focal 210 steps / 21 evaluations each, ce one full trial (90 / 9)
    assert (tune["groups"], tune["trials"], tune["full_budget"]) == (3, 19.0, 3.0)
    assert (tune["steps"], tune["evaluations"]) == (510.0, 51.0)
    # confirm: 3 groups x 2 seeds at 90 steps, 3 evaluations each
    assert (confirm["trials"], confirm["steps"], confirm["evaluations"]) == (6.0, 540.0, 18.0)
    # hours: steps / (10 steps/s x 2 GPUs) + evaluations x 2 s / (2 trials x 2 GPUs)
    assert tune["hours"] == pytest.approx((510 / 20 + 51 * 2 / 4) / 3600)
    assert confirm["hours"] == pytest.approx((540 / 20 + 18 * 2 / 4) / 3600)
    assert plan["total"]["device_hours"] == pytest.approx(2 * (51 + 36) / 3600)
    assert plan["total"]["trials"] == 25.0
    text = plan_as_text(plan)
    assert "tune" in text and "confirm" in text and "ASHA rungs (evaluations): [1, 3]" in text
    assert json.loads(json.dumps(plan)) == plan  # --json prints exactly this


def test_replicates_multiply_every_stage_and_are_named():
    one = make_plan(validate(copy.deepcopy(PLAN_SWEEP)), gpus=2, steps_per_s=["10"], eval_s=["2"])
    cfg = copy.deepcopy(PLAN_SWEEP)
    cfg["tuning"]["replicates"] = 3
    three = make_plan(validate(cfg), gpus=2, steps_per_s=["10"], eval_s=["2"])
    for a, b in zip(one["stages"], three["stages"]):
        assert b["groups"] == 3 * a["groups"]
        for key in ("trials", "full_budget", "steps", "evaluations", "hours"):
            assert b[key] == pytest.approx(3 * a[key])
    assert any("tuning.replicates" in n for n in three["notes"]) and not any("replicates" in n for n in one["notes"])


def test_per_architecture_rates_and_bad_rates():
    raw = copy.deepcopy(PLAN_SWEEP)
    raw["architectures"]["transformer"] = {"arch": "Segformer", "encoder": "mit_b0"}
    cfg = validate(raw)
    plan = make_plan(cfg, gpus=1, steps_per_s=["cnn=20", "transformer=5"])
    hours = {(r["stage"], r["arch"]): r["hours"] for r in plan["stages"]}
    assert hours["tune", "transformer"] == pytest.approx(4 * hours["tune", "cnn"])
    assert any("evaluation time not counted" in n for n in plan["notes"])
    with pytest.raises(ValueError, match="no architecture 'unet'"):
        make_plan(cfg, gpus=1, steps_per_s=["unet=3"])
    with pytest.raises(ValueError, match="positive"):
        make_plan(cfg, gpus=1, steps_per_s=["0"])
    with pytest.raises(ValueError, match="RATE or ARCH=RATE"):
        make_plan(cfg, gpus=1, steps_per_s=["fast"])


def test_tiny_calibration_on_the_cpu():
    cfg = validate(copy.deepcopy(PLAN_SWEEP))
    plan = make_plan(cfg, gpus=0, calibrate_steps=1, processes=1)
    rate = plan["rates"]["cnn"]
    assert plan["device"]["kind"] == "cpu" and plan["device"]["devices"] == 1
    assert rate["steps_per_s"] > 0 and rate["eval_s"] > 0 and rate["source"].startswith("calibrated here (cpu")
    # the machine's rate is one trial's times the trials that run side by side
    assert rate["steps_per_s"] == pytest.approx(rate["per_trial_steps_per_s"] * plan["device"]["trials_per_device"])
    assert all(r["hours"] > 0 for r in plan["stages"])


def test_a_packed_calibration_counts_every_members_steps(monkeypatch):
    """resources.pack 4: the calibration trains a pack of 4 copies, and the rate counts the steps of all 4 (each
    member advances one step per pack step); an evaluation is one member's."""
    calls = []

    def fake_pack(configs):
        calls.append([c["loss"]["name"] for c in configs])
        return [{"status": "completed", "steps_per_s": 3.0, "time/eval_s": 0.5}] * len(configs)

    monkeypatch.setattr("raysweep.trial.pack.train_pack", fake_pack)
    sweep = copy.deepcopy(PLAN_SWEEP)
    sweep["resources"]["pack"] = 4
    plan = make_plan(validate(sweep), gpus=0, calibrate_steps=1, processes=1)
    assert calls == [["dice_ce"] * 4]
    assert plan["rates"]["cnn"]["per_trial_steps_per_s"] == 12.0 and plan["rates"]["cnn"]["eval_s"] == 0.5


def test_cli_plans_without_the_data_when_given_a_rate(tmp_path, capsys):
    raw = copy.deepcopy(PLAN_SWEEP)
    raw["datasets"] = {"synapse": {"root": str(tmp_path / "not-here"), "options": {"image_size": 224}}}
    raw["confirmation"]["underpowered"] = "warn"
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert main(["plan", "--config", str(path), "--gpus", "1", "--steps-per-s", "63.5", "--json"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["stages"][0]["steps"] == 510.0 and plan["device"]["devices"] == 1
    assert any("data folders not found" in n for n in plan["notes"])
    # calibrating needs the data: a message, no traceback
    assert main(["plan", "--config", str(path), "--gpus", "1"]) == 2
    assert "give --steps-per-s" in capsys.readouterr().err


def test_a_monai_architecture_is_planned_like_any_other(tmp_path):
    from raysweep.data.examples import write_nnunet_example

    pytest.importorskip("monai")
    root = write_nnunet_example(tmp_path / "Dataset900_Toy", num_training=4, num_test=8, size=32, depth=4)
    raw = copy.deepcopy(PLAN_SWEEP)
    raw["datasets"] = {"nnunet": {"root": str(root), "options": {"dims": 3, "patch_size": [4, 32, 32],
                                                                 "val_cases": 1}}}
    raw["architectures"] = {"unet3d": {"arch": "monai.UNet", "options": {"channels": [8, 16, 32]}}}
    plan_3d = make_plan(validate(raw), gpus=1, steps_per_s=["unet3d=5"])
    plan_2d = make_plan(validate(PLAN_SWEEP), gpus=1, steps_per_s=["cnn=20"])
    row_3d = {r["stage"]: r for r in plan_3d["stages"] if r["arch"] == "unet3d"}
    row_2d = {r["stage"]: r for r in plan_2d["stages"] if r["arch"] == "cnn"}
    assert row_3d["tune"]["steps"] == row_2d["tune"]["steps"] == 510.0
    assert row_3d["tune"]["hours"] == pytest.approx(4 * row_2d["tune"]["hours"])
    assert "unet3d" in plan_as_text(plan_3d)