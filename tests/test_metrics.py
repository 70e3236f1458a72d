"""raysweep.metrics: HD95 against medpy (test-only oracle), TransUNet's empty-mask conventions, dataset mIoU."""

import numpy as np
import pytest
import torch
from medpy.metric import binary as medpy_binary
from scipy import ndimage

from raysweep.data import DATASETS
from raysweep.metrics import (
    Evaluator,
    case_scores,
    confusion_matrix,
    dice_from_confusion,
    hd95,
    iou_from_confusion,
)


def random_blobs(rng, shape, n=3, touch_border=False):
    """Union of a few random ellipses/ellipsoids, optionally one cut by the array border; bool array."""
    grids = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    mask = np.zeros(shape, bool)
    for i in range(n):
        centre = [rng.uniform(0, s) for s in shape]
        if touch_border and i == 0:
            centre[-1] = rng.uniform(-2, 1)
        radii = [rng.uniform(1.0, max(1.5, s / 4)) for s in shape]
        mask |= sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) < 1
    return mask


def transunet_calculate_metric_percase(pred, gt):
    """TransUNet utils.py, verbatim apart from the copies (the original writes into its arguments)."""
    pred, gt = pred.copy(), gt.copy()
    pred[pred > 0] = 1
    gt[gt > 0] = 1
    if pred.sum() > 0 and gt.sum() > 0:
        dice = medpy_binary.dc(pred, gt)
        hd95 = medpy_binary.hd95(pred, gt)
        return dice, hd95
    elif pred.sum() > 0 and gt.sum() == 0:
        return 1, 0
    else:
        return 0, 0


@pytest.mark.parametrize("ndim", [2, 3])
def test_hd95_matches_medpy_on_random_shapes_with_spacing(ndim):
    rng = np.random.default_rng(ndim)
    shape = (48, 40) if ndim == 2 else (12, 30, 26)
    checked = 0
    for trial in range(25):
        a = random_blobs(rng, shape, n=int(rng.integers(1, 4)), touch_border=trial % 3 == 0)
        b = random_blobs(rng, shape, n=int(rng.integers(1, 4)), touch_border=trial % 4 == 0)
        if not a.any() or not b.any():
            continue
        spacing = None if trial % 5 == 0 else tuple(rng.uniform(0.5, 3.0, ndim))
        expected = medpy_binary.hd95(a, b, voxelspacing=spacing)
        assert hd95(a, b, spacing) == pytest.approx(expected, rel=1e-9, abs=1e-9)
        checked += 1
    assert checked >= 20


def test_hd95_matches_medpy_with_connectivity_2_and_scalar_spacing():
    rng = np.random.default_rng(7)
    a, b = random_blobs(rng, (10, 24, 24)), random_blobs(rng, (10, 24, 24))
    assert hd95(a, b, 2.5, connectivity=2) == pytest.approx(
        medpy_binary.hd95(a, b, voxelspacing=2.5, connectivity=2))


def test_hd95_known_values_and_symmetry():
    a = np.zeros((40, 40), bool)
    a[10:20, 10:20] = True
    b = np.roll(a, 3, axis=1)
    assert hd95(a, a) == 0.0
    assert hd95(a, b) == pytest.approx(3.0)
    assert hd95(a, b, spacing=(1.0, 2.0)) == pytest.approx(6.0)  # the shift is along the axis with spacing 2
    rng = np.random.default_rng(0)
    c, d = random_blobs(rng, (30, 30)), random_blobs(rng, (30, 30))
    assert hd95(c, d) == pytest.approx(hd95(d, c))


def test_hd95_rejects_empty_masks_and_shape_mismatch():
    a = np.zeros((8, 8), bool)
    b = a.copy()
    b[2, 2] = True
    with pytest.raises(ValueError, match="empty"):
        hd95(a, b)
    with pytest.raises(ValueError, match="shape"):
        hd95(b, np.ones((8, 9), bool))
    with pytest.raises(ValueError, match="spacing"):
        hd95(b, b, spacing=(1.0, 2.0, 3.0))


def test_case_scores_transunet_convention_equals_transunet_code():
    """Per class, our 'transunet' scores equal TransUNet's calculate_metric_percase (medpy inside), including every
    empty case: pred only, gt only, neither."""
    rng = np.random.default_rng(3)
    shape = (8, 24, 24)
    gt = np.zeros(shape, np.int64)
    pred = np.zeros(shape, np.int64)
    gt[random_blobs(rng, shape)] = 1
    pred[random_blobs(rng, shape)] = 1
    gt[2:6, 3:9, 3:9] = 2
    pred[2:6, 4:10, 3:9] = 2
    pred[0, 0:3, 20:23] = 3  # class 3: predicted but absent from the ground truth
    gt[7, 20:23, 0:3] = 4  # class 4: present but never predicted
    # class 5: absent from both
    scores = case_scores(pred, gt, num_classes=6, empty="transunet")
    for c in range(1, 6):
        dice, hd = transunet_calculate_metric_percase(pred == c, gt == c)
        assert scores["dice"][c] == pytest.approx(dice)
        assert scores["hd95"][c] == pytest.approx(hd)
    assert (scores["dice"][3], scores["hd95"][3]) == (1.0, 0.0)
    assert (scores["dice"][4], scores["hd95"][4]) == (0.0, 0.0)
    assert (scores["dice"][5], scores["hd95"][5]) == (0.0, 0.0)
    assert scores["iou"][2] == pytest.approx(medpy_binary.jc(pred == 2, gt == 2))


def test_case_scores_strict_convention():
    gt = np.zeros((10, 20), np.int64)
    pred = np.zeros((10, 20), np.int64)
    gt[2:5, 2:5] = 1
    pred[2:5, 3:6] = 1
    pred[8, 8] = 2  # false positive only
    gt[0, 19] = 3  # missed
    s = case_scores(pred, gt, num_classes=5, spacing=(2.0, 1.0), empty="strict")
    diagonal = np.hypot(10 * 2.0, 20 * 1.0)
    assert s["dice"][1] == pytest.approx(medpy_binary.dc(pred == 1, gt == 1))
    assert s["hd95"][1] == pytest.approx(medpy_binary.hd95(pred == 1, gt == 1, voxelspacing=(2.0, 1.0)))
    assert (s["dice"][2], s["iou"][2], s["hd95"][2]) == (0.0, 0.0, pytest.approx(diagonal))
    assert (s["dice"][3], s["iou"][3], s["hd95"][3]) == (0.0, 0.0, pytest.approx(diagonal))
    assert np.isnan([s["dice"][4], s["iou"][4], s["hd95"][4]]).all()
    with pytest.raises(ValueError, match="empty"):
        case_scores(pred, gt, 5, empty="nan")


def test_case_scores_every_class_matches_medpy_with_ignore_and_spacing():
    """All classes (background included) of a 3-D multi-class case, with ignored voxels and anisotropic spacing."""
    rng = np.random.default_rng(11)
    shape = (6, 28, 24)
    gt = np.zeros(shape, np.int64)
    pred = np.zeros(shape, np.int64)
    for c in (1, 2, 3):
        gt[random_blobs(rng, shape, n=2)] = c
        pred[random_blobs(rng, shape, n=2)] = c
    gt[:, :3, :] = 255
    valid = gt != 255
    spacing = (2.5, 0.8, 0.8)
    s = case_scores(pred, gt, num_classes=4, spacing=spacing)
    for c in range(4):
        p, t = (pred == c) & valid, gt == c
        assert s["dice"][c] == pytest.approx(medpy_binary.dc(p, t))
        assert s["hd95"][c] == pytest.approx(medpy_binary.hd95(p, t, voxelspacing=spacing))


def test_case_scores_ignore_index_and_class_subset():
    gt = np.ones((6, 6), np.int64)
    gt[:, :3] = 255
    pred = np.ones((6, 6), np.int64)
    pred[:, :3] = 0  # wrong, but only where the target is ignored
    s = case_scores(pred, gt, num_classes=2, classes=[1])
    assert s["dice"][1] == 1.0 and s["hd95"][1] == 0.0
    assert np.isnan(s["dice"][0])


def test_confusion_matrix_counts_numpy_and_torch_agree():
    rng = np.random.default_rng(1)
    target = rng.integers(0, 4, (3, 17, 19))
    target[0, :2] = 255
    pred = rng.integers(0, 4, (3, 17, 19))
    cm = confusion_matrix(pred, target, 4)
    expected = np.zeros((4, 4), np.int64)
    for t, p in zip(target.ravel(), pred.ravel()):
        if t != 255:
            expected[t, p] += 1
    np.testing.assert_array_equal(cm, expected)
    np.testing.assert_array_equal(confusion_matrix(torch.from_numpy(pred), torch.from_numpy(target), 4), expected)
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(pred + 1, target, 4)
    with pytest.raises(ValueError, match="shape"):
        confusion_matrix(pred[0], target, 4)


def test_iou_and_dice_from_confusion():
    cm = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]])
    iou = iou_from_confusion(cm)
    dice = dice_from_confusion(cm)
    assert iou[0] == pytest.approx(5 / (5 + 1 + 2))
    assert iou[1] == pytest.approx(3 / (3 + 2 + 1))
    assert dice[1] == pytest.approx(2 * 3 / (2 * 3 + 2 + 1))
    assert np.isnan(iou[2]) and np.isnan(dice[2])


def test_evaluator_dataset_level_miou_is_not_mean_of_per_image_iou():
    """Cityscapes protocol: mIoU from the confusion matrix summed over images. Two images where the per-image
    average and the dataset-level value differ."""
    ev = Evaluator(2, ("a", "b"), eval_classes=(0, 1), empty="strict", hd=False)
    t1 = np.zeros((10, 10), np.int64)
    t1[:, 5:] = 1
    p1 = t1.copy()  # perfect
    t2 = np.zeros((10, 10), np.int64)
    t2[0, 0] = 1
    p2 = np.zeros((10, 10), np.int64)  # misses the single class-1 pixel
    ev.add("img1", p1, t1)
    ev.add("img2", p2, t2)
    cm = np.array([[50 + 99, 0], [1, 50]])
    expected = np.nanmean(iou_from_confusion(cm))
    summary = ev.summary()
    assert summary["miou"] == pytest.approx(expected)
    assert summary["per_class"]["miou"]["b"] == pytest.approx(50 / 51)
    # per-case IoU of class b: 1.0 and 0.0 -> mean 0.5, different from the dataset-level 50/51
    assert summary["per_class"]["iou"]["b"] == pytest.approx(0.5)
    np.testing.assert_array_equal(ev.confusion, cm)


def test_evaluator_keeps_paired_per_case_scores_and_averages_like_transunet():
    info = DATASETS["synapse"]
    ev = Evaluator.for_dataset(info)
    assert ev.empty == "transunet" and ev.hd and ev.eval_classes == tuple(range(1, 9))
    rng = np.random.default_rng(5)
    per_case = []
    for case in ("case0001", "case0002", "case0003"):
        gt = rng.integers(0, 9, (4, 16, 16))
        pred = np.where(rng.uniform(size=gt.shape) < 0.7, gt, rng.integers(0, 9, gt.shape))
        per_case.append([transunet_calculate_metric_percase(pred == c, gt == c) for c in range(1, 9)])
        ev.add(case, pred, gt, spacing=None)
    rows = ev.rows()
    assert len(rows) == 3 * 8
    assert {r["case"] for r in rows} == {"case0001", "case0002", "case0003"}
    assert rows[0]["class_name"] == "aorta"
    ref = np.array(per_case)  # (cases, classes, [dice, hd95])
    np.testing.assert_allclose(ev.scores("dice")[:, 1:], ref[:, :, 0])
    np.testing.assert_allclose(ev.scores("hd95")[:, 1:], ref[:, :, 1])
    summary = ev.summary()
    # TransUNet test.py: mean over cases per class, then mean over classes
    assert summary["dice"] == pytest.approx(ref[:, :, 0].mean(0).mean())
    assert summary["hd95"] == pytest.approx(ref[:, :, 1].mean(0).mean())
    assert summary["per_class"]["dice"]["liver"] == pytest.approx(ref[:, 4, 0].mean())
    assert summary["n_cases"] == 3


def test_evaluator_for_cityscapes_skips_hd95_and_scores_all_19_classes():
    ev = Evaluator.for_dataset(DATASETS["cityscapes"])
    assert not ev.hd and ev.eval_classes == tuple(range(19))
    t = np.full((8, 8), 255, np.int64)
    t[:4] = 13
    s = ev.add("x", np.full((8, 8), 13), t)
    assert s["dice"][13] == 1.0 and np.isnan(s["hd95"]).all()
    assert ev.summary()["miou"] == pytest.approx(1.0)


def test_hd95_bounding_box_crop_is_exact_near_borders():
    """The bounding-box speed-up must not change results for objects touching the array border."""
    a = np.zeros((20, 20), bool)
    b = np.zeros((20, 20), bool)
    a[0:6, 0:20] = True
    b[0:4, 3:20] = True
    b[10:12, 15:20] = True
    assert hd95(a, b) == pytest.approx(medpy_binary.hd95(a, b))
    # a thin one-voxel structure: the surface is the whole object
    line = np.zeros((5, 30, 30), bool)
    line[2, 15, 3:27] = True
    blob = ndimage.binary_dilation(line, iterations=2)
    assert hd95(line, blob, (3.0, 1.0, 1.0)) == pytest.approx(medpy_binary.hd95(line, blob, voxelspacing=(3, 1, 1)))
