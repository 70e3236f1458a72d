"""Run the authors' TensorFlow/Keras code of five region losses on the fixed fidelity inputs.

Usage (a separate environment: ``python -m venv tfvenv && tfvenv/bin/pip install tensorflow-cpu tf_keras``)::

    tfvenv/bin/python docs/fidelity/harness/region_tf.py /path/to/checkouts

with one folder per repository, named ``owner+name`` (``git archive HEAD`` of the commits recorded in
``tests/test_fidelity_region.py``):

* ``shruti-jadon+Semantic-Segmentation-Loss-Functions`` -> ``loss_functions.py::Semantic_loss_functions.log_cosh_dice_loss``
* ``nabsabraham+focal-tversky-unet`` -> ``losses.py::tversky_loss``, ``losses.py::focal_tversky``
* ``NifTK+NiftyNet`` -> ``niftynet/layer/loss_segmentation.py::generalised_dice_loss``, ``sensitivity_specificity_loss``

Shims (none changes the arithmetic): the Keras files use the Keras 2 backend (``K.flatten``, ``K.sum``, ``K.pow``),
which Keras 3 dropped, so ``keras`` is pointed at ``tf_keras`` (the Keras 2 package). NiftyNet is TF1 code: the module
is loaded with stub ``niftynet.engine.application_factory`` / ``niftynet.layer.base_layer`` imports (only its
``LossFunction`` layer class uses them) and its ``tf`` name pointed at ``tf.compat.v1``, run eagerly. NiftyNet's
``LossFunction.layer_op`` applies softmax, calls the loss once per image on ``(n_voxels, C)`` and averages over the
batch; this harness does the same around the loss functions.
"""

from __future__ import annotations

import os
import sys
import types

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import tf_keras  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from region_common import case_inputs, emit, load_module, onehot, softmax  # noqa: E402

ROOT = sys.argv[1]
rows = []

sys.modules["keras"] = tf_keras  # shim: Keras 2 backend API
sys.modules["keras.backend"] = tf_keras.backend
sys.modules["keras.losses"] = tf_keras.losses


def binary_fg(case):
    """Foreground (class 1) one-hot and softmax probability maps of a 2-class case, float32 (B, H, W, 1)."""
    logits, target = case_inputs(case)
    p = softmax(logits)[:, 1][..., None].astype(np.float32)
    t = (target == 1)[..., None].astype(np.float32)
    return tf.constant(t), tf.constant(p)


# ---- Log-Cosh Dice (Jadon): batch-flattened soft Dice with smooth 1 on one sigmoid-like channel.
jadon = load_module("jadon_losses", os.path.join(ROOT, "shruti-jadon+Semantic-Segmentation-Loss-Functions",
                                                 "loss_functions.py")).Semantic_loss_functions()
for case in ("binary", "binary_hard"):
    t, p = binary_fg(case)
    v = jadon.log_cosh_dice_loss(t, p)
    rows.append(("log_cosh_dice", case, {"smooth": 1.0, "include_background": False}, float(v), "same"))
    v = jadon.dice_loss(t, p)
    rows.append(("dice", case, {"smooth": 1.0, "include_background": False}, float(v), "same"))

# ---- Tversky and Focal Tversky (Abraham & Khan): alpha = 0.7 on FN, 0.3 on FP, smooth 1, exponent 0.75.
ab = load_module("abraham_losses", os.path.join(ROOT, "nabsabraham+focal-tversky-unet", "losses.py"))
for case in ("binary", "binary_hard"):
    t, p = binary_fg(case)
    hp = {"alpha": 0.3, "beta": 0.7, "smooth": 1.0, "include_background": False}
    rows.append(("tversky", case, hp, float(ab.tversky_loss(t, p)), "same"))
    rows.append(("focal_tversky", case, {"gamma": 4.0 / 3.0, **hp}, float(ab.focal_tversky(t, p)), "same"))

# ---- NiftyNet: generalised Dice (Sudre) and sensitivity-specificity (Brosch), per image, averaged over the batch.
for name in ("niftynet", "niftynet.engine", "niftynet.layer"):
    sys.modules[name] = types.ModuleType(name)
stub_factory = types.ModuleType("niftynet.engine.application_factory")
stub_factory.LossSegmentationFactory = None
stub_layer = types.ModuleType("niftynet.layer.base_layer")
stub_layer.Layer = object
sys.modules["niftynet.engine.application_factory"] = stub_factory
sys.modules["niftynet.layer.base_layer"] = stub_layer
nn_loss = load_module("niftynet_loss_segmentation",
                      os.path.join(ROOT, "NifTK+NiftyNet", "niftynet", "layer", "loss_segmentation.py"))
nn_loss.tf = tf.compat.v1  # shim: TF1 names (reciprocal, is_inf, sparse_reduce_sum, ...)


def niftynet_batch_mean(fn, logits, target, **kw):
    b, c = logits.shape[:2]
    losses = []
    for i in range(b):
        pred = tf.nn.softmax(tf.constant(logits[i].reshape(c, -1).T.astype(np.float32)))  # (n_voxels, C)
        gt = tf.constant(target[i].reshape(-1))
        losses.append(float(fn(prediction=pred, ground_truth=gt, **kw)))
    return float(np.mean(losses))


for case in ("small", "binary", "wide", "small_absent"):
    logits, target = case_inputs(case)
    for tw, rw in (("Square", "square"), ("Simple", "simple"), ("Uniform", "uniform")):
        v = niftynet_batch_mean(nn_loss.generalised_dice_loss, logits, target, type_weight=tw)
        rows.append(("generalized_dice", case, {"weighting": rw, "per_image": True, "smooth": 0.0}, v, "same"))
    for r in (0.05, 0.5):
        v = niftynet_batch_mean(nn_loss.sensitivity_specificity_loss, logits, target, r=r)
        rows.append(("sens_spec", case, {"r": r, "per_image": True, "smooth": 1e-5}, v, "times_C"))

emit(rows)
