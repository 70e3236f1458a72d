"""Shared set-up of the benchmark modules: InverseNet, inputs (label maps, a loss's extra inputs), tables, JSON."""

from __future__ import annotations

import json
import math
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from raysweep.checks import jsonable as _jsonable


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


def smooth_noise(n: int, num_classes: int, size: int, seed: int = 0, blur: float = 40.0) -> np.ndarray:
    """``(n, num_classes, size, size)`` float64 uniform noise smoothed per channel (Gaussian, sigma ``size / blur``)."""
    from scipy import ndimage

    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random((n, num_classes, size, size)), (0, 0, size / blur, size / blur))


def label_maps(n: int, num_classes: int, size: int, seed: int = 0, blur: float = 40.0) -> np.ndarray:
    """``(n, size, size)`` int64 label maps: the argmax of :func:`smooth_noise`, many touching regions of varied
    size (``blur`` larger = smaller regions)."""
    return smooth_noise(n, num_classes, size, seed, blur).argmax(1).astype(np.int64)


def blob_batch(b: int, c: int, h: int, w: int, seed: int = 0, ignore_frac: float = 0.05, scale: float = 2.0):
    """Logits ``(b, c, h, w)`` float32 (N(0, scale^2)) and a target ``(b, h, w)`` int64: a disc per foreground class
    over 10 % uniform noise, ``ignore_frac`` of the pixels 255 (the boundary family sees real regions)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(b, c, h, w, generator=g) * scale
    target = torch.randint(0, c, (b, h, w), generator=g)
    # a few blobs make the boundary family see real regions, not salt-and-pepper noise
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    for i in range(b):
        base = torch.zeros(h, w, dtype=torch.long)
        for k in range(1, c):
            cy, cx = (torch.randint(h // 8, h - h // 8, (1,), generator=g).item(),
                      torch.randint(w // 8, w - w // 8, (1,), generator=g).item())
            r = torch.randint(max(h // 10, 2), max(h // 4, 3), (1,), generator=g).item()
            base[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = k
        noise = torch.rand(h, w, generator=g) < 0.1
        target[i] = torch.where(noise, target[i], base)
    target[torch.rand(b, h, w, generator=g) < ignore_frac] = 255
    return logits, target


def fake_extras(name: str, logits: torch.Tensor, dist_map: torch.Tensor | None = None, *, seed: int = 0,
                features: str = "decoder") -> dict[str, torch.Tensor]:
    """What a training loop passes to loss ``name`` besides ``(logits, target)``, per its ``LossSpec.needs``.

    ``dist_map`` (precomputed ``(B, C, H, W)`` float32, as the DataLoader workers provide it) is passed on when given
    and needed; the model outputs are random, from ``seed``, on ``logits``'s device: ``aux_logits`` ``(B, num_bins,
    H, W)``; ``features`` ``(B, 16, H, W)`` (``"decoder"``: a U-Net decoder's output) or ``(B, 8, H/2, W/2)``
    (``"small"``: what tests/conftest.py's ``extras_for`` passes). Maps a loss computes from the target itself
    (``boundary``, ``rw_map``) are left to the loss.
    """
    from raysweep.losses import LOSSES

    spec = LOSSES[name]
    g = torch.Generator().manual_seed(seed)
    b, _, h, w = logits.shape
    out = {}
    if "dist_map" in spec.needs and dist_map is not None:
        out["dist_map"] = dist_map
    if "aux_logits" in spec.needs:
        out["aux_logits"] = torch.randn(b, spec.defaults["num_bins"], h, w, generator=g).to(logits.device)
    if "features" in spec.needs:
        shape = (b, 16, h, w) if features == "decoder" else (b, 8, max(h // 2, 1), max(w // 2, 1))
        out["features"] = torch.randn(*shape, generator=g).to(logits.device)
    return out


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def jsonable(x):
    """Strict JSON for the benchmark records: :func:`raysweep.checks.jsonable`, except that NaN is written as
    ``"nan"`` (a failed reading stays distinguishable from a missing one), one-element tensors become numbers and
    anything else JSON cannot hold its ``repr``."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if (isinstance(x, torch.Tensor) and x.numel() == 1) or (isinstance(x, np.generic) and x.ndim == 0):
        x = x.item()
    if isinstance(x, float) and math.isnan(x):
        return "nan"
    x = _jsonable(x)
    return x if isinstance(x, (str, int, float, bool)) or x is None else repr(x)


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


# -- one timed GPU run made of parts (benchmarks.gpu_session, benchmarks.gpu_sweep) ---------------------------------

T0 = time.perf_counter()


def elapsed() -> float:
    """Seconds since the benchmark module was imported."""
    return time.perf_counter() - T0


def log(*args) -> None:
    print(f"[{elapsed():6.1f}s]", *args, flush=True)


class PartsRun:
    """A run of named parts against a time budget, whose figures land in one JSON file that is rewritten after every
    part (and whenever a part calls :meth:`save`), so a failed part or a killed run still leaves what was measured.

    Subclasses set ``budget`` (seconds) and fill ``results["meta"]``; :meth:`part` runs one part in its own
    try/except and records its status, wall time and, on failure, the traceback under ``results["errors"]``.
    """

    def __init__(self, out: str | None, meta: dict) -> None:
        self.out = Path(out) if out else None
        self.results: dict = {"meta": {**meta, "argv": sys.argv[1:], "started": time.strftime("%Y-%m-%d %H:%M:%S")},
                              "parts": {}, "errors": {}}

    def save(self) -> None:
        self.results["meta"]["elapsed_s"] = round(elapsed(), 1)
        if self.out:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.out.with_suffix(".tmp")
            tmp.write_text(json.dumps(jsonable(self.results), indent=1))
            tmp.replace(self.out)

    def print_errors(self) -> None:
        """The summary's tail: which parts failed, and the end of each one's traceback."""
        if self.results["errors"]:
            print("\nerrors in parts:", ", ".join(self.results["errors"]))
            for name, tb in self.results["errors"].items():
                print(f"--- {name}:\n{tb[-1200:]}")

    def run_part(self, name: str, fn, box: dict) -> None:
        """``fn()`` filling ``box`` (the part's record): status ``ok`` unless it set one, ``error`` if it raised
        (KeyboardInterrupt is recorded, then re-raised: the JSON must land)."""
        t = time.perf_counter()
        try:
            fn()
            box["status"] = box.get("status", "ok")
        except BaseException as exc:  # noqa: BLE001 - record and go on
            box["status"] = "error"
            self.results["errors"][name] = "".join(traceback.format_exception(exc))[-4000:]
            log(f"part {name} failed: {type(exc).__name__}: {exc}")
            if isinstance(exc, KeyboardInterrupt):
                raise
        finally:
            box["wall_s"] = round(time.perf_counter() - t, 2)
            self.save()


def fmt(x, spec: str = ".2f", dash: str = "-") -> str:
    """A figure for a summary line: ``dash`` for a missing or non-finite one, else ``format(x, spec)``."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return dash
    try:
        return format(x, spec)
    except (TypeError, ValueError):
        return str(x)
