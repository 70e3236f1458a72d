"""Label corruption (every dataset, training labels only) and the synthetic test-time shift (ranking split only):
seeded, confined to the intended split, and of the requested amount, measured here independently of the code that
makes them (boundary displacement with a distance transform, dropped and swapped fractions by counting components,
std ratios, the spectrum)."""

import numpy as np
import pytest
import torch
from scipy import ndimage

from raysweep.data import DATASETS, build_dataset, check_dataset_options, dataset_info, list_cases
from raysweep.data import corruption as C
from raysweep.data.examples import write_folder_example
from raysweep.data.synthetic import CLASS_NAMES

SMALL = {"image_size": 32, "depth": 4, "num_volumes": 2, "transform": None}
NAMES = {name: i for i, name in enumerate(CLASS_NAMES)}


# -- helpers: planted masks and independent measurements ------------------------------------------------------------


def disks(size: int = 128) -> np.ndarray:
    """Seven well-separated disks of classes 1..7 (radius 6..14 px), at least 9 px apart, with a ring of ignore."""
    mask = np.zeros((size, size), np.uint8)
    yy, xx = np.mgrid[:size, :size]
    for c, (cy, cx, r) in enumerate([(25, 25, 10), (25, 70, 8), (25, 105, 12), (75, 25, 9), (75, 70, 14),
                                     (75, 108, 7), (112, 60, 6)], start=1):
        mask[np.hypot(yy - cy, xx - cx) < r] = c
    mask[np.hypot(yy - 112, xx - 105) < 5] = 255  # an ignore region: never changed, never grows
    return mask


def squares(size: int = 64, seed: int = 0) -> np.ndarray:
    """A grid of 2x2 squares (4 px) of classes 3 and 4 alternating, 1 px of background between them horizontally
    (so 8-connectivity does not join them: a 2-px gap), plus two big 12x12 blocks of classes 1 and 2."""
    mask = np.zeros((size, size), np.uint8)
    k = 0
    for y in range(1, size - 20, 4):
        for x in range(1, size - 2, 4):
            mask[y:y + 2, x:x + 2] = 3 + k % 2
            k += 1
    mask[-16:-4, 4:16] = 1
    mask[-16:-4, 30:42] = 2
    return mask


def boundary(region: np.ndarray) -> np.ndarray:
    """The region's inner boundary pixels (4-neighbourhood), the image border not counting as outside."""
    return region & ~ndimage.binary_erosion(region, border_value=1)


def mean_boundary_displacement(a: np.ndarray, b: np.ndarray) -> float:
    """Average symmetric surface distance between two regions' boundaries, in px (a distance transform of each
    boundary's complement, read at the other boundary's pixels)."""
    ba, bb = boundary(a), boundary(b)
    to_b = ndimage.distance_transform_edt(~bb)[ba]
    to_a = ndimage.distance_transform_edt(~ba)[bb]
    return float(np.concatenate([to_b, to_a]).mean())


def corrupt(spec, mask, index=0):
    return C.apply(C.parse(spec), mask, index)


def count_components(mask, cls):
    return ndimage.label(mask == cls, structure=np.ones((3, 3)))[1]


# -- the requested amount -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 2, 3, 4, -1, -2, -3, -4])
def test_boundary_moves_every_component_by_k_pixels(k):
    mask = disks()
    out = corrupt({"kind": "boundary", "pixels": k}, mask)
    for c in range(1, 8):
        old, new = mask == c, out == c
        assert (old <= new).all() if k > 0 else (new <= old).all()  # dilation only grows, erosion only shrinks
        # Mean boundary displacement = |k| within 0.4 px (pixel-centre distances between digital circles read a
        # little under |k|: measured 0.96-1.02 |k| - 0.1 here).
        assert abs(mean_boundary_displacement(old, new) - abs(k)) < 0.4, c
        # No pixel moved farther than |k|: added pixels lie within k of the old component, removed ones within |k|
        # of its outside.
        changed = old ^ new
        reach = ndimage.distance_transform_edt(~old if k > 0 else old)[changed]
        assert reach.max() <= abs(k) + 1e-9
    changed = mask != out
    assert set(np.unique(mask[changed])) <= ({0} if k > 0 else set(range(1, 8)))  # only background grows over
    assert set(np.unique(out[changed])) <= (set(range(1, 8)) if k > 0 else {0})
    assert ((mask == 255) == (out == 255)).all()


def test_boundary_dilation_splits_contested_background_by_nearest_component():
    mask = np.zeros((9, 20), np.uint8)
    mask[:, :5], mask[:, 15:] = 1, 2  # a 10-px gap between class 1 and class 2
    out = corrupt({"kind": "boundary", "pixels": 6}, mask)
    assert (out[:, 5:10] == 1).all() and (out[:, 10:15] == 2).all()  # each takes its nearest half, none overwrites


def test_boundary_on_synthetic_slices_moves_labels_only_into_background_and_within_k():
    clean = build_dataset("synthetic", "train", **SMALL)
    for k in (2, -2):
        ds = build_dataset("synthetic", "train", **SMALL, label_corruption={"kind": "boundary", "pixels": k})
        moved = 0
        for i in range(0, len(ds), 3):
            before, after = clean[i]["mask"].numpy(), ds[i]["mask"].numpy()
            changed = before != after
            moved += changed.sum()
            if k > 0:
                assert (before[changed] == 0).all()
                for c in np.unique(after[changed]):
                    assert ndimage.distance_transform_edt(before != c)[changed & (after == c)].max() <= k
            else:
                assert (after[changed] == 0).all()
                for c in np.unique(before[changed]):
                    assert ndimage.distance_transform_edt(before == c)[changed & (before == c)].max() <= -k
        assert moved > 0


def test_random_sign_dilates_about_half_the_components():
    mask = disks()
    grew = shrank = 0
    for index in range(40):
        out = corrupt({"kind": "boundary", "pixels": 2, "random": True}, mask, index)
        for c in range(1, 8):
            old, new = (mask == c).sum(), (out == c).sum()
            assert old != new
            grew, shrank = grew + (new > old), shrank + (new < old)
    n = grew + shrank  # 280 components: binomial(280, 0.5) has std 8.4
    assert abs(grew / n - 0.5) < 4 * np.sqrt(0.25 / n)


@pytest.mark.parametrize("p", [0.0, 0.3, 0.5, 1.0])
def test_drop_small_drops_a_fraction_p_of_the_small_components_only(p):
    mask = squares()
    small = count_components(mask, 3) + count_components(mask, 4)
    kept = total = 0
    for index in range(20):
        out = corrupt({"kind": "drop_small", "max_size": 5, "p": p}, mask, index)
        assert ((out == 1) == (mask == 1)).all() and ((out == 2) == (mask == 2)).all()  # 144 px: never dropped
        changed = out != mask
        assert (out[changed] == 0).all()
        survivors = count_components(out, 3) + count_components(out, 4)
        # each small component is dropped whole or kept whole
        assert (out[mask >= 3] == 0).sum() == 4 * (small - survivors)
        kept, total = kept + survivors, total + small
    dropped = 1 - kept / total  # 20 x 176 components: binomial std <= 0.0085
    assert abs(dropped - p) < 4 * np.sqrt(max(p * (1 - p), 1e-12) / total) + 1e-12


def test_drop_small_respects_max_size():
    mask = squares()  # 4-px squares
    out = corrupt({"kind": "drop_small", "max_size": 4, "p": 1.0}, mask)
    np.testing.assert_array_equal(out, mask)  # "smaller than 4" excludes 4-px components
    out = corrupt({"kind": "drop_small", "max_size": 5, "p": 1.0}, mask)
    assert set(np.unique(out)) == {0, 1, 2}


@pytest.mark.parametrize("p", [0.3, 1.0])
def test_swap_changes_whole_components_of_the_paired_classes_only(p):
    mask = squares()
    mask[-16:-4, 50:60] = 5  # a third class, unpaired
    swapped = total = 0
    for index in range(20):
        out = corrupt({"kind": "swap", "pairs": [[3, 4]], "p": p}, mask, index)
        changed = out != mask
        assert set(np.unique(mask[changed])) <= {3, 4}
        assert ((mask == 3) & changed <= (out == 4)).all() and ((mask == 4) & changed <= (out == 3)).all()
        np.testing.assert_array_equal(out > 0, mask > 0)  # no pixel leaves or joins the foreground
        labels, n = ndimage.label(mask >= 3, structure=np.ones((3, 3)))
        labels[mask == 5] = 0
        for i in range(1, n + 1):
            part = changed[labels == i]
            if part.size:
                assert part.all() or not part.any()  # a component swaps whole
                swapped, total = swapped + part.all(), total + 1
    assert abs(swapped / total - p) < 4 * np.sqrt(p * (1 - p) / total) + 1e-12


def test_a_list_of_specs_applies_in_order():
    mask = disks()
    specs = [{"kind": "boundary", "pixels": 2}, {"kind": "swap", "pairs": [[1, 2]]}]
    step = corrupt(specs[0], mask)
    np.testing.assert_array_equal(C.apply(C.parse(specs), mask, 0),
                                  C.apply_one(C.parse(specs[1])[0], step,
                                              np.random.default_rng(np.random.SeedSequence([0, 0, 1]))))


# -- seeded ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [
    {"kind": "boundary", "pixels": 2, "random": True},
    {"kind": "drop_small", "max_size": 30, "p": 0.5},
    {"kind": "swap", "pairs": [[NAMES["bean_left"], NAMES["bean_right"]], [NAMES["disc"], NAMES["lobe"]]], "p": 0.5},
])
def test_corruption_is_seeded_per_item(spec):
    a = build_dataset("synthetic", "train", **SMALL, label_corruption=spec)
    b = build_dataset("synthetic", "train", **SMALL, label_corruption=spec)
    other = build_dataset("synthetic", "train", **SMALL, label_corruption={**spec, "seed": 1})
    clean = build_dataset("synthetic", "train", **SMALL)
    same = differs = 0
    for i in range(len(a)):
        torch.testing.assert_close(a[i]["mask"], b[i]["mask"])  # same seed, same masks, rebuilt
        torch.testing.assert_close(a[i]["mask"], a[i]["mask"])  # read twice
        differs += not torch.equal(a[i]["mask"], other[i]["mask"])
        same += torch.equal(a[i]["mask"], clean[i]["mask"])
        torch.testing.assert_close(a[i]["image"], clean[i]["image"])  # images untouched
    assert differs >= len(a) // 2, "another seed must give other masks"
    assert same < len(a), "the corruption must change something"


def test_corruption_is_applied_before_the_transform():
    seen = []

    def record(image, mask):
        seen.append(mask.copy())
        return {"image": image, "mask": mask}

    spec = {"kind": "boundary", "pixels": -1}
    ds = build_dataset("synthetic", "train", **{**SMALL, "transform": record}, label_corruption=spec)
    clean = build_dataset("synthetic", "train", **SMALL)
    item = ds[5]
    expected = corrupt(spec, clean[5]["mask"].numpy().astype(np.uint8), index=5)
    np.testing.assert_array_equal(seen[-1], expected)
    np.testing.assert_array_equal(item["mask"].numpy(), expected)
    assert seen[-1].dtype == np.uint8  # the transform still gets the uint8 mask it expects


def test_negative_indices_are_seeded_as_their_positive_index():
    ds = build_dataset("synthetic", "train", **SMALL, label_corruption={"kind": "drop_small", "max_size": 30,
                                                                        "p": 0.5})
    torch.testing.assert_close(ds[-1]["mask"], ds[len(ds) - 1]["mask"])


# -- only the training split ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("split", ["val", "test"])
def test_corruption_is_refused_for_other_splits(split):
    spec = {"kind": "boundary", "pixels": 1}
    for call in (lambda: build_dataset("synthetic", split, **SMALL, label_corruption=spec),
                 lambda: list_cases("synthetic", split, label_corruption=spec),
                 lambda: check_dataset_options("synthetic", {"label_corruption": spec}, split=split)):
        with pytest.raises(ValueError, match=r"label_corruption.*train_options"):
            call()
    ds = build_dataset("synthetic", split, **SMALL)
    with pytest.raises(ValueError, match="label_corruption"):
        ds.set_label_corruption(spec)
    # no corruption is fine anywhere
    assert build_dataset("synthetic", split, **SMALL, label_corruption=None).label_corruption == ()


def test_corrupting_train_leaves_val_test_and_the_clean_train_labels_unchanged():
    before = {s: build_dataset("synthetic", s, **SMALL) for s in ("train", "val", "test")}
    snapshot = {s: ds.labels.copy() for s, ds in before.items()}
    corrupted = build_dataset("synthetic", "train", **SMALL, label_corruption={"kind": "boundary", "pixels": 3})
    _ = [corrupted[i] for i in range(len(corrupted))]
    for s in ("train", "val", "test"):
        after = build_dataset("synthetic", s, **SMALL)
        np.testing.assert_array_equal(after.labels, snapshot[s])  # the cached arrays are not edited in place
        for i in range(0, len(after), 3):
            torch.testing.assert_close(after[i]["mask"], before[s][i]["mask"])
        for vol in after.volumes():  # what evaluation reads
            assert vol.label.dtype == np.int64
    assert not np.array_equal(corrupted[0]["mask"].numpy(), before["train"][0]["mask"].numpy())


# -- every dataset, checked by value --------------------------------------------------------------------------------


def test_every_dataset_accepts_label_corruption_by_value():
    spec = {"kind": "swap", "pairs": [[1, 2]], "p": 0.5}
    for name in DATASETS:
        checked = check_dataset_options(name, {"label_corruption": spec})
        assert checked["label_corruption"] == [{"kind": "swap", "seed": 0, "p": 0.5, "pairs": [[1, 2]]}]
    assert dataset_info("synthetic", label_corruption=spec).name == "synthetic"


def test_folder_dataset_trains_on_corrupted_labels(tmp_path):
    root = write_folder_example(tmp_path / "imgs", num_images=8, size=32, palette=False)
    info = dataset_info("folder", root=root)
    spec = {"kind": "boundary", "pixels": 1}
    clean = build_dataset("folder", "train", root=root, transform=None)
    ds = build_dataset("folder", "train", root=root, transform=None, label_corruption=spec)
    assert any(not torch.equal(ds[i]["mask"], clean[i]["mask"]) for i in range(len(ds)))
    assert list_cases("folder", "train", root=root, label_corruption=spec) == list_cases("folder", "train", root=root)
    bad = {"kind": "swap", "pairs": [[1, info.num_classes]]}
    check_dataset_options("folder", {"label_corruption": bad})  # the classes are in the files: not known here
    for call in (lambda: dataset_info("folder", root=root, label_corruption=bad),
                 lambda: build_dataset("folder", "train", root=root, label_corruption=bad)):
        with pytest.raises(ValueError, match=rf"label_corruption.pairs: class id {info.num_classes} .*0\.\."):
            call()
    with pytest.raises(ValueError, match="train_options"):
        build_dataset("folder", "val", root=root, label_corruption=spec)


@pytest.mark.parametrize("spec, message", [
    ({"kind": "blur"}, r"label_corruption.kind: unknown kind 'blur'; choose one of boundary, drop_small, swap"),
    ({"kind": "boundry", "pixels": 1}, r"did you mean 'boundary'"),
    ({"pixels": 1}, r"the key kind is missing; add kind"),
    ({"kind": "boundary"}, r"needs the key pixels; add e.g. pixels: 2"),
    ({"kind": "boundary", "pixels": 1.5}, r"label_corruption.pixels must be an integer"),
    ({"kind": "boundary", "pixels": 1, "random": "yes"}, r"label_corruption.random must be true"),
    ({"kind": "boundary", "pixels": 1, "p": 0.5},
     r"unknown key 'p' for kind boundary.*; accepted: kind, pixels, random, seed"),
    ({"kind": "drop_small", "max_size": -3}, r"label_corruption.max_size must be an integer >= 1"),
    ({"kind": "drop_small", "max_size": 0}, r"label_corruption.max_size must be an integer >= 1"),
    ({"kind": "drop_small", "max_size": 9, "p": 1.5}, r"label_corruption.p must be a probability in \[0, 1\]"),
    ({"kind": "drop_small", "max_size": 9, "p": -0.1}, r"label_corruption.p must be a probability in \[0, 1\]"),
    ({"kind": "drop_small", "max_size": 9, "p": float("nan")}, r"label_corruption.p must be a probability"),
    ({"kind": "swap", "pairs": [[3, 9]]}, r"label_corruption.pairs: class id 9 is out of range; use class ids 0..8"),
    ({"kind": "swap", "pairs": [[-1, 2]]}, r"class id -1 is out of range"),
    ({"kind": "swap", "pairs": [[3, 255]]}, r"class id 255 is out of range"),
    ({"kind": "swap", "pairs": [3, 4]}, r"label_corruption.pairs must be a non-empty list of \[a, b\] pairs"),
    ({"kind": "swap", "pairs": []}, r"label_corruption.pairs must be a non-empty list"),
    ({"kind": "swap", "pairs": [[3, 3]]}, r"swaps a class with itself"),
    ({"kind": "swap", "pairs": [[3, 4], [4, 5]]}, r"class 4 is in two pairs"),
    ({"kind": "swap", "pairs": [[3, 4]], "seed": -1}, r"label_corruption.seed must be an integer >= 0"),
    ([{"kind": "boundary", "pixels": 1}, {"kind": "swap", "pairs": [[1, 2]], "p": 2}],
     r"label_corruption\[1\].p must be a probability"),
    ("boundary", r"label_corruption must be a mapping such as \{kind: boundary, pixels: 2\}"),
])
def test_bad_specs_name_the_key_and_the_fix(spec, message):
    for call in (lambda: check_dataset_options("synthetic", {"label_corruption": spec}),
                 lambda: build_dataset("synthetic", "train", **SMALL, label_corruption=spec)):
        with pytest.raises(ValueError, match=r"^synthetic: option " + "(.|\n)*" + message):
            call()


# -- test-time shift ------------------------------------------------------------------------------------------------


def shifted(shift, split="test", **options):
    return build_dataset("synthetic", split, **{**SMALL, "image_size": 64, "depth": 6, **options}, shift=shift)


@pytest.fixture(scope="module")
def clean_test():
    return build_dataset("synthetic", "test", **{**SMALL, "image_size": 64, "depth": 6})


def test_shift_touches_the_images_only(clean_test):
    ds = shifted({"contrast": 0.5, "bias": 0.3, "noise": 0.1, "resolution": 2})
    np.testing.assert_array_equal(ds.labels, clean_test.labels)
    assert not np.allclose(ds.images, clean_test.images)
    for a, b in zip(ds.volumes(), clean_test.volumes()):  # what evaluation reads is shifted too
        np.testing.assert_array_equal(a.label, b.label)
        assert not np.allclose(a.image, b.image)
    np.testing.assert_array_equal(ds[3]["image"][0].numpy(), ds.images[0, 3])
    torch.testing.assert_close(ds[3]["mask"], clean_test[3]["mask"])


@pytest.mark.parametrize("c", [0.25, 0.5, 2.0])
def test_shift_contrast_scales_the_spread_by_c(clean_test, c):
    ds = shifted({"contrast": c})
    for a, b in zip(ds.images, clean_test.images):
        assert a.std() / b.std() == pytest.approx(c, rel=1e-4)
        assert a.mean() == pytest.approx(b.mean(), abs=1e-5)


@pytest.mark.parametrize("s", [0.02, 0.05, 0.2])
def test_shift_noise_adds_gaussian_noise_of_std_s(clean_test, s):
    added = shifted({"noise": s}).images.astype(np.float64) - clean_test.images
    assert added.std() == pytest.approx(s, rel=0.03)  # 49k samples: the sample std is within ~1 %
    assert abs(added.mean()) < 0.02 * s + 1e-4
    assert abs(np.corrcoef(added[:, :, :, 1:].ravel(), added[:, :, :, :-1].ravel())[0, 1]) < 0.03  # white


@pytest.mark.parametrize("b", [0.1, 0.3])
def test_shift_bias_is_a_smooth_multiplicative_field_of_amplitude_b(clean_test, b):
    ds = shifted({"bias": b})
    for a, c in zip(ds.images.astype(np.float64), clean_test.images.astype(np.float64)):
        bright = c > 0.2
        field = a[bright] / c[bright] - 1
        assert np.abs(field).max() <= b + 1e-5
        assert np.abs(field).max() >= 0.5 * b  # the field peaks at b somewhere in the volume, mostly inside
        full = np.where(c > 0.2, a / np.where(c > 0.2, c, 1) - 1, np.nan)
        step = np.nanmax(np.abs(np.diff(full, axis=-1)))
        assert step < 4 * b / 63  # smooth: it changes by at most a few b/W per pixel (a degree-2 polynomial)


def high_frequency_energy(images: np.ndarray, cutoff: float) -> float:
    """Fraction of each slice's spectral energy (mean removed) at radial frequencies above ``cutoff`` cycles/px."""
    x = images - images.mean(axis=(-2, -1), keepdims=True)
    power = np.abs(np.fft.fft2(x)) ** 2
    fy = np.fft.fftfreq(x.shape[-2])[:, None]
    fx = np.fft.fftfreq(x.shape[-1])[None, :]
    high = np.hypot(fy, fx) > cutoff
    return float(power[..., high].sum() / power.sum())


@pytest.mark.parametrize("r", [2, 4])
def test_shift_resolution_removes_detail_finer_than_r_pixels(clean_test, r):
    ds = shifted({"resolution": r})
    cutoff = 0.5 / r  # the Nyquist frequency of the downsampled grid
    before, after = high_frequency_energy(clean_test.images, cutoff), high_frequency_energy(ds.images, cutoff)
    assert after < 0.25 * before, (before, after)
    # the coarse picture stays: the images still agree after smoothing both at the new scale
    smooth = [ndimage.uniform_filter(x, size=(1, 1, 2 * r, 2 * r)) for x in (ds.images, clean_test.images)]
    assert np.corrcoef(smooth[0].ravel(), smooth[1].ravel())[0, 1] > 0.9
    np.testing.assert_array_equal(ds.labels, clean_test.labels)


def test_shift_neutral_values_change_nothing(clean_test):
    ds = shifted({"contrast": 1, "bias": 0, "noise": 0, "resolution": 1})
    np.testing.assert_array_equal(ds.images, clean_test.images)
    assert ds.shift is None


def test_shift_is_seeded(clean_test):
    spec = {"bias": 0.2, "noise": 0.05}
    a, b = shifted(spec).images, shifted(spec).images
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, shifted({**spec, "seed": 1}).images)
    clean_again = build_dataset("synthetic", "test", **{**SMALL, "image_size": 64, "depth": 6})
    np.testing.assert_array_equal(clean_again.images, clean_test.images)  # the cached clean images are not edited


@pytest.mark.parametrize("split", ["train", "val"])
def test_shift_is_refused_for_other_splits(split):
    for call in (lambda: shifted({"noise": 0.1}, split=split),
                 lambda: list_cases("synthetic", split, shift={"noise": 0.1}),
                 lambda: check_dataset_options("synthetic", {"shift": {"noise": 0.1}}, split=split)):
        with pytest.raises(ValueError, match=r"synthetic: option shift .*'test' only.*eval_options"):
            call()
    assert shifted(None, split=split).shift is None
    check_dataset_options("synthetic", {"shift": {"noise": 0.1}}, split="test")


@pytest.mark.parametrize("spec, message", [
    ({"contrast": 0}, r"shift.contrast must be a number > 0"),
    ({"contrast": -1}, r"shift.contrast must be a number > 0"),
    ({"bias": 1.0}, r"shift.bias must be a number in \[0, 1\)"),
    ({"noise": -0.1}, r"shift.noise must be a number >= 0"),
    ({"noise": float("inf")}, r"shift.noise must be a number >= 0"),
    ({"resolution": 0.5}, r"shift.resolution must be a number >= 1"),
    ({"resoluton": 2}, r"shift: unknown key 'resoluton' \(did you mean 'resolution'\?\); accepted"),
    ({"seed": 1.5}, r"shift.seed must be an integer >= 0"),
    ({"noise": True}, r"shift.noise must be"),
    (0.1, r"shift must be a mapping"),
])
def test_bad_shifts_name_the_key(spec, message):
    with pytest.raises(ValueError, match=r"^synthetic: option " + message):
        check_dataset_options("synthetic", {"shift": spec})


def test_shift_is_a_synthetic_option_only():
    with pytest.raises(ValueError, match="unknown option"):
        check_dataset_options("cityscapes", {"shift": {"noise": 0.1}})


# -- one corrupted training run -------------------------------------------------------------------------------------


def test_a_trial_trains_on_corrupted_labels_and_ranks_on_a_shifted_split():
    from raysweep.trial import train_trial

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train_trial({
            "dataset": {"options": {"image_size": 32, "depth": 4, "num_volumes": 3},
                        "train_options": {"label_corruption": [
                            {"kind": "boundary", "pixels": 1, "random": True},
                            {"kind": "drop_small", "max_size": 20, "p": 0.5},
                            {"kind": "swap", "pairs": [[NAMES["bean_left"], NAMES["bean_right"]]], "p": 0.3}]},
                        "eval_options": {"shift": {"contrast": 0.7, "noise": 0.05}}},
            "model": {"name": "cnn", "encoder": "resnet18"},
            "train": {"steps": 2, "batch_size": 2, "progress": False},
            "eval": {"every": None, "overlays": 0},
        })
    finally:
        torch.set_num_threads(before)
    assert np.isfinite(result["loss"]) and 0.0 <= result["dice"] <= 1.0
