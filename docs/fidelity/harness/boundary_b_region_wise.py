"""Fidelity harness (group boundary_b): Region-wise loss, run from the authors' checkout of jmlipman/RegionWiseLoss.

Prints the rows that tests/test_fidelity_boundary_b.py records as data. Nothing of their code is kept in raysweep:
this script imports ``nnUNet/training/loss_functions/rwexp_loss.py`` from the checkout given on the command line.

    .venv/bin/python docs/fidelity/harness/boundary_b_region_wise.py /path/to/jmlipman/RegionWiseLoss

Checkout used for the recorded values: jmlipman/RegionWiseLoss@9c5b66da05d2ffc82f8d5b5c8ce6bca6a56cf270.
What is run: ``rwexp_loss.RWLoss()(logits, target[:, None])`` (the rectified region-wise maps; nnU-Net passes the
target with a channel axis) and ``rwexp_loss.BoundaryLoss()`` (their Boundary-loss-as-RW-map baseline).
Shims: the four ``nnunet.*`` imports at the top of the file are stubbed; ``softmax_helper`` is nnU-Net's
``softmax(x, 1)``, the others are unused by these two classes. ``np.bool = bool`` (removed in NumPy 1.24).
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys
import types

import numpy as np
import torch

ROOT = pathlib.Path(__file__).resolve().parents[3]


def load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


inputs = load_module("fidelity_inputs", ROOT / "tests" / "fidelity_inputs.py")


def stub_nnunet():
    names = {
        "nnunet.training.loss_functions.TopK_loss": {"TopKLoss": None},
        "nnunet.training.loss_functions.crossentropy": {"RobustCrossEntropyLoss": None},
        "nnunet.utilities.nd_softmax": {"softmax_helper": lambda x: torch.softmax(x, 1)},
        "nnunet.utilities.tensor_utilities": {"sum_tensor": None},
    }
    for full, attrs in names.items():
        parts = full.split(".")
        for i in range(1, len(parts) + 1):
            sys.modules.setdefault(".".join(parts[:i]), types.ModuleType(".".join(parts[:i])))
        for k, v in attrs.items():
            setattr(sys.modules[full], k, v)


def main(checkout: str) -> None:
    stub_nnunet()
    sys.modules.setdefault("nibabel", types.ModuleType("nibabel"))  # imported inside forward, unused
    rw = load_module("rwexp_loss", pathlib.Path(checkout) / "nnUNet/training/loss_functions/rwexp_loss.py")
    np.bool = bool
    for name, kw in inputs.CASES.items():
        logits, target = inputs.fidelity_inputs(**kw)
        x, y = torch.from_numpy(logits).float(), torch.from_numpy(target)[:, None]
        print(f"    ('region_wise', {name!r}, {{'map': 'rrw'}}, {float(rw.RWLoss()(x, y))!r}),")
        print(f"    ('rw_boundary', {name!r}, {{}}, {float(rw.BoundaryLoss()(x, y))!r}),")


if __name__ == "__main__":
    main(sys.argv[1])
