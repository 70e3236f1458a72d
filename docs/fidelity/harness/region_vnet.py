"""Run V-Net's released Dice layer (Milletari et al.) on the fixed fidelity inputs.

Usage (any Python 3 with NumPy)::

    python docs/fidelity/harness/region_vnet.py /path/to/checkouts

with ``/path/to/checkouts/faustomilletari+VNet`` = ``git archive HEAD`` of the commit recorded in
``tests/test_fidelity_region.py``; runs ``pyLayer.py::DiceLoss.forward``.

Shims: the file is Python 2 (``print x`` statements), so its source is loaded with ``print x`` rewritten as
``print(x)``; ``import caffe`` gets a stub module whose ``Layer`` is ``object``; the Caffe blobs are small objects
with a ``.data`` array: ``bottom[0]`` the softmax output ``(B, 2, N)``, ``bottom[1]`` the labels ``(B, 1, N)``.

The released forward is the Dice *score of the argmax* per image, ``2 I / (|X| + |Y| + 1e-5)``, summed over the batch
(the soft, squared-denominator Dice of the paper's eq. 1 exists only in its hand-written backward). It therefore
coincides with a soft Dice only on hard predictions: the harness feeds the softmax of the "binary" logits (whose argmax
V-Net takes), and raysweep is compared on the "binary_hard" logits (30 * one-hot of that argmax).
"""

from __future__ import annotations

import os
import re
import sys
import types

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from region_common import case_inputs, emit, softmax  # noqa: E402

ROOT = sys.argv[1]
src = open(os.path.join(ROOT, "faustomilletari+VNet", "pyLayer.py")).read()
src = re.sub(r"^(\s*)print (.+)$", r"\1print(\2)", src, flags=re.M)  # shim: Python 2 print statements
sys.modules["caffe"] = types.SimpleNamespace(Layer=object)  # shim: no Caffe
ns: dict = {}
exec(compile(src, "pyLayer.py", "exec"), ns)

rows = []
for case in ("binary",):
    logits, target = case_inputs(case)
    b, c, h, w = logits.shape
    blob = lambda a: types.SimpleNamespace(data=a)  # noqa: E731
    bottom = [blob(softmax(logits).reshape(b, c, h * w).astype(np.float32)),
              blob(target.reshape(b, 1, h * w).astype(np.float32))]
    top = [blob(np.zeros(1, np.float32))]
    layer = ns["DiceLoss"]()
    layer.forward(bottom, top)
    rows.append(("dice", case + "_hard", {"per_image": True, "include_background": False, "smooth": 1e-5},
                 float(top[0].data[0]), "vnet"))
emit(rows)
