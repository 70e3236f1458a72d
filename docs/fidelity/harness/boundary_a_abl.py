"""Run the authors' Active Boundary Loss on raysweep's fixed fidelity inputs and print the values (boundary_a group).

Usage (outside the project; the authors' code is imported from the checkouts given, never copied)::

    .venv/bin/python docs/fidelity/harness/boundary_a_abl.py \
        --abl /tmp/fidelity-boundary_a/wangchi95+active-boundary-loss \
        --label-smooth /tmp/fidelity-boundary_a/CoinCheung+pytorch-loss

* ``--abl``: a checkout of wangchi95/active-boundary-loss (run: 1511507533ad98f04ea26e3648360a6c1d477d37), ``abl.py``.
* ``--label-smooth``: a checkout of CoinCheung/pytorch-loss at af876e43218694dc8599cc4711d9a5c5e043b1b2, the commit
  the ABL README links for ``label_smooth.py`` (``LabelSmoothSoftmaxCEV1``, which ``abl.py`` imports relatively).

CPU shims, no change to the loss: ``Tensor.cuda`` is a no-op, ``np.bool`` is ``np.bool_`` where missing (NumPy
1.24-1.26; NumPy 2 has it again), and
``label_smooth.py``'s import of its CUDA extension ``lsr_cpp`` (used only by the V3 class) is stubbed.
Inputs are cast to float32, the dtype raysweep computes in (and the authors trained in).

Hyperparameters: ``ABL(max_N_ratio=0.01 * B, label_smoothing, max_clip_dist=theta)``. The authors' budget is
``max_N_ratio`` times the pixels of *one* image, for the whole batch; raysweep budgets ``max_boundary_ratio`` of each
image's pixels (``B`` times as many for the batch), so the authors' code is run with ``max_N_ratio = ratio * B``.
"""

from __future__ import annotations

import argparse
import warnings
import importlib
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[3]


def load_inputs():
    spec = importlib.util.spec_from_file_location("fidelity_inputs", ROOT / "tests" / "fidelity_inputs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def load_abl(abl_dir: Path, ls_dir: Path):
    if not hasattr(np, "bool"):  # shim for NumPy 1.24-1.26 only: abl.py uses np.bool (NumPy 2 has it again)
        np.bool = np.bool_
    torch.Tensor.cuda = lambda self, *a, **k: self  # shim: CPU only
    sys.modules["lsr_cpp"] = types.ModuleType("lsr_cpp")  # stub: the CUDA extension of the unused V3 class
    pkg = types.ModuleType("ablpkg")
    pkg.__path__ = [str(abl_dir)]
    sys.modules["ablpkg"] = pkg
    spec = importlib.util.spec_from_file_location("ablpkg.label_smooth", ls_dir / "label_smooth.py")
    ls = importlib.util.module_from_spec(spec)
    sys.modules["ablpkg.label_smooth"] = ls
    spec.loader.exec_module(ls)
    return importlib.import_module("ablpkg.abl")


#: (case, fidelity_inputs kwargs, roll of the logits along W (moves the predicted boundaries away from the true
#: ones), raysweep hyperparameters). The authors' ABL gets label_smoothing, max_clip_dist=theta and
#: max_N_ratio=max_boundary_ratio * B.
RUNS = [
    ("small", {}, 0, dict(max_boundary_ratio=0.01, label_smoothing=0.2, theta=20.0)),
    ("binary", {}, 0, dict(max_boundary_ratio=0.01, label_smoothing=0.2, theta=20.0)),
    ("wide", {}, 0, dict(max_boundary_ratio=0.01, label_smoothing=0.2, theta=20.0)),
    ("small", dict(scale=1.0), 0, dict(max_boundary_ratio=0.01, label_smoothing=0.2, theta=20.0)),
    ("small", {}, 5, dict(max_boundary_ratio=0.01, label_smoothing=0.2, theta=20.0)),
    ("wide", {}, 7, dict(max_boundary_ratio=0.01, label_smoothing=0.2, theta=20.0)),
    ("binary", {}, 4, dict(max_boundary_ratio=0.05, label_smoothing=0.1, theta=5.0)),
    ("wide", dict(scale=1.0), 3, dict(max_boundary_ratio=0.03, label_smoothing=0.0, theta=20.0)),
]


def probe(shape) -> torch.Tensor:
    """Fixed weights for a scalar summary of the gradient: ``sum(grad * probe)``."""
    return torch.from_numpy(np.random.RandomState(123).standard_normal(shape)).float()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--abl", type=Path, required=True)
    ap.add_argument("--label-smooth", type=Path, required=True)
    args = ap.parse_args()
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)  # abl.py indexes with a list (deprecated in torch 2.9)
    fi = load_inputs()
    abl = load_abl(args.abl, args.label_smooth)
    for case, extra, roll, hp in RUNS:
        logits, target = fi.fidelity_inputs(**fi.CASES[case], **extra)
        x = torch.from_numpy(np.roll(logits, roll, axis=-1)).float().requires_grad_(True)
        t = torch.from_numpy(target)
        crit = abl.ABL(max_N_ratio=hp["max_boundary_ratio"] * x.shape[0], label_smoothing=hp["label_smoothing"],
                       max_clip_dist=hp["theta"])
        loss = crit(x, t)
        if loss is None:
            value = grad = float("nan")
        else:
            loss.backward()
            value, grad = float(loss.detach()), float((x.grad * probe(x.shape)).sum())
        print(f"    ({case!r}, {extra!r}, {roll}, {hp!r}, {value!r}, {grad!r}),")


if __name__ == "__main__":
    main()
