"""Fidelity harness (group boundary_b): Kervadec's boundary loss, run from the authors' LIVIAETS/boundary-loss.

Prints the rows that tests/test_fidelity_boundary_b.py records as data. Nothing of their code is kept in raysweep:
this script imports ``losses.py``, ``utils.py`` and ``scheduler.py`` from the checkout given on the command line.

    .venv/bin/python docs/fidelity/harness/boundary_b_boundary.py /path/to/LIVIAETS/boundary-loss

Checkout used for the recorded values: LIVIAETS/boundary-loss@171c32d88a4ce59af8be46fb88b96d3637b9515b.
What is run: ``utils.one_hot2dist`` (their DataLoader's ``dist_map_transform``, unit spacing) per image,
``losses.SurfaceLoss``, ``losses.GeneralizedDice`` and ``losses.DiceLoss`` with ``idc`` = all classes (as in their
``acdc.make``), the weights from ``scheduler.StealWeight(to_steal=0.01)`` / ``AddWeightLoss([0, 0.01])`` applied
once per finished epoch from the initial ``[1, 0.01]`` (``main.py`` calls the scheduler at the end of each epoch),
and the total
``w_region * GDL + w_boundary * SurfaceLoss`` as ``main.py`` sums it.
Shims: ``np.bool = bool`` (removed in NumPy 1.24, used by ``one_hot2dist``); ``skimage.io`` stubbed (only ``imsave``
is imported, for saving predictions).
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys
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
EPOCHS = (0, 1, 10, 89, 90, 121, 200)


def main(checkout: str) -> None:
    import scipy.ndimage  # noqa: F401 (imported before the alias below, which numpy.ma would trip on)
    import medpy.metric  # noqa: F401

    skimage = types.ModuleType("skimage")
    skimage.io = types.ModuleType("skimage.io")
    skimage.io.imsave = None  # shim: only imported for saving images
    sys.modules.setdefault("skimage", skimage)
    sys.modules.setdefault("skimage.io", skimage.io)
    sys.path.insert(0, checkout)
    import losses
    import scheduler
    import utils

    np.bool = bool  # shim: NumPy >= 1.24 removed the alias their one_hot2dist uses

    print("# StealWeight / AddWeightLoss weights (epoch, schedule, region, boundary)")
    for name, sched in (("rebalance", scheduler.StealWeight(to_steal=0.01)),
                        ("increase", scheduler.AddWeightLoss(to_add=[0.0, 0.01]))):
        weights = [[1.0, 0.01]]
        table = {}
        for epoch in range(max(EPOCHS) + 1):
            table[epoch] = tuple(weights[0])
            _, _, weights = sched(epoch, None, None, weights)
        for epoch in EPOCHS:
            print(f"    ({epoch}, {name!r}, {table[epoch][0]!r}, {table[epoch][1]!r}),")
        if name == "rebalance":
            steal = table
    print("# values (loss term, case, epoch, value)")
    for case, kw in inputs.CASES.items():
        logits, target = inputs.fidelity_inputs(**kw)
        c = kw["c"]
        probs = F.softmax(torch.from_numpy(logits).float(), dim=1)
        onehot = F.one_hot(torch.from_numpy(target), c).permute(0, 3, 1, 2).float()
        dist = torch.stack([torch.tensor(utils.one_hot2dist(o.numpy(), resolution=None), dtype=torch.float32)
                            for o in onehot])
        idc = list(range(c))
        surface = losses.SurfaceLoss(idc=idc)(probs, dist)
        gdl = losses.GeneralizedDice(idc=idc)(probs, onehot)
        print(f"    ('surface', {case!r}, None, {float(surface)!r}),")
        dice = losses.DiceLoss(idc=idc)(probs, onehot)
        print(f"    ('gdl', {case!r}, None, {float(gdl)!r}),")
        print(f"    ('dice', {case!r}, None, {float(dice)!r}),")
        for epoch in EPOCHS:
            w_r, w_b = steal[epoch]
            print(f"    ('total', {case!r}, {epoch}, {float(w_r * gdl + w_b * surface)!r}),")


if __name__ == "__main__":
    main(sys.argv[1])
