"""Fidelity of the pixel and combination losses (group pixel_combo): raysweep against the authors' released code.

Each record is ``(loss, case, hyperparameters, theirs, offset)``: ``theirs`` is the value the authors' (or the cited
reference) code printed on ``fidelity_inputs(**CASES[case])``, and raysweep's ``build_loss(loss, **hp)`` on the same
arrays must equal ``theirs + offset`` within 1e-4 relative. An offset is a constant the two conventions differ by (a
Dice *score* subtracted there, ``1 - Dice`` added here); it never depends on the inputs. The values were produced by
``docs/fidelity/harness/pixel_combo_torch.py`` and ``pixel_combo_keras.py`` from checkouts of the repositories named
in each block (none of their code is in raysweep). Losses without released code (``dmce``, ``exp_log``) are checked
against their papers' equations, written out below in NumPy.
"""

import math

import numpy as np
import pytest
import torch

from fidelity_inputs import CASES as BASE_CASES
from fidelity_inputs import fidelity_inputs
from raysweep.losses import build_loss

RTOL = 1e-4

#: The standard cases, plus ``small`` with 10% ignored pixels where the peer handles an ignore label the same way.
CASES = dict(BASE_CASES, small_ignore=dict(BASE_CASES["small"], ignore_frac=0.1))

# (loss, case, raysweep hyperparameters, value printed by their code, offset: ours = theirs + offset)
RECORDS = [
    # ---- docs/fidelity/harness/pixel_combo_torch.py, project venv (torch 2.14.1, CPU, float64 inputs).
    # torch 2.14.1+cu130: torch.nn.functional.cross_entropy(logits, target, weight, ignore_index=255)
    ('ce', 'small', {}, 0.7416797774571933, 0.0),
    ('wce', 'small', {'class_weights': [0.5, 1.0, 2.0, 4.0]}, 0.6911525256833536, 0.0),
    ('wce', 'small', {'weighting': 'inverse'}, 0.745634156637362, 0.0),
    ('ce', 'binary', {}, 0.3789858409511455, 0.0),
    ('wce', 'binary', {'class_weights': [0.5, 1.0]}, 0.3935528994457708, 0.0),
    ('wce', 'binary', {'weighting': 'inverse'}, 0.3820427607554227, 0.0),
    ('ce', 'wide', {}, 0.8716790513725908, 0.0),
    ('wce', 'wide', {'class_weights': [0.5, 1.0, 2.0, 4.0, 8.0]}, 0.8356518075090321, 0.0),
    ('wce', 'wide', {'weighting': 'inverse'}, 0.8858255324368686, 0.0),
    ('ce', 'small_ignore', {}, 0.7426048071661697, 0.0),
    ('wce', 'small_ignore', {'class_weights': [0.5, 1.0, 2.0, 4.0]}, 0.6905561397498334, 0.0),
    ('wce', 'small_ignore', {'weighting': 'inverse'}, 0.745761261079313, 0.0),
    # MIC-DKFZ/nnUNet@0e495086eb108ff79afe106291e8c15bd2f2bc3a: nnunetv2/training/loss/robust_ce_loss.py
    # TopKLoss(k) on target (B, 1, H, W); no ignored pixel (nnU-Net counts ignored pixels in the k% base).
    ('topk', 'small', {'k': 10.0}, 2.6087695493167886, 0.0),
    ('topk', 'small', {'k': 5.0}, 3.068418181790031, 0.0),
    ('topk', 'small', {'k': 33.3}, 1.65650614372167, 0.0),
    ('topk', 'small', {'k': 100.0}, 0.7416797774571933, 0.0),
    ('topk', 'binary', {'k': 10.0}, 1.9323560186701856, 0.0),
    ('topk', 'binary', {'k': 5.0}, 2.51546297184432, 0.0),
    ('topk', 'binary', {'k': 33.3}, 0.9890706405905932, 0.0),
    ('topk', 'binary', {'k': 100.0}, 0.3789858409511455, 0.0),
    ('topk', 'wide', {'k': 10.0}, 2.859028570454802, 0.0),
    ('topk', 'wide', {'k': 5.0}, 3.3873920675569558, 0.0),
    ('topk', 'wide', {'k': 33.3}, 1.856391438761787, 0.0),
    ('topk', 'wide', {'k': 100.0}, 0.8716790513725906, 0.0),
    # MIC-DKFZ/nnUNet@0e495086eb108ff79afe106291e8c15bd2f2bc3a: nnunetv2/training/loss/compound_losses.py
    # DC_and_CE_loss as nnUNetTrainer._build_loss builds it (ignore_label=255 in small_ignore)
    # (MemoryEfficientSoftDiceLoss, smooth 1e-5, weights 1/1; ddp=False). Its Dice term is -dc, raysweep's 1 - dc:
    # ours = theirs + lambda_dice (offset 1.0).
    ('dice_ce', 'small', {'per_image': False, 'include_background': False}, 0.14808802778907193, 1.0),
    ('dice_ce', 'small', {'per_image': False, 'include_background': True}, 0.15198825771994962, 1.0),
    ('dice_ce', 'small', {'per_image': True, 'include_background': False}, 0.15195744211860074, 1.0),
    ('dice_ce', 'small', {'per_image': True, 'include_background': True}, 0.15558933193869962, 1.0),
    ('dice_ce', 'small', {'lambda_ce': 0.5, 'include_background': False}, -0.2227518609395247, 1.0),
    ('dice_ce', 'binary', {'per_image': False, 'include_background': False}, -0.3747375419986836, 1.0),
    ('dice_ce', 'binary', {'per_image': False, 'include_background': True}, -0.39147917541390576, 1.0),
    ('dice_ce', 'binary', {'per_image': True, 'include_background': False}, -0.37443415435677685, 1.0),
    ('dice_ce', 'binary', {'per_image': True, 'include_background': True}, -0.39139537128335156, 1.0),
    ('dice_ce', 'binary', {'lambda_ce': 0.5, 'include_background': False}, -0.5642304624742563, 1.0),
    ('dice_ce', 'wide', {'per_image': False, 'include_background': False}, 0.3391091661186846, 1.0),
    ('dice_ce', 'wide', {'per_image': False, 'include_background': True}, 0.34156249329763966, 1.0),
    ('dice_ce', 'wide', {'per_image': True, 'include_background': False}, 0.3391091661186846, 1.0),
    ('dice_ce', 'wide', {'per_image': True, 'include_background': True}, 0.34156249329763966, 1.0),
    ('dice_ce', 'wide', {'lambda_ce': 0.5, 'include_background': False}, -0.09673035956761084, 1.0),
    ('dice_ce', 'small_ignore', {'per_image': False, 'include_background': False}, 0.15186657026202544, 1.0),
    ('dice_ce', 'small_ignore', {'per_image': False, 'include_background': True}, 0.15516991928012236, 1.0),
    ('dice_ce', 'small_ignore', {'per_image': True, 'include_background': False}, 0.1552175433912979, 1.0),
    ('dice_ce', 'small_ignore', {'per_image': True, 'include_background': True}, 0.1581917555609451, 1.0),
    ('dice_ce', 'small_ignore', {'lambda_ce': 0.5, 'include_background': False}, -0.21943583332105943, 1.0),
    # facebookresearch/fvcore@3378afe0d71dc2aa95e358bc78dc9b67cb48825a: fvcore/nn/focal_loss.py
    # sigmoid_focal_loss(z1 - z0, t, alpha, gamma, 'mean') (computes in float32);
    # two-class softmax = sigmoid of the logit difference, fvcore's alpha -> raysweep alpha [1 - a, a].
    ('focal', 'binary', {'gamma': 2.0}, 0.1765269935131073, 0.0),
    ('focal', 'binary', {'gamma': 2.0, 'alpha': [0.75, 0.25]}, 0.083523690700531, 0.0),
    ('focal', 'binary', {'gamma': 0.5}, 0.28929659724235535, 0.0),
    ('focal', 'binary', {'gamma': 0.5, 'alpha': [0.75, 0.25]}, 0.14000096917152405, 0.0),
    ('focal', 'binary', {'gamma': 0.0}, 0.37898585200309753, 0.0),
    ('focal', 'binary', {'gamma': 0.0, 'alpha': [0.75, 0.25]}, 0.18558162450790405, 0.0),
    # AdeelH/pytorch-multi-class-focal-loss@2477bf68ac61d2d2e5e044c63f70b156073c5ffd: focal_loss.py
    # focal_loss(alpha, gamma, 'mean', ignore_index=255)
    ('focal', 'small', {'gamma': 2.0}, 0.4037872692996819, 0.0),
    ('focal', 'small', {'gamma': 2.0, 'alpha': [0.1, 0.2, 0.3, 0.4]}, 0.09279236670066437, 0.0),
    ('focal', 'small', {'gamma': 0.5}, 0.6084698972171981, 0.0),
    ('focal', 'small', {'gamma': 0.5, 'alpha': [0.1, 0.2, 0.3, 0.4]}, 0.14114094200914837, 0.0),
    ('focal', 'wide', {'gamma': 2.0}, 0.49944996269835923, 0.0),
    ('focal', 'wide', {'gamma': 2.0, 'alpha': [0.1, 0.2, 0.3, 0.4, 0.5]}, 0.1576390453434465, 0.0),
    ('focal', 'wide', {'gamma': 0.5}, 0.7290315569568823, 0.0),
    ('focal', 'wide', {'gamma': 0.5, 'alpha': [0.1, 0.2, 0.3, 0.4, 0.5]}, 0.23312217707311286, 0.0),
    ('focal', 'small_ignore', {'gamma': 2.0}, 0.40215797233662126, 0.0),
    ('focal', 'small_ignore', {'gamma': 2.0, 'alpha': [0.1, 0.2, 0.3, 0.4]}, 0.0918034545141392, 0.0),
    ('focal', 'small_ignore', {'gamma': 0.5}, 0.608606611508494, 0.0),
    ('focal', 'small_ignore', {'gamma': 0.5, 'alpha': [0.1, 0.2, 0.3, 0.4]}, 0.14047507273923113, 0.0),
    # ---- docs/fidelity/harness/pixel_combo_keras.py, tensorflow-cpu 2.15.1 / keras 2.15.0 venv in /tmp.
    # asgsaeid/ComboLoss@86d62479ddf09e9ab8266d5c451d3bf5be3d9f8d: combo_loss.py Combo_loss, with its sign bug FIXED
    # (the (1 - ce_w)(1 - y) log(1 - p) term subtracted, as in the paper, instead of added). Module globals
    # ce_w = beta, ce_d_w = alpha, smooth = 1; called once per class channel (y_true = one-hot[..., c],
    # y_pred = softmax[..., c]) and averaged over c. The authors subtract the Dice score, raysweep adds 1 - Dice:
    # ours = theirs + (1 - alpha).
    ('combo', 'small', {'alpha': 0.5, 'beta': 0.5, 'smooth': 1.0}, -0.21290509087167744, 0.5),
    ('combo', 'small', {'alpha': 0.3, 'beta': 0.7, 'smooth': 1.0}, -0.36124858401788107, 0.7),
    ('combo', 'small', {'alpha': 0.8, 'beta': 0.4, 'smooth': 1.0}, 0.01003270734563521, 0.19999999999999996),
    ('combo', 'binary', {'alpha': 0.5, 'beta': 0.5, 'smooth': 1.0}, -0.290542667296665, 0.5),
    ('combo', 'binary', {'alpha': 0.3, 'beta': 0.7, 'smooth': 1.0}, -0.48255690240556004, 0.7),
    ('combo', 'binary', {'alpha': 0.8, 'beta': 0.4, 'smooth': 1.0}, -0.002521314633322308, 0.19999999999999996),
    ('combo', 'wide', {'alpha': 0.5, 'beta': 0.5, 'smooth': 1.0}, -0.19046467283450297, 0.5),
    ('combo', 'wide', {'alpha': 0.3, 'beta': 0.7, 'smooth': 1.0}, -0.32351928652602574, 0.7),
    ('combo', 'wide', {'alpha': 0.8, 'beta': 0.4, 'smooth': 1.0}, 0.009612077685553808, 0.19999999999999996),
    # mlyg/unified-focal-loss@411c9c5ce43b2ef847f0903d1b841512ad8d2eee: loss_functions.py
    # asym_unified_focal_loss(weight, delta, gamma) on softmax
    # probabilities, channels-last (binary only: channel 0 background, 1 foreground). The code weighs the
    # focal Tversky part by `weight`, the paper (Eq. 15) the focal part: ours(weight=w) = theirs(weight=1-w).
    # Per-image Tversky sums and smooth = K.epsilon() = 1e-7: ours run with per_image=True, smooth=1e-7.
    # Shim: asymmetric_focal_loss's misplaced docstring (an IndentationError at import) moved; no logic changed.
    ('unified_focal', 'binary', {'weight': 0.5, 'delta': 0.6, 'gamma': 0.5, 'per_image': True, 'smooth': 1e-07},
     0.2634887782942794, 0.0),
    ('unified_focal', 'binary', {'weight': 0.3, 'delta': 0.7, 'gamma': 0.3, 'per_image': True, 'smooth': 1e-07},
     0.26055466371992647, 0.0),
    ('unified_focal', 'binary', {'weight': 0.8, 'delta': 0.6, 'gamma': 0.75, 'per_image': True, 'smooth': 1e-07},
     0.22494077036642568, 0.0),
    ('unified_focal', 'binary', {'weight': 0.5, 'delta': 0.5, 'gamma': 0.9, 'per_image': True, 'smooth': 1e-07},
     0.34803738044694577, 0.0),
]

# asgsaeid/ComboLoss@86d62479ddf09e9ab8266d5c451d3bf5be3d9f8d Combo_loss AS RELEASED (the + sign): raysweep must NOT
# agree with these; they document the authors' sign bug (it rewards confident false positives).
COMBO_AS_RELEASED = [
    ('combo', 'small', {'alpha': 0.5, 'beta': 0.5, 'smooth': 1.0}, -0.2844871381534676, 0.5),
    ('combo', 'small', {'alpha': 0.3, 'beta': 0.7, 'smooth': 1.0}, -0.38701812103932554, 0.7),
    ('combo', 'small', {'alpha': 0.8, 'beta': 0.4, 'smooth': 1.0}, -0.1274048234354019, 0.19999999999999996),
    ('combo', 'binary', {'alpha': 0.5, 'beta': 0.5, 'smooth': 1.0}, -0.3852891275344514, 0.5),
    ('combo', 'binary', {'alpha': 0.3, 'beta': 0.7, 'smooth': 1.0}, -0.5166656280911632, 0.7),
    ('combo', 'binary', {'alpha': 0.8, 'beta': 0.4, 'smooth': 1.0}, -0.18443451828987217, 0.19999999999999996),
    ('combo', 'wide', {'alpha': 0.5, 'beta': 0.5, 'smooth': 1.0}, -0.2528910788331358, 0.5),
    ('combo', 'wide', {'alpha': 0.3, 'beta': 0.7, 'smooth': 1.0}, -0.3459927926855335, 0.7),
    ('combo', 'wide', {'alpha': 0.8, 'beta': 0.4, 'smooth': 1.0}, -0.11024662183182128, 0.19999999999999996),
]


def inputs(case):
    logits, target = fidelity_inputs(**CASES[case])
    return torch.from_numpy(logits), torch.from_numpy(target)


def rel_diff(ours, theirs):
    return abs(ours - theirs) / max(abs(theirs), 1e-12)


def ours(loss, case, hp):
    logits, target = inputs(case)
    return float(build_loss(loss, **hp)(logits, target))


@pytest.mark.parametrize("loss,case,hp,theirs,offset", RECORDS,
                         ids=[f"{r[0]}-{r[1]}-{i}" for i, r in enumerate(RECORDS)])
def test_matches_authors_code(loss, case, hp, theirs, offset):
    assert rel_diff(ours(loss, case, hp), theirs + offset) <= RTOL


@pytest.mark.parametrize("loss,case,hp,theirs,offset", COMBO_AS_RELEASED)
def test_combo_differs_from_released_sign_bug(loss, case, hp, theirs, offset):
    # The released line adds -(1-beta)(1-t)log(1-p) with the wrong sign; raysweep follows the paper, so it must be
    # clearly away from the as-released value (the fixed-line values above agree within 1e-4).
    assert rel_diff(ours(loss, case, hp), theirs + offset) > 1e-2


# ------------------------------------------------------------------ no released code: the papers' equations


def _softmax(x):
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _nearest_other_label(labels):
    """Euclidean distance of each pixel of one (H, W) map to the nearest pixel of another label (brute force); 0 for
    every pixel when the map holds a single label (no boundary)."""
    h, w = labels.shape
    yy, xx = np.mgrid[:h, :w]
    pts = np.stack([yy.ravel(), xx.ravel()], 1).astype(float)
    lab = labels.ravel()
    d = np.zeros(h * w)
    for n in range(h * w):
        other = lab != lab[n]
        if other.any():
            d[n] = np.sqrt(((pts[other] - pts[n]) ** 2).sum(1)).min()
    return d.reshape(h, w)


def dmce_paper(logits, target, decay, weight):
    """Calivá et al. (MIDL 2019), survey Eq.: L = mean_n (1 + Phi_n) CE_n, Phi the inverted distance map of the ground
    truth boundary, here Phi_n = weight * exp(-(d_n - 1) / decay) with d_n the distance to the nearest pixel of
    another class (raysweep's documented decay form; 0 where a class has no boundary)."""
    p = _softmax(logits)
    total, count = 0.0, 0
    for b in range(logits.shape[0]):
        d = _nearest_other_label(target[b])
        for i in range(target.shape[1]):
            for j in range(target.shape[2]):
                k = target[b, i, j]
                phi = weight * math.exp(-(d[i, j] - 1.0) / decay) if d[i, j] > 0 else 0.0
                total += (1.0 + phi) * -math.log(p[b, k, i, j])
                count += 1
    return total / count


def exp_log_paper(logits, target, w_dice, g_dice, g_ce, smooth=1.0, freq=None):
    """Wong et al. (MICCAI 2018), Eqs. 1-4: w_dice E_i[(-ln Dice_i)^g_dice] + w_cross E_x[w_l (-ln p_l(x))^g_ce], with
    Dice_i = (2 sum_x d_il p_i + eps) / (sum_x (d_il + p_i) + eps), eps = 1, w_l = (sum_k f_k / f_l)^0.5. The batch
    is one volume (Dice sums over all its pixels); f from the batch unless given."""
    p = _softmax(logits)
    c = logits.shape[1]
    dice_terms = []
    for i in range(c):
        t_i = (target == i).astype(float)
        dice = (2 * (t_i * p[:, i]).sum() + smooth) / (t_i.sum() + p[:, i].sum() + smooth)
        dice_terms.append((-math.log(dice)) ** g_dice)
    f = np.array([np.sum(target == k) for k in range(c)], float) if freq is None else np.asarray(freq, float)
    w = np.sqrt(f.sum() / f)
    ce_terms = []
    for b, i, j in np.ndindex(*target.shape):
        k = target[b, i, j]
        ce_terms.append(w[k] * (-math.log(p[b, k, i, j])) ** g_ce)
    return w_dice * float(np.mean(dice_terms)) + (1 - w_dice) * float(np.mean(ce_terms))


@pytest.mark.parametrize("case", ["small", "binary", "wide"])
@pytest.mark.parametrize("decay,weight", [(3.0, 1.0), (1.0, 2.0), (10.0, 0.5)])
def test_dmce_matches_paper_equation(case, decay, weight):
    logits, target = fidelity_inputs(**CASES[case])
    theirs = dmce_paper(logits, target, decay, weight)
    assert rel_diff(ours("dmce", case, {"decay": decay, "weight": weight}), theirs) <= RTOL


@pytest.mark.parametrize("case", ["small", "binary", "wide"])
@pytest.mark.parametrize("hp", [dict(weight_dice=0.8, gamma_dice=0.3, gamma_ce=0.3),
                                dict(weight_dice=0.5, gamma_dice=1.0, gamma_ce=1.0),
                                dict(weight_dice=0.3, gamma_dice=2.0, gamma_ce=0.5)])
def test_exp_log_matches_paper_equation(case, hp):
    logits, target = fidelity_inputs(**CASES[case])
    theirs = exp_log_paper(logits, target, hp["weight_dice"], hp["gamma_dice"], hp["gamma_ce"])
    assert rel_diff(ours("exp_log", case, hp), theirs) <= RTOL


def test_exp_log_training_set_frequencies_match_paper_equation():
    logits, target = fidelity_inputs(**CASES["small"])
    freq = [500.0, 300.0, 150.0, 50.0]
    theirs = exp_log_paper(logits, target, 0.8, 0.3, 0.3, freq=freq)
    assert rel_diff(ours("exp_log", "small", {"class_frequencies": freq}), theirs) <= RTOL
