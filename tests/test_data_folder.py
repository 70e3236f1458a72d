"""folder: images/ + masks/ with class ids or palette colours, read back through build_dataset."""

import json

import numpy as np
import pytest
from PIL import Image

from raysweep.data import build_dataset, check_dataset_options, dataset_info, list_cases

PALETTE = {"background": [0, 0, 0], "road": [128, 64, 128], "car": [0, 0, 142]}


def write_folder(root, n=10, palette=True, size=(20, 24)):
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    colours = np.array(list(PALETTE.values()), np.uint8)
    for i in range(n):
        ids = np.zeros(size, np.uint8)
        ids[4:10, 2:20] = 1
        ids[12:16, 3 + i % 4:9] = 2
        Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(root / "images" / f"im{i:02d}.jpg")
        Image.fromarray(colours[ids] if palette else ids).save(root / "masks" / f"im{i:02d}.png")
    return root


def expected_ids(i, size=(20, 24)):
    ids = np.zeros(size, np.int64)
    ids[4:10, 2:20] = 1
    ids[12:16, 3 + i % 4:9] = 2
    return ids


def test_palette_masks_map_to_class_ids(tmp_path):
    root = write_folder(tmp_path / "f")
    ds = build_dataset("folder", "train", root=root, palette=PALETTE, image_size=(20, 24), augment=False)
    assert ds.info.class_names == ("background", "road", "car") and ds.info.eval_classes == (1, 2)
    assert not ds.info.per_volume and ds.info.primary_metric == "dice" and ds.info.in_channels == 3
    item = ds[0]
    assert item["image"].shape == (3, 20, 24) and item["case"] == ds.cases[0]
    np.testing.assert_array_equal(item["mask"].numpy(), expected_ids(int(ds.cases[0][2:])))
    # an unknown colour names the file and the colour
    Image.fromarray(np.full((20, 24, 3), 7, np.uint8)).save(root / "masks" / f"{ds.cases[0]}.png")
    with pytest.raises(ValueError, match=rf"{ds.cases[0]}.png: colour\(s\) \[\[7, 7, 7\]\] are not in the palette"):
        build_dataset("folder", "train", root=root, palette=PALETTE)


def test_class_ids_with_classes_json_and_option(tmp_path):
    root = write_folder(tmp_path / "f", palette=False)
    with pytest.raises(ValueError, match="classes of .* are not named"):
        dataset_info("folder", root=root)
    (root / "classes.json").write_text(json.dumps(["background", "road", "car"]))
    assert dataset_info("folder", root=root).num_classes == 3
    info = dataset_info("folder", root=root, classes=["sky", "road", "car", "tree"], image_size=32)
    assert info.eval_classes == (0, 1, 2, 3) and info.image_size == (32, 32)  # no class named background
    ds = build_dataset("folder", "val", root=root, image_size=16)
    assert ds[0]["mask"].shape == (16, 16)
    (root / "classes.json").write_text(json.dumps(["background", "road"]))
    with pytest.raises(ValueError, match=r"label values \[2\] are outside the class range 0..1"):
        build_dataset("folder", "train", root=root)


def test_seeded_split_and_splits_json(tmp_path):
    root = write_folder(tmp_path / "f", n=20)
    splits = {s: list_cases("folder", s, root=root, palette=PALETTE) for s in ("train", "val", "test")}
    assert [len(splits[s]) for s in ("train", "val", "test")] == [14, 3, 3]
    assert len(set().union(*map(set, splits.values()))) == 20
    assert list_cases("folder", "test", root=root, split_seed=3) != splits["test"]
    assert len(list_cases("folder", "val", root=root, val_fraction=0.5)) == 10
    ds = build_dataset("folder", "test", root=root, palette=PALETTE)
    assert [ds[i]["case"] for i in range(len(ds))] == splits["test"]
    (root / "splits.json").write_text(json.dumps({"train": ["im00", "im01"], "val": ["im02"], "test": ["im03"]}))
    assert list_cases("folder", "train", root=root) == ["im00", "im01"]
    (root / "splits.json").write_text(json.dumps({"train": ["im00", "im01"], "val": ["im01"], "test": ["im03"]}))
    with pytest.raises(ValueError, match="im01 is in both train and val"):
        list_cases("folder", "val", root=root)
    (root / "splits.json").write_text(json.dumps({"train": ["im00"], "val": ["nope"], "test": ["im03"]}))
    with pytest.raises(FileNotFoundError, match="splits.json: lists nope"):
        list_cases("folder", "val", root=root)


def test_bad_folders(tmp_path):
    root = write_folder(tmp_path / "f", n=6)
    (root / "masks" / "im00.png").unlink()
    with pytest.raises(FileNotFoundError, match="have no mask: expected .*im00.png"):
        list_cases("folder", "train", root=root)
    Image.fromarray(np.zeros((10, 10, 3), np.uint8)).save(root / "masks" / "im00.png")
    (root / "splits.json").write_text(json.dumps({"train": ["im00", "im01"], "val": ["im02"], "test": ["im03"]}))
    with pytest.raises(ValueError, match="im00.png: mask size \\(10, 10\\) differs from its image im00.jpg"):
        build_dataset("folder", "train", root=root, palette=PALETTE)
    with pytest.raises(ValueError, match="palette gives the colour \\[0, 0, 0\\] to two classes"):
        check_dataset_options("folder", {"palette": {"a": [0, 0, 0], "b": [0, 0, 0]}})
    with pytest.raises(ValueError, match="option palette names \\['sky'\\], which are not classes"):
        dataset_info("folder", root=root, classes=["background", "road"], palette={"sky": [1, 2, 3]})
    with pytest.raises(FileNotFoundError, match="folder dataset images not found"):
        list_cases("folder", "train", root=tmp_path)
