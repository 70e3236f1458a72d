"""nnunet: datasets written in the nnU-Net v2 raw and Decathlon layouts, read back through build_dataset."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from raysweep.data import DATASETS, build_dataset, check_dataset_options, dataset_info, list_cases
from raysweep.data import nnunet as nn
from raysweep.metrics import case_scores

SPACING = (3.0, 0.5, 0.75)  # (z, y, x) mm, deliberately anisotropic and different in y and x
D, H, W = 5, 16, 12


def case_arrays(i):
    """Deterministic (D, H, W) CT and MR images and a label with two classes and an ignore region for case i."""
    rng = np.random.default_rng(i)
    label = np.zeros((D, H, W), np.uint8)
    label[1:4, 3:9, 2:7] = 1
    label[2:4, 10:14, 6 + i % 3:10] = 2
    ct = rng.normal(-100, 30, (D, H, W)).astype(np.float32)
    ct[label == 1] = rng.normal(60 + i, 10, (label == 1).sum())
    ct[label == 2] = rng.normal(200, 40, (label == 2).sum())
    mr = rng.uniform(0, 500, (D, H, W)).astype(np.float32)
    return ct, mr, label


def save_nii(path, array, spacing=SPACING):
    """Save a (D, H, W) array as NIfTI with nibabel's (x, y, z) axis order and the spacing in the affine."""
    affine = np.diag([spacing[2], spacing[1], spacing[0], 1.0])
    nib.save(nib.Nifti1Image(np.asarray(array).transpose(2, 1, 0), affine), str(path))


def write_nnunet(root, n_train=8, n_test=0, labels=None, channels=("CT", "MR"), extra=None):
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for split, count, offset in (("Tr", n_train, 0), ("Ts", n_test, 100)):
        if count:
            (root / f"images{split}").mkdir(exist_ok=True)
            (root / f"labels{split}").mkdir(exist_ok=True)
        for i in range(offset, offset + count):
            ct, mr, label = case_arrays(i)
            save_nii(root / f"labels{split}" / f"c{i:03d}.nii.gz", label)
            for c, arr in enumerate((ct, mr)[:len(channels)]):
                save_nii(root / f"images{split}" / f"c{i:03d}_{c:04d}.nii.gz", arr)
    meta = {"channel_names": {str(i): c for i, c in enumerate(channels)},
            "labels": labels or {"background": 0, "liver": 1, "tumour": 2},
            "numTraining": n_train, "file_ending": ".nii.gz", **(extra or {})}
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


@pytest.fixture
def nn_root(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))
    nn._CT_STATS_MEMO.clear()
    return write_nnunet(tmp_path / "Dataset001_Test")


def test_info_from_dataset_json_and_registry_entry(nn_root):
    info = dataset_info("nnunet", root=nn_root, image_size=32)
    assert info.class_names == ("background", "liver", "tumour") and info.num_classes == 3
    assert info.eval_classes == (1, 2) and info.in_channels == 2 and info.per_volume
    assert info.image_size == (32, 32) and info.primary_metric == "dice"
    reg = DATASETS["nnunet"]
    assert (reg.select_split, reg.eval_split, reg.needs_root) == ("val", "test", True) and reg.num_classes == 0
    assert dataset_info("synapse", root="anything") is DATASETS["synapse"]
    with pytest.raises(ValueError, match="pass root"):
        dataset_info("nnunet")


def test_volumes_shapes_spacing_channels_and_slices(nn_root):
    ds = build_dataset("nnunet", "train", root=nn_root, image_size=32)
    assert ds.info.num_classes == 3 and len(ds) == D * len(ds.cases)
    item = ds[0]
    assert item["image"].shape == (2, 32, 32) and item["image"].dtype.is_floating_point
    assert item["mask"].shape == (32, 32) and item["case"] == f"{ds.cases[0]}_slice000"
    test = build_dataset("nnunet", "test", root=nn_root, image_size=32)
    vol = next(test.volumes())
    assert vol.image.shape == (D, 2, H, W) and vol.label.shape == (D, H, W)
    np.testing.assert_allclose(vol.spacing, SPACING)
    _, _, label = case_arrays(int(vol.case[1:]))
    np.testing.assert_array_equal(vol.label, label)  # axes back in (D, H, W) order
    assert test.volume_input(vol).shape == (D, 2, 32, 32)


def test_hd95_in_millimetres_matches_a_direct_computation(nn_root):
    from scipy import ndimage
    from scipy.spatial.distance import cdist

    vol = next(build_dataset("nnunet", "test", root=nn_root, image_size=32).volumes())
    pred = np.roll(vol.label, 1, axis=0)  # one slice off: 3 mm
    scores = case_scores(pred, vol.label, 3, spacing=vol.spacing, empty="strict")

    def surface(m):
        return np.argwhere(m & ~ndimage.binary_erosion(m, ndimage.generate_binary_structure(3, 1))) * SPACING

    for c in (1, 2):
        a, b = surface(pred == c), surface(vol.label == c)
        d = cdist(a, b)
        expected = np.percentile(np.concatenate([d.min(1), d.min(0)]), 95)
        assert scores["hd95"][c] == pytest.approx(expected)
    assert scores["hd95"][1] == pytest.approx(3.0)


def test_normalisation_ct_foreground_and_zscore(nn_root):
    ds = build_dataset("nnunet", "train", root=nn_root, image_size=32)
    fg = np.concatenate([case_arrays(int(c[1:]))[0][case_arrays(int(c[1:]))[2] > 0] for c in ds.cases])
    lo, hi = np.percentile(fg, [0.5, 99.5])
    stats = ds.ct_stats[0]
    assert stats["lower"] == pytest.approx(lo, rel=1e-5) and stats["upper"] == pytest.approx(hi, rel=1e-5)
    assert stats["mean"] == pytest.approx(fg.mean(), rel=1e-5) and stats["std"] == pytest.approx(fg.std(), rel=1e-5)
    val = build_dataset("nnunet", "val", root=nn_root, image_size=32)
    assert val.ct_stats == ds.ct_stats  # statistics of the training cases, whatever the split
    vol = next(val.volumes())
    ct, mr, _ = case_arrays(int(vol.case[1:]))
    np.testing.assert_allclose(vol.image[:, 0], (np.clip(ct, lo, hi) - fg.mean()) / fg.std(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(vol.image[:, 1], (mr - mr.mean()) / mr.std(), rtol=1e-4, atol=1e-4)


def test_ct_statistics_cached_on_disk_and_stale_cache_detected(nn_root, tmp_path):
    ds = build_dataset("nnunet", "train", root=nn_root, image_size=32)
    files = list((tmp_path / "cache" / "nnunet").glob("ct-*.json"))
    assert len(files) == 1
    stored = json.loads(files[0].read_text())
    assert stored["cases"] == ds.cases and stored["channels"]["0"]["mean"] == pytest.approx(ds.ct_stats[0]["mean"])
    # the file is used: plant a value, drop the memory cache
    stored["channels"]["0"]["mean"] = 12345.0
    files[0].write_text(json.dumps(stored))
    nn._CT_STATS_MEMO.clear()
    assert build_dataset("nnunet", "val", root=nn_root, image_size=32).ct_stats[0]["mean"] == 12345.0
    # a training file changes: the fingerprint no longer matches, the statistics are recomputed
    case = ds.cases[0]
    ct, _, label = case_arrays(int(case[1:]))
    save_nii(nn_root / "imagesTr" / f"{case}_0000.nii.gz", ct + 1000 * (label > 0))
    nn._CT_STATS_MEMO.clear()
    fresh = build_dataset("nnunet", "val", root=nn_root, image_size=32).ct_stats[0]["mean"]
    assert fresh != 12345.0 and fresh > ds.ct_stats[0]["mean"]


def test_seeded_splits_are_disjoint_recorded_and_reproducible(nn_root):
    splits = {s: list_cases("nnunet", s, root=nn_root) for s in ("train", "val", "test")}
    assert sum(map(len, splits.values())) == 8
    assert not set(splits["train"]) & set(splits["val"]) and not set(splits["val"]) & set(splits["test"])
    assert not set(splits["train"]) & set(splits["test"])
    assert len(splits["val"]) == 2 and len(splits["test"]) == 2  # 20% each, rounded
    ds = build_dataset("nnunet", "val", root=nn_root, image_size=32)
    assert [v.case for v in ds.volumes()] == splits["val"]
    other = list_cases("nnunet", "test", root=nn_root, split_seed=1)
    assert other != splits["test"]
    test3 = list_cases("nnunet", "test", root=nn_root, test_cases=3)
    pick = next(c for c in splits["train"] if c not in test3)
    assert list_cases("nnunet", "val", root=nn_root, val_cases=[pick], test_cases=3) == [pick] and len(test3) == 3
    with pytest.raises(ValueError, match=f"val_cases names {test3[0]}, held out for the test"):
        list_cases("nnunet", "val", root=nn_root, test_cases=3, val_cases=test3[:1])


def test_labelled_test_set_ranks_and_splits_final_decides_val(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))
    root = write_nnunet(tmp_path / "ds", n_train=6, n_test=2)
    assert list_cases("nnunet", "test", root=root) == ["c100", "c101"]
    with pytest.raises(ValueError, match="remove test_cases"):
        list_cases("nnunet", "test", root=root, test_cases=1)
    folds = [{"train": ["c000", "c001", "c002", "c003"], "val": ["c004", "c005"]},
             {"train": ["c002", "c003", "c004", "c005"], "val": ["c000", "c001"]}]
    (root / "splits_final.json").write_text(json.dumps(folds))
    assert list_cases("nnunet", "val", root=root) == ["c004", "c005"]
    assert list_cases("nnunet", "val", root=root, fold=1) == ["c000", "c001"]
    assert list_cases("nnunet", "train", root=root, fold=1) == ["c002", "c003", "c004", "c005"]
    with pytest.raises(ValueError, match="has 2 fold"):
        list_cases("nnunet", "val", root=root, fold=2)
    with pytest.raises(ValueError, match="splits_final.json decides"):
        list_cases("nnunet", "val", root=root, val_cases=1)
    # without labelsTs the test cases come out of the fold's train list, never its val list
    import shutil

    shutil.rmtree(root / "labelsTs")
    test = list_cases("nnunet", "test", root=root, test_cases=1)
    assert len(test) == 1 and test[0] in folds[0]["train"]
    assert test[0] not in list_cases("nnunet", "train", root=root, test_cases=1)


def test_msd_dataset_json_with_4d_images(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "Task01"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for i in range(6):
        ct, mr, label = case_arrays(i)
        img4 = np.stack([ct, mr], -1).transpose(2, 1, 0, 3)  # (x, y, z, c)
        nib.save(nib.Nifti1Image(img4, np.diag([SPACING[2], SPACING[1], SPACING[0], 1.0])),
                 str(root / "imagesTr" / f"m{i}.nii.gz"))
        save_nii(root / "labelsTr" / f"m{i}.nii.gz", label)
        training.append({"image": f"./imagesTr/m{i}.nii.gz", "label": f"./labelsTr/m{i}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({
        "modality": {"0": "FLAIR", "1": "T1w"}, "labels": {"0": "background", "1": "edema", "2": "tumour"},
        "training": training, "test": [], "numTraining": 6}))
    info = dataset_info("nnunet", root=root)
    assert info.class_names == ("background", "edema", "tumour") and info.in_channels == 2
    ds = build_dataset("nnunet", "test", root=root, image_size=16)
    vol = next(ds.volumes())
    assert vol.image.shape == (D, 2, H, W)
    ct, _, _ = case_arrays(int(vol.case[1:]))
    np.testing.assert_allclose(vol.image[:, 0], (ct - ct.mean()) / ct.std(), rtol=1e-4, atol=1e-4)  # not CT: z-score
    (root / "labelsTr" / "m0.nii.gz").unlink()
    with pytest.raises(FileNotFoundError, match="m0.nii.gz: listed in .*dataset.json"):
        list_cases("nnunet", "train", root=root)


def test_2d_png_dataset_per_image_with_rgb(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "Dataset120_Roads"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)).save(root / "imagesTr" / f"r{i}_0000.png")
        label = np.zeros((20, 24), np.uint8)
        label[5:12, 3:20] = 1
        Image.fromarray(label).save(root / "labelsTr" / f"r{i}.png")
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "R", "1": "G", "2": "B"}, "labels": {"background": 0, "road": 1},
        "numTraining": 6, "file_ending": ".png"}))
    info = dataset_info("nnunet", root=root)
    assert not info.per_volume and info.in_channels == 3 and info.primary_metric == "dice"
    ds = build_dataset("nnunet", "test", root=root, image_size=16)
    item = ds[0]
    assert item["image"].shape == (3, 16, 16) and item["case"] == list_cases("nnunet", "test", root=root)[0]
    assert set(item["mask"].unique().tolist()) == {0, 1}
    with pytest.raises(TypeError, match="per image"):
        next(ds.volumes())


def test_ignore_label_maps_to_255(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))
    root = write_nnunet(tmp_path / "ds", n_train=5, channels=("MR",),
                        labels={"background": 0, "liver": 1, "tumour": 2, "ignore": 3})
    ct, _, label = case_arrays(0)
    label[0] = 3
    save_nii(root / "labelsTr" / "c000.nii.gz", label)
    ds = build_dataset("nnunet", "train", root=root, image_size=16, test_cases=["c001"], val_cases=["c002"])
    assert ds.info.num_classes == 3
    vol = next(ds.volumes())
    assert vol.case == "c000" and (vol.label[0] == 255).all()


# -------------------------------------------------------------------------------------------------- bad input


def test_bad_dataset_json(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))
    root = write_nnunet(tmp_path / "ds", n_train=4)
    meta = json.loads((root / "dataset.json").read_text())

    def check(change, match, error=ValueError):
        (root / "dataset.json").write_text(json.dumps({**{k: v for k, v in meta.items() if k not in change},
                                                       **{k: v for k, v in change.items() if v is not None}}))
        with pytest.raises(error, match=match):
            list_cases("nnunet", "train", root=root)

    check({"labels": None}, r"dataset.json: missing key\(s\) 'labels'")
    check({"file_ending": None}, "missing key.*'file_ending'")
    check({"labels": {"background": 0, "whole": [1, 2], "core": 2}}, "dataset.json: region-based labels are not "
          "supported")
    check({"regions_class_order": [1, 2]}, "region-based labels are not supported")
    check({"labels": {"background": 0, "liver": 2}}, r"ids must be 0..K-1 without gaps.*\[0, 2\]")
    check({"numTraining": 5}, "numTraining is 5 but .* 4 label")
    check({"channel_names": {"0": "CT"}}, "c000_0001.nii.gz: channel 1 but dataset.json declares 1")
    (root / "dataset.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        list_cases("nnunet", "train", root=root)
    (root / "dataset.json").unlink()
    with pytest.raises(FileNotFoundError, match="dataset.json not found"):
        list_cases("nnunet", "train", root=root)


def test_bad_files_fail_when_the_dataset_is_built(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))
    root = write_nnunet(tmp_path / "ds", n_train=5, channels=("MR",))
    opts = dict(root=root, image_size=16, test_cases=["c001"], val_cases=["c002"])  # c000 trains
    ct, mr, label = case_arrays(0)

    save_nii(root / "labelsTr" / "c000.nii.gz", label[:, :-1])  # shape
    with pytest.raises(ValueError, match=r"c000_0000.nii.gz: image shape .* differs from its label"):
        build_dataset("nnunet", "train", **opts)
    save_nii(root / "labelsTr" / "c000.nii.gz", label, spacing=(3.0, 0.5, 0.9))  # affine
    with pytest.raises(ValueError, match="c000_0000.nii.gz: affine .* differs from its label c000.nii.gz"):
        build_dataset("nnunet", "train", **opts)
    bad = label.copy()
    bad[0, 0, 0] = 7
    save_nii(root / "labelsTr" / "c000.nii.gz", bad)  # values
    with pytest.raises(ValueError, match=r"c000.nii.gz: label values \[7\] are outside the class range 0..2"):
        build_dataset("nnunet", "train", **opts)
    save_nii(root / "labelsTr" / "c000.nii.gz", label)
    (root / "imagesTr" / "c000_0000.nii.gz").write_bytes(b"\x1f\x8b garbage")  # corrupt
    with pytest.raises(ValueError, match="c000_0000.nii.gz: cannot read the file"):
        build_dataset("nnunet", "train", **opts)
    (root / "imagesTr" / "c000_0000.nii.gz").unlink()  # missing
    with pytest.raises(FileNotFoundError, match="c000_0000.nii.gz: image not found"):
        list_cases("nnunet", "train", root=root)


def test_options_checked_without_data():
    with pytest.raises(ValueError, match="option fold must be an integer >= 0"):
        check_dataset_options("nnunet", {"fold": -1})
    with pytest.raises(ValueError, match="option val_cases must be null"):
        check_dataset_options("nnunet", {"val_cases": "c000"})
    with pytest.raises(ValueError, match="unknown option"):
        check_dataset_options("nnunet", {"foldd": 1})
    assert check_dataset_options("nnunet", {"image_size": 64})["image_size"] == (64, 64)


# -------------------------------------------------------------------------------------------------- end to end


def test_tiny_sweep_on_a_generated_nnunet_dataset_writes_a_report(ray_session, tmp_path, monkeypatch):
    from raysweep.config import validate
    from raysweep.data.examples import write_nnunet_example
    from raysweep.report import build_report
    from raysweep.results import read_results, read_sweep_meta
    from raysweep.sweep import SweepRunner

    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))
    root = write_nnunet_example(tmp_path / "Dataset900_Toy", num_training=4, num_test=6, size=32, depth=4)
    cfg = validate({
        "name": "nnunet-tiny",
        "datasets": {"nnunet": {"root": str(root), "options": {"image_size": 32, "val_cases": 1}}},
        "architectures": {"cnn": {"arch": "Unet", "encoder": "resnet18",
                                  "options": {"encoder_depth": 3, "decoder_channels": [32, 16, 8]}}},
        "losses": ["dice", "ce"],
        "tuning": {"trials_per_group": 1, "seed": 0, "grace_period": 1, "reduction_factor": 2},
        "confirmation": {"seeds": 1},
        "resources": {"cpus_per_trial": 1},
        "trial": {"train": {"steps": 2, "batch_size": 2}, "eval": {"every": 2, "overlays": 0}},
    })
    out = tmp_path / "out"
    state = SweepRunner(cfg, out, progress=False).run()
    assert state["tune_done"] and state["confirm_done"]
    trials = read_results(out / "results")["trials"]
    assert set(trials.loss) == {"dice", "ce"} and set(trials.status) <= {"completed", "stopped"}
    protocol = read_sweep_meta(out / "results")["protocol"]
    assert protocol["ranking"]["nnunet"]["cases"] == [f"toy_{1000 + i:03d}" for i in range(6)]
    assert len(protocol["selection"]["nnunet"]["cases"]) == 1
    cases = read_results(out / "results")["cases"]
    assert set(cases.class_name) <= set(dataset_info("nnunet", root=root).class_names[1:])
    assert cases.hd95.notna().any()  # per-volume, in mm
    html = build_report(out / "results", out / "report.html")
    assert "nnunet" in html.read_text()


# -------------------------------------------------------------------------------------------------- 3-D patches


def write_planted(root, n_train=5, shape=(4, 8, 8), spacing=SPACING):
    """An nnU-Net dataset (one MR channel) whose image is its label plus a little noise: any flip or rotation that
    moved image and mask apart would mix intensities across classes. The label has no symmetry (its 16 flips and
    in-plane rotations all differ)."""
    for sub in ("imagesTr", "labelsTr"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    label = np.zeros(shape, np.uint8)
    label[0, 0:3, 0:5] = 1
    label[0, 0, 5] = 1
    label[1:3, 5:7, 1:2] = 2
    label[3, 6, 6] = 2
    for i in range(n_train):
        image = label * 10.0 + np.random.default_rng(i).uniform(0, 1, shape)
        save_nii(root / "labelsTr" / f"p{i:03d}.nii.gz", label, spacing)
        save_nii(root / "imagesTr" / f"p{i:03d}_0000.nii.gz", image.astype(np.float32), spacing)
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "MR"}, "labels": {"background": 0, "liver": 1, "tumour": 2},
        "numTraining": n_train, "file_ending": ".nii.gz"}))
    return root, label


def test_3d_patch_items_epoch_and_whole_volume_evaluation(nn_root):
    ds = build_dataset("nnunet", "train", root=nn_root, dims=3, patch_size=[4, 8, 8], seed=0)
    assert ds.dims == 3 and ds.patch_size == (4, 8, 8) and len(ds.cases) == 4
    # 5 x 16 x 12 volumes: ceil(5/4) * ceil(16/8) * ceil(12/8) = 8 patches tile one; 4 cases
    assert len(ds) == ds.patches_per_epoch == 32
    item = ds[5]
    assert set(item) == {"image", "mask", "case"}
    assert item["image"].shape == (2, 4, 8, 8) and item["image"].dtype == torch.float32
    assert item["mask"].shape == (4, 8, 8) and item["mask"].dtype == torch.int64
    assert item["case"].startswith(f"{ds.cases[5 % 4]}_patch")  # item i is a patch of case i % cases
    assert len(build_dataset("nnunet", "train", root=nn_root, dims=3, patches_per_epoch=7)) == 7
    default = build_dataset("nnunet", "train", root=nn_root, dims=3, augment=False)
    assert default.patch_size == (16, 16, 16) and len(default) == 4  # median 5 x 16 x 12 rounded up to 16s
    val = build_dataset("nnunet", "val", root=nn_root, dims=3)
    assert val.patch_size == (16, 16, 16) and val.patches_per_epoch is None  # from the training cases' headers
    assert len(val) == 2 and val[1]["image"].shape == (2, D, H, W) and val[1]["case"] == val.cases[1]
    vol = next(val.volumes())
    x = val.volume_input(vol)
    assert x.shape == (1, 2, D, H, W) and x.dtype == torch.float32
    np.testing.assert_array_equal(x[0].numpy(), vol.image.transpose(1, 0, 2, 3))
    np.testing.assert_array_equal(val[0]["mask"].numpy(), vol.label)
    one = build_dataset("nnunet", "test", root=write_nnunet(nn_root.parent / "mr", n_train=5, channels=("MR",)),
                        dims=3, test_cases=["c001"], val_cases=["c002"])
    vol = next(one.volumes())
    assert vol.image.shape == (D, H, W) and one.volume_input(vol).shape == (1, 1, D, H, W)
    two = build_dataset("nnunet", "train", root=nn_root, image_size=16)
    assert two.dims == 2 and two.patch_size is None and len(two) == D * 4


def test_3d_patches_of_small_volumes_are_padded_with_ignore(nn_root):
    ds = build_dataset("nnunet", "train", root=nn_root, dims=3, patch_size=[8, 20, 12], augment=False, seed=0,
                       patches_per_epoch=8)
    vol = {v.case: v for v in ds.volumes()}
    for i in range(8):
        item = ds[i]
        mask, image = item["mask"].numpy(), item["image"].numpy()
        inside = np.argwhere(mask != 255)
        lo, hi = inside.min(0), inside.max(0) + 1
        assert (hi - lo).tolist() == [D, H, W] and len(inside) == D * H * W  # the whole volume, padded around
        box = tuple(slice(a, b) for a, b in zip(lo, hi))
        case = item["case"].split("_patch")[0]
        np.testing.assert_array_equal(mask[box], vol[case].label)
        np.testing.assert_array_equal(image[(slice(None), *box)], vol[case].image.transpose(1, 0, 2, 3))
        outside = np.ones(mask.shape, bool)
        outside[box] = False
        assert (image[:, outside] == 0).all()
        corner = [int(v) for v in item["case"].split("_patch")[1].split("_")]
        assert corner == [-int(a) for a in lo]  # the case name gives the corner in the volume


def test_foreground_locations_are_a_bounded_seeded_sample(monkeypatch):
    from raysweep.data import patches

    label = np.zeros((10, 40, 50), np.uint8)
    label[:, :20] = 1
    label[2, 30, 4] = 2
    label[0] = 255  # ignore is no class: 9,000 voxels of class 1 remain
    locs = patches.foreground_locations(label, 3)
    assert sorted(locs) == [1, 2] and len(locs[1]) == 9 * 20 * 50 and locs[2].tolist() == [[2, 30, 4]]
    monkeypatch.setattr(patches, "FG_LOCATIONS_PER_CLASS", 10)
    small = patches.foreground_locations(label, 3)
    assert len(small[1]) == 90  # at least 1% of the 9,000 voxels
    assert (label[tuple(small[1].T)] == 1).all() and len({tuple(v) for v in small[1]}) == 90
    np.testing.assert_array_equal(small[1], patches.foreground_locations(label, 3)[1])  # seeded


def test_foreground_oversampling_rate_and_centring():
    from raysweep.data.patches import PatchTransform, choose_corner, foreground_locations

    label = np.zeros((20, 40, 40), np.uint8)
    label[8:10, 15:17, 20:22] = 2  # far from the borders: a forced patch is centred on its voxel
    label[12, 30, 5:7] = 1
    image = label[..., None].astype(np.float32)
    locs = foreground_locations(label, 3)
    n = 600
    t = PatchTransform((4, 8, 8), oversample=0.33, augment=False, seed=0)
    draws = [t(image=image, mask=label, locations=locs) for _ in range(n)]
    forced = [d for d in draws if d["forced"]]
    assert abs(len(forced) / n - 0.33) < 4 * np.sqrt(0.33 * 0.67 / n)
    for d in forced:  # the centre voxel is foreground (the patch lies where the stored voxel is)
        assert d["mask"][2, 4, 4] in (1, 2)
    classes = [int(d["mask"][2, 4, 4]) for d in forced]
    assert 0.3 < classes.count(1) / len(classes) < 0.7  # a class present in the case, chosen uniformly
    t0 = PatchTransform((4, 8, 8), oversample=0.0, augment=False, seed=1)
    hit = np.mean([(t0(image=image, mask=label, locations=locs)["mask"] > 0).any() for _ in range(n)])
    rate = np.mean([(d["mask"] > 0).any() for d in draws])
    assert hit < 0.2 and abs(rate - (0.33 + 0.67 * hit)) < 0.08  # a third forced, plus the random ones that hit
    rng = np.random.default_rng(0)
    # near a border the patch is shifted back inside (the voxel stays in it); no foreground: a random patch
    corner, c = choose_corner((20, 40, 40), (4, 8, 8), rng, {1: np.array([[0, 39, 0]])}, force_fg=True)
    assert corner == (0, 32, 0) and c == 1
    assert choose_corner((20, 40, 40), (4, 8, 8), rng, {}, force_fg=True)[1] is None


def test_3d_forced_patches_of_the_dataset_hold_foreground_at_their_centre(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))
    root = write_nnunet(tmp_path / "ds", n_train=5, channels=("MR",))
    ds = build_dataset("nnunet", "train", root=root, dims=3, patch_size=[3, 8, 8], oversample_foreground=1.0,
                       augment=False, patches_per_epoch=30, seed=0, test_cases=["c001"], val_cases=["c002"])
    assert len(ds.locations) == 3 and all(sorted(loc) == [1, 2] for loc in ds.locations)
    for i in range(30):
        item = ds[i]
        corner = np.array([int(v) for v in item["case"].split("_patch")[1].split("_")])
        centre = item["mask"][1, 4, 4].item()
        assert centre in (1, 2) and (corner >= 0).all()  # the patch lies inside the 5 x 16 x 12 volume


def test_3d_items_are_reproducible_from_the_seed(nn_root):
    import pickle

    from raysweep.trial.sampling import SeededItems

    def build(seed):
        return build_dataset("nnunet", "train", root=nn_root, dims=3, patch_size=[4, 8, 8], seed=seed)

    a, b, c = build(3), build(3), build(4)
    first = [a[i] for i in range(6)]
    for x, y in zip(first, [b[i] for i in range(6)]):
        assert x["case"] == y["case"] and torch.equal(x["image"], y["image"]) and torch.equal(x["mask"], y["mask"])
    assert any(not torch.equal(x["image"], c[i]["image"]) for i, x in enumerate(first))
    # the trainer's items: (index, seed) decides the patch and its augmentation, whatever was drawn before
    items_a, items_b = SeededItems(build(0)), SeededItems(pickle.loads(pickle.dumps(build(1))))
    keys = [(i, 1000 + i) for i in range(8)]
    want = [items_a[k] for k in keys]
    got = [items_b[k] for k in reversed(keys)][::-1]
    for x, y in zip(want, got):
        assert x["case"] == y["case"] and torch.equal(x["image"], y["image"]) and torch.equal(x["mask"], y["mask"])
    assert len({x["case"] for x in want}) > 1


def _variants(label):
    """The 16 arrays flips on each axis and 90-degree rotations in (H, W) make of ``label``: bytes -> swaps H, W."""
    out = {}
    for along_d in (label, np.flip(label, 0)):
        for along_h in (along_d, np.flip(along_d, 1)):  # with the four rotations: the square's 8 symmetries
            for k in range(4):
                out[np.ascontiguousarray(np.rot90(along_h, k, axes=(1, 2))).tobytes()] = k % 2 == 1
    return out


def test_3d_augmentation_keeps_image_and_mask_aligned_and_the_spacing_follows(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))
    root, label = write_planted(tmp_path / "planted")
    variants = _variants(label)
    assert len(variants) == 16

    def record(mask, spacing=None):
        return {"spacing": np.asarray(spacing)}

    ds = build_dataset("nnunet", "train", root=root, dims=3, patch_size=[4, 8, 8], seed=0, target_maps=record,
                       test_cases=["p001"], val_cases=["p002"], patches_per_epoch=60)
    seen = set()
    for i in range(60):
        item = ds[i]
        mask, image = item["mask"].numpy(), item["image"].numpy()[0]
        key = mask.astype(np.uint8).tobytes()
        assert key in variants  # a flip / rotation of the label, never anything else
        seen.add(key)
        # image and mask moved together: every voxel of class k is brighter than every voxel of class k - 1
        assert image[mask == 0].max() < image[mask == 1].min() and image[mask == 1].max() < image[mask == 2].min()
        expected = (3.0, 0.75, 0.5) if variants[key] else SPACING
        np.testing.assert_allclose(item["spacing"].numpy(), expected)
    assert len(seen) >= 6  # the augmentation did flip and rotate
    plain = build_dataset("nnunet", "train", root=root, dims=3, patch_size=[4, 8, 8], augment=False, seed=0,
                          test_cases=["p001"], val_cases=["p002"])
    np.testing.assert_array_equal(plain[0]["mask"].numpy(), label)


def test_3d_rotation_planes_follow_patch_and_spacing():
    from raysweep.data.patches import rotation_planes

    assert rotation_planes((8, 16, 16), (3.0, 0.8, 0.8)) == [(1, 2)]  # anisotropic: in-plane only
    assert rotation_planes((16, 16, 16), (1.0, 0.8, 0.8)) == [(1, 2), (0, 2), (0, 1)]
    assert rotation_planes((16, 16, 8), (1.0, 1.0, 1.0)) == [(0, 1)]  # only planes the patch keeps its shape in
    assert rotation_planes((8, 16, 12), (3.0, 0.8, 0.8)) == []


def test_3d_distance_maps_get_the_spacing(nn_root):
    from raysweep.losses.maps import DistanceMaps, signed_distance_map

    def maps(mask, spacing=None):
        return DistanceMaps(3, spacing)(mask)

    ds = build_dataset("nnunet", "train", root=nn_root, dims=3, patch_size=[4, 8, 8], augment=False, seed=0,
                       target_maps=maps)
    item = ds[0]
    assert item["dist_map"].shape == (3, 4, 8, 8)
    np.testing.assert_allclose(item["dist_map"].numpy(), signed_distance_map(item["mask"].numpy(), 3, SPACING))
    assert not np.allclose(item["dist_map"].numpy(), signed_distance_map(item["mask"].numpy(), 3))
    val = build_dataset("nnunet", "val", root=nn_root, dims=3, target_maps=maps)
    np.testing.assert_allclose(val[0]["dist_map"].numpy(), signed_distance_map(val[0]["mask"].numpy(), 3, SPACING))
    no_spacing = build_dataset("nnunet", "train", root=nn_root, dims=3, patch_size=[4, 8, 8], augment=False, seed=0,
                               target_maps=lambda mask: {"dist_map": signed_distance_map(mask, 3)})
    item = no_spacing[0]  # a hook without the keyword (a trial's losses) gets the mask alone: maps in voxels
    np.testing.assert_allclose(item["dist_map"].numpy(), signed_distance_map(item["mask"].numpy(), 3))


def test_3d_options_checked_with_messages(nn_root, tmp_path, monkeypatch):
    import sys

    def refused(options, match):
        with pytest.raises(ValueError, match=match):
            check_dataset_options("nnunet", options)

    refused({"dims": 4}, r"option dims must be 2 \(train on 2-D slices\) or 3 \(train on 3-D patches\), got 4")
    refused({"patch_size": [8, 8, 8]}, "option patch_size applies to 3-D patches only, but dims is 2 .*set dims: 3")
    refused({"oversample_foreground": 0.5}, "option oversample_foreground applies to 3-D patches only")
    refused({"dims": 3, "patch_size": [8, 8]}, r"option patch_size must be null \(the default patch\) or three "
            r"integers \[d, h, w\] >= 1")
    refused({"dims": 3, "patch_size": [0, 8, 8]}, "option patch_size must be")
    refused({"dims": 3, "patches_per_epoch": 0}, "option patches_per_epoch must be an integer >= 1")
    refused({"dims": 3, "oversample_foreground": 1.5}, "option oversample_foreground must be a probability")
    refused({"dims": 3, "image_size": 64}, "option image_size resizes 2-D slices, but dims is 3.*remove image_size")
    refused({"dims": 3, "transform": lambda **kw: kw}, "option transform must be 'default' or null with dims: 3")
    refused({"dims": 3, "label_corruption": {"kind": "boundary", "pixels": 1}}, "label_corruption corrupts 2-D")
    with pytest.raises(ValueError, match="label_corruption corrupts 2-D"):
        build_dataset("nnunet", "train", root=nn_root, dims=3, label_corruption={"kind": "boundary", "pixels": 1})
    assert check_dataset_options("nnunet", {"dims": 3, "patch_size": [8, 16, 16]})["patch_size"] == (8, 16, 16)
    # a 2-D (png) nnU-Net dataset has no depth
    root = tmp_path / "Dataset120_Roads"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    for i in range(3):
        Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "imagesTr" / f"r{i}_0000.png")
        Image.fromarray(np.ones((8, 8), np.uint8)).save(root / "labelsTr" / f"r{i}.png")
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "grey"}, "labels": {"background": 0,
                                                  "road": 1}, "numTraining": 3, "file_ending": ".png"}))
    for call in (lambda: dataset_info("nnunet", root=root, dims=3), lambda: list_cases("nnunet", "val", root=root,
                 dims=3), lambda: build_dataset("nnunet", "train", root=root, dims=3)):
        with pytest.raises(ValueError, match=r"option dims is 3, but .* holds 2-D images \(file_ending '.png'\).*set "
                                             r"dims: 2"):
            call()
    # MONAI is an optional extra: only the 3-D augmentation needs it
    monkeypatch.setitem(sys.modules, "monai", None)
    with pytest.raises(ValueError, match=r"the 3-D augmentation \(dims: 3\) need MONAI, which is not installed: pip "
                                         r"install 'raysweep\[3d\]'"):
        build_dataset("nnunet", "train", root=nn_root, dims=3)
    assert build_dataset("nnunet", "train", root=nn_root, dims=3, augment=False)[0]["image"].ndim == 4
