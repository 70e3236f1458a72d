"""Synapse (TransUNet release): fixtures written in the published format and read back through build_dataset."""

import warnings

import h5py
import numpy as np
import pytest
import torch

from raysweep.data import DATASETS, Volume, build_dataset, list_cases
from raysweep.data.synapse import TEST_CASES, TRAIN_CASES

from test_data_holdout import drawn

H = W = 32


def slice_arrays(case: int, z: int):
    """Deterministic slice content; the label is stored as float32, as in the release."""
    rng = np.random.default_rng(case * 1000 + z)
    image = rng.uniform(0, 1, (H, W)).astype(np.float32)
    label = np.zeros((H, W), np.float32)
    label[4:12, 4:12] = 1 + (case + z) % 8
    label[20:24, 18:30] = 5
    return image, label


def write_npz(path, image, label):
    np.savez(path, image=image, label=label)


def write_h5(path, image, label, spacing=None):
    with h5py.File(path, "w") as f:
        f.create_dataset("image", data=image)
        f.create_dataset("label", data=label)
        if spacing is not None:
            f.attrs["spacing"] = np.asarray(spacing)


@pytest.fixture
def synapse_root(tmp_path):
    """Two standard training cases (3 slices each), one test case in train_npz (to be skipped), and two test
    volumes (depth 4 and 3) plus one non-standard volume."""
    root = tmp_path / "Synapse"
    (root / "train_npz").mkdir(parents=True)
    (root / "test_vol_h5").mkdir()
    for case in (5, 6, 1):
        for z in range(3):
            write_npz(root / "train_npz" / f"case{case:04d}_slice{z:03d}.npz", *slice_arrays(case, z))
    for case, depth in ((1, 4), (2, 3), (99, 2)):
        pairs = [slice_arrays(case, z) for z in range(depth)]
        write_h5(root / "test_vol_h5" / f"case{case:04d}.npy.h5", np.stack([p[0] for p in pairs]),
                 np.stack([p[1] for p in pairs]))
    return root


def test_info_matches_the_transunet_protocol():
    info = DATASETS["synapse"]
    assert info.num_classes == 9 and info.in_channels == 1
    assert info.class_names[1:] == ("aorta", "gallbladder", "left_kidney", "right_kidney", "liver", "pancreas",
                                    "spleen", "stomach")
    assert info.primary_metric == "dice" and info.per_volume and info.empty_convention == "transunet"
    assert info.image_size == (224, 224) and info.eval_classes == tuple(range(1, 9))
    assert len(TRAIN_CASES) == 18 and len(TEST_CASES) == 12 and not set(TRAIN_CASES) & set(TEST_CASES)


def test_train_split_reads_npz_exactly_and_skips_test_cases(synapse_root):
    with pytest.warns(UserWarning, match="case0001"):
        ds = build_dataset("synapse", root=synapse_root, split="train", image_size=H, augment=False, val_cases=0)
    assert len(ds) == 6 and ds.cases == ["case0005", "case0006"]
    item = ds[4]
    assert item["case"] == "case0006_slice001"
    assert item["image"].shape == (1, H, W)
    assert item["mask"].dtype == torch.int64 and item["image"].dtype == torch.float32
    image, label = slice_arrays(6, 1)
    np.testing.assert_allclose(item["image"][0].numpy(), image, atol=1e-6)  # same size: resize is the identity
    np.testing.assert_array_equal(item["mask"].numpy(), label.astype(np.int64))


def test_train_resize_to_image_size_keeps_label_values(synapse_root):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = build_dataset("synapse", root=synapse_root, split="train", image_size=(56, 48), augment=False,
                           val_cases=0)
    item = ds[0]
    assert item["image"].shape == (1, 56, 48) and item["mask"].shape == (56, 48)
    assert set(np.unique(item["mask"].numpy())) <= set(np.unique(slice_arrays(5, 0)[1]).astype(int))


def test_default_224_and_augmentation_run(synapse_root):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = build_dataset("synapse", root=synapse_root, split="train", seed=0, val_cases=0)
    shapes = {tuple(ds[i]["mask"].shape) for i in range(len(ds))}
    assert shapes == {(224, 224)}
    masks = [ds[0]["mask"].numpy() for _ in range(8)]
    assert any(not np.array_equal(masks[0], m) for m in masks[1:]), "training augmentation never changed the slice"


def test_test_split_slices_and_volumes(synapse_root):
    with pytest.warns(UserWarning, match="case0099"):
        ds = build_dataset("synapse", root=synapse_root, split="test", image_size=H)
    assert ds.cases == ["case0001", "case0002"] and len(ds) == 4 + 3
    assert ds[5]["case"] == "case0002_slice001"
    np.testing.assert_array_equal(ds[5]["mask"].numpy(), slice_arrays(2, 1)[1])
    vols = list(ds.volumes())
    assert [v.case for v in vols] == ["case0001", "case0002"]
    v = vols[0]
    assert isinstance(v, Volume) and v.image.shape == (4, H, W) and v.label.dtype == np.int64
    assert v.spacing is None
    np.testing.assert_array_equal(v.label[2], slice_arrays(1, 2)[1])
    x = ds.volume_input(v)
    assert tuple(x.shape) == (4, 1, H, W) and x.dtype == torch.float32


def test_volume_input_resizes_to_network_size(synapse_root):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = build_dataset("synapse", root=synapse_root, split="test", image_size=64)
    v = next(ds.volumes())
    assert tuple(ds.volume_input(v).shape) == (4, 1, 64, 64)
    assert v.label.shape == (4, H, W)  # labels stay at native size for evaluation


def test_spacing_attribute_is_reported(synapse_root):
    image, label = slice_arrays(3, 0)
    write_h5(synapse_root / "test_vol_h5" / "case0003.npy.h5", image[None], label[None], spacing=(3.0, 0.7, 0.7))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = build_dataset("synapse", root=synapse_root, split="test")
    spacing = {v.case: v.spacing for v in ds.volumes()}
    assert spacing["case0003"] == (3.0, 0.7, 0.7) and spacing["case0001"] is None


def test_train_volumes_stack_slices_in_order(synapse_root):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = build_dataset("synapse", root=synapse_root, split="train", val_cases=0)
    vols = {v.case: v for v in ds.volumes()}
    assert set(vols) == {"case0005", "case0006"}
    np.testing.assert_array_equal(vols["case0006"].label[2], slice_arrays(6, 2)[1])


@pytest.mark.parametrize("where", ["lists_Synapse", "lists/lists_Synapse", "custom"])
def test_split_lists_select_slices_and_volumes(synapse_root, where):
    list_dir = synapse_root / where
    list_dir.mkdir(parents=True)
    (list_dir / "train.txt").write_text("case0005_slice002\ncase0001_slice000\n\n")  # lists may include any case
    (list_dir / "test_vol.txt").write_text("case0099\r\ncase0002\n")
    kwargs = {"list_dir": list_dir} if where == "custom" else {}
    kwargs["val_cases"] = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no skipping warnings when lists are given
        train = build_dataset("synapse", root=synapse_root, split="train", augment=False, image_size=H, **kwargs)
        test = build_dataset("synapse", root=synapse_root, split="test", image_size=H, **kwargs)
    assert [train[i]["case"] for i in range(len(train))] == ["case0005_slice002", "case0001_slice000"]
    assert test.cases == ["case0002", "case0099"] and len(test) == 3 + 2


def test_list_naming_a_missing_file(synapse_root):
    (synapse_root / "lists_Synapse").mkdir()
    (synapse_root / "lists_Synapse" / "train.txt").write_text("case0005_slice000\ncase0005_slice777\n")
    with pytest.raises(FileNotFoundError, match="case0005_slice777.npz"):
        build_dataset("synapse", root=synapse_root, split="train")
    (synapse_root / "lists_Synapse" / "train.txt").write_text("case0005_slice000\nslice 12 of case 5\n")
    with pytest.raises(ValueError, match="slice 12 of case 5"):
        build_dataset("synapse", root=synapse_root, split="train")
    with pytest.raises(FileNotFoundError, match="test_vol.txt"):
        build_dataset("synapse", root=synapse_root, split="test", list_dir=synapse_root / "nowhere")


def test_missing_root_and_wrong_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"does-not-exist[\s\S]*train_npz/caseXXXX_sliceYYY.npz"):
        build_dataset("synapse", root=tmp_path / "does-not-exist")
    (tmp_path / "flat").mkdir()
    write_npz(tmp_path / "flat" / "case0005_slice000.npz", *slice_arrays(5, 0))  # slices not in train_npz/
    with pytest.raises(FileNotFoundError, match="train_npz"):
        build_dataset("synapse", root=tmp_path / "flat", split="train")
    with pytest.raises(FileNotFoundError, match="test_vol_h5"):
        build_dataset("synapse", root=tmp_path / "flat", split="test")
    (tmp_path / "flat" / "train_npz").mkdir()
    with pytest.raises(FileNotFoundError, match="no caseXXXX_sliceYYY.npz"):
        build_dataset("synapse", root=tmp_path / "flat", split="train")
    with pytest.raises(ValueError, match="root=PATH"):
        build_dataset("synapse", split="train")
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        build_dataset("synapse", root=tmp_path / "flat", split="valid")
    with pytest.raises(ValueError, match="unknown option.*img_size"):
        build_dataset("synapse", root=tmp_path / "flat", img_size=224)


def test_only_nonstandard_cases_is_an_error(tmp_path):
    (tmp_path / "train_npz").mkdir()
    write_npz(tmp_path / "train_npz" / "case0001_slice000.npz", *slice_arrays(1, 0))
    with pytest.warns(UserWarning), pytest.raises(FileNotFoundError, match="standard training cases"):
        build_dataset("synapse", root=tmp_path, split="train")


def test_truncated_npz_names_the_file(synapse_root):
    path = synapse_root / "train_npz" / "case0005_slice001.npz"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = build_dataset("synapse", root=synapse_root, split="train", val_cases=0)
    ds[0]  # other slices still load
    with pytest.raises(ValueError, match=r"case0005_slice001\.npz.*corrupt or truncated"):
        ds[1]


def test_npz_with_wrong_keys_names_file_and_keys(synapse_root):
    np.savez(synapse_root / "train_npz" / "case0005_slice000.npz", img=np.zeros((H, W)), label=np.zeros((H, W)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = build_dataset("synapse", root=synapse_root, split="train", val_cases=0)
    with pytest.raises(ValueError, match=r"case0005_slice000\.npz: missing key\(s\) \['image'\].*'img'"):
        ds[0]


def test_labels_out_of_range_name_values_and_file(synapse_root):
    image, label = slice_arrays(5, 2)
    label[0, 0], label[0, 1] = 9, 13
    write_npz(synapse_root / "train_npz" / "case0005_slice002.npz", image, label)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = build_dataset("synapse", root=synapse_root, split="train", val_cases=0)
    with pytest.raises(ValueError, match=r"case0005_slice002\.npz: label values \[9, 13\] are outside .*0\.\.8"):
        ds[2]
    label[0, 0], label[0, 1] = 1.5, 1
    write_npz(synapse_root / "train_npz" / "case0005_slice002.npz", image, label)
    with pytest.raises(ValueError, match=r"case0005_slice002\.npz: label contains non-integer values \[1\.5\]"):
        ds[2]


def test_h5_errors_name_the_file(synapse_root):
    path = synapse_root / "test_vol_h5" / "case0002.npy.h5"
    data = path.read_bytes()
    path.write_bytes(data[:1000])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"case0002\.npy\.h5.*corrupt or truncated"):
            build_dataset("synapse", root=synapse_root, split="test")
    with h5py.File(path, "w") as f:
        f.create_dataset("img", data=np.zeros((2, H, W)))
        f.create_dataset("label", data=np.zeros((2, H, W)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"case0002\.npy\.h5: missing dataset\(s\) \['image'\]"):
            build_dataset("synapse", root=synapse_root, split="test")
    write_h5(path, np.zeros((2, H, W), np.float32), np.zeros((2, H, W - 1), np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"case0002\.npy\.h5: expected image and label of the same"):
            build_dataset("synapse", root=synapse_root, split="test")
    label = np.zeros((2, H, W), np.float32)
    label[1, 3, 3] = 12
    write_h5(path, np.zeros((2, H, W), np.float32), label)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = build_dataset("synapse", root=synapse_root, split="test")
        with pytest.raises(ValueError, match=r"case0002\.npy\.h5 \(slice 1\): label values \[12\]"):
            ds[4 + 1]
        with pytest.raises(ValueError, match=r"case0002\.npy\.h5: label values \[12\]"):
            list(ds.volumes())


# -- bad input: every broken file fails with a ValueError / FileNotFoundError that names it -------------------------


def _build(root, split, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fixture's non-standard cases are skipped with a warning
        return build_dataset("synapse", root=root, split=split, image_size=H, augment=False,
                             **{"val_cases": 0, **kw})


def _npz_bytes(tmp_path, **arrays) -> bytes:
    np.savez(tmp_path / "x.npz", **arrays)
    return (tmp_path / "x.npz").read_bytes()


@pytest.mark.parametrize(
    "content,match",
    [
        (lambda tmp: b"", r"not an \.npz archive"),
        (lambda tmp: np.random.default_rng(0).bytes(3000), r"not an \.npz archive"),
        (lambda tmp: b"PK\x03\x04" + np.random.default_rng(1).bytes(3000), "corrupt or truncated"),
        (lambda tmp: (np.save(tmp / "a.npy", np.zeros((H, W))), (tmp / "a.npy").read_bytes())[1],
         r"not an \.npz archive"),
        (lambda tmp: _npz_bytes(tmp, image=np.zeros((1, H, W)), label=np.zeros((1, H, W))),
         r"same 2-D shape, got image \(1, 32, 32\)"),
        (lambda tmp: _npz_bytes(tmp, image=np.zeros((H, W)), label=np.zeros((H, W + 1))),
         r"got image \(32, 32\) and label \(32, 33\)"),
        (lambda tmp: _npz_bytes(tmp, image=np.zeros(0), label=np.zeros(0)), "same 2-D shape"),
        (lambda tmp: _npz_bytes(tmp, image=np.zeros((0, W)), label=np.zeros((0, W))), "empty"),
        (lambda tmp: _npz_bytes(tmp, image=np.zeros((H, W), complex), label=np.zeros((H, W))),
         "image has dtype complex128"),
        (lambda tmp: _npz_bytes(tmp, image=np.full((H, W), "a"), label=np.zeros((H, W))), "image has dtype <U1"),
        (lambda tmp: _npz_bytes(tmp, image=np.full((H, W), np.nan, np.float32), label=np.zeros((H, W))),
         "image contains NaN or inf"),
        (lambda tmp: _npz_bytes(tmp, image=np.zeros((H, W)), label=np.zeros((H, W), complex)),
         "label has dtype complex128; expected integer class ids"),
        (lambda tmp: _npz_bytes(tmp, image=np.zeros((H, W)), label=np.full((H, W), "1")),
         "label has dtype <U1; expected integer class ids"),
        (lambda tmp: _npz_bytes(tmp, image=np.zeros((H, W)), label=np.full((H, W), np.nan)),
         r"label contains non-integer values \[nan\]"),
        (lambda tmp: _npz_bytes(tmp, image=np.zeros((H, W)), label=np.resize([14, -1, 255, 3], (H, W))),
         r"label values \[-1, 14, 255\] are outside the class range 0\.\.8"),
        (lambda tmp: _npz_bytes(tmp, image=np.zeros((H, W)), label=np.full((H, W), None, object)),
         "holds Python objects"),
        (lambda tmp: _npz_bytes(tmp, Image=np.zeros((H, W)), Label=np.zeros((H, W))),
         r"missing key\(s\) \['image', 'label'\] \(found \['Image', 'Label'\]\)"),
    ],
    ids=["empty", "random-bytes", "zip-header-then-garbage", "npy-not-npz", "3-D", "shape-mismatch", "1-D",
         "zero-size", "complex-image", "string-image", "nan-image", "complex-label", "string-label", "nan-label",
         "labels-out-of-range", "object-array", "wrong-keys"],
)
def test_broken_training_slice_names_the_file(synapse_root, tmp_path, content, match):
    path = synapse_root / "train_npz" / "case0006_slice001.npz"
    path.write_bytes(content(tmp_path))
    ds = _build(synapse_root, "train")  # construction only checks that the files exist
    assert ds[0]["mask"].shape == (H, W)  # the other slices still load
    with pytest.raises(ValueError, match=r"case0006_slice001\.npz.*" + match):
        ds[4]
    with pytest.raises(ValueError, match=r"case0006_slice001\.npz"):
        list(ds.volumes())


def test_file_removed_after_construction_is_file_not_found(synapse_root):
    train, test = _build(synapse_root, "train"), _build(synapse_root, "test")
    (synapse_root / "train_npz" / "case0005_slice000.npz").unlink()
    with pytest.raises(FileNotFoundError, match=r"case0005_slice000\.npz: file not found"):
        train[0]
    (synapse_root / "test_vol_h5" / "case0001.npy.h5").unlink()
    with pytest.raises(FileNotFoundError, match=r"case0001\.npy\.h5: file not found"):
        test[0]
    with pytest.raises(FileNotFoundError, match=r"case0001\.npy\.h5: file not found"):
        list(test.volumes())


def test_test_list_naming_a_missing_volume(synapse_root):
    (synapse_root / "lists_Synapse").mkdir()
    (synapse_root / "lists_Synapse" / "test_vol.txt").write_text("case0001\ncase0777\n")
    with pytest.raises(FileNotFoundError, match=r"1 volume\(s\) named in the test list are missing .*case0777"):
        _build(synapse_root, "test")
    (synapse_root / "lists_Synapse" / "test_vol.txt").write_text("\n\n")
    with pytest.raises(ValueError, match=r"test_vol\.txt is empty"):
        _build(synapse_root, "test")


@pytest.mark.parametrize(
    "write,match,when",
    [
        (lambda p: p.write_bytes(np.random.default_rng(0).bytes(4000)), "corrupt or truncated", "build"),
        (lambda p: p.write_bytes(b""), "corrupt or truncated", "build"),
        (lambda p: write_h5(p, np.zeros((H, W), np.float32), np.zeros((H, W), np.float32)),
         r"same \(D, H, W\) shape, got image \(32, 32\)", "build"),
        (lambda p: write_h5(p, np.zeros((2, H, W), np.float32), np.zeros((3, H, W), np.float32)),
         r"got image \(2, 32, 32\) and label \(3, 32, 32\)", "build"),
        (lambda p: _h5_group_image(p), "'image' is a Group, not a dataset", "build"),
        (lambda p: write_h5(p, np.zeros((2, H, W), np.float32), np.full((2, H, W), 0.5, np.float32)),
         r"\(slice 0\): label contains non-integer values \[0\.5\]", "item"),
        (lambda p: write_h5(p, np.zeros((2, H, W), complex), np.zeros((2, H, W), np.float32)),
         r"\(slice 0\): image has dtype complex128", "item"),
        (lambda p: write_h5(p, np.full((2, H, W), np.inf, np.float32), np.zeros((2, H, W), np.float32)),
         r"\(slice 0\): image contains NaN or inf", "item"),
        (lambda p: write_h5(p, np.zeros((2, H, W), np.float32), np.full((2, H, W), 9, np.uint8)),
         r"\(slice 0\): label values \[9\] are outside the class range 0\.\.8", "item"),
        (lambda p: write_h5(p, np.zeros((2, H, W), np.float32), np.zeros((2, H, W), np.float32), spacing=(1, 2)),
         r"'spacing' must be three positive numbers", "volumes"),
    ],
    ids=["random-bytes", "empty", "2-D", "shape-mismatch", "group-not-dataset", "float-labels", "complex-image",
         "inf-image", "labels-out-of-range", "bad-spacing"],
)
def test_broken_test_volume_names_the_file(synapse_root, write, match, when):
    path = synapse_root / "test_vol_h5" / "case0002.npy.h5"
    path.unlink()
    write(path)
    pattern = r"case0002\.npy\.h5.*" + match
    if when == "build":  # the depth of every volume is read at construction
        with pytest.raises(ValueError, match=pattern):
            _build(synapse_root, "test")
        return
    ds = _build(synapse_root, "test")
    if when == "item":
        assert ds[0]["case"] == "case0001_slice000"  # case0001 still loads
        with pytest.raises(ValueError, match=pattern):
            ds[4]  # case0001 has 4 slices, so item 4 is case0002's first
    with pytest.raises(ValueError, match=pattern.replace(r"\(slice 0\): ", ": ")):  # whole volumes: no slice
        list(ds.volumes())


def _h5_group_image(path):
    with h5py.File(path, "w") as f:
        f.create_group("image")
        f.create_dataset("label", data=np.zeros((2, H, W), np.float32))


def test_training_volume_with_slices_of_different_sizes(synapse_root):
    write_npz(synapse_root / "train_npz" / "case0005_slice002.npz", np.zeros((H, W + 4), np.float32),
              np.zeros((H, W + 4), np.float32))
    ds = _build(synapse_root, "train")
    assert ds[2]["mask"].shape == (H, W)  # as items they are resized to image_size
    with pytest.raises(ValueError, match=r"case0005: its slices differ in size .*case0005_slice002\.npz"):
        list(ds.volumes())


@pytest.mark.parametrize(
    "option,value,match",
    [
        ("image_size", "big", "image_size must be an integer or an \\[H, W\\] pair of integers >= 1, got 'big'"),
        ("image_size", [224], "image_size must be an integer or an \\[H, W\\] pair"),
        ("image_size", 0, "image_size must be an integer or an \\[H, W\\] pair"),
        ("list_dir", 5, "list_dir must be a folder path or null, got 5"),
        ("seed", -3, "seed must be an integer >= 0 or null, got -3"),
        ("augment", "yes", "augment must be true or false or null, got 'yes'"),
    ],
)
def test_bad_option_values_name_the_option(synapse_root, option, value, match):
    with pytest.raises(ValueError, match="^synapse: option " + match):
        build_dataset("synapse", root=synapse_root, split="train", **{option: value})


# -- the val split: whole training cases held out for selection, disjoint from train and test ----------------------

SIX = ("case0005", "case0006", "case0007", "case0009", "case0010", "case0021")


@pytest.fixture
def synapse_six(tmp_path):
    """Six standard training cases (2 slices each, case0009 3) and two standard test volumes."""
    root = tmp_path / "Synapse6"
    (root / "train_npz").mkdir(parents=True)
    (root / "test_vol_h5").mkdir()
    for name in SIX:
        case = int(name[4:])
        for z in range(3 if case == 9 else 2):
            write_npz(root / "train_npz" / f"{name}_slice{z:03d}.npz", *slice_arrays(case, z))
    for case in (1, 2):
        pairs = [slice_arrays(case, z) for z in range(2)]
        write_h5(root / "test_vol_h5" / f"case{case:04d}.npy.h5", np.stack([p[0] for p in pairs]),
                 np.stack([p[1] for p in pairs]))
    return root


def _slice_cases(ds):
    return {ds[i]["case"].split("_slice")[0] for i in range(len(ds))}


def test_info_roles():
    info = DATASETS["synapse"]
    assert info.splits == ("train", "val", "test") and info.select_split == "val" and info.eval_split == "test"


def test_val_holds_out_whole_training_cases_disjoint_from_train_and_test(synapse_six):
    train = _build(synapse_six, "train", val_cases=4)
    val = _build(synapse_six, "val", val_cases=4)
    test = _build(synapse_six, "test")
    held = drawn(SIX, 4, 0)
    assert train.held_out == val.held_out == held and test.held_out is None
    assert val.cases == held and train.cases == sorted(set(SIX) - set(held)) and test.cases == ["case0001", "case0002"]
    assert not set(train.cases) & set(val.cases) and not set(val.cases) & set(test.cases)
    assert not set(train.cases) & set(test.cases)
    # the train split really has no slice of a held-out case; val has every slice of each held-out case
    assert _slice_cases(train) == set(train.cases) and _slice_cases(val) == set(held)
    assert len(val) == sum(3 if c == "case0009" else 2 for c in held)
    assert len(train) + len(val) == 13
    # val items are not augmented: the same item twice is identical and equals the file (identity resize)
    first, again = val[0], val[0]
    np.testing.assert_array_equal(first["mask"].numpy(), again["mask"].numpy())
    case, z = first["case"].split("_slice")
    np.testing.assert_allclose(first["image"][0].numpy(), slice_arrays(int(case[4:]), int(z))[0], atol=1e-6)


def test_val_volumes_stack_training_slices_without_spacing(synapse_six):
    val = _build(synapse_six, "val", val_cases=["case0009", "case0005"])
    vols = list(val.volumes())
    assert [v.case for v in vols] == ["case0005", "case0009"]
    v = vols[1]
    assert v.image.shape == (3, H, W) and v.label.dtype == np.int64 and v.spacing is None
    for z in range(3):
        np.testing.assert_array_equal(v.label[z], slice_arrays(9, z)[1])
    assert tuple(val.volume_input(v).shape) == (3, 1, H, W)


def test_val_default_is_four_cases_drawn_with_split_seed_zero(synapse_six):
    val = _build(synapse_six, "val", val_cases=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        default = build_dataset("synapse", root=synapse_six, split="val", image_size=H)
    assert default.cases == val.cases == drawn(SIX, 4, 0)
    assert not default.transform.transforms[:-1]  # no augmentation step before the resize


def test_explicit_val_cases_are_honoured(synapse_six):
    train = _build(synapse_six, "train", val_cases=["case0021", "case0005"])
    val = _build(synapse_six, "val", val_cases=["case0021", "case0005"])
    assert val.cases == ["case0005", "case0021"] and val.held_out == ["case0005", "case0021"]
    assert train.cases == ["case0006", "case0007", "case0009", "case0010"]


def test_val_cases_zero_holds_out_nothing_and_val_is_an_error(synapse_six):
    assert _build(synapse_six, "train", val_cases=0).cases == list(SIX)
    with pytest.raises(ValueError, match=r"^synapse: the val split is empty because option val_cases is 0 \(nothing "
                                         r"held out\); set val_cases to .* \(default 4\) or to a list"):
        _build(synapse_six, "val", val_cases=0)


@pytest.mark.parametrize(
    "val_cases,match",
    [
        (["case0777"], r"val_cases names case0777, which is not a training case in .*train_npz; choose whole "
                       r"training cases to hold out among: case0005, case0006, case0007, case0009, case0010"),
        (["case0005", "case0001"], r"val_cases names case0001, which is a test case \(the ranking split\); choose"),
        (6, r"val_cases is 6, but there are only 6 training cases in .*train_npz \(case0005, "),
    ],
)
def test_val_cases_that_do_not_fit_the_data(synapse_six, val_cases, match):
    """Synapse's candidates and refusals (the rule itself: tests/test_data_holdout.py)."""
    for split in ("train", "val"):
        with pytest.raises(ValueError, match="^synapse: option " + match):
            _build(synapse_six, split, val_cases=val_cases)
        with pytest.raises(ValueError, match="^synapse: option " + match):
            list_cases("synapse", split, root=synapse_six, val_cases=val_cases)


@pytest.mark.parametrize(
    "option,value,match",
    [
        ("val_cases", -1, r"val_cases must be an integer >= 0 or a non-empty list of distinct names \(e\.g\. "
                          r"\[case0005, case0021\]\), got -1"),
        ("val_cases", True, "val_cases must be an integer >= 0 or a non-empty list"),
        ("val_cases", 2.0, "val_cases must be an integer >= 0 or a non-empty list"),
        ("val_cases", "case0005", "val_cases must be an integer >= 0 or a non-empty list .*, got 'case0005'"),
        ("val_cases", [], "val_cases must be an integer >= 0 or a non-empty list"),
        ("val_cases", ["5"], r"val_cases must be .*, got \['5'\]"),
        ("val_cases", ["case0005", "case0005"], "val_cases must be .* distinct names"),
        ("split_seed", -1, "split_seed must be an integer >= 0, got -1"),
        ("split_seed", None, "split_seed must be an integer >= 0, got None"),
    ],
)
def test_bad_hold_out_option_values_are_refused_without_reading_data(tmp_path, option, value, match):
    from raysweep.data import check_dataset_options

    with pytest.raises(ValueError, match="^synapse: option " + match):
        check_dataset_options("synapse", {option: value})
    with pytest.raises(ValueError, match="^synapse: option " + match):  # before the (missing) root is looked at
        build_dataset("synapse", root=tmp_path / "nowhere", split="val", **{option: value})
    with pytest.raises(ValueError, match="^synapse: option " + match):
        list_cases("synapse", "val", root=tmp_path / "nowhere", **{option: value})
    assert check_dataset_options("synapse", {"val_cases": ["case0005"], "split_seed": 3}) == {
        "val_cases": ["case0005"], "split_seed": 3}


def test_train_list_with_held_out_cases(synapse_six):
    """With train.txt, the training cases are those listed; held-out cases' listed slices move to val, and a listed
    standard test case is never drawn (nor accepted by name)."""
    (synapse_six / "lists_Synapse").mkdir()
    listed = ["case0005_slice001", "case0006_slice000", "case0006_slice001", "case0009_slice002", "case0010_slice000"]
    (synapse_six / "lists_Synapse" / "train.txt").write_text("\n".join(listed) + "\n")
    train = _build(synapse_six, "train", val_cases=["case0006", "case0009"])
    val = _build(synapse_six, "val", val_cases=["case0006", "case0009"])
    assert [train[i]["case"] for i in range(len(train))] == ["case0005_slice001", "case0010_slice000"]
    assert [val[i]["case"] for i in range(len(val))] == ["case0006_slice000", "case0006_slice001",
                                                         "case0009_slice002"]
    assert [v.image.shape[0] for v in val.volumes()] == [2, 1]
    with pytest.raises(ValueError, match=r"case0021, which is not a training case in the train list .*train\.txt"):
        _build(synapse_six, "val", val_cases=["case0021"])
    with pytest.raises(ValueError, match=r"only 4 training cases in the train list .*\(case0005, case0006, case0009, "
                                         r"case0010\)"):
        _build(synapse_six, "val", val_cases=4)
    # a standard test case in the train list (no test list): trained on, as listed, but never held out
    write_npz(synapse_six / "train_npz" / "case0001_slice000.npz", *slice_arrays(1, 0))
    (synapse_six / "lists_Synapse" / "train.txt").write_text("\n".join(listed + ["case0001_slice000"]) + "\n")
    for seed in range(8):
        assert "case0001" not in _build(synapse_six, "val", val_cases=3, split_seed=seed).cases
    with pytest.raises(ValueError, match="case0001, which is a test case"):
        _build(synapse_six, "val", val_cases=["case0001"])
    # a test list decides what the test cases are
    (synapse_six / "lists_Synapse" / "test_vol.txt").write_text("case0002\n")
    assert _build(synapse_six, "val", val_cases=["case0001"]).cases == ["case0001"]


def test_list_cases_equals_the_cases_evaluation_reports(synapse_six):
    for split in ("train", "val", "test"):
        for options in ({}, {"val_cases": 2, "split_seed": 5}, {"val_cases": ["case0010"]}):
            ds = _build(synapse_six, split, **{"val_cases": 4, **options})
            listed = list_cases("synapse", split, root=synapse_six, image_size=H, augment=False,
                                **{"val_cases": 4, **options})
            assert listed == [v.case for v in ds.volumes()], (split, options)


def test_list_cases_reads_no_image_data(synapse_six, monkeypatch):
    import raysweep.data.synapse as synapse

    def refuse(*args, **kwargs):
        raise AssertionError("list_cases read a data file")

    monkeypatch.setattr(synapse, "_read_npz", refuse)
    monkeypatch.setattr(synapse.SynapseDataset, "_open", staticmethod(refuse))
    monkeypatch.setattr(h5py, "File", refuse)
    assert list_cases("synapse", "test", root=synapse_six) == ["case0001", "case0002"]
    assert list_cases("synapse", "val", root=synapse_six) == drawn(SIX, 4, 0)
    assert list_cases("synapse", "train", root=synapse_six) == sorted(set(SIX) - set(drawn(SIX, 4, 0)))


def test_list_cases_errors_match_build_dataset(synapse_six, tmp_path):
    calls = [
        ({"split": "valid"}, ValueError, "unknown split 'valid'"),
        ({"img_size": 3}, ValueError, r"unknown option\(s\) img_size; accepted: image_size, list_dir, val_cases"),
        ({"root": None}, ValueError, "root=PATH"),
        ({"root": tmp_path / "nowhere"}, FileNotFoundError, "nowhere"),
        ({"image_size": 0}, ValueError, "option image_size"),
        ({"split": "val", "val_cases": 0}, ValueError, "val split is empty"),
        ({"list_dir": tmp_path}, FileNotFoundError, "train.txt"),
    ]
    for kwargs, error, match in calls:
        kwargs = {"split": "train", "root": synapse_six, **kwargs}
        with pytest.raises(error, match=match):
            build_dataset("synapse", **kwargs)
        split = kwargs.pop("split")
        with pytest.raises(error, match=match):
            list_cases("synapse", split, **kwargs)
