"""Cityscapes: PNG trees written in the published layout and read back through build_dataset."""

import re

import numpy as np
import pytest
import torch
from PIL import Image

from raysweep.data import DATASETS, build_dataset, list_cases
from raysweep.data.cityscapes import LUT, map_label_ids
from raysweep.data.transforms import IMAGENET_MEAN, IMAGENET_STD

from test_data_holdout import drawn

# cityscapesScripts helpers/labels.py, transcribed as (name, id, trainId) -- an independent copy of the official table
OFFICIAL_LABELS = [
    ("unlabeled", 0, 255), ("ego vehicle", 1, 255), ("rectification border", 2, 255), ("out of roi", 3, 255),
    ("static", 4, 255), ("dynamic", 5, 255), ("ground", 6, 255), ("road", 7, 0), ("sidewalk", 8, 1),
    ("parking", 9, 255), ("rail track", 10, 255), ("building", 11, 2), ("wall", 12, 3), ("fence", 13, 4),
    ("guard rail", 14, 255), ("bridge", 15, 255), ("tunnel", 16, 255), ("pole", 17, 5), ("polegroup", 18, 255),
    ("traffic light", 19, 6), ("traffic sign", 20, 7), ("vegetation", 21, 8), ("terrain", 22, 9), ("sky", 23, 10),
    ("person", 24, 11), ("rider", 25, 12), ("car", 26, 13), ("truck", 27, 14), ("bus", 28, 15),
    ("caravan", 29, 255), ("trailer", 30, 255), ("train", 31, 16), ("motorcycle", 32, 17), ("bicycle", 33, 18),
]

H, W = 32, 64


def label_ids_for(index: int) -> np.ndarray:
    """Every label id 0..33 appears, in vertical stripes shifted by ``index``."""
    cols = (np.arange(W) // 2 + index) % 34
    return np.broadcast_to(cols, (H, W)).astype(np.uint8).copy()


def image_for(label_ids: np.ndarray) -> np.ndarray:
    """RGB image whose red channel encodes the label id, so image/mask alignment can be checked after transforms."""
    rgb = np.zeros((H, W, 3), np.uint8)
    rgb[..., 0] = label_ids * 7
    rgb[..., 1] = 100
    return rgb


def write_pair(root, split, city, seq, frame, label_ids=None, image=None):
    stem = f"{city}_{seq:06d}_{frame:06d}"
    label_ids = label_ids_for(seq + frame) if label_ids is None else label_ids
    image = image_for(label_ids) if image is None else image
    (root / "leftImg8bit" / split / city).mkdir(parents=True, exist_ok=True)
    (root / "gtFine" / split / city).mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png")
    Image.fromarray(label_ids).save(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png")
    return stem


@pytest.fixture
def cs_root(tmp_path):
    root = tmp_path / "cityscapes"
    for city, seq in (("aachen", 0), ("bochum", 1)):
        for frame in (19, 20):
            write_pair(root, "train", city, seq, frame)
    write_pair(root, "val", "frankfurt", 0, 294)
    write_pair(root, "val", "lindau", 0, 19)
    return root


def test_lut_equals_official_table_and_class_order():
    ids = np.array([row[1] for row in OFFICIAL_LABELS], np.uint8)
    np.testing.assert_array_equal(LUT[ids], [row[2] for row in OFFICIAL_LABELS])
    assert (LUT[34:] == 255).all()
    by_train = {row[2]: row[0] for row in OFFICIAL_LABELS if row[2] != 255}
    names = DATASETS["cityscapes"].class_names
    assert [names[t] for t in range(19)] == [by_train[t].replace(" ", "_") for t in range(19)]
    assert DATASETS["cityscapes"].primary_metric == "miou" and not DATASETS["cityscapes"].per_volume


def test_map_label_ids_is_vectorised_lookup():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 34, (50, 70)).astype(np.uint8)
    table = {row[1]: row[2] for row in OFFICIAL_LABELS}
    expected = np.array([[table[v] for v in row] for row in ids], np.uint8)
    np.testing.assert_array_equal(map_label_ids(ids), expected)


def test_eval_items_map_labels_and_keep_alignment(cs_root):
    ds = build_dataset("cityscapes", root=cs_root, split="val", image_size=(H, W))
    assert len(ds) == 2 and ds.cases == ["frankfurt_000000_000294", "lindau_000000_000019"]
    assert ds.eval_size == (H, W)
    item = ds[0]
    assert item["case"] == "frankfurt_000000_000294"
    assert item["image"].shape == (3, H, W) and item["image"].dtype == torch.float32
    assert item["mask"].shape == (H, W) and item["mask"].dtype == torch.int64
    expected = LUT[label_ids_for(294)]
    np.testing.assert_array_equal(item["mask"].numpy(), expected)
    # ImageNet normalisation of the red channel, which encodes the label id
    red = item["image"][0].numpy() * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    np.testing.assert_allclose(red * 255, label_ids_for(294) * 7, atol=0.5)


def test_resize_for_evaluation_is_nearest_on_labels(cs_root):
    ds = build_dataset("cityscapes", root=cs_root, split="val", image_size=(16, 32))
    mask = ds[1]["mask"].numpy()
    assert mask.shape == (16, 32)
    np.testing.assert_array_equal(mask, LUT[label_ids_for(19)][::2, ::2])


def test_train_items_are_random_crops_with_joint_augmentation(cs_root):
    ds = build_dataset("cityscapes", root=cs_root, split="train", image_size=(H, W), crop_size=24, seed=0,
                       holdout_cities=0)
    assert len(ds) == 4
    seen = set()
    for _ in range(6):
        item = ds[0]
        image, mask = item["image"].numpy(), item["mask"].numpy()
        assert image.shape == (3, 24, 24) and mask.shape == (24, 24)
        seen.add(mask.tobytes())
        # the image's red channel still encodes the labels under the mask: same column pattern for both
        red = image[0]
        for tid in np.unique(mask):
            if tid != 255:
                cols = np.where((mask == tid).any(0))[0]
                assert np.ptp(red[:, cols][mask[:, cols] == tid]) < 0.05, "image and mask were transformed apart"
    assert len(seen) > 1, "training crops never changed"


def test_crop_larger_than_image_pads_mask_with_ignore(cs_root):
    ds = build_dataset("cityscapes", root=cs_root, split="train", image_size=(16, 16), crop_size=(24, 24), seed=1,
                       holdout_cities=0)
    mask = ds[0]["mask"].numpy()
    assert mask.shape == (24, 24)
    assert (mask == 255).sum() >= 24 * 24 - 16 * 16  # the padding is ignored, never a class


def test_cities_filter_and_test_split(cs_root):
    ds = build_dataset("cityscapes", root=cs_root, split="train", cities=["bochum"], image_size=(H, W),
                       holdout_cities=0)
    assert ds.cases == ["bochum_000001_000019", "bochum_000001_000020"]
    with pytest.raises(ValueError, match="no cities.*'paris'"):
        build_dataset("cityscapes", root=cs_root, split="train", cities=["paris"])
    with pytest.raises(ValueError, match="no public labels"):
        build_dataset("cityscapes", root=cs_root, split="test")


def test_missing_root_and_layout(tmp_path, cs_root):
    with pytest.raises(FileNotFoundError, match=r"nope[\s\S]*leftImg8bit/<split>/<city>"):
        build_dataset("cityscapes", root=tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match=r"gtFine/val"):
        (tmp_path / "only_images" / "leftImg8bit" / "val").mkdir(parents=True)
        build_dataset("cityscapes", root=tmp_path / "only_images", split="val")
    (tmp_path / "only_images" / "gtFine" / "val").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no \\*_leftImg8bit.png"):
        build_dataset("cityscapes", root=tmp_path / "only_images", split="val")
    (cs_root / "gtFine" / "val" / "lindau" / "lindau_000000_000019_gtFine_labelIds.png").unlink()
    with pytest.raises(FileNotFoundError, match="lindau_000000_000019_gtFine_labelIds.png"):
        build_dataset("cityscapes", root=cs_root, split="val")


def test_truncated_png_names_the_file(cs_root):
    path = cs_root / "leftImg8bit" / "val" / "frankfurt" / "frankfurt_000000_000294_leftImg8bit.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    ds = build_dataset("cityscapes", root=cs_root, split="val", image_size=(H, W))
    ds[1]
    with pytest.raises(ValueError, match=r"frankfurt_000000_000294_leftImg8bit\.png: cannot decode.*truncated"):
        ds[0]


def test_bad_label_files_name_file_and_values(cs_root):
    ids = label_ids_for(0)
    ids[0, 0], ids[1, 1] = 34, 200
    stem = write_pair(cs_root, "val", "frankfurt", 0, 294, label_ids=ids)
    ds = build_dataset("cityscapes", root=cs_root, split="val", image_size=(H, W))
    with pytest.raises(ValueError, match=rf"{stem}_gtFine_labelIds\.png: label ids \[34, 200\] are outside 0\.\.33"):
        ds[0]
    color = np.zeros((H, W, 3), np.uint8)
    Image.fromarray(color).save(cs_root / "gtFine" / "val" / "frankfurt" / f"{stem}_gtFine_labelIds.png")
    with pytest.raises(ValueError, match=r"_gtFine_labelIds\.png: label PNG has mode 'RGB'.*_color\.png"):
        ds[0]
    write_pair(cs_root, "val", "frankfurt", 0, 294, image=np.zeros((H + 2, W, 3), np.uint8))
    with pytest.raises(ValueError, match=r"label size \(32, 64\) differs from its image"):
        ds[0]


# -- bad input: every broken file fails with a ValueError / FileNotFoundError that names it -------------------------

_VAL_IMAGE = ("leftImg8bit", "frankfurt_000000_000294_leftImg8bit.png")
_VAL_LABEL = ("gtFine", "frankfurt_000000_000294_gtFine_labelIds.png")


def _png_bytes(tmp_path, array) -> bytes:
    Image.fromarray(array).save(tmp_path / "x.png")
    return (tmp_path / "x.png").read_bytes()


@pytest.mark.parametrize(
    "which,content,match",
    [
        (_VAL_IMAGE, lambda tmp: b"", "cannot decode the PNG"),
        (_VAL_IMAGE, lambda tmp: b"not a png at all\n" * 10, "cannot decode the PNG"),
        (_VAL_IMAGE, lambda tmp: _png_bytes(tmp, image_for(label_ids_for(0)))[:100], "cannot decode the PNG"),
        (_VAL_IMAGE, lambda tmp: _png_bytes(tmp, np.zeros((H, W), np.uint16)), "image has mode 'I;16'.*8-bit RGB"),
        (_VAL_LABEL, lambda tmp: b"\x89PNG\r\n\x1a\n" + np.random.default_rng(0).bytes(500), "cannot decode the PNG"),
        (_VAL_LABEL, lambda tmp: _png_bytes(tmp, label_ids_for(0))[:-30], "cannot decode the PNG"),
        (_VAL_LABEL, lambda tmp: _png_bytes(tmp, np.full((H, W), 7, np.uint16)), "label PNG has mode 'I;16'"),
        (_VAL_LABEL, lambda tmp: _png_bytes(tmp, np.zeros((H, W, 4), np.uint8)), "label PNG has mode 'RGBA'"),
        (_VAL_LABEL, lambda tmp: _png_bytes(tmp, np.resize(np.uint8([0, 5, 18, 255]), (H, W))),
         r"label ids \[255\] are outside 0\.\.33.*_labelTrainIds\.png"),
        (_VAL_LABEL, lambda tmp: _png_bytes(tmp, np.zeros((H, W + 1), np.uint8)),
         r"label size \(32, 65\) differs from its image frankfurt_000000_000294_leftImg8bit\.png \(32, 64\)"),
    ],
    ids=["image-empty", "image-text", "image-truncated", "image-16-bit", "label-garbage", "label-truncated",
         "label-16-bit", "label-rgba", "train-ids-not-label-ids", "size-mismatch"],
)
def test_broken_png_names_the_file(cs_root, tmp_path, which, content, match):
    folder, name = which
    path = cs_root / folder / "val" / "frankfurt" / name
    path.write_bytes(content(tmp_path))
    ds = build_dataset("cityscapes", root=cs_root, split="val", image_size=(H, W))  # lists files, reads none
    assert ds[1]["mask"].shape == (H, W)  # the other image still loads
    with pytest.raises(ValueError, match=re.escape(name) + ".*" + match):
        ds[0]


def test_file_removed_after_construction_is_file_not_found(cs_root):
    ds = build_dataset("cityscapes", root=cs_root, split="val", image_size=(H, W))
    (cs_root / "leftImg8bit" / "val" / "lindau" / "lindau_000000_000019_leftImg8bit.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"lindau_000000_000019_leftImg8bit\.png: file not found"):
        ds[1]


@pytest.mark.parametrize(
    "option,value,match",
    [
        ("cities", "aachen", "cities must be a non-empty list of names .*, got 'aachen'"),
        ("cities", [], "cities must be a non-empty list of names"),
        ("cities", ["aachen", 3], "cities must be a non-empty list of names"),
        ("image_size", [512, 1024, 3], "image_size must be an integer or an \\[H, W\\] pair"),
        ("image_size", -5, "image_size must be an integer or an \\[H, W\\] pair of integers >= 1, got -5"),
        ("crop_size", "512", "crop_size must be an integer or an \\[H, W\\] pair of integers >= 1 or null"),
        ("seed", 1.5, "seed must be an integer >= 0 or null, got 1.5"),
        ("transform", 3, "transform must be 'default', null"),
    ],
)
def test_bad_option_values_name_the_option(cs_root, option, value, match):
    with pytest.raises(ValueError, match="^cityscapes: option " + match):
        build_dataset("cityscapes", root=cs_root, split="train", **{option: value})


# -- the holdout split: whole training cities held out for selection, disjoint from train and val -------------------

TRAIN_CITIES = ("aachen", "bochum", "bremen", "cologne", "darmstadt")


@pytest.fixture
def cs_five(tmp_path):
    """Five training cities (one image each, aachen two) and two val cities (one image each)."""
    root = tmp_path / "cityscapes5"
    for seq, city in enumerate(TRAIN_CITIES):
        for frame in ((19, 20) if city == "aachen" else (19,)):
            write_pair(root, "train", city, seq, frame)
    write_pair(root, "val", "frankfurt", 0, 294)
    write_pair(root, "val", "lindau", 0, 19)
    return root


def _cs(root, split, **kw):
    return build_dataset("cityscapes", root=root, split=split, image_size=(H, W), **kw)


def _cities(ds):
    return {c.rsplit("_", 2)[0] for c in ds.cases}


def test_holdout_info_roles():
    info = DATASETS["cityscapes"]
    assert info.splits == ("train", "val", "holdout") and info.select_split == "holdout" and info.eval_split == "val"


def test_holdout_is_whole_training_cities_disjoint_from_train_and_val(cs_five):
    train, holdout, val = _cs(cs_five, "train"), _cs(cs_five, "holdout"), _cs(cs_five, "val")
    held = drawn(TRAIN_CITIES, 3, 0)  # the defaults: holdout_cities=3, split_seed=0
    assert train.held_out == holdout.held_out == held and val.held_out is None
    assert _cities(holdout) == set(held) and _cities(train) == set(TRAIN_CITIES) - set(held)
    assert _cities(val) == {"frankfurt", "lindau"}
    assert not set(train.cases) & set(holdout.cases) and not set(holdout.cases) & set(val.cases)
    assert len(train) + len(holdout) == 6  # every training image is in exactly one of the two
    # holdout items are not augmented: whole resized images, the same twice, labels mapped exactly
    first, again = holdout[0], holdout[0]
    assert first["mask"].shape == (H, W)
    np.testing.assert_array_equal(first["mask"].numpy(), again["mask"].numpy())
    seq, frame = (int(x) for x in first["case"].split("_")[1:])
    np.testing.assert_array_equal(first["mask"].numpy(), LUT[label_ids_for(seq + frame)])


def test_explicit_holdout_cities_are_honoured(cs_five):
    holdout = _cs(cs_five, "holdout", holdout_cities=["darmstadt", "aachen"])
    train = _cs(cs_five, "train", holdout_cities=["darmstadt", "aachen"])
    assert holdout.cases == ["aachen_000000_000019", "aachen_000000_000020", "darmstadt_000004_000019"]
    assert _cities(train) == {"bochum", "bremen", "cologne"}
    everything = _cs(cs_five, "train", holdout_cities=0)  # 0 holds out nothing: the official train split
    assert everything.held_out == [] and len(everything) == 6 and _cities(everything) == set(TRAIN_CITIES)


def test_cities_restrict_the_pool_and_may_name_cities_of_both_splits(cs_five):
    shared = {"cities": ["bochum", "bremen", "cologne", "frankfurt"], "holdout_cities": 1}
    train, holdout, val = (_cs(cs_five, split, **shared) for split in ("train", "holdout", "val"))
    assert _cities(val) == {"frankfurt"}
    assert holdout.held_out == train.held_out and set(holdout.held_out) <= {"bochum", "bremen", "cologne"}
    assert _cities(train) | _cities(holdout) == {"bochum", "bremen", "cologne"}
    assert not _cities(train) & _cities(holdout)
    # cities set for training only (a narrower pool than the holdout split's): still never trains on a held-out city
    for seed in range(10):
        for narrow in (["aachen", "bochum", "bremen", "cologne"], ["bochum", "darmstadt", "cologne"]):
            tr = _cs(cs_five, "train", cities=narrow, holdout_cities=2, split_seed=seed)
            ho = _cs(cs_five, "holdout", holdout_cities=2, split_seed=seed)
            assert not _cities(tr) & _cities(ho), (seed, narrow)


@pytest.mark.parametrize(
    "split,options,match",
    [
        ("holdout", {"holdout_cities": 0}, r"^cityscapes: the holdout split is empty because option holdout_cities "
                                           r"is 0 \(nothing held out\); set holdout_cities to .* \(default 3\)"),
        ("holdout", {"holdout_cities": ["paris"]}, r"option holdout_cities names paris, which is not a training city "
                                                   r"under .*leftImg8bit/train; choose whole training cities to "
                                                   r"hold out among: aachen, bochum, bremen, cologne, darmstadt"),
        ("train", {"holdout_cities": ["lindau", "bochum"]}, r"names lindau, which is a val city \(the ranking split\)"),
        ("train", {"holdout_cities": 5}, r"option holdout_cities is 5, but there are only 5 training cities under "
                                         r".*leftImg8bit/train \(aachen, "),
        ("train", {"holdout_cities": 2, "cities": ["bochum", "bremen"]},
         r"holdout_cities is 2, but there are only 2 training cities that option cities keeps .* or widen cities"),
        ("holdout", {"holdout_cities": ["aachen"], "cities": ["bochum", "bremen"]},
         r"option holdout_cities names aachen, which option cities leaves out; add them to cities or remove them"),
        ("val", {"cities": ["bochum"]}, r"^cityscapes: option cities keeps no val city \(it names only train cities: "
                                        r"bochum\); add val cities to it \(available: frankfurt, lindau\)"),
        ("holdout", {"cities": ["lindau"]}, r"option cities keeps no train city"),
        ("train", {"cities": ["paris", "bochum"]}, r"option cities: no cities \['paris'\] under .*available: aachen"),
    ],
)
def test_holdout_options_that_do_not_fit_the_data(cs_five, split, options, match):
    with pytest.raises(ValueError, match=match):
        _cs(cs_five, split, **options)
    with pytest.raises(ValueError, match=match):
        list_cases("cityscapes", split, root=cs_five, **options)


@pytest.mark.parametrize(
    "option,value,match",
    [
        ("holdout_cities", -2, r"holdout_cities must be an integer >= 0 or a non-empty list of distinct names "
                               r"\(e\.g\. \[aachen, bochum\]\), got -2"),
        ("holdout_cities", "aachen", "holdout_cities must be an integer >= 0 or a non-empty list"),
        ("holdout_cities", [], "holdout_cities must be an integer >= 0 or a non-empty list"),
        ("holdout_cities", ["aachen", "aachen"], "holdout_cities must be .* distinct"),
        ("holdout_cities", 1.0, "holdout_cities must be an integer"),
        ("split_seed", "zero", "split_seed must be an integer >= 0, got 'zero'"),
    ],
)
def test_bad_holdout_option_values_are_refused_without_reading_data(tmp_path, option, value, match):
    from raysweep.data import check_dataset_options

    with pytest.raises(ValueError, match="^cityscapes: option " + match):
        check_dataset_options("cityscapes", {option: value})
    with pytest.raises(ValueError, match="^cityscapes: option " + match):
        build_dataset("cityscapes", root=tmp_path / "nowhere", split="holdout", **{option: value})
    with pytest.raises(ValueError, match="^cityscapes: option " + match):
        list_cases("cityscapes", "holdout", root=tmp_path / "nowhere", **{option: value})


def test_list_cases_equals_the_item_cases_in_order(cs_five):
    for split in ("train", "holdout", "val"):
        for options in ({}, {"holdout_cities": 1, "split_seed": 7}, {"holdout_cities": ["bremen"]},
                        {"cities": ["aachen", "bremen", "darmstadt", "lindau"], "holdout_cities": 1}):
            ds = _cs(cs_five, split, **options)
            listed = list_cases("cityscapes", split, root=cs_five, image_size=(H, W), **options)
            assert listed == [ds[i]["case"] for i in range(len(ds))], (split, options)


def test_list_cases_reads_no_image(cs_five, monkeypatch):
    import raysweep.data.cityscapes as cityscapes

    def refuse(*args, **kwargs):
        raise AssertionError("list_cases decoded a PNG")

    monkeypatch.setattr(cityscapes, "_read_png", refuse)
    assert list_cases("cityscapes", "val", root=cs_five) == ["frankfurt_000000_000294", "lindau_000000_000019"]
    assert len(list_cases("cityscapes", "holdout", root=cs_five)) == len(_cs(cs_five, "holdout"))


def test_list_cases_errors_match_build_dataset(cs_root, tmp_path):
    calls = [
        ({"split": "test"}, ValueError, "unknown split 'test'.*no public labels"),
        ({"citys": ["x"]}, ValueError, r"unknown option\(s\) citys; accepted: image_size, crop_size, cities"),
        ({"root": None}, ValueError, "root=PATH"),
        ({"root": tmp_path / "nowhere"}, FileNotFoundError, "nowhere"),
        ({"split": "val", "crop_size": "512"}, ValueError, "option crop_size"),
        ({"split": "holdout", "holdout_cities": 0}, ValueError, "holdout split is empty"),
    ]
    for kwargs, error, match in calls:
        kwargs = {"split": "train", "root": cs_root, **kwargs}
        with pytest.raises(error, match=match):
            build_dataset("cityscapes", **kwargs)
        split = kwargs.pop("split")
        with pytest.raises(error, match=match):
            list_cases("cityscapes", split, **kwargs)
