"""Shared set-up of the benchmark scripts."""

from __future__ import annotations

import os
import tempfile

import numpy as np


def ensure_inversenet() -> None:
    """Make ``build_loss("inverseform")`` work: train a small default InverseNet in a temporary cache if none exists.

    Its quality does not matter for timing; the cost per call is what the benchmarks measure.
    """
    from raysweep.losses.boundary import inverseform as inv

    try:
        inv.load_inversenet("default")
        return
    except FileNotFoundError:
        pass
    os.environ["RAYSWEEP_CACHE"] = tempfile.mkdtemp(prefix="raysweep-bench-")
    rng = np.random.default_rng(0)
    yy, xx = np.ogrid[:64, :64]
    masks = []
    for _ in range(16):
        m = np.zeros((64, 64), np.int64)
        for k in (1, 2, 3):
            cy, cx, r = rng.integers(10, 54), rng.integers(10, 54), rng.integers(5, 15)
            m[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = k
        masks.append(m)
    net, summary = inv.train_inversenet(inv.edge_tiles_from_masks(masks, 4, 64), steps=50, progress=False)
    inv.save_inversenet(net, "default", summary)


def emit(rows: list[str], row: str) -> None:
    """Print a markdown table row as it is measured and keep it for :func:`save_table`."""
    rows.append(row)
    print(row, flush=True)


def save_table(rows: list[str], out: str | None) -> None:
    """Write the markdown table to ``out`` (``--out``), if given."""
    if out:
        from pathlib import Path

        Path(out).parent.mkdir(parents=True, exist_ok=True)
        Path(out).write_text("\n".join(rows) + "\n")
