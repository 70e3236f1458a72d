"""Run the authors' PyTorch code of four region losses on the fixed fidelity inputs.

Usage (any Python with torch and NumPy; the project venv works)::

    python docs/fidelity/harness/region_torch.py /path/to/checkouts

where ``/path/to/checkouts`` holds one folder per repository, named ``owner+name`` (as ``git archive HEAD`` of the
commits recorded in ``tests/test_fidelity_region.py``):

* ``bermanmaxim+LovaszSoftmax``  -> ``pytorch/lovasz_losses.py::lovasz_softmax``
* ``LucasFidon+GeneralizedWassersteinDiceLoss`` -> ``generalized_wasserstein_dice_loss/loss.py``
* ``Digital-Dermatology+t-loss`` -> ``tloss.py::TLoss``
* ``ZJULearning+RMI`` -> ``losses/rmi/rmi.py::RMILoss.rmi_lower_bound``

Shims (none changes the arithmetic): RMI's ``torch.cuda.DoubleTensor`` cast is pointed at the CPU float64 type and its
``torch.cholesky`` at ``torch.linalg.cholesky`` (removed from recent torch); its package import
``from RMI.losses.rmi import rmi_utils`` is satisfied by loading ``rmi_utils.py`` under that name. t-loss gets a
minimal config object (``data.image_size``, ``device``); see the T-loss block for the two attributes set after
construction.
"""

from __future__ import annotations

import os
import sys
import types

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from region_common import case_inputs, emit, load_module, onehot  # noqa: E402

ROOT = sys.argv[1]
rows = []


def inputs(case):
    logits, target = case_inputs(case)
    return torch.from_numpy(logits), torch.from_numpy(target)


# ---- Lovasz-Softmax: lovasz_softmax(probas, labels, classes, per_image, ignore) takes probabilities, in float32
# (it builds its Jaccard gradient with .float() and dots it with the errors, which fails on float64).
lov = load_module("lovasz_losses", os.path.join(ROOT, "bermanmaxim+LovaszSoftmax", "pytorch", "lovasz_losses.py"))
for case in ("small", "binary", "wide", "small_ignore", "small_absent"):
    logits, target = inputs(case)
    for per_image in (False, True):
        for classes in ("present", "all"):
            v = lov.lovasz_softmax(logits.float().softmax(1), target, classes=classes, per_image=per_image, ignore=255)
            rows.append(("lovasz", case, {"per_image": per_image, "classes": classes}, float(v), "same"))

# ---- Generalised Wasserstein Dice: one score per image (their only mode), epsilon = np.spacing(1) as smoothing.
gw = load_module("gwdl_loss", os.path.join(ROOT, "LucasFidon+GeneralizedWassersteinDiceLoss",
                                           "generalized_wasserstein_dice_loss", "loss.py"))
# A non-trivial 5-class cost matrix: NiftyNet's M_tree (Fidon's BraTS label tree), used on the 5-class "wide" case.
M_TREE = [[0.0, 1.0, 1.0, 1.0, 1.0], [1.0, 0.0, 0.6, 0.2, 0.5], [1.0, 0.6, 0.0, 0.6, 0.7],
          [1.0, 0.2, 0.6, 0.0, 0.5], [1.0, 0.5, 0.7, 0.5, 0.0]]
for case in ("small", "binary", "wide"):
    logits, target = inputs(case)
    c = logits.shape[1]
    mats = [("identity", None, 1.0 - np.eye(c))] + ([("tree", M_TREE, np.array(M_TREE))] if c == 5 else [])
    for _, raysweep_m, m in mats:
        for mode in ("default", "GDL"):
            v = gw.GeneralizedWassersteinDiceLoss(m, weighting_mode=mode)(logits, target)
            hp = {"weighting": mode, "per_image": True, "smooth": float(np.spacing(1))}
            if raysweep_m is not None:
                hp["cost_matrix"] = raysweep_m
            rows.append(("gwdl", case, hp, float(v), "same"))

# ---- Robust T-loss. Their TLoss is binary: input (B, W, H) foreground probabilities, D = image_size^2 fixed at
# construction, and constant log-precisions lambdas = 1 (Sigma = e^-1 I, the README's "general diagonal Sigma").
# Setting where it and raysweep's multi-class form agree: all C residual maps of an image stacked into one
# (C*H, W) map (so D = C*H*W), lambdas = 0 (Sigma = I, the paper's form). raysweep reports NLL / D per image.
tl = load_module("tloss", os.path.join(ROOT, "Digital-Dermatology+t-loss", "tloss.py"))
for case in ("small", "binary", "wide"):
    logits, target = inputs(case)
    b, c, h, w = logits.shape
    probs = logits.softmax(1).reshape(b, c * h, w)
    onehot_t = torch.nn.functional.one_hot(target, c).permute(0, 3, 1, 2).double().reshape(b, c * h, w)
    for raw_nu in (1.0, 0.0, 2.0):
        cfg = types.SimpleNamespace(data=types.SimpleNamespace(image_size=h), device="cpu")
        loss = tl.TLoss(cfg, nu=raw_nu, epsilon=1e-8)
        loss.D = torch.tensor(float(c * h * w), dtype=torch.float64)  # shim: D of the stacked residual
        loss.lambdas = torch.zeros((c * h, w), dtype=torch.float64)   # shim: Sigma = I (the paper's form)
        v = loss(probs, onehot_t)
        rows.append(("t_loss", case, {"nu": float(np.exp(raw_nu)), "epsilon": 1e-8}, float(v), "times_D"))

# ---- RMI: the lower-bound term (rmi_lower_bound), fed the softmax probabilities + 1e-6 and one-hot labels that
# forward_sigmoid would feed it (raysweep's softmax replaces their sigmoid); compared with raysweep at weight_ce=0.
torch.cuda.DoubleTensor = torch.DoubleTensor  # shim: CPU
torch.cholesky = torch.linalg.cholesky  # shim: removed/deprecated in recent torch, same factor
rmi_dir = os.path.join(ROOT, "ZJULearning+RMI", "losses", "rmi")
for pkg in ("RMI", "RMI.losses", "RMI.losses.rmi"):
    sys.modules[pkg] = types.ModuleType(pkg)
sys.modules["RMI.losses.rmi"].rmi_utils = load_module("RMI.losses.rmi.rmi_utils", os.path.join(rmi_dir, "rmi_utils.py"))
rmi = load_module("rmi_authors", os.path.join(rmi_dir, "rmi.py"))
for case in ("small", "binary", "wide", "small_ignore"):
    logits, target = inputs(case)
    c = logits.shape[1]
    valid = (target < c).double().unsqueeze(1)
    labels = torch.from_numpy(onehot(target.numpy(), c))
    probs = logits.softmax(1) * valid + 1e-6  # as forward_sigmoid: mask, then add _CLIP_MIN
    for radius, pool in ((3, 3), (2, 1), (3, 2), (2, 4)):
        m = rmi.RMILoss(num_classes=c, rmi_radius=radius, rmi_pool_size=pool, rmi_pool_stride=pool)
        v = m.rmi_lower_bound(labels, probs)
        rows.append(("rmi", case, {"weight_ce": 0.0, "radius": radius, "pool_size": pool}, float(v), "same"))

emit(rows)
