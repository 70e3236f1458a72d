"""Shared helpers of the ``region`` fidelity harnesses (no authors' code here).

Each harness imports the authors' code from a checkout path given on its command line, runs it on the fixed inputs
of ``tests/fidelity_inputs.py`` and prints the values as a Python list of tuples
``(loss, case, raysweep_hp, value)`` that ``tests/test_fidelity_region.py`` records as data.
"""

from __future__ import annotations

import importlib.util
import os
import sys

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.abspath(os.path.join(_HERE, "..", "..", ".."))


def load_module(name: str, path: str):
    """Import a file by path under ``name`` (the authors' files are not packages we install)."""
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


_fi = load_module("fidelity_inputs", os.path.join(_REPO, "tests", "fidelity_inputs.py"))
CASES = _fi.CASES
fidelity_inputs = _fi.fidelity_inputs


#: The inputs by name: the three standard cases, the "small" case with 10 % ignored pixels, and the "small" case with
#: class 3 relabelled 0 (so one class is absent from the target, where "present"/"all" and class weights differ).
def case_inputs(name: str):
    if name == "small_ignore":
        return fidelity_inputs(**CASES["small"], ignore_frac=0.1)
    if name == "small_absent":
        logits, target = fidelity_inputs(**CASES["small"])
        target[target == 3] = 0
        return logits, target
    if name.endswith("_hard"):
        # Hard predictions: logits 30 * one-hot(argmax), so softmax is 0/1 to ~1e-13 (where V-Net's argmax forward
        # and a soft Dice coincide).
        logits, target = fidelity_inputs(**CASES[name[:-5]])
        hard = (logits == logits.max(axis=1, keepdims=True)).astype(np.float64)
        return 30.0 * hard, target
    return fidelity_inputs(**CASES[name])


def softmax(logits: np.ndarray) -> np.ndarray:
    x = logits - logits.max(axis=1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=1, keepdims=True)


def onehot(target: np.ndarray, c: int) -> np.ndarray:
    """(B, H, W) -> (B, C, H, W) float64; ignored pixels (>= c) are all-zero."""
    return np.stack([(target == k) for k in range(c)], axis=1).astype(np.float64)


def emit(rows):
    """Print the recorded rows, one per line, ready to paste into the test."""
    print("[")
    for row in rows:
        print(f"    {row!r},")
    print("]")
