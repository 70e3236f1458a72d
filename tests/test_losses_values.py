"""Each loss's value against a peer library (test-only oracle) or an independent NumPy computation.

Peers known to be wrong are not used as oracles: kornia's Lovász (right only for class 1 of a binary problem) and
Tversky (micro-averaged, so alpha and beta collapse), the survey's own code, mmseg's Dice denominator (it counts
ignored pixels, open-mmlab/mmsegmentation#1088).
"""

import math

import numpy as np
import pytest
import scipy.stats
import torch
import torch.nn.functional as F

import reference as ref
from conftest import make_batch
from raysweep.losses import build_loss

monai_losses = pytest.importorskip("monai.losses")
smp_losses = pytest.importorskip("segmentation_models_pytorch.losses")


def close(a, b, rtol=1e-5, atol=1e-6):
    a, b = (float(x.detach()) if isinstance(x, torch.Tensor) else float(x) for x in (a, b))
    return math.isclose(a, b, rel_tol=rtol, abs_tol=atol)


def np_(x):
    return x.double().numpy()


# ---------------------------------------------------------------- pixel losses


def test_ce_matches_torch(batch):
    logits, target = batch
    expected = F.cross_entropy(logits, target, ignore_index=255)
    assert close(build_loss("ce")(logits, target), expected)


def test_wce_explicit_weights_match_torch(batch):
    logits, target = batch
    w = torch.tensor([0.2, 1.0, 3.0, 0.7])
    expected = F.cross_entropy(logits, target, weight=w, ignore_index=255)
    assert close(build_loss("wce", class_weights=w.tolist())(logits, target), expected)


@pytest.mark.parametrize("weighting", ["inverse", "sqrt_inverse", "log_inverse"])
def test_wce_frequency_weights(weighting):
    logits, target = make_batch(c=3, seed=3)
    target[0] = 0  # imbalanced: class 0 dominates
    logits[:, 0] += 2.0  # and is predicted well, so rare-class pixels carry the larger CE
    valid = target != 255
    freq = torch.bincount(target[valid], minlength=3).double()
    f = freq / freq.sum()
    w = {"inverse": 1 / f, "sqrt_inverse": 1 / f.sqrt(), "log_inverse": 1 / torch.log(1.02 + f)}[weighting]
    expected = F.cross_entropy(logits.double(), target, weight=w, ignore_index=255)
    got = build_loss("wce", weighting=weighting)(logits, target)
    assert close(got, expected)
    # The weighting shifts the loss towards the rare classes: it differs from plain CE.
    assert not close(got, build_loss("ce")(logits, target), rtol=1e-3)


def test_wce_median_equals_inverse_and_dataset_frequencies(batch):
    logits, target = batch
    assert close(build_loss("wce", weighting="median")(logits, target),
                 build_loss("wce", weighting="inverse")(logits, target))
    freq = [100.0, 10.0, 1.0, 50.0]
    w = 1 / (torch.tensor(freq) / sum(freq))
    expected = F.cross_entropy(logits, target, weight=w, ignore_index=255)
    assert close(build_loss("wce", class_frequencies=freq)(logits, target), expected)


@pytest.mark.parametrize("k", [10.0, 37.5, 100.0])
def test_topk_matches_reference(batch, k):
    logits, target = batch
    assert close(build_loss("topk", k=k)(logits, target), ref.topk(np_(logits), target.numpy(), k))


def test_topk_100_is_ce(batch):
    logits, target = batch
    assert close(build_loss("topk", k=100.0)(logits, target), build_loss("ce")(logits, target))


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_focal_matches_reference_and_kornia(batch, gamma):
    import kornia.losses

    logits, target = batch
    got = build_loss("focal", gamma=gamma)(logits, target)
    assert close(got, ref.focal(np_(logits), target.numpy(), gamma))
    # kornia's softmax focal; alpha=None (a scalar alpha there weighs class 0 by 1 - alpha, the others by alpha).
    kor = kornia.losses.FocalLoss(alpha=None, gamma=gamma, reduction="none", ignore_index=255)(logits, target)
    valid = target != 255
    assert close(got, kor.sum(1)[valid].mean(), rtol=1e-4)


def test_focal_per_class_alpha(batch):
    logits, target = batch
    alpha = [0.25, 1.0, 2.0, 0.5]
    got = build_loss("focal", gamma=2.0, alpha=alpha)(logits, target)
    assert close(got, ref.focal(np_(logits), target.numpy(), 2.0, alpha))


def test_focal_gamma0_is_ce(batch):
    logits, target = batch
    assert close(build_loss("focal", gamma=0.0)(logits, target), build_loss("ce")(logits, target))


# ---------------------------------------------------------------- region losses


@pytest.mark.parametrize("per_image", [False, True])
def test_dice_matches_monai_with_ignore(batch, per_image):
    logits, target = batch
    oracle = monai_losses.DiceLoss(softmax=True, to_onehot_y=True, batch=not per_image, ignore_index=255)
    assert close(build_loss("dice", per_image=per_image)(logits, target), oracle(logits, target.unsqueeze(1)))


def test_dice_without_background_matches_monai():
    logits, target = make_batch(ignore_frac=0, seed=5)
    oracle = monai_losses.DiceLoss(softmax=True, to_onehot_y=True, batch=True, include_background=False)
    got = build_loss("dice", include_background=False)(logits, target)
    assert close(got, oracle(logits, target.unsqueeze(1)))


def test_dice_with_absent_class_matches_monai():
    logits, target = make_batch(c=5, ignore_frac=0, seed=2)
    target[target == 4] = 0  # class 4 absent: false positives on it must still count
    oracle = monai_losses.DiceLoss(softmax=True, to_onehot_y=True, batch=True)
    assert close(build_loss("dice")(logits, target), oracle(logits, target.unsqueeze(1)))


def test_log_cosh_dice(batch):
    logits, target = batch
    d = float(build_loss("dice")(logits, target))
    assert close(build_loss("log_cosh_dice")(logits, target), math.log(math.cosh(d)))


def test_jaccard_matches_reference_and_monai(batch):
    logits, target = batch
    got = build_loss("jaccard")(logits, target)
    assert close(got, ref.jaccard(np_(logits), target.numpy()))
    # MONAI's jaccard=True computes (2I + s) / (2U + s), i.e. our smoothing doubled.
    oracle = monai_losses.DiceLoss(softmax=True, to_onehot_y=True, batch=True, jaccard=True, ignore_index=255,
                                   smooth_nr=2e-5, smooth_dr=2e-5)
    assert close(got, oracle(logits, target.unsqueeze(1)))


@pytest.mark.parametrize("alpha,beta", [(0.3, 0.7), (0.7, 0.3), (1.0, 1.0)])
def test_tversky_matches_monai(batch, alpha, beta):
    logits, target = batch
    oracle = monai_losses.TverskyLoss(softmax=True, to_onehot_y=True, batch=True, alpha=alpha, beta=beta,
                                      ignore_index=255)
    got = build_loss("tversky", alpha=alpha, beta=beta)(logits, target)
    assert close(got, oracle(logits, target.unsqueeze(1)))
    assert close(got, ref.tversky(np_(logits), target.numpy(), alpha, beta))


def test_tversky_alpha_weighs_false_positives():
    # Predict class 1 everywhere; truth is half 0, half 1: errors on class 1 are false positives only.
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    target[..., 2:] = 1
    logits = torch.zeros(1, 2, 4, 4)
    logits[:, 1] = 10.0
    fp_heavy = build_loss("tversky", alpha=0.9, beta=0.1, include_background=False)(logits, target)
    fn_heavy = build_loss("tversky", alpha=0.1, beta=0.9, include_background=False)(logits, target)
    assert fp_heavy > fn_heavy + 0.2


def test_tversky_special_cases(batch):
    logits, target = batch
    assert close(build_loss("tversky", alpha=0.5, beta=0.5)(logits, target), build_loss("dice")(logits, target))
    assert close(build_loss("tversky", alpha=1.0, beta=1.0)(logits, target), build_loss("jaccard")(logits, target))


@pytest.mark.parametrize("gamma", [1.0, 4 / 3, 3.0])
def test_focal_tversky_matches_reference(batch, gamma):
    logits, target = batch
    got = build_loss("focal_tversky", gamma=gamma)(logits, target)
    assert close(got, ref.focal_tversky(np_(logits), target.numpy(), gamma, 0.3, 0.7))
    if gamma == 1.0:
        assert close(got, build_loss("tversky")(logits, target))


def test_sens_spec_matches_reference(batch):
    logits, target = batch
    assert close(build_loss("sens_spec", r=0.2)(logits, target), ref.sens_spec(np_(logits), target.numpy(), 0.2))


@pytest.mark.parametrize("weighting", ["square", "simple", "uniform"])
def test_generalized_dice_matches_monai(weighting):
    logits, target = make_batch(c=5, ignore_frac=0, seed=4)
    target[target == 3] = 1  # an absent class gets the largest finite weight, as in MONAI
    oracle = monai_losses.GeneralizedDiceLoss(softmax=True, to_onehot_y=True, batch=True, w_type=weighting)
    got = build_loss("generalized_dice", weighting=weighting)(logits, target)
    assert close(got, oracle(logits, target.unsqueeze(1)), rtol=1e-4)


@pytest.mark.parametrize("weighting", ["default", "GDL"])
def test_gwdl_matches_monai(weighting):
    logits, target = make_batch(c=4, ignore_frac=0, seed=6)
    m = np.array([[0, 1, 1, 1], [1, 0, 0.3, 1], [1, 0.3, 0, 1], [1, 1, 1, 0]], dtype=np.float32) * 2.0
    oracle = monai_losses.GeneralizedWassersteinDiceLoss(dist_matrix=m, weighting_mode=weighting)
    got = build_loss("gwdl", cost_matrix=m.tolist(), weighting=weighting, per_image=True)(logits, target)
    assert close(got, oracle(logits, target), rtol=1e-4)


def test_gwdl_identity_cost_ignores_confusion_between_cheap_classes():
    # Predicting class 2 where the truth is class 1 costs less when M[1, 2] is small.
    target = torch.ones(1, 4, 4, dtype=torch.long)
    target[:, 0] = 0
    logits = torch.full((1, 3, 4, 4), -5.0)
    logits[:, 2] = 5.0
    logits[:, 0, 0] = 10.0
    cheap = [[0, 1, 1], [1, 0, 0.1], [1, 0.1, 0]]
    assert build_loss("gwdl", cost_matrix=cheap)(logits, target) < build_loss("gwdl")(logits, target) - 0.3


def test_gwdl_ignore_index_equals_dropping_pixels():
    logits, target = make_batch(b=1, c=3, ignore_frac=0, seed=8)
    masked = target.clone()
    masked[:, :, 6:] = 255
    got = build_loss("gwdl")(logits, masked)
    kept = build_loss("gwdl")(logits[..., :6], target[..., :6])
    assert close(got, kept)


@pytest.mark.parametrize("per_image", [False, True])
def test_lovasz_matches_smp(per_image):
    logits, target = make_batch(b=3, c=5, seed=9)
    oracle = smp_losses.LovaszLoss(mode="multiclass", per_image=per_image, ignore_index=255)
    got = build_loss("lovasz", per_image=per_image)(logits, target)
    assert close(got, oracle(logits, target), rtol=1e-4)


def test_lovasz_all_classes_penalises_absent_class():
    logits, target = make_batch(c=4, ignore_frac=0, seed=10)
    target[target == 3] = 0
    present = build_loss("lovasz", classes="present")(logits, target)
    every = build_loss("lovasz", classes="all")(logits, target)
    # Class 3's loss with 'all' is the largest of its errors (max p_3), which is > 0 for random logits.
    p3_max = logits.softmax(1)[:, 3].max()
    assert close(every, (present * 3 + p3_max) / 4, rtol=1e-4)


def test_rmi_matches_reference():
    logits, target = make_batch(b=1, c=3, h=8, w=8, ignore_frac=0.05, seed=11)
    loss = build_loss("rmi", weight_ce=0.3, radius=2, pool_size=1)
    valid = (target != 255).unsqueeze(1).double()
    p = torch.softmax(logits.double(), 1) * valid + 1e-6  # the authors' floor also lands on ignored pixels
    onehot = F.one_hot(target.masked_fill(target == 255, 0), 3).permute(0, 3, 1, 2).double() * valid
    rmi = ref.rmi_term(onehot.numpy(), p.numpy(), 2).mean(0).sum()  # mean over images, sum over classes (authors)
    ce = F.cross_entropy(logits, target, ignore_index=255)
    assert close(loss(logits, target), 0.3 * ce + 0.7 * rmi, rtol=1e-4)


def test_rmi_rewards_structure():
    # A prediction equal to the labels explains them fully: RMI (weight_ce=0) is far lower than for noise.
    logits, target = make_batch(b=2, c=3, h=24, w=24, ignore_frac=0, seed=12)
    perfect = F.one_hot(target, 3).permute(0, 3, 1, 2).float() * 8.0
    loss = build_loss("rmi", weight_ce=0.0)
    assert loss(perfect, target) < loss(logits, target) - 0.5


def test_t_loss_matches_scipy_multivariate_t():
    logits, target = make_batch(b=2, c=3, h=4, w=4, ignore_frac=0, seed=13)
    nu = 2.5
    loss = build_loss("t_loss", nu=nu, epsilon=0.0)
    p = torch.softmax(logits.double(), 1)
    onehot = F.one_hot(target, 3).permute(0, 3, 1, 2).double()
    per_image = []
    for i in range(2):
        delta = (p[i] - onehot[i]).flatten().numpy()
        d = delta.size
        nll = -scipy.stats.multivariate_t(loc=np.zeros(d), shape=np.eye(d), df=nu).logpdf(delta)
        per_image.append(nll / d)
    assert close(loss(logits, target), np.mean(per_image), rtol=1e-5)


def test_t_loss_nu_is_learnable(batch):
    logits, target = batch
    loss = build_loss("t_loss")
    params = list(loss.parameters())
    assert len(params) == 1
    loss(logits, target).backward()
    assert params[0].grad is not None and params[0].grad.abs() > 0


# ---------------------------------------------------------------- combination losses


@pytest.mark.parametrize("alpha,beta", [(0.5, 0.5), (0.3, 0.8)])
def test_combo_matches_reference(alpha, beta):
    logits, target = make_batch(c=3, h=6, w=6, seed=14)
    got = build_loss("combo", alpha=alpha, beta=beta)(logits, target)
    assert close(got, ref.combo(np_(logits), target.numpy(), alpha, beta), rtol=1e-5)


def test_exp_log_matches_reference():
    logits, target = make_batch(c=3, h=6, w=6, seed=15)
    got = build_loss("exp_log", weight_dice=0.7, gamma_dice=0.4, gamma_ce=0.6)(logits, target)
    assert close(got, ref.exp_log(np_(logits), target.numpy(), 0.7, 0.4, 0.6), rtol=1e-5)


def test_unified_focal_matches_reference():
    logits, target = make_batch(c=3, h=6, w=6, seed=16)
    got = build_loss("unified_focal", weight=0.4, delta=0.7, gamma=0.3)(logits, target)
    assert close(got, ref.unified_focal(np_(logits), target.numpy(), 0.4, 0.7, 0.3), rtol=1e-5)


def test_dice_ce_matches_monai():
    logits, target = make_batch(ignore_frac=0, seed=17)
    oracle = monai_losses.DiceCELoss(softmax=True, to_onehot_y=True, batch=True, lambda_ce=0.5)
    got = build_loss("dice_ce", lambda_ce=0.5)(logits, target)
    assert close(got, oracle(logits, target.unsqueeze(1)))
