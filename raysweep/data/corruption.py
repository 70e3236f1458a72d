"""Label corruption for robustness studies: the dataset option ``label_corruption``, for every dataset.

Corrupts the *training* masks only (an error for any other split), after loading and before augmentation,
deterministically per item: item ``i`` under spec ``j`` of the list draws from
``numpy.random.default_rng(SeedSequence([seed, i, j]))``, so the same seed gives the same masks in every process and
worker, and another seed other masks. Selection and ranking labels stay clean.

A spec, or a list of specs applied in order (in a sweep config: ``datasets.<name>.train_options.label_corruption``)::

    {kind: boundary, pixels: k}             # k > 0: dilate every foreground component by k px into the background;
                                            # k < 0: erode it by |k| px (eroded pixels become background);
    {kind: boundary, pixels: 2, random: true}   # the sign is drawn per component (dilate or erode by |k|, p = 0.5)
    {kind: drop_small, max_size: 20, p: 0.5}    # each component smaller than max_size pixels becomes background
                                                # with probability p (a missed small structure)
    {kind: swap, pairs: [[3, 4]], p: 0.3}       # each connected component of class a becomes b, and of b becomes a,
                                                # with probability p (a confusion between look-alike classes)
    seed: 0                                     # optional, every kind (default 0)

``p`` defaults to 1. Conventions: class 0 is the background; 255 (ignore) is never changed and never grows;
components are 8-connected, per class, in the 2-D mask of an item; distances are Euclidean, in pixels (a pixel within
distance k of a component is added by a dilation by k, a pixel within distance k of the component's outside is
removed by an erosion by k; the image border is not an outside, so objects cut by the border are not eroded there).

The ``synthetic`` dataset's own ``label_noise`` and ``missing_small`` options are special cases kept for
compatibility (a per-class one-pixel boundary shift and dropped specks, in 3-D); ``label_corruption`` is the general
form and works for every dataset.

What scipy gives and what is written here: connected components (``ndimage.label``, ``find_objects``) and the
Euclidean distance transform with nearest-pixel indices (``ndimage.distance_transform_edt``) come from scipy. scipy
has no per-component operations, so these are written here: eroding each component against everything that is not
that component (``binary_erosion`` of a class mask would keep the contact line between two touching components of
the same class and erode an object against the image border), dilating several components at once with contested
background pixels going to the nearest one (sequential ``binary_dilation`` would let the first component win), the
per-component random sign, and the per-component Bernoulli draws of ``drop_small`` and ``swap``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from ..checks import did_you_mean
from ..vocab import IGNORE_INDEX

OPTION = "label_corruption"
KINDS = ("boundary", "drop_small", "swap")
_KEYS = {
    "boundary": ("kind", "pixels", "random", "seed"),
    "drop_small": ("kind", "max_size", "p", "seed"),
    "swap": ("kind", "pairs", "p", "seed"),
}
_REQUIRED = {"boundary": ("pixels",), "drop_small": ("max_size",), "swap": ("pairs",)}
_EIGHT = np.ones((3, 3), bool)  # 8-connectivity for components


@dataclass(frozen=True)
class Corruption:
    """One parsed spec (see the module docstring); ``pairs`` as a tuple of ``(a, b)`` class-id pairs."""

    kind: str
    seed: int = 0
    pixels: int = 0
    random: bool = False
    max_size: int = 0
    p: float = 1.0
    pairs: tuple[tuple[int, int], ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The spec with its defaults filled in, JSON-able (what ``check_dataset_options`` returns)."""
        keys = _KEYS[self.kind]
        out = {k: v for k, v in asdict(self).items() if k in keys}
        if "pairs" in out:
            out["pairs"] = [list(pair) for pair in self.pairs]
        return out


# ---------------------------------------------------------------------------------------------------------------
# Checking: by value, reading no data.

def _is_int(x: Any) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, (bool, np.bool_))


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float, np.integer, np.floating)) and not isinstance(x, (bool, np.bool_))


def parse(value: Any, dataset: str = "dataset", num_classes: int | None = None) -> tuple[Corruption, ...]:
    """Parse and check ``label_corruption``: a spec (mapping), a list of specs, or None / an empty list (none).

    Args:
        value: the option's value, as written in a config.
        dataset: the dataset's name, for messages.
        num_classes: when known, ``swap`` class ids must be below it.

    Returns:
        tuple of :class:`Corruption`, in the order they apply (empty: no corruption).

    Raises:
        ValueError: naming ``<dataset>: option label_corruption[<i>].<key>`` and what to write instead, for an
            unknown or missing key or kind, a wrong type, ``max_size`` < 1, ``p`` outside [0, 1], a ``seed`` < 0,
            ``pairs`` that are not pairs of distinct class ids in ``0..num_classes-1`` or name a class twice.
    """
    if value is None:
        return ()
    if isinstance(value, Mapping):
        return (_parse_one(value, f"{dataset}: option {OPTION}", num_classes),)
    if isinstance(value, (list, tuple)):
        return tuple(_parse_one(v, f"{dataset}: option {OPTION}[{i}]", num_classes) for i, v in enumerate(value))
    raise ValueError(f"{dataset}: option {OPTION} must be a mapping such as {{kind: boundary, pixels: 2}} or a list "
                     f"of them, got {value!r}")


def _parse_one(spec: Any, where: str, num_classes: int | None) -> Corruption:
    if not isinstance(spec, Mapping):
        raise ValueError(f"{where} must be a mapping such as {{kind: boundary, pixels: 2}}, got {spec!r}")
    kind = spec.get("kind")
    if kind not in KINDS:
        hint = did_you_mean(kind, KINDS) if isinstance(kind, str) else ""
        raise ValueError(f"{where}.kind: unknown kind {kind!r}{hint}; choose one of {', '.join(KINDS)}"
                         if "kind" in spec else f"{where}: the key kind is missing; add kind: one of "
                         f"{', '.join(KINDS)}")
    unknown = [k for k in spec if k not in _KEYS[kind]]
    if unknown:
        raise ValueError(f"{where}: unknown key {unknown[0]!r} for kind {kind}{did_you_mean(unknown[0], _KEYS[kind])}"
                         f"; accepted: {', '.join(_KEYS[kind])}")
    missing = [k for k in _REQUIRED[kind] if k not in spec]
    if missing:
        example = {"boundary": "pixels: 2 (dilate by 2 px; -2 erodes)", "drop_small": "max_size: 20 (pixels)",
                   "swap": "pairs: [[3, 4]] (class ids)"}[kind]
        raise ValueError(f"{where}: kind {kind} needs the key {missing[0]}; add e.g. {example}")
    out: dict[str, Any] = {"kind": kind}
    seed = spec.get("seed", 0)
    if not _is_int(seed) or seed < 0:
        raise ValueError(f"{where}.seed must be an integer >= 0, got {seed!r}")
    out["seed"] = int(seed)
    if "p" in spec:
        p = spec["p"]
        if not _is_number(p) or not 0.0 <= float(p) <= 1.0:  # NaN fails the comparison
            raise ValueError(f"{where}.p must be a probability in [0, 1] (the chance each component is changed), "
                             f"got {p!r}")
        out["p"] = float(p)
    if kind == "boundary":
        pixels, random = spec["pixels"], spec.get("random", False)
        if not _is_int(pixels):
            raise ValueError(f"{where}.pixels must be an integer number of pixels (> 0 dilates, < 0 erodes), "
                             f"got {pixels!r}")
        if not isinstance(random, (bool, np.bool_)):
            raise ValueError(f"{where}.random must be true (a random sign per component) or false, got {random!r}")
        out.update(pixels=int(pixels), random=bool(random))
    elif kind == "drop_small":
        size = spec["max_size"]
        if not _is_int(size) or size < 1:
            raise ValueError(f"{where}.max_size must be an integer >= 1 (components with fewer pixels may be "
                             f"dropped), got {size!r}")
        out["max_size"] = int(size)
    else:
        out["pairs"] = _parse_pairs(spec["pairs"], f"{where}.pairs", num_classes)
    return Corruption(**out)


def _parse_pairs(pairs: Any, where: str, num_classes: int | None) -> tuple[tuple[int, int], ...]:
    shape_ok = (isinstance(pairs, (list, tuple)) and pairs
                and all(isinstance(pr, (list, tuple)) and len(pr) == 2 and all(_is_int(c) for c in pr)
                        for pr in pairs))
    if not shape_ok:
        raise ValueError(f"{where} must be a non-empty list of [a, b] pairs of class ids, e.g. [[3, 4]], "
                         f"got {pairs!r}")
    seen: set[int] = set()
    for a, b in pairs:
        for c in (a, b):
            if c < 0 or c == IGNORE_INDEX or (num_classes is not None and c >= num_classes):
                bound = f"0..{num_classes - 1}" if num_classes is not None else ">= 0 (not the ignore value 255)"
                raise ValueError(f"{where}: class id {c} is out of range; use class ids {bound}")
        if a == b:
            raise ValueError(f"{where}: the pair [{a}, {b}] swaps a class with itself; name two different classes")
        if a in seen or b in seen:
            raise ValueError(f"{where}: class {a if a in seen else b} is in two pairs; a class can be swapped with "
                             "one other class only")
        seen.update((a, b))
    return tuple((int(a), int(b)) for a, b in pairs)


def check(dataset: str, name: str, value: Any, num_classes: int | None = None) -> list[dict[str, Any]] | None:
    """An option check (``(dataset, name, value) -> normalised``): the specs as a list of dicts with defaults filled
    in, or None for no corruption; ValueError as :func:`parse`."""
    specs = parse(value, dataset, num_classes)
    return [s.as_dict() for s in specs] if specs else None


def check_split(dataset: str, split: str, value: Any) -> None:
    """ValueError unless ``split`` is ``"train"`` or ``value`` asks for no corruption."""
    if split != "train" and parse(value, dataset):
        raise ValueError(f"{dataset}: option {OPTION} corrupts training labels only, not the {split!r} split (its "
                         "labels select and rank, and must stay clean); move it to the dataset's train_options")


# ---------------------------------------------------------------------------------------------------------------
# Applying.

def apply(specs: Sequence[Corruption], mask: np.ndarray, index: int) -> np.ndarray:
    """The corrupted mask of item ``index``: each spec in order, spec ``j`` drawing from
    ``default_rng(SeedSequence([spec.seed, index, j]))``.

    Args:
        specs: from :func:`parse`.
        mask: (H, W) integer class ids, 255 = ignore; not modified.
        index: the item's index in its dataset (seeds the draws).

    Returns:
        a new (H, W) array of ``mask``'s dtype.
    """
    out = np.array(mask, copy=True)
    for j, spec in enumerate(specs):
        rng = np.random.default_rng(np.random.SeedSequence([spec.seed, int(index), j]))
        out = apply_one(spec, out, rng)
    return out


def apply_one(spec: Corruption, mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One spec on a (H, W) mask with ``rng``; returns a new array of ``mask``'s dtype."""
    if mask.ndim != 2:
        raise ValueError(f"{OPTION}: expected a 2-D (H, W) mask, got shape {mask.shape}")
    if spec.kind == "boundary":
        return _boundary(mask, spec.pixels, spec.random, rng)
    if spec.kind == "drop_small":
        return _drop_small(mask, spec.max_size, spec.p, rng)
    return _swap(mask, spec.pairs, spec.p, rng)


def components(mask: np.ndarray, classes: Sequence[int] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """8-connected components of each class, numbered in class order then raster order.

    Args:
        mask: (H, W) class ids.
        classes: the classes to label (default: every value present except 0 and 255).

    Returns:
        ``labels`` int32 (H, W) (0 = no component, ``i`` = component ``i``) and ``owner`` int64 (n + 1,): the class
        of each component (``owner[0]`` = -1).
    """
    if classes is None:
        classes = [int(c) for c in np.unique(mask) if c not in (0, IGNORE_INDEX)]
    labels = np.zeros(mask.shape, np.int32)
    owner = [-1]
    for c in classes:
        lab, n = ndimage.label(mask == c, structure=_EIGHT)
        if n:
            labels[lab > 0] = lab[lab > 0] + len(owner) - 1
            owner += [c] * n
    return labels, np.asarray(owner, np.int64)


def _boundary(mask: np.ndarray, pixels: int, random: bool, rng: np.random.Generator) -> np.ndarray:
    labels, owner = components(mask)
    n = len(owner) - 1
    k = abs(pixels)
    if not n or not k:
        return mask.copy()
    signs = rng.choice([-1, 1], size=n) if random else np.full(n, 1 if pixels > 0 else -1)
    out = mask.copy()
    # Erosion: each eroding component against everything that is not itself, in a box with a margin.
    for i, box in enumerate(ndimage.find_objects(labels), start=1):
        if signs[i - 1] > 0 or box is None:
            continue
        box = tuple(slice(max(s.start - k - 1, 0), s.stop + k + 1) for s in box)
        inside = labels[box] == i
        if inside.all():  # no outside in the image: nothing to erode against
            continue
        depth = ndimage.distance_transform_edt(inside)
        region = out[box]
        region[inside & (depth <= k)] = 0
    # Dilation: background pixels within k of a dilating component take the class of the nearest one.
    growing = signs[np.maximum(labels - 1, 0)] > 0
    source = (labels > 0) & growing
    if source.any():
        dist, (iy, ix) = ndimage.distance_transform_edt(~source, return_indices=True)
        target = (out == 0) & (dist <= k)
        out[target] = owner[labels[iy[target], ix[target]]]
    return out


def _drop_small(mask: np.ndarray, max_size: int, p: float, rng: np.random.Generator) -> np.ndarray:
    labels, owner = components(mask)
    n = len(owner) - 1
    if not n:
        return mask.copy()
    sizes = np.bincount(labels.ravel(), minlength=n + 1)
    draws = rng.uniform(size=n)  # one draw per component, small or not: the draws do not depend on the sizes
    drop = np.concatenate([[False], (sizes[1:] < max_size) & (draws < p)])
    out = mask.copy()
    out[drop[labels]] = 0
    return out


def _swap(mask: np.ndarray, pairs: Sequence[tuple[int, int]], p: float, rng: np.random.Generator) -> np.ndarray:
    out = mask.copy()
    for a, b in pairs:  # components of the mask as given: a component swapped a -> b is not swapped back
        labels, owner = components(mask, (a, b))
        n = len(owner) - 1
        if not n:
            continue
        swap = np.concatenate([[False], rng.uniform(size=n) < p])
        other = np.where(owner == a, b, a)
        hit = swap[labels]
        out[hit] = other[labels[hit]]
    return out
