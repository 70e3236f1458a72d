"""The region losses against their authors' released code, on the fixed inputs of ``tests/fidelity_inputs.py``.

The authors' code was run outside the project by ``docs/fidelity/harness/region_*.py`` (which import it from a
checkout); the values it printed are recorded below as data, one block per repository with its commit, the file and
function run, and the shims applied. Each row is ``(loss, case, raysweep hyperparameters, their value, scale)``, where
``scale`` says how their value relates to raysweep's when the two compute the same thing on a different scale
(``same``; ``times_D``: their per-image NLL is raysweep's per-element NLL times ``D = C*H*W``; ``times_C``: they sum
over classes where raysweep averages; ``vnet``: V-Net sums the per-image Dice score over the batch).

Losses without released code (``jaccard``) are compared with the paper's equation computed here in NumPy. The table
that summarises this file is ``docs/fidelity/region.md``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fidelity_inputs import CASES, fidelity_inputs
from raysweep.losses import build_loss

RTOL = 1e-4


def case_inputs(name: str):
    """The recorded inputs by name, built exactly as ``docs/fidelity/harness/region_common.py::case_inputs``."""
    if name == "small_ignore":
        return fidelity_inputs(**CASES["small"], ignore_frac=0.1)
    if name == "small_absent":  # class 3 relabelled 0: one class absent from the target
        logits, target = fidelity_inputs(**CASES["small"])
        target[target == 3] = 0
        return logits, target
    if name.endswith("_hard"):  # hard predictions: 30 * one-hot(argmax), softmax 0/1 to ~1e-13
        logits, target = fidelity_inputs(**CASES[name[:-5]])
        return 30.0 * (logits == logits.max(axis=1, keepdims=True)).astype(np.float64), target
    return fidelity_inputs(**CASES[name])


def on_their_scale(value: float, scale: str, logits: np.ndarray) -> float:
    b, c, h, w = logits.shape
    if scale == "same":
        return value
    if scale == "times_D":
        return value * c * h * w
    if scale == "times_C":
        return value * c
    if scale == "vnet":
        return b * (1.0 - value)
    raise ValueError(scale)


# ---- lovasz: bermanmaxim/LovaszSoftmax@7d48792d35a04d3167de488dd00daabbccd8334b, pytorch/lovasz_losses.py,
# lovasz_softmax(softmax(logits) as float32, target, classes, per_image, ignore=255), run by
# docs/fidelity/harness/region_torch.py. No shim (float32 probabilities, as its lovasz_grad(...).float() needs).
LOVASZ = [
    ('lovasz', 'small', {'per_image': False, 'classes': 'present'}, 0.492901086807251, 'same'),
    ('lovasz', 'small', {'per_image': False, 'classes': 'all'}, 0.492901086807251, 'same'),
    ('lovasz', 'small', {'per_image': True, 'classes': 'present'}, 0.494210422039032, 'same'),
    ('lovasz', 'small', {'per_image': True, 'classes': 'all'}, 0.494210422039032, 'same'),
    ('lovasz', 'binary', {'per_image': False, 'classes': 'present'}, 0.3346107602119446, 'same'),
    ('lovasz', 'binary', {'per_image': False, 'classes': 'all'}, 0.3346107602119446, 'same'),
    ('lovasz', 'binary', {'per_image': True, 'classes': 'present'}, 0.334469199180603, 'same'),
    ('lovasz', 'binary', {'per_image': True, 'classes': 'all'}, 0.334469199180603, 'same'),
    ('lovasz', 'wide', {'per_image': False, 'classes': 'present'}, 0.5338045358657837, 'same'),
    ('lovasz', 'wide', {'per_image': False, 'classes': 'all'}, 0.5338045358657837, 'same'),
    ('lovasz', 'wide', {'per_image': True, 'classes': 'present'}, 0.5338045358657837, 'same'),
    ('lovasz', 'wide', {'per_image': True, 'classes': 'all'}, 0.5338045358657837, 'same'),
    ('lovasz', 'small_ignore', {'per_image': False, 'classes': 'present'}, 0.49471408128738403, 'same'),
    ('lovasz', 'small_ignore', {'per_image': False, 'classes': 'all'}, 0.49471408128738403, 'same'),
    ('lovasz', 'small_ignore', {'per_image': True, 'classes': 'present'}, 0.4956107437610626, 'same'),
    ('lovasz', 'small_ignore', {'per_image': True, 'classes': 'all'}, 0.4956107437610626, 'same'),
    ('lovasz', 'small_absent', {'per_image': False, 'classes': 'present'}, 0.5631908774375916, 'same'),
    ('lovasz', 'small_absent', {'per_image': False, 'classes': 'all'}, 0.6722992658615112, 'same'),
    ('lovasz', 'small_absent', {'per_image': True, 'classes': 'present'}, 0.5654341578483582, 'same'),
    ('lovasz', 'small_absent', {'per_image': True, 'classes': 'all'}, 0.6733129620552063, 'same'),
]

# ---- gwdl: LucasFidon/GeneralizedWassersteinDiceLoss@4aa35abb077863f58c392f493886b967d6cc3eb6,
# generalized_wasserstein_dice_loss/loss.py, GeneralizedWassersteinDiceLoss(M, weighting_mode)(logits, target),
# run by region_torch.py. No shim. It is per image only (raysweep per_image=True) and smooths with
# epsilon = np.spacing(1) (raysweep smooth=2.2e-16). The 5-class cost matrix is NiftyNet's M_tree.
GWDL = [
    ('gwdl', 'small', {'weighting': 'default', 'per_image': True, 'smooth': 2.220446049250313e-16}, 0.3129842397196084, 'same'),
    ('gwdl', 'small', {'weighting': 'GDL', 'per_image': True, 'smooth': 2.220446049250313e-16}, 0.2547631897259575, 'same'),
    ('gwdl', 'binary', {'weighting': 'default', 'per_image': True, 'smooth': 2.220446049250313e-16}, 0.246580049608077, 'same'),
    ('gwdl', 'binary', {'weighting': 'GDL', 'per_image': True, 'smooth': 2.220446049250313e-16}, 0.12872554002936498, 'same'),
    ('gwdl', 'wide', {'weighting': 'default', 'per_image': True, 'smooth': 2.220446049250313e-16}, 0.34162642177730107, 'same'),
    ('gwdl', 'wide', {'weighting': 'GDL', 'per_image': True, 'smooth': 2.220446049250313e-16}, 0.30289292635928067, 'same'),
    ('gwdl', 'wide', {'weighting': 'default', 'per_image': True, 'smooth': 2.220446049250313e-16, 'cost_matrix': [[0.0, 1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.6, 0.2, 0.5], [1.0, 0.6, 0.0, 0.6, 0.7], [1.0, 0.2, 0.6, 0.0, 0.5], [1.0, 0.5, 0.7, 0.5, 0.0]]}, 0.21751265740137138, 'same'),
    ('gwdl', 'wide', {'weighting': 'GDL', 'per_image': True, 'smooth': 2.220446049250313e-16, 'cost_matrix': [[0.0, 1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.6, 0.2, 0.5], [1.0, 0.6, 0.0, 0.6, 0.7], [1.0, 0.2, 0.6, 0.0, 0.5], [1.0, 0.5, 0.7, 0.5, 0.0]]}, 0.19519607017266116, 'same'),
]

# ---- t_loss: Digital-Dermatology/t-loss@f132e8767c2191463bbcc2c15310cd8df1b7ab30, tloss.py, TLoss(config, nu=log(nu),
# epsilon=1e-8)(input, target), run by region_torch.py. Their loss is binary (foreground probability (B, H, W),
# D = image_size^2) with constant log-precisions lambdas = 1. Shims for the setting where both compute the same
# thing: input = the C softmax maps of each image stacked to (B, C*H, W) against the stacked one-hot, D = C*H*W,
# lambdas = 0 (Sigma = I, the paper's form). Their per-image NLL is raysweep's per-element NLL times D.
TLOSS = [
    ('t_loss', 'small', {'nu': 2.718281828459045, 'epsilon': 1e-08}, 1219.074493311572, 'times_D'),
    ('t_loss', 'small', {'nu': 1.0, 'epsilon': 1e-08}, 1214.3425324704713, 'times_D'),
    ('t_loss', 'small', {'nu': 7.38905609893065, 'epsilon': 1e-08}, 1232.8826741865023, 'times_D'),
    ('t_loss', 'binary', {'nu': 2.718281828459045, 'epsilon': 1e-08}, 749.4120088253226, 'times_D'),
    ('t_loss', 'binary', {'nu': 1.0, 'epsilon': 1e-08}, 745.5616361942025, 'times_D'),
    ('t_loss', 'binary', {'nu': 7.38905609893065, 'epsilon': 1e-08}, 760.760617926453, 'times_D'),
    ('t_loss', 'wide', {'nu': 2.718281828459045, 'epsilon': 1e-08}, 3640.9814722898664, 'times_D'),
    ('t_loss', 'wide', {'nu': 1.0, 'epsilon': 1e-08}, 3635.3249219785357, 'times_D'),
    ('t_loss', 'wide', {'nu': 7.38905609893065, 'epsilon': 1e-08}, 3657.3861610966924, 'times_D'),
]

# ---- rmi: ZJULearning/RMI@10a40cdbeb58bdd1bd7125fde73b48b12f9452c7, losses/rmi/rmi.py,
# RMILoss(num_classes, rmi_radius, rmi_pool_size=rmi_pool_stride).rmi_lower_bound(onehot, softmax * valid + 1e-6),
# run by region_torch.py, compared with raysweep's RMI term alone (weight_ce=0). Shims: torch.cuda.DoubleTensor ->
# CPU float64 type, torch.cholesky -> torch.linalg.cholesky. Their forward pairs it with sigmoid BCE on sigmoid
# probabilities; raysweep uses softmax (deliberate, see the module docstring).
RMI = [
    ('rmi', 'small', {'weight_ce': 0.0, 'radius': 3, 'pool_size': 3}, 4.1039628982543945, 'same'),
    ('rmi', 'small', {'weight_ce': 0.0, 'radius': 2, 'pool_size': 1}, 8.853097915649414, 'same'),
    ('rmi', 'small', {'weight_ce': 0.0, 'radius': 3, 'pool_size': 2}, 6.373701572418213, 'same'),
    ('rmi', 'small', {'weight_ce': 0.0, 'radius': 2, 'pool_size': 4}, 3.6589596271514893, 'same'),
    ('rmi', 'binary', {'weight_ce': 0.0, 'radius': 3, 'pool_size': 3}, 1.4591991901397705, 'same'),
    ('rmi', 'binary', {'weight_ce': 0.0, 'radius': 2, 'pool_size': 1}, 4.557828426361084, 'same'),
    ('rmi', 'binary', {'weight_ce': 0.0, 'radius': 3, 'pool_size': 2}, 2.987764358520508, 'same'),
    ('rmi', 'binary', {'weight_ce': 0.0, 'radius': 2, 'pool_size': 4}, 1.2335071563720703, 'same'),
    ('rmi', 'wide', {'weight_ce': 0.0, 'radius': 3, 'pool_size': 3}, 8.842266082763672, 'same'),
    ('rmi', 'wide', {'weight_ce': 0.0, 'radius': 2, 'pool_size': 1}, 13.626964569091797, 'same'),
    ('rmi', 'wide', {'weight_ce': 0.0, 'radius': 3, 'pool_size': 2}, 10.85255241394043, 'same'),
    ('rmi', 'wide', {'weight_ce': 0.0, 'radius': 2, 'pool_size': 4}, 7.971622943878174, 'same'),
    ('rmi', 'small_ignore', {'weight_ce': 0.0, 'radius': 3, 'pool_size': 3}, 4.088425636291504, 'same'),
    ('rmi', 'small_ignore', {'weight_ce': 0.0, 'radius': 2, 'pool_size': 1}, 8.72940444946289, 'same'),
    ('rmi', 'small_ignore', {'weight_ce': 0.0, 'radius': 3, 'pool_size': 2}, 6.346108436584473, 'same'),
    ('rmi', 'small_ignore', {'weight_ce': 0.0, 'radius': 2, 'pool_size': 4}, 3.618048667907715, 'same'),
]

RECORDED = LOVASZ + GWDL + TLOSS + RMI


# ---- jaccard: Rahman & Wang (ISVC 2016) released no code. Their equation, computed here independently:
# L = 1 - (1/C) sum_c (I_c + s) / (U_c + s), I_c = sum_n t_n^c y_n^c, U_c = sum_n (t_n^c + y_n^c - t_n^c y_n^c), on
# softmax probabilities y over the valid pixels (the paper's sums run over all pixels; ignored ones are dropped).


def jaccard_paper(logits, target, smooth=1e-5, per_image=False):
    b, c = logits.shape[:2]
    e = np.exp(logits - logits.max(1, keepdims=True))
    y = e / e.sum(1, keepdims=True)
    groups = [[i] for i in range(b)] if per_image else [list(range(b))]
    losses = []
    for imgs in groups:
        per_class = []
        for k in range(c):
            inter = union = 0.0
            for i in imgs:
                valid = target[i] != 255
                t = (target[i] == k)[valid].astype(float)
                p = y[i, k][valid]
                inter += float((t * p).sum())
                union += float((t + p - t * p).sum())
            per_class.append(1.0 - (inter + smooth) / (union + smooth))
        losses.append(np.mean(per_class))
    return float(np.mean(losses))


@pytest.mark.parametrize("case", ["small", "binary", "wide", "small_ignore", "small_absent"])
@pytest.mark.parametrize("smooth,per_image", [(1e-5, False), (1.0, False), (1e-5, True)])
def test_jaccard_matches_paper_equation(case, smooth, per_image):
    logits, target = case_inputs(case)
    ours = float(build_loss("jaccard", smooth=smooth, per_image=per_image)(torch.from_numpy(logits).float(),
                                                                           torch.from_numpy(target)))
    theirs = jaccard_paper(logits, target, smooth, per_image)
    assert abs(ours - theirs) / abs(theirs) <= RTOL


def rel_diff(ours: float, theirs: float) -> float:
    return abs(ours - theirs) / max(abs(theirs), 1e-12)


def raysweep_value(loss, case, hp, scale):
    logits, target = case_inputs(case)
    value = float(build_loss(loss, **hp)(torch.from_numpy(logits).float(), torch.from_numpy(target)).detach())
    return on_their_scale(value, scale, logits)


@pytest.mark.parametrize("loss,case,hp,theirs,scale", RECORDED,
                         ids=[f"{r[0]}-{r[1]}-{i}" for i, r in enumerate(RECORDED)])
def test_matches_authors_code(loss, case, hp, theirs, scale):
    ours = raysweep_value(loss, case, hp, scale)
    assert rel_diff(ours, theirs) <= RTOL, f"{loss} {case} {hp}: raysweep {ours!r}, authors {theirs!r}"

