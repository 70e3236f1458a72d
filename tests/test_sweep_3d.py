"""3-D sweeps: a MONAI 3-D network tuned and ranked on patches of an nnU-Net dataset, end to end, and the config
checks that keep 2-D and 3-D apart before anything starts."""

import pytest

from raysweep.config import validate

monai = pytest.importorskip("monai")

ARCH_3D = {"unet3d": {"arch": "monai.UNet", "options": {"channels": [8, 16, 32], "strides": [2, 2]}}}


def sweep_3d(root, **changes):
    cfg = {
        "name": "nnunet-3d-tiny",
        "datasets": {"nnunet": {"root": str(root), "options": {"dims": 3, "patch_size": [4, 16, 16], "val_cases": 1}}},
        "architectures": ARCH_3D,
        "losses": ["dice", "hausdorff"],
        "tuning": {"trials_per_group": 1, "seed": 0, "grace_period": 1, "reduction_factor": 2},
        "confirmation": {"seeds": 1},
        "resources": {"cpus_per_trial": 1},
        "trial": {"train": {"steps": 2, "batch_size": 2}, "eval": {"every": 2, "overlays": 0}},
    }
    cfg.update(changes)
    return cfg


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    from raysweep.data.examples import write_nnunet_example

    return write_nnunet_example(tmp_path_factory.mktemp("toy3d") / "Dataset900_Toy", num_training=4, num_test=6,
                                size=32, depth=8)


def test_tiny_3d_sweep_tunes_confirms_and_reports(ray_session, toy, tmp_path, monkeypatch):
    from raysweep.report import build_report
    from raysweep.results import read_results, read_sweep_meta
    from raysweep.sweep import SweepRunner

    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))
    cfg = validate(sweep_3d(toy))
    out = tmp_path / "out"
    state = SweepRunner(cfg, out, progress=False).run()
    assert state["tune_done"] and state["confirm_done"]
    tables = read_results(out / "results")
    trials = tables["trials"]
    assert set(trials.loss) == {"dice", "hausdorff"} and set(trials.arch) == {"unet3d"}
    assert set(trials.status) <= {"completed", "stopped"}
    confirm = trials[trials.stage == "confirm"]
    assert len(confirm) == 2 and confirm.final_metric.notna().all()
    # Scored per whole volume (a sliding window over each), on the ranking volumes only, HD95 in mm.
    protocol = read_sweep_meta(out / "results")["protocol"]
    ranking = set(protocol["ranking"]["nnunet"]["cases"])
    cases = tables["cases"]
    assert set(cases[cases.stage == "confirm"].case) == ranking and len(ranking) == 6
    assert not ranking & set(protocol["selection"]["nnunet"]["cases"])
    assert cases.hd95.notna().any()
    html = build_report(out / "results", out / "report.html").read_text()
    assert "unet3d" in html


def test_a_3d_network_on_2d_items_is_refused_before_anything_starts(toy):
    options = {"val_cases": 1}
    with pytest.raises(ValueError, match=r"architectures.unet3d \(monai.UNet\) is a 3-D network but datasets.nnunet "
                                         r"gives 2-D items; give the dataset options.dims: 3"):
        validate(sweep_3d(toy, datasets={"nnunet": {"root": str(toy), "options": options}}))
    two_d = {"cnn": {"arch": "Unet", "encoder": "resnet18"}}
    with pytest.raises(ValueError, match=r"architectures.cnn \(Unet\) is a 2-D network but datasets.nnunet gives "
                                         r"3-D items; use a 3-D network"):
        validate(sweep_3d(toy, architectures=two_d))


def test_a_2d_only_loss_in_a_3d_cell_is_refused_with_its_reason(toy):
    from raysweep.losses import LOSSES

    with pytest.raises(ValueError, match="trains in 3-D, but active_boundary take 2-D input only") as err:
        validate(sweep_3d(toy, losses=["dice", "active_boundary"]))
    assert LOSSES["active_boundary"].dims_note in str(err.value)
    with pytest.raises(ValueError, match="active_boundary, inverseform take 2-D input only"):
        validate(sweep_3d(toy, losses="survey"))


def test_the_worked_example_validates_up_to_its_data_root(tmp_path, monkeypatch):
    from pathlib import Path

    from raysweep.config import load_config

    config = Path(__file__).resolve().parents[1] / "configs" / "nnunet-3d-example.yaml"
    monkeypatch.chdir(tmp_path)  # its relative root, from a folder without the data
    with pytest.raises(FileNotFoundError, match="root: data/"):
        load_config(config)
