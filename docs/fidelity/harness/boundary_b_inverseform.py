"""Fidelity harness (group boundary_b): InverseForm, run from the authors' checkout of Qualcomm-AI-research/InverseForm.

Prints the rows that tests/test_fidelity_boundary_b.py records as data. Nothing of their code is kept in raysweep:
this script imports ``models/loss/utils.py`` (and through it ``models/InverseForm.py``, ``utils/config.py``) from the
checkout given on the command line.

    .venv/bin/python docs/fidelity/harness/boundary_b_inverseform.py /path/to/Qualcomm-AI-research/InverseForm

Checkout used for the recorded values: Qualcomm-AI-research/InverseForm@d5fec5b065c9a3c7afab48db84071fc3537bad7a.

Their trained InverseNet (``checkpoints/distance_measures_regressor.pth``) is a release asset that cannot be downloaded
here, so both sides use the same *seeded* weights in the authors' architecture (224*224*2 -> 1000 -> 32 -> 4 MLP):
:func:`seeded_inversenet_state`, uniform in +-1/sqrt(fan_in) from NumPy's ``RandomState(0)``, written to a temporary
file that their ``load_model_from_dict`` reads (the test builds the same weights).

Inputs: raysweep has no edge head; its predicted boundary map is the soft morphological gradient of the softmax
probabilities, ``max_c (maxpool3(p_c) + maxpool3(-p_c))`` clipped to [0, 1], and the ground truth's is the same of the
one-hot target. They are computed here independently (plain torch) and handed to the authors' functions as their
edge head's *logits* ``logit(b_hat)`` (their ``bce2d`` applies ``binary_cross_entropy_with_logits``).

What is run:
* ``JointEdgeSegLoss.bce2d(logit(clamp(b_hat, 1e-6, 1 - 1e-6)), b)``: the class-balanced edge BCE.
* ``InverseTransform2D()(logit(b_hat), b)`` **with its first line fixed**: the released line
  ``inputs = F.log_softmax(inputs)`` is a log-softmax over the single edge channel, i.e. identically 0, so the
  released term is a constant (it does not depend on the prediction) with zero gradient. The fix applies the sigmoid
  their ``bce2d`` implies (edge logits -> edge probabilities); it is applied by handing the module an ``F`` whose
  ``log_softmax`` is ``torch.sigmoid`` (everything else is torch.nn.functional). The released (unfixed) value is
  printed too, for two different predictions, to show it is constant.
Shims: ``Tensor.cuda``/``Module.cuda`` return self (CPU run); ``runx.logx`` stubbed (logging only);
``F.binary_cross_entropy_with_logits``'s deprecated ``size_average=True`` is what their code passes (= mean).
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys
import tempfile
import types

import numpy as np
import torch
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parents[3]


def load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


inputs = load_module("fidelity_inputs", ROOT / "tests" / "fidelity_inputs.py")


def seeded_inversenet_state(seed: int = 0, tile: int = 224) -> dict:
    """Weights of the authors' InverseNet MLP, uniform in +-1/sqrt(fan_in), from NumPy's stable ``RandomState``."""
    rs = np.random.RandomState(seed)
    state = {}
    for i, (fan_in, fan_out) in zip((0, 2, 4), ((tile * tile * 2, 1000), (1000, 32), (32, 4))):
        bound = 1.0 / np.sqrt(fan_in)
        w = np.empty((fan_out, fan_in), np.float32)
        for r in range(0, fan_out, 64):  # in chunks: the first layer has 100M weights
            w[r:r + 64] = (rs.random_sample((min(64, fan_out - r), fan_in)) * 2 - 1) * bound
        state[f"fc.{i}.weight"] = torch.from_numpy(w)
        state[f"fc.{i}.bias"] = torch.from_numpy(((rs.random_sample(fan_out) * 2 - 1) * bound).astype(np.float32))
    return state


def soft_edges(maps: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, 1, H, W): the largest 3x3 morphological gradient over classes, in [0, 1]."""
    grad = F.max_pool2d(maps, 3, 1, 1) + F.max_pool2d(-maps, 3, 1, 1)
    return grad.amax(1, keepdim=True).clamp(0.0, 1.0)


def main(checkout: str) -> None:
    torch.Tensor.cuda = lambda self, *a, **k: self  # shim: CPU run
    torch.nn.Module.cuda = lambda self, *a, **k: self
    runx = types.ModuleType("runx")
    runx.logx = types.ModuleType("runx.logx")
    runx.logx.logx = types.SimpleNamespace(msg=print)
    sys.modules.setdefault("runx", runx)
    sys.modules.setdefault("runx.logx", runx.logx)
    sys.path.insert(0, checkout)
    lu = load_module("inverseform_loss_utils", pathlib.Path(checkout) / "models" / "loss" / "utils.py")

    tmp = tempfile.mkdtemp()
    ckpt = pathlib.Path(tmp) / "distance_measures_regressor.pth"
    torch.save(seeded_inversenet_state(), ckpt)
    lu.INVERSEFORM_MODULE = str(ckpt)
    released = lu.InverseTransform2D()
    fixed = lu.InverseTransform2D()
    fixed_f = types.SimpleNamespace(**{k: getattr(F, k) for k in dir(F) if not k.startswith("__")})
    fixed_f.log_softmax = lambda x, *a, **k: torch.sigmoid(x)  # the fix: edge logits -> edge probabilities
    joint = lu.JointEdgeSegLoss.__new__(lu.JointEdgeSegLoss)  # bce2d uses no state; skip building the seg CE

    for name, kw in inputs.CASES.items():
        logits, target = inputs.fidelity_inputs(**kw)
        c = kw["c"]
        probs = F.softmax(torch.from_numpy(logits).float(), 1)
        b_hat = soft_edges(probs)
        b = soft_edges(F.one_hot(torch.from_numpy(target), c).permute(0, 3, 1, 2).float())
        bce = joint.bce2d(torch.logit(b_hat.clamp(1e-6, 1 - 1e-6)), b)
        with torch.no_grad():
            lu.F = fixed_f
            l_if = fixed(torch.logit(b_hat), b)
            lu.F = F
            l_if_released = released(torch.logit(b_hat), b)
            l_if_released_other = released(torch.logit(b_hat.roll(5, dims=3)), b)
        print(f"    ('inverseform', {name!r}, 'edge_bce', {float(bce)!r}),")
        print(f"    ('inverseform', {name!r}, 'inverse_form_fixed', {float(l_if)!r}),")
        print(f"    ('inverseform', {name!r}, 'inverse_form_released', {float(l_if_released)!r}),")
        print(f"    ('inverseform', {name!r}, 'inverse_form_released_shifted_prediction', "
              f"{float(l_if_released_other)!r}),")
    ckpt.unlink()


if __name__ == "__main__":
    main(sys.argv[1])
