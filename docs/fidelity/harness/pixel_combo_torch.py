"""Fidelity harness (group pixel_combo, PyTorch peers): run the authors' / reference code on tests/fidelity_inputs.py.

Nothing of the peers' code is kept in raysweep: this script imports it from checkouts given on the command line and
prints the values that tests/test_fidelity_pixel_combo.py records as data. Run it with any Python that has torch and
NumPy (the project's venv will do):

    python docs/fidelity/harness/pixel_combo_torch.py \
        --nnunet /path/to/MIC-DKFZ/nnUNet --fvcore /path/to/facebookresearch/fvcore \
        --adeelh /path/to/AdeelH/pytorch-multi-class-focal-loss

Checkouts used for the recorded values:
    MIC-DKFZ/nnUNet@0e495086eb108ff79afe106291e8c15bd2f2bc3a
    facebookresearch/fvcore@3378afe0d71dc2aa95e358bc78dc9b67cb48825a
    AdeelH/pytorch-multi-class-focal-loss@2477bf68ac61d2d2e5e044c63f70b156073c5ffd
Shims: nnU-Net's Dice is built with ddp=False (no process group on one CPU); nothing else is changed.
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import sys

import numpy as np
import torch
import torch.nn.functional as F

ROOT = pathlib.Path(__file__).resolve().parents[3]


def load_module(name: str, path: pathlib.Path):
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


inputs = load_module("fidelity_inputs", ROOT / "tests" / "fidelity_inputs.py")
CASES = dict(inputs.CASES)
CASES["small_ignore"] = dict(CASES["small"], ignore_frac=0.1)


def case(name):
    logits, target = inputs.fidelity_inputs(**CASES[name])
    return torch.from_numpy(logits), torch.from_numpy(target)


def emit(loss, case_name, hp, value, offset=0.0):
    print(f"    ({loss!r}, {case_name!r}, {hp!r}, {float(value)!r}, {offset!r}),")


def run_torch_ce():
    # ce / wce: torch.nn.functional.cross_entropy (mean; weighted mean with `weight`).
    print(f"    # torch {torch.__version__}: torch.nn.functional.cross_entropy(logits, target, weight, "
          "ignore_index=255)")
    for name in ("small", "binary", "wide", "small_ignore"):
        x, t = case(name)
        emit("ce", name, {}, F.cross_entropy(x, t, ignore_index=255))
        c = x.shape[1]
        w = [0.5, 1.0, 2.0, 4.0, 8.0][:c]
        emit("wce", name, {"class_weights": w},
             F.cross_entropy(x, t, weight=torch.tensor(w, dtype=x.dtype), ignore_index=255))
        # Inverse batch frequency, computed here independently: w_c = N / n_c.
        tn = t.numpy()
        n = np.array([np.sum(tn == k) for k in range(c)], dtype=np.float64)
        w_inv = torch.tensor(n.sum() / n, dtype=x.dtype)
        emit("wce", name, {"weighting": "inverse"}, F.cross_entropy(x, t, weight=w_inv, ignore_index=255))


def run_nnunet(path):
    sys.path.insert(0, str(path))
    from nnunetv2.training.loss.compound_losses import DC_and_CE_loss
    from nnunetv2.training.loss.dice import MemoryEfficientSoftDiceLoss
    from nnunetv2.training.loss.robust_ce_loss import TopKLoss

    print("    # MIC-DKFZ/nnUNet: nnunetv2/training/loss/robust_ce_loss.py TopKLoss(k) on target (B, 1, H, W)")
    for name in ("small", "binary", "wide"):
        x, t = case(name)
        for k in (10.0, 5.0, 33.3, 100.0):
            emit("topk", name, {"k": k}, TopKLoss(k=k)(x, t[:, None]))

    print("    # MIC-DKFZ/nnUNet: nnunetv2/training/loss/compound_losses.py DC_and_CE_loss as "
          "nnUNetTrainer._build_loss builds it\n    # (MemoryEfficientSoftDiceLoss, smooth 1e-5, weights 1/1; ddp=False). Its Dice term is -dc, "
          "raysweep's 1 - dc:\n    # ours = theirs + lambda_dice (offset 1.0).")
    for name in ("small", "binary", "wide", "small_ignore"):
        x, t = case(name)
        ignore = 255 if "ignore" in name else None
        for batch_dice in (True, False):
            for do_bg in (False, True):
                loss = DC_and_CE_loss({"batch_dice": batch_dice, "smooth": 1e-5, "do_bg": do_bg, "ddp": False}, {},
                                      weight_ce=1, weight_dice=1, ignore_label=ignore,
                                      dice_class=MemoryEfficientSoftDiceLoss)
                hp = {"per_image": not batch_dice, "include_background": do_bg}
                emit("dice_ce", name, hp, loss(x, t[:, None]), 1.0)
        # Unequal weights (weight_ce=0.5), nnU-Net's default Dice settings otherwise.
        loss = DC_and_CE_loss({"batch_dice": True, "smooth": 1e-5, "do_bg": False, "ddp": False}, {},
                              weight_ce=0.5, weight_dice=1, ignore_label=ignore, dice_class=MemoryEfficientSoftDiceLoss)
        emit("dice_ce", name, {"lambda_ce": 0.5, "include_background": False}, loss(x, t[:, None]), 1.0)


def run_fvcore(path):
    mod = load_module("fvcore_focal", pathlib.Path(path) / "fvcore" / "nn" / "focal_loss.py")
    print("    # facebookresearch/fvcore: fvcore/nn/focal_loss.py "
          "sigmoid_focal_loss(z1 - z0, t, alpha, gamma, 'mean');\n"
          "    # two-class softmax = sigmoid of the logit difference, fvcore's alpha -> raysweep alpha [1 - a, a].")
    x, t = case("binary")
    z = x[:, 1] - x[:, 0]
    for gamma in (2.0, 0.5, 0.0):
        for a in (-1.0, 0.25):
            hp = {"gamma": gamma} if a < 0 else {"gamma": gamma, "alpha": [1 - a, a]}
            emit("focal", "binary", hp, mod.sigmoid_focal_loss(z, t.double(), alpha=a, gamma=gamma, reduction="mean"))


def run_adeelh(path):
    mod = load_module("adeelh_focal", pathlib.Path(path) / "focal_loss.py")
    print("    # AdeelH/pytorch-multi-class-focal-loss: focal_loss.py "
          "focal_loss(alpha, gamma, 'mean', ignore_index=255)")
    for name in ("small", "wide", "small_ignore"):
        x, t = case(name)
        c = x.shape[1]
        for gamma in (2.0, 0.5):
            for alpha in (None, [0.1, 0.2, 0.3, 0.4, 0.5][:c]):
                fl = mod.focal_loss(alpha=alpha, gamma=gamma, reduction="mean", ignore_index=255, dtype=x.dtype)
                hp = {"gamma": gamma} if alpha is None else {"gamma": gamma, "alpha": alpha}
                emit("focal", name, hp, fl(x, t))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nnunet", required=True)
    ap.add_argument("--fvcore", required=True)
    ap.add_argument("--adeelh", required=True)
    args = ap.parse_args()
    torch.set_default_dtype(torch.float64)
    run_torch_ce()
    run_nnunet(args.nnunet)
    run_fvcore(args.fvcore)
    run_adeelh(args.adeelh)


if __name__ == "__main__":
    main()
