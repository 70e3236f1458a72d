"""Every loss in 3-D: logits (B, C, D, H, W) with targets (B, D, H, W).

Parametrised over the whole registry: a loss that takes 3-D input gets the property tests of
``test_losses_properties.py`` on volumes (the ignored-voxel test is that module's, run in both dimensions), equals
its 2-D value on a one-slice volume where its 3-D form says so, and agrees with MONAI's 3-D losses where MONAI has
one; a loss that is 2-D by construction refuses 3-D input, quoting
its reason (``LossSpec.dims_note``).
"""

import numpy as np
import pytest
import torch
from scipy.ndimage import distance_transform_edt

from conftest import extras_for, make_batch, make_volume
from raysweep.catalogue import three_d_cell
from raysweep.losses import LOSSES, build_loss
from raysweep.losses.maps import distance_field, signed_distance_map

monai_losses = pytest.importorskip("monai.losses")
pytestmark = pytest.mark.usefixtures("inversenet_cache")

VOLUMETRIC = sorted(n for n, s in LOSSES.items() if 3 in s.dims)
FLAT_ONLY = sorted(n for n, s in LOSSES.items() if 3 not in s.dims)
#: Losses whose 3-D form differs from the 2-D one on a single slice, by their definition (their ``dims_note`` says
#: why): the volume's first and last slices are border, or the band reaches across the slice.
NOT_SLICE_EXACT = {"boundary_dou", "conditional_boundary"}


def blob_volume(b=2, c=3, d=6, h=16, w=16, seed=0):
    """Targets with connected regions (balls), so boundaries are short and distance maps meaningful."""
    g = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[:d, :h, :w]
    target = np.zeros((b, d, h, w), dtype=np.int64)
    for i in range(b):
        for k in range(1, c):
            cz, cy, cx = g.uniform(1, d - 1), g.uniform(3, h - 3), g.uniform(3, w - 3)
            r = g.uniform(2.0, 4.0)
            target[i][(zz - cz) ** 2 * 4 + (yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = k
    logits = torch.from_numpy(g.normal(size=(b, c, d, h, w)).astype(np.float32)) * 2
    return logits, torch.from_numpy(target)


def run(name, logits, target, extras=None, **kw):
    logits = logits.clone().requires_grad_(True)
    value = build_loss(name, **kw)(logits, target, **(extras_for(name, logits) if extras is None else extras))
    value.backward()
    return value.detach(), logits.grad


@pytest.mark.parametrize("name", VOLUMETRIC)
def test_volume_gives_finite_scalar_and_gradient_that_raises_true_class(name):
    logits, target = make_volume()
    value, grad = run(name, logits, target)
    assert value.ndim == 0 and value.dtype == torch.float32 and torch.isfinite(value)
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    valid = target != 255
    true_grad = grad.gather(1, target.masked_fill(~valid, 0).unsqueeze(1)).squeeze(1)[valid]
    assert true_grad.sum() < 0


@pytest.mark.parametrize("name", VOLUMETRIC)
def test_all_ignored_volume_gives_zero_and_absent_class_stays_finite(name):
    logits, target = make_volume(seed=2)
    value, grad = run(name, logits, torch.full_like(target, 255))
    assert value == 0 and (grad == 0).all()
    target[target == 3] = 1  # class 3 absent
    value, grad = run(name, logits, target)
    assert torch.isfinite(value) and torch.isfinite(grad).all()


@pytest.mark.parametrize("name", VOLUMETRIC)
def test_perfect_volume_beats_random_beats_wrong(name):
    logits, target = blob_volume(seed=3)
    perfect = torch.nn.functional.one_hot(target, 3).movedim(-1, 1).float() * 12.0
    wrong = perfect.roll(1, dims=1)  # every voxel confidently wrong
    assert run(name, perfect, target)[0] < run(name, logits, target)[0] < run(name, wrong, target)[0]


@pytest.mark.parametrize("name", VOLUMETRIC)
def test_volume_in_bf16_autocast_is_computed_in_float32(name):
    logits, target = make_volume(seed=4)
    ref, _ = run(name, logits, target)
    x = logits.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = build_loss(name)(x.bfloat16(), target, **extras_for(name, logits))
    value.backward()
    assert value.dtype == torch.float32 and torch.isfinite(value) and torch.isfinite(x.grad).all()
    assert torch.allclose(value, ref, rtol=0.05, atol=0.05)


@pytest.mark.parametrize("name", sorted(set(VOLUMETRIC) - NOT_SLICE_EXACT))
def test_one_slice_volume_equals_the_2d_loss(name):
    logits, target = make_batch(seed=5)  # (2, 4, 12, 12), with ignored pixels
    extras2 = {}
    if "aux_logits" in LOSSES[name].needs:
        extras2["aux_logits"] = torch.randn(2, LOSSES[name].defaults["num_bins"], 12, 12)
    extras3 = {k: v.unsqueeze(2) for k, v in extras2.items()}
    v2, g2 = run(name, logits, target, extras2)
    v3, g3 = run(name, logits.unsqueeze(2), target.unsqueeze(1), extras3)
    assert torch.allclose(v2, v3, rtol=1e-5, atol=1e-6), (float(v2), float(v3))
    assert torch.allclose(g2, g3.squeeze(2), rtol=1e-4, atol=1e-6)


def test_hausdorff_erosion_variant_uses_the_3d_kernel():
    """One slice gives the 2-D 'dt' value but not the 2-D 'erosion' one: the 3-D kernel divides by 7, not 5."""
    logits, target = make_batch(seed=6, ignore_frac=0)
    v2, _ = run("hausdorff", logits, target, {}, variant="erosion")
    v3, _ = run("hausdorff", logits.unsqueeze(2), target.unsqueeze(1), {}, variant="erosion")
    assert not torch.allclose(v2, v3)


@pytest.mark.parametrize("name", sorted(NOT_SLICE_EXACT))
def test_not_slice_exact_losses_say_why(name):
    note = LOSSES[name].dims_note
    assert "one-slice volume" in note and "does not reproduce" in note


@pytest.mark.parametrize("name", FLAT_ONLY)
def test_flat_only_losses_refuse_volumes_with_their_reason(name):
    logits, target = make_volume()
    spec = LOSSES[name]
    with pytest.raises(ValueError, match=f"loss '{name}' takes 2-D input only") as err:
        build_loss(name)(logits, target, **extras_for(name, logits))
    assert spec.dims_note in str(err.value)
    assert three_d_cell(spec).startswith("**no**")


def test_registry_states_3d_for_every_loss():
    assert set(VOLUMETRIC) | set(FLAT_ONLY) == set(LOSSES)
    assert FLAT_ONLY == ["active_boundary", "inverseform"]
    assert all(LOSSES[n].to_dict()["dims"] == [2, 3] for n in VOLUMETRIC)


@pytest.mark.parametrize("logits_shape,target_shape,match", [
    ((2, 4, 5, 8, 8), (2, 8, 8), "2-D and 3-D inputs cannot be mixed"),
    ((2, 4, 8, 8), (2, 5, 8, 8), "2-D and 3-D inputs cannot be mixed"),
    ((2, 4, 5, 8, 8), (2, 5, 8, 9), "does not match logits"),
    ((2, 4, 5, 8, 8), (2, 1, 5, 8, 8), "squeeze the channel"),
    ((2, 4, 2, 5, 8, 8), (2, 2, 5, 8, 8), r"\(B, C, D, H, W\)"),
])
def test_mixed_or_bad_shapes_are_clear_errors(logits_shape, target_shape, match):
    with pytest.raises(ValueError, match=match):
        build_loss("dice")(torch.randn(logits_shape), torch.zeros(target_shape, dtype=torch.int64))


def test_features_must_be_volumes_for_volume_logits():
    logits, target = make_volume()
    with pytest.raises(ValueError, match="features"):
        build_loss("conditional_boundary")(logits, target, features=torch.randn(2, 8, 5, 5))


# ---------------------------------------------------------------- against MONAI's 3-D losses


def test_dice_tversky_dice_ce_match_monai_in_3d():
    logits, target = make_volume(seed=7)
    y = target.unsqueeze(1)
    oracle = monai_losses.DiceLoss(softmax=True, to_onehot_y=True, batch=True, ignore_index=255)
    assert torch.allclose(build_loss("dice")(logits, target), oracle(logits, y), rtol=1e-5)
    oracle = monai_losses.TverskyLoss(softmax=True, to_onehot_y=True, batch=True, alpha=0.3, beta=0.7,
                                      ignore_index=255)
    assert torch.allclose(build_loss("tversky", alpha=0.3, beta=0.7)(logits, target), oracle(logits, y), rtol=1e-5)
    logits, target = make_volume(seed=8, ignore_frac=0)
    oracle = monai_losses.DiceCELoss(softmax=True, to_onehot_y=True, batch=True, lambda_ce=0.5)
    got = build_loss("dice_ce", lambda_ce=0.5)(logits, target)
    assert torch.allclose(got, oracle(logits, target.unsqueeze(1)), rtol=1e-5)


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_focal_matches_monai_in_3d(gamma):
    """MONAI's softmax focal loss averages over classes too (its one-hot zeros count): ours is C times it."""
    logits, target = make_volume(seed=9, ignore_frac=0)
    oracle = monai_losses.FocalLoss(use_softmax=True, to_onehot_y=True, gamma=gamma)
    got = build_loss("focal", gamma=gamma)(logits, target)
    assert torch.allclose(got, oracle(logits, target.unsqueeze(1)) * logits.shape[1], rtol=1e-5)


@pytest.mark.parametrize("alpha,include_background", [(2.0, False), (1.0, True)])
def test_hausdorff_matches_monai_in_3d(alpha, include_background):
    logits, target = blob_volume(seed=10)
    oracle = monai_losses.HausdorffDTLoss(alpha=alpha, include_background=include_background, softmax=True,
                                          to_onehot_y=True)
    got = build_loss("hausdorff", alpha=alpha, include_background=include_background)(logits, target)
    assert torch.allclose(got, oracle(logits, target.unsqueeze(1)), rtol=1e-4)


# ---------------------------------------------------------------- anisotropic 3-D maps


def test_signed_distance_map_is_anisotropic_in_3d():
    _, target = blob_volume(b=1, seed=11)
    lab = target[0].numpy()
    spacing = (3.0, 0.8, 0.7)
    sd = signed_distance_map(lab, 3, spacing, ignore_index=None)
    for c in (1, 2):
        mask = lab == c
        outside = distance_transform_edt(~mask, sampling=spacing)
        inside = distance_transform_edt(mask, sampling=spacing)
        expected = np.where(mask, -np.maximum(inside - min(spacing), 0.0), outside)
        assert np.allclose(sd[c], expected, atol=1e-4)


def test_distance_field_is_anisotropic_in_3d():
    _, target = blob_volume(b=1, seed=12)
    masks = target == 1
    spacing = (2.5, 1.0, 0.5)
    got = distance_field(masks, spacing)[0].numpy()
    m = masks[0].numpy()
    expected = distance_transform_edt(m, sampling=spacing) + distance_transform_edt(~m, sampling=spacing)
    assert np.allclose(got, expected, atol=1e-4)


def test_hausdorff_uses_the_spacing_of_its_maps():
    """A loss given mm maps (``target_maps(C, spacing)``) measures its prediction fields in mm too."""
    logits, target = blob_volume(seed=13)
    spacing = (3.0, 1.0, 1.0)
    loss = build_loss("hausdorff")
    maps = loss.target_maps(3, spacing)
    dist = torch.from_numpy(np.stack([maps(m)["dist_map"] for m in target.numpy()]))
    mm = loss(logits, target, dist_map=dist)
    assert torch.allclose(mm, loss(logits, target), rtol=1e-6)  # maps recomputed with the same spacing
    assert not torch.allclose(mm, build_loss("hausdorff")(logits, target))  # voxel units differ
