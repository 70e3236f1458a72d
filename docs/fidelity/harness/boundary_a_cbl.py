"""Run the authors' Conditional Boundary Loss on raysweep's fixed fidelity inputs and print the values (boundary_a).

Usage (outside the project; the authors' code is imported from the checkout given, never copied)::

    .venv/bin/python docs/fidelity/harness/boundary_a_cbl.py --cbl /tmp/fidelity-boundary_a/CBL

``--cbl``: a checkout of dywu98/CBL-Conditional-Boundary-Loss (run: 9adccfe7a135647301978074fba4f92654aad9ac). Run:

* ``CBLocr_head.py``: ``New_ER5OCRHead.__init__``, ``.context_loss`` (the A2P&N term) and ``.er_loss`` (the
  neighbour-classification and anchor-to-centre terms), called as its ``losses`` does;
* ``biou.py``: ``multi_class_gt_to_boundary`` (the ground-truth boundary band), with the two lines of
  ``boundary.py``'s ``GenerateBoundary.__call__`` around it (ignored pixels set to 255);
* ``NeighborExtractor5``, which ``CBLocr_head.py`` uses but does not define, is taken from the same repository's
  ``mask2former/mask2former/modeling/criterion.py`` (its class definition only, via ``ast``).

Shims, none in the loss arithmetic: mmcv/mmseg imports are stubbed (``ConvModule``, ``resize``, ``HEADS``, the OCR
base classes, ``force_fp32``: the head is only built, never run forward), and the two hard-coded 512s of the
neighbour-sum convolution (``np.repeat(base_weight, 512, ...)``, ``NeighborExtractor5(512)``) become the feature
channel count, 64 here, to keep the test fast. One **bug fix** in ``context_loss``:
``gt_b = gt_b*seg_label_copy`` multiplies the boundary mask by the label (ignored pixels set to 0), which drops every
boundary pixel of class 0 (e.g. Cityscapes' road) from the term; the comment above it says only ignored pixels were to
be dropped, so the harness runs it as ``gt_b = gt_b*(seg_label != 255)``.

Inputs (identical in ``tests/test_fidelity_boundary_a.py``): the target of ``fidelity_inputs``; 64-channel features
whose first C channels are the fidelity logits (every ``stride``-th pixel) and
the rest seeded noise; the classifier ``conv_seg`` a seeded 1x1 convolution close to ``[I | 0]``; the prediction
``seg_logit = conv_seg(features)`` (the setting where the authors' classifier and raysweep's logits agree). The
gradient summary is ``sum(d term / d features * probe)``, probe ``RandomState(123)`` normals.
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[3]
D = 64  # feature channels; the authors' 512 is patched to this (see load_cbl)


def load_inputs():
    spec = importlib.util.spec_from_file_location("fidelity_inputs", ROOT / "tests" / "fidelity_inputs.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def cbl_inputs(fi, case: str, extra: dict, stride: int):
    """``(features (B, D, h, w), weight (C, D), bias (C,), target (B, H, W))``, NumPy."""
    logits, target = fi.fidelity_inputs(**fi.CASES[case], **extra)
    low = logits[..., ::stride, ::stride]
    b, c, h, w = low.shape
    rs = np.random.RandomState(7)
    noise = 0.3 * rs.standard_normal((b, D - c, h, w))
    feats = np.concatenate([low, noise], 1).astype(np.float32)
    weight = np.concatenate([np.eye(c), 0.05 * rs.standard_normal((c, D - c))], 1).astype(np.float32)
    bias = (0.1 * rs.standard_normal(c)).astype(np.float32)
    return feats, weight, bias, target


def _stub(name: str, **attrs):
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    mod.__path__ = []
    sys.modules[name] = mod
    return mod


class _Base(nn.Module):
    """Stand-in for mmseg's BaseCascadeDecodeHead: keeps the settings and builds ``conv_seg`` as mmseg does."""

    def __init__(self, in_channels=D, channels=D, num_classes=2, **kw):
        super().__init__()
        self.in_channels, self.channels, self.num_classes = in_channels, channels, num_classes
        self.conv_cfg = self.norm_cfg = self.act_cfg = None
        self.conv_seg = nn.Conv2d(channels, num_classes, kernel_size=1)


class _Any(nn.Module):
    def __init__(self, *a, **k):
        super().__init__()
        self.conv_cfg = self.norm_cfg = self.act_cfg = None


def load_cbl(repo: Path, fix: bool = True):
    identity = lambda *a, **k: (lambda f: f)  # noqa: E731 (decorator factories)
    _stub("mmcv")
    _stub("mmcv.cnn", ConvModule=_Any)
    _stub("mmcv.runner", auto_fp16=identity, force_fp32=identity)
    _stub("mmseg")
    _stub("mmseg.ops", resize=F.interpolate)
    _stub("cblpkg")
    _stub("cblpkg.builder", HEADS=types.SimpleNamespace(register_module=identity), build_loss=None)
    _stub("cblpkg.utils", SelfAttentionBlock=_Any)
    _stub("cblpkg.losses", accuracy=None)
    _stub("cblpkg.heads")
    _stub("cblpkg.heads.cascade_decode_head", BaseCascadeDecodeHead=_Base)
    _stub("cblpkg.heads.condconv", ConditionalFilterLayer=_Any, ATAConditionalFilterLayer=_Any)
    path = repo / "CBLocr_head.py"
    src = path.read_text()
    bug = "gt_b = gt_b*seg_label_copy"
    assert src.count(bug) == 1, "the context_loss line the harness fixes has changed"
    if fix:
        src = src.replace(bug, "gt_b = gt_b*(seg_label != 255)")
    # Shim: the head hard-codes 512 feature channels in its neighbour-sum convolution; use the features' count.
    for old, new in (("np.repeat(base_weight, 512, axis=0)", "np.repeat(base_weight, self.channels, axis=0)"),
                     ("NeighborExtractor5(512)", "NeighborExtractor5(er_input.shape[1])")):
        assert src.count(old) == 1, f"the line the harness patches has changed: {old}"
        src = src.replace(old, new)
    mod = types.ModuleType("cblpkg.heads.CBLocr_head")
    mod.__package__ = "cblpkg.heads"
    mod.__file__ = str(path)
    sys.modules[mod.__name__] = mod
    exec(compile(src, str(path), "exec"), mod.__dict__)
    crit = repo / "mask2former" / "mask2former" / "modeling" / "criterion.py"
    tree = ast.parse(crit.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "NeighborExtractor5")
    exec(compile(ast.Module(body=[cls], type_ignores=[]), str(crit), "exec"), mod.__dict__)
    spec = importlib.util.spec_from_file_location("cbl_biou", repo / "biou.py")
    biou = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(biou)
    return mod, biou


#: (case, fidelity_inputs kwargs, feature stride). ``multi_class_gt_to_boundary(gt, dilation_ratio)`` ignores its
#: ``dilation_ratio`` (it calls ``mask_to_boundary`` without it), so the band is always ``mask_to_boundary``'s default
#: 0.02 of the diagonal, whatever the config says (0.005 for Cityscapes); raysweep's ``dilation_ratio=0.02`` matches.
RUNS = [
    ("small", {}, 1),
    ("small", {}, 2),
    ("binary", {}, 1),
    ("wide", {}, 2),
    ("wide", {}, 1),
    ("small", dict(scale=1.0), 1),
    ("small", dict(ignore_frac=0.1), 1),
    ("wide", dict(ignore_frac=0.05), 2),
]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cbl", type=Path, required=True)
    ap.add_argument("--no-fix", action="store_true", help="run context_loss as released (class 0 dropped)")
    args = ap.parse_args()
    fi = load_inputs()
    cbl, biou = load_cbl(args.cbl, fix=not args.no_fix)
    for case, extra, stride in RUNS:
        feats, weight, bias, target = cbl_inputs(fi, case, extra, stride)
        c = weight.shape[0]
        head = cbl.New_ER5OCRHead(ocr_channels=256, in_channels=D, channels=D, num_classes=c)
        with torch.no_grad():
            head.conv_seg.weight.copy_(torch.from_numpy(weight)[:, :, None, None])
            head.conv_seg.bias.copy_(torch.from_numpy(bias))
        bnd = []
        for lab in target:  # boundary.py GenerateBoundary.__call__, per image
            b = np.asarray(biou.multi_class_gt_to_boundary(lab)).astype(np.int64)
            b[lab == 255] = 255
            bnd.append(b)
        gt_boundary = torch.from_numpy(np.stack(bnd))
        seg_label = torch.from_numpy(target).unsqueeze(1)
        probe = torch.from_numpy(np.random.RandomState(123).standard_normal(feats.shape)).float()
        out = {}
        for term in ("a2pn", "nc", "a2c"):
            f = torch.from_numpy(feats).requires_grad_(True)
            seg_logit = head.conv_seg(f)
            if term == "a2pn":
                value = head.context_loss(f, seg_label, gt_boundary)
            else:
                nc, a2c = head.er_loss(f, seg_label, seg_logit, gt_boundary)
                value = nc if term == "nc" else a2c
            grad = torch.autograd.grad(value, f, allow_unused=True)[0] if value.requires_grad else None
            out[term] = (float(value.detach()), 0.0 if grad is None else float((grad * probe).sum()))
        print(f"    ({case!r}, {extra!r}, {stride}, {out!r}),")


if __name__ == "__main__":
    main()
