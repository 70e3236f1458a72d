"""Small helpers every layer shares: JSON-safe values and one "did you mean" for unknown names.

Depends on nothing but the standard library (numpy scalars are recognised by duck typing).
"""

from __future__ import annotations

import difflib
import math
from typing import Any, Iterable, Mapping


def jsonable(x: Any) -> Any:
    """A value JSON can store, recursively: numpy scalars -> Python, tuples -> lists, keys -> str, NaN -> None,
    +-inf -> ``"inf"`` / ``"-inf"`` (strict JSON has neither; an infinite HD95 must stay distinguishable from a
    missing one)."""
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if hasattr(x, "item") and callable(x.item) and getattr(x, "ndim", 1) == 0:
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    return x


def did_you_mean(name: Any, known: Iterable[str], n: int = 1) -> str:
    """``" (did you mean 'x'?)"`` for the closest known names, or ``""``; append it to an "unknown ..." message."""
    known = [str(k) for k in known]
    text = str(name)
    close = difflib.get_close_matches(text, known, n=n, cutoff=0.6)
    if not close and text:  # abbreviations ('mit' for 'mit_b0'): fall back to a shared prefix
        close = [k for k in known if k.startswith(text[:3])][:n]
    if not close:
        return ""
    return " (did you mean " + " or ".join(repr(c) for c in close) + "?)"


__all__ = ["did_you_mean", "jsonable"]
