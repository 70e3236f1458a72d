"""Fidelity harness (group pixel_combo, Keras peers): run the authors' Keras code on tests/fidelity_inputs.py.

Nothing of the authors' code is kept in raysweep: this script loads it from checkouts given on the command line and
prints the values that tests/test_fidelity_pixel_combo.py records as data. It needs TensorFlow 2.x with Keras 2
(``keras.backend.flatten`` and friends; recorded with tensorflow-cpu 2.15.1, keras 2.15.0, in a venv of its own):

    python docs/fidelity/harness/pixel_combo_keras.py \
        --comboloss /path/to/asgsaeid/ComboLoss --unified /path/to/mlyg/unified-focal-loss

Checkouts used for the recorded values:
    asgsaeid/ComboLoss@86d62479ddf09e9ab8266d5c451d3bf5be3d9f8d   (combo_loss.py, Combo_loss)
    mlyg/unified-focal-loss@411c9c5ce43b2ef847f0903d1b841512ad8d2eee   (loss_functions.py, asym_unified_focal_loss)

Source patches applied in memory (the files on disk are not touched), each asserted to match exactly once:
* ComboLoss: the line ``out = - (ce_w * ...) + ((1 - ce_w) * (1.0 - y_true_f) * K.log(1.0 - y_pred_f))`` adds the
  negative-class log term instead of subtracting it (the paper's Eq. subtracts it). Values are printed for the file
  as released ("asis") and with ``+`` turned into ``-`` ("fixed").
* unified-focal-loss: ``asymmetric_focal_loss`` has its docstring one level too shallow (after ``def loss_function``),
  which is an IndentationError at import; the docstring is moved above ``def loss_function``. No logic is changed.
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import types

import numpy as np
import tensorflow as tf

ROOT = pathlib.Path(__file__).resolve().parents[3]


def load_inputs():
    spec = importlib.util.spec_from_file_location("fidelity_inputs", ROOT / "tests" / "fidelity_inputs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


inputs = load_inputs()


def patched_module(name: str, path: pathlib.Path, old: str | None = None, new: str | None = None):
    src = path.read_text()
    if old is not None:
        assert src.count(old) == 1, f"patch target not found exactly once in {path}"
        src = src.replace(old, new)
    mod = types.ModuleType(name)
    mod.__file__ = str(path)
    exec(compile(src, str(path), "exec"), mod.__dict__)
    return mod


def channels_last(name):
    """Softmax probabilities and one-hot target, channels-last float64, as the Keras code expects."""
    logits, target = inputs.fidelity_inputs(**inputs.CASES[name])
    x = logits - logits.max(1, keepdims=True)
    p = np.exp(x) / np.exp(x).sum(1, keepdims=True)
    c = logits.shape[1]
    onehot = (target[:, None] == np.arange(c)[None, :, None, None]).astype(np.float64)
    return np.moveaxis(onehot, 1, -1), np.moveaxis(p, 1, -1)


def emit(loss, case_name, hp, value, offset=0.0):
    print(f"    ({loss!r}, {case_name!r}, {hp!r}, {float(value)!r}, {offset!r}),")


COMBO_BUG = "out = - (ce_w * y_true_f * K.log(y_pred_f)) + ((1 - ce_w)"
COMBO_FIX = "out = - (ce_w * y_true_f * K.log(y_pred_f)) - ((1 - ce_w)"


def run_combo(path):
    path = pathlib.Path(path) / "combo_loss.py"
    mods = {"asis": patched_module("combo_asis", path), "fixed": patched_module("combo_fixed", path, COMBO_BUG,
                                                                                 COMBO_FIX)}
    print("    # asgsaeid/ComboLoss: combo_loss.py Combo_loss (globals ce_w = beta, ce_d_w = alpha, smooth = 1),\n"
          "    # called once per class channel (y_true = one-hot[..., c], y_pred = softmax[..., c]), mean over c.\n"
          "    # The authors subtract the Dice score, raysweep adds 1 - Dice: ours = theirs + (1 - alpha).")
    for variant, mod in mods.items():
        print(f"    # variant: {variant}")
        for name in ("small", "binary", "wide"):
            y, p = channels_last(name)
            for alpha, beta in ((0.5, 0.5), (0.3, 0.7), (0.8, 0.4)):
                mod.ce_w, mod.ce_d_w = beta, alpha
                vals = [float(mod.Combo_loss(tf.constant(y[..., c]), tf.constant(p[..., c])))
                        for c in range(y.shape[-1])]
                hp = {"alpha": alpha, "beta": beta, "smooth": 1.0}
                emit(f"combo/{variant}", name, hp, np.mean(vals), 1.0 - alpha)


UFL_BAD = '''    def loss_function(y_true, y_pred):
    """For Imbalanced datasets'''
UFL_GOOD = '''    """For Imbalanced datasets'''
# Anchor of the moved docstring's end inside asymmetric_focal_loss (the first match after its `def`).
UFL_BODY = '''by default 2.0
    """
        axis = identify_axis'''
UFL_BODY_GOOD = '''by default 2.0
    """
    def loss_function(y_true, y_pred):
        axis = identify_axis'''


def run_unified(path):
    path = pathlib.Path(path) / "loss_functions.py"
    src = path.read_text()
    assert src.count(UFL_BAD) == 1
    src = src.replace(UFL_BAD, UFL_GOOD)
    # The body fix must hit the asymmetric focal loss only (the one whose docstring was moved).
    start = src.index("def asymmetric_focal_loss")
    head, tail = src[:start], src[start:]
    assert tail.count(UFL_BODY) >= 1
    tail = tail.replace(UFL_BODY, UFL_BODY_GOOD, 1)
    mod = types.ModuleType("ufl")
    exec(compile(head + tail, str(path), "exec"), mod.__dict__)
    print("    # mlyg/unified-focal-loss: loss_functions.py asym_unified_focal_loss(weight, delta, gamma) on softmax\n"
          "    # probabilities, channels-last (binary only: channel 0 background, 1 foreground). The code weighs the\n"
          "    # focal Tversky part by `weight`, the paper (Eq. 15) the focal part: ours(weight=w) = theirs(1-w).\n"
          "    # Per-image Tversky sums and smooth = K.epsilon() = 1e-7: ours run with per_image=True, smooth=1e-7.")
    y, p = channels_last("binary")
    for weight, delta, gamma in ((0.5, 0.6, 0.5), (0.3, 0.7, 0.3), (0.8, 0.6, 0.75), (0.5, 0.5, 0.9)):
        val = float(mod.asym_unified_focal_loss(weight=1.0 - weight, delta=delta, gamma=gamma)(tf.constant(y),
                                                                                                tf.constant(p)))
        hp = {"weight": weight, "delta": delta, "gamma": gamma, "per_image": True, "smooth": 1e-7}
        emit("unified_focal", "binary", hp, val)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--comboloss", required=True)
    ap.add_argument("--unified", required=True)
    args = ap.parse_args()
    print(f"    # tensorflow {tf.__version__}")
    run_combo(args.comboloss)
    run_unified(args.unified)


if __name__ == "__main__":
    main()
