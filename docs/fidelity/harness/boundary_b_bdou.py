"""Fidelity harness (group boundary_b): Boundary DoU loss, run from the authors' checkout of sunfan-bvb/BoundaryDoULoss.

Prints the rows that tests/test_fidelity_boundary_b.py records as data. Nothing of their code is kept in raysweep:
this script imports ``TransUNet/utils.py`` from the checkout given on the command line.

    .venv/bin/python docs/fidelity/harness/boundary_b_bdou.py /path/to/sunfan-bvb/BoundaryDoULoss

Checkout used for the recorded values: sunfan-bvb/BoundaryDoULoss@9f1185c5719526f10103f54152a148389d27d5b1.
What is run: ``utils.BoundaryDoULoss(n_classes)(logits, target)`` (``TransUNet/trainer.py`` calls it on the raw
network outputs and the label batch). Cases: the standard ones, plus ``small_absent`` (the "small" case with class 3
relabelled 0, so class 3 is absent from the target: the documented difference).
Shims: ``Tensor.cuda`` returns the tensor itself (CPU run); ``skimage.segmentation`` stubbed (imported for another
loss of that file).
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys
import types

import torch

ROOT = pathlib.Path(__file__).resolve().parents[3]


def load_module(name, path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


inputs = load_module("fidelity_inputs", ROOT / "tests" / "fidelity_inputs.py")


def cases():
    for name, kw in inputs.CASES.items():
        yield name, kw["c"], inputs.fidelity_inputs(**kw)
    logits, target = inputs.fidelity_inputs(**inputs.CASES["small"])
    target[target == 3] = 0
    yield "small_absent", 4, (logits, target)


def main(checkout: str) -> None:
    skimage = types.ModuleType("skimage")
    skimage.segmentation = types.ModuleType("skimage.segmentation")
    sys.modules.setdefault("skimage", skimage)
    sys.modules.setdefault("skimage.segmentation", skimage.segmentation)
    torch.Tensor.cuda = lambda self, *a, **k: self  # shim: CPU run
    utils = load_module("bdou_utils", pathlib.Path(checkout) / "TransUNet" / "utils.py")
    for name, c, (logits, target) in cases():
        value = utils.BoundaryDoULoss(c)(torch.from_numpy(logits).float(), torch.from_numpy(target))
        print(f"    ('boundary_dou', {name!r}, {{}}, {float(value)!r}),")


if __name__ == "__main__":
    main(sys.argv[1])
