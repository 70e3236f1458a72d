"""raysweep data inspect: statistics of generated datasets against direct counts, warnings, CLI text and JSON."""

import json

import numpy as np
import pytest
from scipy import ndimage

from raysweep.cli import main
from raysweep.data import inspect as di
from raysweep.data.examples import PALETTE, write_folder_example, write_nnunet_example

from test_data_nnunet import case_arrays, save_nii, write_nnunet


@pytest.fixture
def nn_root(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))
    return write_nnunet(tmp_path / "ds", n_train=6)


def test_statistics_match_direct_counts(nn_root):
    r = di.inspect_dataset("nnunet", nn_root)
    labels = [case_arrays(i)[2] for i in range(6)]
    counts = np.bincount(np.concatenate([lb.ravel() for lb in labels]), minlength=3)
    assert r["classes"] == ["background", "liver", "tumour"] and r["inspected"] == 6 and r["volumes"]
    assert [c["fraction"] for c in r["per_class"]] == pytest.approx(list(counts / counts.sum()))
    sizes = [s for lb in labels for s in np.bincount(ndimage.label(lb == 2)[0].ravel())[1:]]
    assert r["per_class"][2]["median_object_size"] == np.median(sizes)
    assert r["per_class"][2]["objects_per_case"] == len(sizes) / 6
    assert r["spacing"]["median"] == pytest.approx([3.0, 0.5, 0.75])
    cts = np.stack([case_arrays(i)[0] for i in range(6)])
    assert r["channels"][0]["name"] == "CT" and r["channels"][0]["min"] == pytest.approx(cts.min())
    assert r["splits"] == {"train": 4, "val": 1, "test": 1} and r["shapes"]["min"] == [5, 16, 12]
    assert any("anisotropic" in w for w in r["warnings"])


def test_errors_apart_from_warnings_rare_absent_out_of_range_and_geometry(nn_root):
    ct, _, label = case_arrays(0)
    bad = label.copy()
    bad[0, 0, 0] = 9
    save_nii(nn_root / "labelsTr" / "c000.nii.gz", bad)
    save_nii(nn_root / "labelsTr" / "c001.nii.gz", label[:, :, :-1])
    for i in range(2, 6):  # tumour absent from most cases
        lb = case_arrays(i)[2]
        lb[lb == 2] = 0
        save_nii(nn_root / "labelsTr" / f"c{i:03d}.nii.gz", lb)
    r = di.inspect_dataset("nnunet", nn_root)
    errors = "\n".join(e["error"] for e in r["errors"])
    assert "c000.nii.gz: label values [9] are outside" in errors
    assert "c001_0000.nii.gz: image shape" in errors and "differs from its label" in errors
    assert {e["file"] for e in r["errors"]} == {str(nn_root / "labelsTr" / "c000.nii.gz"),
                                                str(nn_root / "imagesTr" / "c001_0000.nii.gz")}
    warnings = "\n".join(r["warnings"])
    assert "class 'tumour' is absent from 4 of 4 inspected cases" in warnings and "c000" not in warnings
    assert r["inspected"] == 4 and r["checked"] == 6 and len(r["errors"]) == 2


def test_rare_class_and_subsampling(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))
    root = write_nnunet_example(tmp_path / "toy", num_training=10, num_test=0, size=64, depth=4)
    r = di.inspect_dataset("nnunet", root, max_cases=3)
    assert r["inspected"] == 3 and r["total_cases"] == 10
    assert di._spread(list("abcdefghij"), 3) == ["a", "e", "j"]
    rare = [c["name"] for c in r["per_class"][1:] if c["fraction"] < di.RARE_FRACTION]
    assert all(f"class {n!r} covers" in "\n".join(r["warnings"]) for n in rare)


def test_cli_folder_config_and_json(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))
    folder = write_folder_example(tmp_path / "imgs", num_images=8, size=32)
    nn_root = write_nnunet_example(tmp_path / "nn", num_training=6, num_test=2, size=32, depth=4)
    assert main(["data", "inspect", str(nn_root)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"nnunet  {nn_root}") and "ranking split: labelsTs" in out and "spacing (z, y, x) mm" in out
    config = tmp_path / "sweep.yaml"
    config.write_text(f"datasets:\n  folder:\n    root: {folder.name}\n    options:\n      palette: "
                      f"{json.dumps(PALETTE)}\n  synthetic: {{}}\n  synapse: {{root: {folder.name}}}\n")
    # A relative root is taken from the working folder, as `raysweep run` takes it: from elsewhere it is an error
    # that names the working folder.
    monkeypatch.chdir(folder)
    assert main(["data", "inspect", str(config), "--json"]) == 2
    (error,) = json.loads(capsys.readouterr().out)[0]["errors"]
    assert f"from the working folder {folder}" in error["error"] and error["file"] == folder.name
    monkeypatch.chdir(tmp_path)
    assert main(["data", "inspect", str(config), "--json"]) == 0
    reports = json.loads(capsys.readouterr().out)
    assert reports[0]["dataset"] == "folder" and reports[0]["inspected"] == 8 and reports[0]["errors"] == []
    assert reports[1]["dataset"] == "synthetic" and len(reports[1]["per_class"]) == 9  # generated, 16/4/8 volumes
    assert reports[1]["splits"] == {"train": 16, "val": 4, "test": 8}
    assert reports[2] == {"dataset": "synapse", "skipped": reports[2]["skipped"]}
    assert main(["data", "inspect", str(tmp_path)]) == 2
    assert "not a dataset folder" in capsys.readouterr().err


def test_synthetic_is_inspected_as_the_sweep_sees_it():
    """The embedded dataset with a sweep's per-split options: the splits' case counts, and class shares equal to a
    direct count over the inspected volumes."""
    import numpy as np

    from raysweep.data import build_dataset
    from raysweep.data.inspect import inspect_config

    section = {"options": {"image_size": 32, "depth": 4}, "select_options": {"num_volumes": 2},
               "eval_options": {"num_volumes": 3}, "train_options": {"num_volumes": 2}}
    (r,) = inspect_config({"synthetic": section})
    assert r["splits"] == {"train": 2, "val": 2, "test": 3} and r["inspected"] == 7 and r["volumes"]
    labels = np.concatenate([v.label.ravel() for split, n in (("train", 2), ("val", 2), ("test", 3))
                             for v in build_dataset("synthetic", split, image_size=32, depth=4,
                                                    num_volumes=n).volumes()])
    direct = np.bincount(labels, minlength=9) / labels.size
    assert [c["fraction"] for c in r["per_class"]] == pytest.approx(direct.tolist())
    assert r["spacing"]["median"] == [2.0, 1.0, 1.0]


def _monai_windows(shape, patch):
    """The windows MONAI's sliding_window_inference evaluates at 50% overlap, counted by running it."""
    import torch
    from monai.inferers import sliding_window_inference

    calls = []

    def predictor(x):
        calls.append(x.shape[0])
        return x

    sliding_window_inference(torch.zeros(1, 1, *shape), roi_size=patch, sw_batch_size=1, predictor=predictor,
                             overlap=0.5)
    return sum(calls)


@pytest.mark.parametrize("shape, patch", [((5, 16, 12), (4, 8, 8)), ((40, 100, 90), (32, 96, 96)),
                                          ((3, 7, 200), (16, 16, 16)), ((33, 64, 64), (5, 64, 17))])
def test_sliding_window_positions_match_monai(shape, patch):
    from raysweep.data.patches import patches_per_volume, sliding_window_positions

    assert sliding_window_positions(shape, patch) == _monai_windows(shape, patch)
    assert patches_per_volume(shape, patch) == np.prod([-(-s // p) for s, p in zip(shape, patch)])


def test_3d_patches_reported_in_text_and_json(nn_root, capsys):
    r = di.inspect_dataset("nnunet", nn_root, {"dims": 3, "patch_size": [4, 8, 8]})
    p = r["patches"]
    assert p["patch_size"] == [4, 8, 8] and not p["default"] and p["overlap"] == 0.5
    assert p["patches_per_epoch"] == 4 * 8  # 4 training cases, 2 * 2 * 2 patches tile each 5 x 16 x 12 volume
    assert set(p["splits"]) == {"train", "val", "test"} and p["splits"]["train"]["cases"] == 4
    train = p["splits"]["train"]
    assert train["shape"] == {"median": [5.0, 16.0, 12.0], "min": [5, 16, 12], "max": [5, 16, 12]}
    assert train["patches_per_volume"] == {"median": 8.0, "min": 8, "max": 8}
    assert train["windows"]["median"] == _monai_windows((5, 16, 12), (4, 8, 8)) == 12
    assert any("3-D patches are rotated in-plane only" in w for w in r["warnings"])
    text = di.as_text([r])
    assert "  3-D patches (dims: 3): 4 x 8 x 8 (patch_size); 32 patches an epoch" in text
    assert "    train     4 cases, median shape 5 x 16 x 12: patches 8 (8 .. 8), windows 12 (12 .. 12)" in text
    assert json.loads(di.as_json([r]))[0]["patches"]["splits"]["val"]["cases"] == 1
    # the default patch: the median shape rounded up to 16s; a dataset section's train options count
    (r,) = di.inspect_config({"nnunet": {"root": str(nn_root), "train_options": {"dims": 3}}}, full_check=False)
    assert r["patches"]["patch_size"] == [16, 16, 16] and r["patches"]["default"]
    assert r["patches"]["patches_per_epoch"] == 4 and r["patches"]["splits"]["test"]["windows"]["max"] == 1
    assert "(default: the training volumes' median shape, sides rounded up to 16, capped at 32 x 96 x 96)" in \
        di.as_text([r])
    assert di.inspect_dataset("nnunet", nn_root, full_check=False)["patches"] is None  # dims 2: slices
