"""Fidelity harness (group boundary_b): Hausdorff loss, run from PatRyg99/HausdorffLoss (Karimi & Salcudean released
no code; this is the reference implementation that MONAI's HausdorffDTLoss and kornia's HausdorffERLoss say they
derive from).

Prints the rows that tests/test_fidelity_boundary_b.py records as data. Nothing of their code is kept in raysweep:
this script imports ``hausdorff_loss.py`` from the checkout given on the command line.

    .venv/bin/python docs/fidelity/harness/boundary_b_hausdorff.py /path/to/PatRyg99/HausdorffLoss

Checkout used for the recorded values: PatRyg99/HausdorffLoss@96266b5743d32222b809e5b4c31065bda013e3a6.
What is run: ``HausdorffDTLoss(alpha)`` and ``HausdorffERLoss(alpha, erosions=10)``, which are binary (one channel),
on each class channel ``softmax(logits)[:, k:k+1]`` against ``(target == k)[:, None]``, averaged over the classes
(foreground only unless ``include_background``), as MONAI applies it per channel. Each per-class value is a mean over
(B, 1, H, W), so the class average is the mean over all supervised pixels and classes.
Shims: NumPy 2 removed ``ndarray.ptp()``, which ``HausdorffERLoss.perform_erosion`` calls on the output of
``scipy.ndimage.convolve``; the module's ``convolve`` is wrapped to return an ndarray subclass with ``ptp()`` (= the
NumPy function). Values unchanged.
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

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


class _PtpArray(np.ndarray):
    def ptp(self, *args, **kwargs):
        return np.ptp(np.asarray(self), *args, **kwargs)


def main(checkout: str) -> None:
    hl = load_module("hausdorff_loss", pathlib.Path(checkout) / "hausdorff_loss.py")
    convolve = hl.convolve
    hl.convolve = lambda *a, **k: convolve(*a, **k).view(_PtpArray)  # shim: ndarray.ptp() is gone in NumPy 2
    for name, kw in inputs.CASES.items():
        logits, target = inputs.fidelity_inputs(**kw)
        c = kw["c"]
        probs = F.softmax(torch.from_numpy(logits).float(), 1)
        onehot = F.one_hot(torch.from_numpy(target), c).permute(0, 3, 1, 2).float()
        for variant, cls in (("dt", hl.HausdorffDTLoss), ("erosion", hl.HausdorffERLoss)):
            for alpha in (2.0, 1.5):
                for include_background in (False, True):
                    loss = cls(alpha=alpha, erosions=10)
                    ks = range(0 if include_background else 1, c)
                    value = float(np.mean([float(loss(probs[:, k:k + 1], onehot[:, k:k + 1])) for k in ks]))
                    hp = {"variant": variant, "alpha": alpha, "include_background": include_background}
                    print(f"    ('hausdorff', {name!r}, {hp!r}, {value!r}),")


if __name__ == "__main__":
    main(sys.argv[1])
