"""The fixed inputs on which the losses were compared with their authors' released code (``tests/test_fidelity_*.py``).

The authors' code was run outside the project, on exactly these arrays, and the values it printed are recorded in the
fidelity tests as data (with the repository and commit). The arrays come from NumPy's legacy ``RandomState``, whose
stream NumPy guarantees never to change, so a recorded value stays comparable on any machine and NumPy version. Only
NumPy is used here, so the same module can be imported by a script that runs a peer's code in another environment.

Shapes and conventions are raysweep's: logits ``(B, C, H, W)`` float64, targets ``(B, H, W)`` int64 with
``ignore_index`` 255 (only where ``ignore_frac > 0``).
"""

from __future__ import annotations

import numpy as np


def _smooth(x: np.ndarray, radius: int) -> np.ndarray:
    """Box blur over the last two axes (wrap-around), to turn white noise into blobs."""
    out = np.zeros_like(x)
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            out += np.roll(x, (dy, dx), axis=(-2, -1))
    return out / (2 * radius + 1) ** 2


def fidelity_inputs(seed: int = 0, b: int = 2, c: int = 4, h: int = 32, w: int = 32, *, scale: float = 3.0,
                    radius: int = 3, ignore_frac: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded logits and a blob-shaped target that the logits partly agree with.

    Returns:
        ``(logits, target)``: ``(b, c, h, w)`` float64 and ``(b, h, w)`` int64. The target is the argmax of a smooth
        random field (so classes form blobs with boundaries, as the boundary losses need); the logits are
        ``scale`` times a mix of that field and fresh noise (so the prediction is neither perfect nor random).
        With ``ignore_frac > 0`` that fraction of pixels (chosen by the same seed) is set to 255.
    """
    rs = np.random.RandomState(seed)
    field = _smooth(rs.standard_normal((b, c, h, w)), radius)
    field /= field.std()
    target = field.argmax(1).astype(np.int64)
    noise = _smooth(rs.standard_normal((b, c, h, w)), 1)
    noise /= noise.std()
    logits = scale * (0.6 * field + 0.4 * noise)
    if ignore_frac > 0:
        target[rs.random_sample((b, h, w)) < ignore_frac] = 255
    return logits.astype(np.float64), target


#: The standard cases every fidelity test runs, by name: (seed, b, c, h, w).
CASES = {
    "small": dict(seed=0, b=2, c=4, h=32, w=32),
    "binary": dict(seed=1, b=2, c=2, h=32, w=32),
    "wide": dict(seed=2, b=1, c=5, h=48, w=64),
}
