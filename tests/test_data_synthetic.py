"""The embedded default dataset: deterministic, hard in the ways that separate losses, and cheap."""

import time

import albumentations as A
import numpy as np
import pytest
import torch
from scipy import ndimage

from raysweep.data import DATASETS, build_dataset
from raysweep.data.synthetic import CLASS_NAMES, SPACING, _generate_split, generate_volume

NAMES = {name: i for i, name in enumerate(CLASS_NAMES)}


@pytest.fixture(scope="module")
def train():
    return build_dataset("synthetic", split="train", seed=0)


def best_threshold_dice(values: np.ndarray, target: np.ndarray, bins: int = 128) -> float:
    """Best Dice of any intensity window [lo, hi) as a classifier of ``target``: all windows on a 128-bin grid."""
    edges = np.linspace(0, 1 + 1e-6, bins + 1)
    in_class = np.concatenate([[0], np.cumsum(np.histogram(values[target], edges)[0])])
    everything = np.concatenate([[0], np.cumsum(np.histogram(values, edges)[0])])
    tp = in_class[None, :] - in_class[:, None]  # [lo, hi) for every pair of edges
    predicted = everything[None, :] - everything[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        dice = np.where(predicted > 0, 2 * tp / (predicted + target.sum()), 0)
    return float(dice.max())


def test_info():
    info = DATASETS["synthetic"]
    assert info.num_classes == 9 and len(info.eval_classes) == 8 and 0 not in info.eval_classes
    assert info.per_volume and info.primary_metric == "dice" and not info.needs_root and info.in_channels == 1


def test_deterministic_and_independent_of_volume_count():
    a_img, a_lab = generate_volume(np.random.SeedSequence([0, 0, 3]))
    b_img, b_lab = generate_volume(np.random.SeedSequence([0, 0, 3]))
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_lab, b_lab)
    c_img, _ = generate_volume(np.random.SeedSequence([1, 0, 3]))
    assert not np.array_equal(a_img, c_img)
    few = build_dataset("synthetic", split="val", seed=0, num_volumes=2, transform=None)
    many = build_dataset("synthetic", split="val", seed=0, num_volumes=5, transform=None)
    np.testing.assert_array_equal(few.images[1], many.images[1])
    other = build_dataset("synthetic", split="test", seed=0, num_volumes=2, transform=None)
    assert not np.array_equal(few.images[0], other.images[0]), "splits must be different volumes"


def test_generation_is_fast_and_cached():
    _generate_split.cache_clear()
    start = time.perf_counter()
    for split in ("train", "val", "test"):
        build_dataset("synthetic", split=split, seed=123)
    assert time.perf_counter() - start < 10.0  # ~1 s on 2 cores; generous for loaded CI machines
    ds1 = build_dataset("synthetic", split="train", seed=123)
    ds2 = build_dataset("synthetic", split="train", seed=123)
    assert ds1.images is ds2.images  # served from the in-memory cache
    assert not ds1.images.flags.writeable


def test_items_follow_the_contract(train):
    assert len(train) == 16 * 16
    item = train[17]
    assert item["image"].dtype == torch.float32 and item["image"].shape == (1, 64, 64)
    assert item["mask"].dtype == torch.int64 and item["mask"].shape == (64, 64)
    assert item["case"] == "train001_slice01"
    assert 0 <= item["mask"].min() and item["mask"].max() < 9
    assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0


def test_class_balance_small_and_thin_structures(train):
    labels = train.labels
    counts = np.bincount(labels.ravel(), minlength=9)
    fg = counts[1:]
    assert fg.max() / fg.min() >= 100, f"area ratio {fg.max() / fg.min():.0f} < 100"
    assert np.argmax(fg) + 1 == NAMES["lobe"] and np.argmin(fg) + 1 == NAMES["specks"]
    for v in range(labels.shape[0]):  # every class in every volume, so 3-D scores are always defined
        assert set(np.unique(labels[v])) == set(range(9))
    # small blobs: specks are many tiny components
    comp, n = ndimage.label(labels == NAMES["specks"])
    sizes = np.bincount(comp.ravel())[1:]
    assert n >= 5 * labels.shape[0] and np.median(sizes) <= 30
    # thin elongated: the vessel is at most ~2 px thick everywhere but spans most of the image height
    for name, max_half_width, min_aspect in (("vessel", 1.0, 15), ("band", 2.5, 4)):
        mask = labels[:, 8] == NAMES[name]  # middle slices
        half_width = max(ndimage.distance_transform_edt(m).max() for m in mask)
        assert half_width <= max_half_width + 0.5, f"{name} too thick"
        length = np.median([max(np.ptp(np.nonzero(m)[0]), np.ptp(np.nonzero(m)[1])) for m in mask if m.any()])
        assert length >= min_aspect * 2 * half_width, f"{name} not elongated: length {length}, width {2 * half_width}"


def test_touching_objects(train):
    """Pairs of classes that share a boundary (4-neighbours) in most volumes."""
    labels = train.labels
    a, b = labels[..., :, :-1], labels[..., :, 1:]
    c, d = labels[..., :-1, :], labels[..., 1:, :]

    def touching(i, j):
        return [bool((((a == i) & (b == j)) | ((a == j) & (b == i))).any() or
                     (((c == i) & (d == j)) | ((c == j) & (d == i))).any()) for a, b, c, d in
                [(a[v], b[v], c[v], d[v]) for v in range(len(labels))]]

    for x, y in (("ring", "lobe"), ("ring", "disc"), ("vessel", "band"), ("vessel", "lobe")):
        assert np.mean(touching(NAMES[x], NAMES[y])) >= 0.75, f"{x} and {y} rarely touch"


def test_no_class_is_found_by_an_intensity_threshold(train):
    images, labels = train.images.ravel(), train.labels.ravel()
    scores = {name: best_threshold_dice(images, labels == NAMES[name]) for name in CLASS_NAMES[1:]}
    assert max(scores.values()) < 0.6, scores
    # overlapping distributions: the central 80% intensity range of every class holds another class's median
    ranges = {k: np.percentile(images[labels == k], [10, 50, 90]) for k in range(9)}
    for k in range(1, 9):
        lo, _, hi = ranges[k]
        assert any(lo < ranges[j][1] < hi for j in range(1, 9) if j != k), CLASS_NAMES[k]


def test_slices_are_correlated_volumes(train):
    vol = next(train.volumes())
    assert vol.image.shape == (16, 64, 64) and vol.label.shape == (16, 64, 64) and vol.label.dtype == np.int64
    assert vol.spacing == SPACING and vol.case == "train000"
    fg = vol.label > 0
    adjacent = [(fg[z] & fg[z + 1]).sum() / max((fg[z] | fg[z + 1]).sum(), 1) for z in range(15)]
    other = train.labels[5] > 0
    unrelated = [(fg[z] & other[(z + 7) % 16]).sum() / max((fg[z] | other[(z + 7) % 16]).sum(), 1) for z in range(15)]
    assert np.mean(adjacent) > 0.75 and np.mean(adjacent) > np.mean(unrelated) + 0.15
    assert np.corrcoef(vol.image[7].ravel(), vol.image[8].ravel())[0, 1] > 0.5
    x = train.volume_input(vol)
    assert tuple(x.shape) == (16, 1, 64, 64)
    np.testing.assert_allclose(x[:, 0].numpy(), vol.image, atol=1e-6)  # no resize at the native size


def test_label_noise_changes_train_boundaries_only():
    clean = build_dataset("synthetic", split="train", seed=4, num_volumes=3, transform=None)
    noisy = build_dataset("synthetic", split="train", seed=4, num_volumes=3, label_noise=1.0, transform=None)
    np.testing.assert_array_equal(clean.images, noisy.images)
    changed = clean.labels != noisy.labels
    assert changed.mean() > 0.01
    # every changed pixel lies within one pixel of a boundary of the clean labels (in-plane)
    edges = np.zeros_like(changed)
    edges[:, :, 1:, :] |= clean.labels[:, :, 1:, :] != clean.labels[:, :, :-1, :]
    edges[:, :, :-1, :] |= clean.labels[:, :, 1:, :] != clean.labels[:, :, :-1, :]
    edges[:, :, :, 1:] |= clean.labels[:, :, :, 1:] != clean.labels[:, :, :, :-1]
    edges[:, :, :, :-1] |= clean.labels[:, :, :, 1:] != clean.labels[:, :, :, :-1]
    near = ndimage.binary_dilation(edges, structure=np.ones((1, 1, 3, 3), bool))
    assert not (changed & ~near).any()
    val_clean = build_dataset("synthetic", split="val", seed=4, num_volumes=2, transform=None)
    val_noisy = build_dataset("synthetic", split="val", seed=4, num_volumes=2, label_noise=1.0, missing_small=1.0,
                              transform=None)
    np.testing.assert_array_equal(val_clean.labels, val_noisy.labels)  # evaluation labels stay clean


def test_missing_small_objects():
    clean = build_dataset("synthetic", split="train", seed=4, num_volumes=3, transform=None)
    missing = build_dataset("synthetic", split="train", seed=4, num_volumes=3, missing_small=1.0, transform=None)
    assert (clean.labels == NAMES["specks"]).any() and not (missing.labels == NAMES["specks"]).any()
    np.testing.assert_array_equal(clean.labels[clean.labels != NAMES["specks"]],
                                  missing.labels[clean.labels != NAMES["specks"]])
    with pytest.raises(ValueError, match="probability"):
        build_dataset("synthetic", split="train", seed=99, missing_small=1.5)


def test_options_and_errors():
    ds = build_dataset("synthetic", split="test", seed=0, image_size=40, depth=6, num_volumes=2)
    assert len(ds) == 12 and ds[0]["image"].shape == (1, 40, 40)
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        build_dataset("synthetic", split="valid")
    with pytest.raises(ValueError, match="unknown dataset 'synth'"):
        build_dataset("synth")
    with pytest.raises(ValueError, match="option image_size must be an integer >= 32, got 16"):
        build_dataset("synthetic", split="test", image_size=16, num_volumes=1)
    with pytest.raises(ValueError, match="unknown option.*size.*accepted"):
        build_dataset("synthetic", size=64)


@pytest.mark.parametrize(
    "option,value,match",
    [
        ("image_size", "big", "image_size must be an integer >= 32, got 'big'"),
        ("image_size", 48.5, "image_size must be an integer >= 32, got 48.5"),
        ("image_size", None, "image_size must be an integer >= 32, got None"),
        ("image_size", True, "image_size must be an integer >= 32, got True"),
        ("depth", 0, "depth must be an integer >= 4, got 0"),
        ("depth", [8], "depth must be an integer >= 4"),
        ("num_volumes", 0, "num_volumes must be an integer >= 1 or null, got 0"),
        ("num_volumes", 2.5, "num_volumes must be an integer >= 1 or null, got 2.5"),
        ("seed", -1, "seed must be an integer >= 0, got -1"),
        ("seed", "zero", "seed must be an integer >= 0, got 'zero'"),
        ("label_noise", "x", "label_noise must be a probability in \\[0, 1\\], got 'x'"),
        ("label_noise", float("nan"), "label_noise must be a probability"),
        ("missing_small", -0.1, "missing_small must be a probability"),
        ("augment", "maybe", "augment must be true or false or null, got 'maybe'"),
        ("transform", "fancy", "transform must be 'default', null .* or a callable, got 'fancy'"),
    ],
)
def test_bad_option_values_name_the_option(option, value, match):
    """Wrong types and ranges fail at construction with the option's name, never deep inside numpy or cv2; the same
    check runs without generating anything (what sweep config validation calls)."""
    from raysweep.data import check_dataset_options

    with pytest.raises(ValueError, match=f"^synthetic: option {match}"):
        check_dataset_options("synthetic", {option: value})
    with pytest.raises(ValueError, match=f"^synthetic: option {match}"):
        build_dataset("synthetic", split="test", **{"num_volumes": 1, option: value})


def test_option_checks_cover_every_constructor_option():
    import inspect

    from raysweep.data import _CLASSES, check_dataset_options

    for name, cls in _CLASSES.items():
        params = set(inspect.signature(cls.__init__).parameters) - {"self", "root", "split", "target_maps"}
        assert set(cls.option_checks) == params, name
    assert check_dataset_options("synthetic", {"image_size": 32, "num_volumes": None, "augment": True}) == {
        "image_size": 32, "num_volumes": None, "augment": True}
    assert check_dataset_options("cityscapes", {"crop_size": [64, 128]}) == {"crop_size": (64, 128)}
    with pytest.raises(ValueError, match="synthetic: unknown option\\(s\\) size; accepted: seed, image_size"):
        check_dataset_options("synthetic", {"size": 3})
    with pytest.raises(ValueError, match="unknown dataset 'synth'"):
        check_dataset_options("synth", {})


def test_augmentation_is_joint_and_maps_follow_the_augmented_mask():
    def maps(mask):
        return {"fg": (mask > 0)[None], "n_lobe": np.array([(mask == 1).sum()])}

    ds = build_dataset("synthetic", split="train", seed=0, num_volumes=1, target_maps=maps,
                       transform=A.Compose([A.HorizontalFlip(p=1.0)]))
    item = ds[8]
    np.testing.assert_array_equal(item["mask"].numpy(), ds.labels[0, 8][:, ::-1])
    np.testing.assert_array_equal(item["image"][0].numpy(), ds.images[0, 8][:, ::-1])
    assert item["fg"].dtype == torch.float32 and item["fg"].shape == (1, 64, 64)
    np.testing.assert_array_equal(item["fg"][0].numpy(), (item["mask"] > 0).numpy())
    # with the default (random affine) augmentation, the maps are computed from the mask actually returned
    aug = build_dataset("synthetic", split="train", seed=0, num_volumes=1, target_maps=maps)
    for _ in range(5):
        item = aug[8]
        assert item["n_lobe"].item() == (item["mask"] == 1).sum().item()
    bad = build_dataset("synthetic", split="train", seed=0, num_volumes=1, target_maps=lambda m: {"mask": m})
    with pytest.raises(ValueError, match="reserved key 'mask'"):
        bad[0]


def test_default_augmentation_changes_train_items_not_eval_items(train):
    first = [train[40]["mask"].numpy() for _ in range(6)]
    assert any(not np.array_equal(first[0], m) for m in first[1:])
    test = build_dataset("synthetic", split="test", seed=0, num_volumes=1)
    assert all(np.array_equal(test[3]["mask"].numpy(), test.labels[3 // 16, 3 % 16]) for _ in range(3))


def test_dataloader_workers_draw_different_augmentations_reproducibly():
    ds = build_dataset("synthetic", split="train", seed=0, num_volumes=1)
    subset = torch.utils.data.Subset(ds, [5] * 8)

    def run(seed):
        loader = torch.utils.data.DataLoader(subset, batch_size=1, num_workers=2,
                                             generator=torch.Generator().manual_seed(seed))
        return [b["mask"][0].numpy() for b in loader]

    first = run(0)
    # items 0 and 1 come from different workers; without per-worker reseeding they would be identical copies
    assert not all(np.array_equal(first[0], m) for m in first[1:4])
    again = run(0)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))


def _train_and_evaluate(loss_name: str, steps: int = 120) -> dict:
    """Unet/resnet18 (encoder depth 3, no pretraining) trained briefly on CPU; per-volume 3-D scores on test."""
    import segmentation_models_pytorch as smp

    from raysweep.losses import build_loss
    from raysweep.metrics import Evaluator

    torch.manual_seed(0)
    train = build_dataset("synthetic", split="train", seed=0)  # fresh: same augmentation stream for every loss
    test = build_dataset("synthetic", split="test", seed=0, num_volumes=4)
    info = DATASETS["synthetic"]
    model = smp.Unet("resnet18", encoder_weights=None, encoder_depth=3, decoder_channels=(32, 16, 8),
                     in_channels=info.in_channels, classes=info.num_classes)
    loss = build_loss(loss_name)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3)
    loader = torch.utils.data.DataLoader(train, batch_size=8, shuffle=True, drop_last=True,
                                         generator=torch.Generator().manual_seed(0))
    step = 0
    model.train()
    while step < steps:
        for batch in loader:
            value = loss(model(batch["image"]), batch["mask"])
            optimiser.zero_grad()
            value.backward()
            optimiser.step()
            step += 1
            if step == steps:
                break
    model.eval()
    evaluator = Evaluator.for_dataset(info)
    with torch.no_grad():
        for vol in test.volumes():
            pred = model(test.volume_input(vol)).argmax(1).numpy()
            evaluator.add(vol.case, pred, vol.label, spacing=vol.spacing)
    return evaluator.summary()


def test_brief_cpu_training_lands_mid_range_and_losses_disagree():
    """The acceptance test of the embedded default: a small model trained for 120 steps is neither hopeless nor
    done, and CE and Dice loss leave it with measurably different per-class results (CE, dominated by the large
    classes, is slower to pick up the small and thin ones)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # immune to OpenMP spin-waits when the 2 cores are busy (2 threads took minutes then)
    try:
        ce, dice = _train_and_evaluate("ce"), _train_and_evaluate("dice")
    finally:
        torch.set_num_threads(threads)
    for name, summary in (("ce", ce), ("dice", dice)):
        assert 0.15 < summary["dice"] < 0.85, f"{name}: mean DSC {summary['dice']:.3f} is not mid-range"
        assert np.isfinite(summary["hd95"]) and summary["hd95"] > 0
    per_class_ce, per_class_dice = ce["per_class"]["dice"], dice["per_class"]["dice"]
    gaps = {k: abs(per_class_ce[k] - per_class_dice[k]) for k in per_class_ce}
    assert sum(gap >= 0.2 for gap in gaps.values()) >= 2, f"per-class DSC gaps too small: {gaps}"
    assert abs(ce["dice"] - dice["dice"]) >= 0.05, (ce["dice"], dice["dice"])


# -- roles of the splits: train, selection (val) and ranking (test) share no case ------------------------------------


def test_train_select_and_rank_splits_share_no_case_and_no_volume(train):
    info = DATASETS["synthetic"]
    assert info.select_split == "val" and info.eval_split == "test"
    splits = {"train": train, "val": build_dataset("synthetic", split="val", seed=0),
              "test": build_dataset("synthetic", split="test", seed=0)}
    cases = {name: [v.case for v in ds.volumes()] for name, ds in splits.items()}
    assert [len(c) for c in cases.values()] == [16, 4, 8]
    everything = [c for split in cases.values() for c in split]
    assert len(set(everything)) == len(everything), "a case id appears in two splits"
    # no identical volume anywhere: hash every volume's image bytes across the three splits
    digests = {ds.images[v].tobytes() for ds in splits.values() for v in range(ds.images.shape[0])}
    assert len(digests) == 28
    item_cases = {name: {ds[i]["case"].split("_slice")[0] for i in range(0, len(ds), ds.depth)}
                  for name, ds in splits.items()}
    assert not item_cases["train"] & item_cases["val"] and not item_cases["val"] & item_cases["test"]


def test_list_cases_equals_volume_cases_without_generating():
    from raysweep.data import list_cases

    _generate_split.cache_clear()
    for split, options in (("val", {}), ("test", {"num_volumes": 3}), ("train", {"num_volumes": None, "depth": 4})):
        listed = list_cases("synthetic", split, seed=0, **options)
        assert _generate_split.cache_info().currsize == 0  # nothing generated
        ds = build_dataset("synthetic", split=split, seed=0, image_size=32, **{"depth": 4, **options})
        assert listed == [v.case for v in ds.volumes()]
        _generate_split.cache_clear()
    assert list_cases("synthetic", "val") == ["val000", "val001", "val002", "val003"]
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        list_cases("synthetic", "valid")
    with pytest.raises(ValueError, match=r"unknown option\(s\) size; accepted: seed, image_size"):
        list_cases("synthetic", "val", size=3)
    with pytest.raises(ValueError, match="^synthetic: option num_volumes must be an integer >= 1 or null, got 0"):
        list_cases("synthetic", "val", num_volumes=0)


def test_dataset_info_checks_the_roles_of_its_splits():
    from dataclasses import replace

    info = DATASETS["synthetic"]
    with pytest.raises(ValueError, match="select_split 'test' must differ from eval_split 'test' and from 'train'"):
        replace(info, select_split="test")
    with pytest.raises(ValueError, match="select_split 'train' must differ"):
        replace(info, select_split="train")
    with pytest.raises(ValueError, match=r"select_split 'valid' is not one of the splits \('train', 'val', 'test'\)"):
        replace(info, select_split="valid")
    with pytest.raises(ValueError, match="eval_split 'holdout' is not one of the splits"):
        replace(info, eval_split="holdout")
    for name in DATASETS:
        assert DATASETS[name].select_split not in (DATASETS[name].eval_split, "train")


def test_an_absurd_number_of_volumes_is_refused_before_anything_is_listed():
    """Validation lists every case of a split: 10^8 names once exhausted a 24 GB machine instead of failing."""
    from pathlib import Path

    from raysweep.config import read_yaml_mapping, validate

    raw = read_yaml_mapping(Path(__file__).resolve().parents[1] / "configs" / "default.yaml")
    raw["datasets"]["synthetic"]["eval_options"] = {"num_volumes": 10**8}
    with pytest.raises(ValueError, match=r"num_volumes must be at most 100000, got 100000000"):
        validate(raw)
    raw["datasets"]["synthetic"]["eval_options"] = {"num_volumes": 100_000}
    validate(raw)  # the bound itself is accepted (100000 names listed)
