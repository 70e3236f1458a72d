"""The boundary family and its maps, against SciPy-based reference computations and MONAI."""

import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage

from conftest import blob_masks, make_batch
from raysweep.losses import LOSSES, build_loss
from raysweep.losses.boundary.active_boundary import ActiveBoundaryLoss
from raysweep.losses.boundary.boundary_aware import distance_bins
from raysweep.losses.boundary.inverseform import (
    OfficialInverseNet,
    load_inversenet,
    soft_edges,
)
from raysweep.losses.maps import (
    DistanceMaps,
    batch_signed_distance,
    distance_field,
    inside_distance,
    label_boundaries,
    signed_distance_map,
)

# Every loss test may build "inverseform", which needs an InverseNet in the cache.
pytestmark = pytest.mark.usefixtures("inversenet_cache")

monai_losses = pytest.importorskip("monai.losses")


def scipy_signed_distance(labels, c, sampling=None):
    """Kervadec's one_hot2dist, with SciPy, class by class; empty and full classes give zeros."""
    out = np.zeros((c,) + labels.shape, np.float32)
    step = 1.0 if sampling is None else min(sampling)
    for k in range(c):
        pos = labels == k
        if pos.any() and not pos.all():
            neg = ~pos
            inside = ndimage.distance_transform_edt(pos, sampling=sampling)
            outside = ndimage.distance_transform_edt(neg, sampling=sampling)
            out[k] = outside * neg - np.maximum(inside - step, 0) * pos
    return out


def blob_batch(b=2, size=40, c=4, seed=0, noise=1.0):
    """Blob targets and logits that roughly follow them."""
    masks = np.stack(blob_masks(b, size, c, seed))
    target = torch.from_numpy(masks)
    g = torch.Generator().manual_seed(seed)
    logits = F.one_hot(target, c).permute(0, 3, 1, 2).float() * 3 + torch.randn(b, c, size, size, generator=g) * noise
    return logits, target


# ---------------------------------------------------------------- maps


@pytest.mark.parametrize("sampling", [None, (1.0, 1.0), (2.0, 0.5)])
def test_signed_distance_matches_scipy(sampling):
    for m in blob_masks(4, 40, 4, seed=1):
        assert np.allclose(signed_distance_map(m, 5, spacing=sampling), scipy_signed_distance(m, 5, sampling), atol=1e-4)


def test_signed_distance_3d_and_empty_and_full_classes():
    vol = np.stack(blob_masks(6, 24, 3, seed=2))  # (D, H, W)
    assert np.allclose(signed_distance_map(vol, 3), scipy_signed_distance(vol, 3), atol=1e-4)
    full = np.zeros((8, 8), np.int64)
    maps = signed_distance_map(full, 3)
    assert not maps.any()  # class 0 fills the image, 1 and 2 are empty: no boundary, zero maps


def test_ignored_pixels_count_as_outside_every_class():
    m = blob_masks(1, 32, 3, seed=3)[0]
    ignored = m.copy()
    ignored[:, :4] = 255
    maps = signed_distance_map(ignored, 3)
    as_other = np.where(ignored == 255, 3, ignored)
    assert np.allclose(maps, scipy_signed_distance(as_other, 4)[:3], atol=1e-4)
    with pytest.raises(ValueError, match="outside"):
        signed_distance_map(np.full((4, 4), 7), 3)


def test_distance_maps_are_picklable_for_dataloader_workers():
    fn = pickle.loads(pickle.dumps(DistanceMaps(4, spacing=(1.0, 2.0))))
    out = fn(blob_masks(1, 16, 4)[0])
    assert out["dist_map"].shape == (4, 16, 16) and out["dist_map"].dtype == np.float32


def test_distance_field_matches_monai_definition():
    masks = torch.from_numpy(np.stack(blob_masks(3, 32, 2, seed=4))) > 0
    masks = torch.cat([masks, torch.zeros(1, 32, 32, dtype=torch.bool), torch.ones(1, 32, 32, dtype=torch.bool)])
    field = distance_field(masks)
    for m, f in zip(masks.numpy(), field.numpy()):
        expected = np.zeros_like(f) if (m.all() or not m.any()) else \
            ndimage.distance_transform_edt(m) + ndimage.distance_transform_edt(~m)
        assert np.allclose(f, expected, atol=1e-4)


def test_inside_distance_and_label_boundaries():
    m = np.stack(blob_masks(2, 32, 4, seed=5))
    t = torch.from_numpy(m)
    d = inside_distance(batch_signed_distance(t, 4), t).numpy()
    for b in range(2):
        expected = np.zeros(m[b].shape)
        for k in np.unique(m[b]):
            expected[m[b] == k] = ndimage.distance_transform_edt(m[b] == k)[m[b] == k]
        assert np.allclose(d[b], expected, atol=1e-4)
    edges = label_boundaries(t).numpy()
    for b in range(2):
        lo = ndimage.minimum_filter(m[b], 3, mode="nearest")
        hi = ndimage.maximum_filter(m[b], 3, mode="nearest")
        assert np.array_equal(edges[b] > 0, lo != hi)


# ---------------------------------------------------------------- losses


@pytest.mark.parametrize("alpha,include_background", [(2.0, False), (1.0, True)])
def test_hausdorff_matches_monai(alpha, include_background):
    logits, target = blob_batch(seed=6)
    oracle = monai_losses.HausdorffDTLoss(alpha=alpha, include_background=include_background, softmax=True,
                                          to_onehot_y=True)
    got = build_loss("hausdorff", alpha=alpha, include_background=include_background)(logits, target)
    assert torch.allclose(got, oracle(logits, target.unsqueeze(1)), rtol=1e-4)


def test_hausdorff_precomputed_maps_equal_on_the_fly():
    logits, target = blob_batch(seed=7)
    dist = torch.from_numpy(np.stack([DistanceMaps(4)(m)["dist_map"] for m in target.numpy()]))
    for name in [n for n, spec in LOSSES.items() if spec.needs == {"dist_map"}]:  # the maps alone suffice
        loss = build_loss(name)
        assert torch.allclose(loss(logits, target), loss(logits, target, dist_map=dist), atol=1e-6), name
    with pytest.raises(ValueError, match="dist_map has shape"):
        build_loss("boundary")(logits, target, dist_map=dist[:, :2])


def test_hausdorff_erosion_variant_penalises_distant_errors_more():
    _, target = blob_batch(seed=8)
    perfect = F.one_hot(target, 4).permute(0, 3, 1, 2).float() * 10
    shifted = perfect.roll(6, dims=3)
    slightly = perfect.roll(1, dims=3)
    loss = build_loss("hausdorff", variant="erosion")
    assert loss(perfect, target) < loss(slightly, target) < loss(shifted, target)


def test_boundary_term_and_schedule():
    logits, target = blob_batch(seed=9)
    loss = build_loss("boundary")
    probs = logits.softmax(1).numpy()
    sd = np.stack([scipy_signed_distance(m, 4) for m in target.numpy()])
    t = torch.from_numpy
    from raysweep.losses._functional import check_inputs

    assert np.isclose(float(loss.boundary_term(logits, check_inputs(logits, target, 255))), (probs * sd).mean(),
                      rtol=1e-5)
    # The region term is the authors' per-image GDL with 1e-10 smoothing (LIVIAETS/boundary-loss, losses.py).
    gdl = build_loss("generalized_dice", per_image=True, smooth=1e-10)(logits, target)
    # The schedule is their StealWeight exactly (issue 13): region 1 - 0.01 e floored at 0.1, boundary 0.01 + 0.01 e
    # uncapped (tests/test_fidelity_boundary_b.py checks it against their scheduler).
    assert loss.weights() == (1.0, 0.01)
    loss.set_epoch(10)
    assert loss.weights() == pytest.approx((0.9, 0.11))
    loss.set_epoch(1000)
    assert loss.weights() == pytest.approx((0.1, 10.01))  # the region term keeps a floor of 0.1
    assert torch.allclose(loss(logits, target), 0.1 * gdl + 10.01 * t(np.array((probs * sd).mean(), np.float32)),
                          rtol=1e-4)
    inc = build_loss("boundary", schedule="increase")
    inc.set_epoch(1000)
    assert inc.weights() == pytest.approx((1.0, 10.01))


def test_dmce_matches_reference():
    logits, target = blob_batch(seed=10)
    decay, weight = 2.5, 1.5
    got = build_loss("dmce", decay=decay, weight=weight)(logits, target)
    m = target.numpy()
    d = np.zeros(m.shape)
    for b in range(m.shape[0]):
        for k in np.unique(m[b]):
            d[b][m[b] == k] = ndimage.distance_transform_edt(m[b] == k)[m[b] == k]
    w = 1 + weight * np.exp(-(d - 1) / decay)
    ce = F.cross_entropy(logits, target, reduction="none").numpy()
    assert np.isclose(float(got), (w * ce).mean(), rtol=1e-5)


def test_region_wise_rrw_matches_authors_definition():
    logits, target = blob_batch(seed=11)
    c = 4
    onehot = F.one_hot(target, c).permute(0, 3, 1, 2).numpy()
    rrw = np.zeros(onehot.shape, np.float64)
    for b in range(onehot.shape[0]):
        for k in range(c):
            dist = ndimage.distance_transform_edt(onehot[b, k])
            rrw[b, k] = -dist / (dist.max() + 1e-15)
    rrw[rrw == 0] = 1
    expected = (logits.softmax(1).numpy() * rrw).mean()
    assert np.isclose(float(build_loss("region_wise")(logits, target)), expected, rtol=1e-5)
    sd = np.stack([scipy_signed_distance(m, c) for m in target.numpy()])
    expected_sd = (logits.softmax(1).numpy() * sd).mean()
    assert np.isclose(float(build_loss("region_wise", map="signed_distance")(logits, target)), expected_sd, rtol=1e-5)


def bdou_reference(probs, target, c, smooth=1e-5, alpha_max=0.8):
    """The authors' formula (TransUNet/utils.py), for present classes, in NumPy."""
    out = []
    kernel = np.array([[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    for k in range(c):
        t = (target == k).astype(float)
        p = probs[:, k]
        y = np.stack([ndimage.convolve(ti, kernel, mode="constant") for ti in t]) * t
        y[y == 5] = 0
        perimeter, area = np.count_nonzero(y), np.count_nonzero(t)
        alpha = min(1 - 2 * (perimeter + smooth) / (area + smooth), alpha_max)
        inter, ysum, zsum = (p * t).sum(), (t * t).sum(), (p * p).sum()
        out.append((zsum + ysum - 2 * inter + smooth) / (zsum + ysum - (1 + alpha) * inter + smooth))
    return np.mean(out)


def test_boundary_dou_matches_authors_and_penalises_absent_classes():
    logits, target = blob_batch(seed=12)
    got = build_loss("boundary_dou")(logits, target)
    assert np.isclose(float(got), bdou_reference(logits.softmax(1).numpy(), target.numpy(), 4), rtol=1e-5)
    # Class 4 is absent: the authors' loss would be the constant 1 with zero gradient there.
    logits5 = torch.cat([logits, torch.zeros(2, 1, 40, 40)], 1).requires_grad_(True)
    build_loss("boundary_dou")(logits5, target).backward()
    assert logits5.grad[:, 4].abs().sum() > 0 and logits5.grad[:, 4].sum() > 0


def test_active_boundary_without_predicted_boundary_is_plain_ce():
    _, target = blob_batch(seed=13)
    flat = torch.zeros(2, 4, 40, 40, requires_grad=True)  # identical distributions everywhere: no boundary
    loss = ActiveBoundaryLoss()
    from raysweep.losses._functional import check_inputs

    term = loss.boundary_term(flat, check_inputs(flat, target, 255))
    assert term.item() == 0.0
    term.backward()
    assert (flat.grad == 0).all()
    assert torch.allclose(loss(flat, target), F.cross_entropy(flat, target))


def test_active_boundary_pulls_a_shifted_boundary_back():
    _, target = blob_batch(seed=14)
    shifted = (F.one_hot(target, 4).permute(0, 3, 1, 2).float() * 6).roll(3, dims=3)
    from raysweep.losses._functional import check_inputs

    t = check_inputs(shifted, target, 255)
    loss = ActiveBoundaryLoss()
    x = shifted.clone().requires_grad_(True)
    term = loss.boundary_term(x, t)
    assert term > 0
    term.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_boundary_aware_bins_and_head_contract():
    m = np.zeros((1, 12, 12), np.int64)
    m[0, 2:10, 2:10] = 1
    t = torch.from_numpy(m)
    bins = distance_bins(batch_signed_distance(t, 2), t, truncation=4.0, num_bins=3)
    # Distances 1, 2, 3 and 4+ (truncated) from the square's edge inwards; 3 uniform bins over [1, 4].
    assert bins[0, 2:6, 5].tolist() == [0, 1, 2, 2]
    assert bins[0, 0, 0] == 2  # background corner: distance sqrt(8) from the square, ceil 3
    loss = build_loss("boundary_aware", num_bins=3)
    assert loss.aux_channels == 3
    logits = torch.randn(1, 2, 12, 12)
    with pytest.raises(ValueError, match="aux_channels"):
        loss(logits, t)
    with pytest.raises(ValueError, match="aux_logits has shape"):
        loss(logits, t, aux_logits=torch.randn(1, 5, 12, 12))
    good = F.one_hot(bins, 3).permute(0, 3, 1, 2).float() * 20 - 10
    assert loss(logits, t, aux_logits=good) < loss(logits, t, aux_logits=-good)


def test_conditional_boundary_needs_features_and_rewards_consistent_ones():
    logits, target = blob_batch(seed=15, noise=0.5)
    loss = build_loss("conditional_boundary")
    with pytest.raises(ValueError, match="return_features=True"):
        loss(logits, target)
    consistent = F.one_hot(target, 4).permute(0, 3, 1, 2).float()  # features = class indicator
    noisy = torch.randn(2, 4, 40, 40, generator=torch.Generator().manual_seed(0))
    from raysweep.losses._functional import check_inputs

    t = check_inputs(logits, target, 255)
    a2c_good, a2pn_good, _ = loss.boundary_terms(logits, t, consistent)  # third term: neighbour classification
    a2c_bad, a2pn_bad, _ = loss.boundary_terms(logits, t, noisy)
    assert a2c_good < 1e-6 < a2c_bad and a2pn_good < a2pn_bad
    feats = noisy.clone().requires_grad_(True)
    loss(logits, target, features=feats).backward()
    assert feats.grad.abs().sum() > 0


def test_inverseform_net_distinguishes_aligned_from_shifted_boundaries(inversenet_cache):
    _, summary = inversenet_cache
    assert summary["explained"] > 0.25  # the tiny test net (300 steps) already recovers part of the transforms
    _, target = blob_batch(seed=16)
    onehot = F.one_hot(target, 4).permute(0, 3, 1, 2).float()
    loss = build_loss("inverseform")
    gt = soft_edges(onehot)
    aligned = loss.inverse_form(gt, gt)
    moved = loss.inverse_form(soft_edges(onehot.roll(4, dims=3)), gt)
    assert aligned < moved


def test_inverseform_missing_net_and_official_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="raysweep inverseform --dataset"):
        build_loss("inverseform", inversenet=str(tmp_path / "nope.pt"))
    # An official-format checkpoint (plain state dict, 'module.' prefix) loads into the authors' architecture.
    official = OfficialInverseNet(tile=16)
    path = tmp_path / "distance_measures_regressor.pth"
    torch.save({f"module.{k}": v for k, v in official.state_dict().items()}, path)
    net = load_inversenet(path)
    assert isinstance(net, OfficialInverseNet) and net.tile == 16
    assert not any(p.requires_grad for p in net.parameters())
    loss = build_loss("inverseform", inversenet=str(path))
    logits, target = blob_batch(seed=17)
    assert torch.isfinite(loss(logits, target))
    bad = tmp_path / "bad.pt"
    torch.save({"weight": torch.zeros(3)}, bad)
    with pytest.raises(ValueError, match="neither a raysweep InverseNet nor the official"):
        load_inversenet(bad)


def test_target_maps_hook_feeds_the_loss():
    from raysweep.losses import LOSSES

    for name, spec in LOSSES.items():
        fn = build_loss(name).target_maps(4)
        assert (fn is not None) == ("dist_map" in spec.needs), name
    fn = pickle.loads(pickle.dumps(build_loss("boundary").target_maps(4, spacing=(1.0, 1.0))))
    logits, target = blob_batch(seed=18)
    maps = torch.stack([torch.from_numpy(fn(m)["dist_map"]) for m in target.numpy()])
    loss = build_loss("boundary")
    assert torch.allclose(loss(logits, target, dist_map=maps), loss(logits, target))
