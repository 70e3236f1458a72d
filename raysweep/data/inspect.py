"""Dataset statistics for ``raysweep data inspect``: what a loss will face before any trial runs.

For a dataset folder (``nnunet``: it has ``dataset.json``; ``folder``: it has ``images/`` and ``masks/``; see
:func:`detect`) or each dataset of a sweep config (:func:`inspect_config`), :func:`inspect_dataset` reports:

* the classes and, per class, the share of labelled pixels/voxels, the share of cases it appears in, the objects
  (connected components, ``scipy.ndimage.label``, face connectivity, 3-D for volumes) per case and their median size;
* the case shapes, the voxel spacing of volumes (z, y, x in mm), the intensity range of each channel (raw values as
  stored: min, 0.5 and 99.5 percentiles, max);
* the split: cases per split, as the sweep will use them;
* ``nnunet`` with ``dims: 3``: the patch size and what it implies per split (:func:`patch_report`): the volume
  shapes, the non-overlapping patches that tile a volume and the sliding windows inference evaluates at nnU-Net's 50%
  overlap (median and range over the split's cases, from the file headers), and the patches an epoch draws;
* errors: every broken file the full data check finds (:mod:`raysweep.data.check`: every case of every split
  decoded; unreadable files, label values outside the declared classes, image/label geometry that does not match,
  NaN intensities, a missing option such as a palette ...). Each would fail a sweep, so ``raysweep data inspect``
  exits 2 when there is one;
* warnings the losses care about, which never fail anything: classes under 0.1% of the labelled pixels (region
  losses with a smoothing term and unweighted CE will largely ignore them), classes absent from most cases (the
  empty-class conventions of Dice decide their scores), anisotropic spacing.

Speed: the check reads every case once (in parallel; unchanged cases are cached by file fingerprint, so a second
inspect or run costs seconds); the statistics read at most ``max_cases`` cases that passed (default 40), spread over
the whole listing (every k-th case of the sorted ids); the report says how many were read. Within a case every voxel
counts.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

#: Below this share of the labelled pixels a class is flagged as rare.
RARE_FRACTION = 0.001
#: A class absent from more than this share of the inspected cases is flagged.
ABSENT_SHARE = 0.5
DEFAULT_MAX_CASES = 40
#: The datasets inspect reads: your own (nnunet, folder) and the embedded synthetic one. Synapse and Cityscapes are
#: skipped (their loaders resize on read; their published statistics are well known).
INSPECTED = ("nnunet", "folder", "synthetic")


def detect(path: str | Path) -> str:
    """``"config"`` (a YAML file), ``"nnunet"`` (a folder with dataset.json) or ``"folder"`` (images/ + masks/);
    FileNotFoundError / ValueError naming the path and the layouts otherwise."""
    p = Path(path).expanduser()
    if p.is_file() and p.suffix.lower() in (".yaml", ".yml"):
        return "config"
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist; give a dataset folder or a sweep config YAML")
    if p.is_dir() and (p / "dataset.json").is_file():
        return "nnunet"
    if p.is_dir() and (p / "images").is_dir() and (p / "masks").is_dir():
        return "folder"
    raise ValueError(f"{p}: not a dataset folder raysweep recognises; expected dataset.json (nnU-Net raw layout, "
                     f"dataset nnunet), images/ + masks/ (dataset folder) or a sweep config .yaml")


def _spread(items: list[str], n: int) -> list[str]:
    """At most ``n`` of ``items``, evenly spaced over the list (first and last kept)."""
    if len(items) <= n:
        return list(items)
    idx = np.unique(np.round(np.linspace(0, len(items) - 1, n)).astype(int))
    return [items[i] for i in idx]


def _synthetic_cases(options: Mapping[str, Any], split_options: Mapping[str, Mapping[str, Any]]
                     ) -> tuple[dict[str, list[str]], dict, list[str], list[str]]:
    """The embedded synthetic dataset's splits, per-case readers (volumes generated on first use, per split), class
    names and channel names; ``split_options`` adds per-split options (a sweep's train/select/eval options)."""
    from . import DATASETS, build_dataset, list_cases

    info = DATASETS["synthetic"]
    splits, built, readers = {}, {}, {}
    for split in ("train", info.select_split, info.eval_split):
        opts = {**options, **(split_options.get(split) or {})}
        splits[split] = list_cases("synthetic", split, **opts)

        def read(case: str, split=split, opts=opts):
            if split not in built:
                built[split] = {v.case: v for v in build_dataset("synthetic", split, **opts).volumes()}
            vol = built[split][case]
            return vol.image[..., None], vol.label, vol.spacing

        readers.update({c: read for c in splits[split]})
    return splits, readers, list(info.class_names), ["image"]


def _cases(name: str, root: Path, options: Mapping[str, Any]) -> tuple[Any, dict[str, list[str]], dict, list]:
    """(context, split -> case ids, case -> reader, class names) without reading image data."""
    if name == "nnunet":
        from . import nnunet

        desc = nnunet.describe(root)
        opts = nnunet.NnUNetDataset.check_options(options)
        splits = nnunet.compute_splits(desc, opts.get("fold", 0), opts.get("split_seed", 0), opts.get("val_cases"),
                                       opts.get("test_cases"))
        files = {**desc.training, **(desc.test or {})}

        def reader(case: str):
            image, label, spacing = nnunet.read_case(desc, case, files[case])
            return image, label, spacing

        return desc, splits, {c: reader for c in files}, list(desc.class_names)
    from . import folder

    opts = folder.FolderDataset.check_options(options)
    names = folder.class_names(root, opts.get("classes"), opts.get("palette"))
    pairs = folder.list_pairs(root)
    splits = folder.compute_splits(root, list(pairs), opts.get("split_seed", 0),
                                   opts.get("val_fraction", folder.DEFAULT_FRACTIONS["val"]),
                                   opts.get("test_fraction", folder.DEFAULT_FRACTIONS["test"]))
    ids = {n: i for i, n in enumerate(names)}

    def read(case: str):
        image_path, mask_path = pairs[case]
        image = folder.read_image(image_path)
        mask = folder.read_mask(mask_path, len(names), opts.get("palette"), ids)
        if image.shape[:2] != mask.shape:
            raise ValueError(f"{mask_path}: mask size {mask.shape} differs from its image {image_path.name} "
                             f"{image.shape[:2]}; they must match pixel for pixel")
        return image[None].astype(np.float32), mask[None], None

    return None, splits, {c: read for c in pairs}, list(names)


def inspect_dataset(name: str, root: str | Path | None, options: Mapping[str, Any] | None = None,
                    max_cases: int = DEFAULT_MAX_CASES,
                    split_options: Mapping[str, Mapping[str, Any]] | None = None, *, full_check: bool = True,
                    progress: bool = False) -> dict[str, Any]:
    """Statistics of the dataset ``name`` (``"nnunet"`` or ``"folder"`` under ``root``, or the embedded
    ``"synthetic"``, for which ``root`` is ignored); ``split_options`` adds per-split options (a sweep's train,
    select and eval options); see the module docstring.

    For ``nnunet`` and ``folder`` the full data check runs first (:func:`raysweep.data.check.check_dataset`: every
    case of every split decoded, cached by file fingerprint; ``full_check`` False skips it, ``progress`` shows its
    progress bar): its errors are the report's ``errors``, and the statistics are computed over cases that passed.

    Returns a JSON-able dict: ``dataset``, ``root``, ``classes``, ``splits`` (cases per split), ``inspected``,
    ``total_cases``, ``volumes`` (bool), ``shapes`` (min/max of (D, H, W) or (H, W)), ``spacing`` (volumes: median,
    min, max (z, y, x) in mm), ``channels`` (per channel: name, min, p0_5, p99_5, max), ``per_class`` (per class:
    fraction, cases_present, objects_per_case, median_object_size), ``patches`` (:func:`patch_report`: ``nnunet``
    with ``dims: 3`` in the training split's options, else None), ``checked`` (cases the full check read or
    found cached, None without it), ``errors`` (``{"file", "case", "error", ...}``: broken files, each failing the
    sweep) and ``warnings`` (sentences about the data a loss will face; they never fail anything). When the listing
    itself is unusable (dataset.json, classes, splits), the report holds only ``dataset``, ``root``, ``errors`` and
    ``warnings``.

    Raises:
        ValueError / FileNotFoundError: without ``full_check``, the description is unusable.
    """
    from .check import check_dataset

    if name not in INSPECTED:
        raise ValueError(f"inspect reads the {', '.join(INSPECTED)} datasets, not {name!r}")
    errors: list[dict[str, Any]] = []
    checked = None
    if name == "synthetic":
        desc = None
        splits, readers, names, channel_names = _synthetic_cases(dict(options or {}), split_options or {})
        volumes = True
    else:
        root = Path(root).expanduser()
        if full_check:
            check = check_dataset(name, root, options, split_options, progress=progress)
            errors, checked = check["errors"], check["cases"]
            if not check["splits"]:  # the listing failed: nothing to read
                return {"dataset": name, "root": str(root), "errors": errors, "warnings": []}
        desc, splits, readers, names = _cases(name, root, dict(options or {}))
        if full_check:
            splits = check["splits"]  # with the per-split options, as the sweep sees them
        channel_names = list(desc.channels) if desc is not None else ["R", "G", "B"]
        volumes = desc is not None and not desc.two_d
    broken = {e["case"] for e in errors}
    all_cases = sorted({c for s in splits.values() for c in s})
    chosen = _spread([c for c in all_cases if c not in broken], max_cases)
    k = len(names)
    counts = np.zeros(k, np.int64)
    present = np.zeros(k, np.int64)
    objects: list[list[int]] = [[] for _ in range(k)]
    shapes, spacings = [], []
    mins = np.full(len(channel_names), np.inf)
    maxs = np.full(len(channel_names), -np.inf)
    lows: list[list[float]] = [[] for _ in channel_names]
    highs: list[list[float]] = [[] for _ in channel_names]
    for case in chosen:
        try:
            image, label, spacing = readers[case](case)
        except (ValueError, OSError) as err:  # changed since the check, or not checked (full_check False)
            errors.append({"file": str(err).split(": ", 1)[0], "case": case, "splits": [],
                           "error": " ".join(str(err).split())})
            continue
        shapes.append(label.shape if volumes else label.shape[1:])
        if spacing is not None:
            spacings.append(spacing)
        valid = label != 255
        counts += np.bincount(label[valid].ravel(), minlength=k)[:k]
        lab = label if volumes else label[0]
        for c in range(k):
            mask = lab == c
            if not mask.any():
                continue
            present[c] += 1
            if c == 0:
                continue  # background: one big component, its count says nothing
            comp, n = ndimage.label(mask)
            sizes = np.bincount(comp.ravel())[1:]
            objects[c].extend(sizes.tolist())
        for ch in range(min(image.shape[-1], len(channel_names))):
            values = image[..., ch]
            mins[ch] = min(mins[ch], float(values.min()))
            maxs[ch] = max(maxs[ch], float(values.max()))
            lo, hi = np.percentile(values, [0.5, 99.5])
            lows[ch].append(float(lo))
            highs[ch].append(float(hi))
    read = len(chosen) - len([e for e in errors if e["case"] in set(chosen)])
    total = counts.sum()
    per_class = []
    for c, cname in enumerate(names):
        sizes = objects[c]
        per_class.append({
            "id": c, "name": cname,
            "fraction": float(counts[c] / total) if total else float("nan"),
            "cases_present": int(present[c]),
            "objects_per_case": (len(sizes) / read if read else float("nan")) if c else None,
            "median_object_size": float(np.median(sizes)) if sizes else None,
        })
    out: dict[str, Any] = {
        "dataset": name, "root": str(root) if root is not None else None, "classes": names,
        "splits": {s: len(splits[s]) for s in ("train", "val", "test")},
        "ranking_from": ("labelsTs" if desc is not None and desc.test is not None else
                         "its own test volumes" if name == "synthetic" else "held-out training cases"),
        "total_cases": len(all_cases), "inspected": read, "volumes": volumes,
        "shapes": ({"min": [int(min(s[i] for s in shapes)) for i in range(len(shapes[0]))],
                    "max": [int(max(s[i] for s in shapes)) for i in range(len(shapes[0]))]} if shapes else None),
        "spacing": ({"median": np.median(spacings, 0).round(4).tolist(), "min": np.min(spacings, 0).round(4).tolist(),
                     "max": np.max(spacings, 0).round(4).tolist()} if spacings else None),
        "channels": [{"name": n, "min": float(mins[i]), "p0_5": float(np.median(lows[i])) if lows[i] else None,
                      "p99_5": float(np.median(highs[i])) if highs[i] else None, "max": float(maxs[i])}
                     for i, n in enumerate(channel_names)] if read else [],
        "per_class": per_class, "checked": checked, "errors": errors,
        "patches": (patch_report(desc, splits, {**dict(options or {}), **((split_options or {}).get("train") or {})},
                                 broken) if name == "nnunet" else None),
    }
    out["warnings"] = _warnings(out, read)
    return out


def patch_report(desc: Any, splits: Mapping[str, list[str]], options: Mapping[str, Any],
                 skip: set[str] | frozenset[str] = frozenset()) -> dict[str, Any] | None:
    """What ``nnunet``'s ``dims: 3`` patch implies, from the volumes' headers (no voxel data); None unless the
    (training split's) ``options`` say ``dims: 3``.

    Args:
        desc: the :class:`~raysweep.data.nnunet_files.Description`.
        splits: case ids by split.
        options: the training split's dataset options (``dims``, ``patch_size``, ``patches_per_epoch``).
        skip: cases left out (broken files; the check reports them).

    Returns:
        ``{"patch_size": [d, h, w], "default": bool (patch_size not set), "patches_per_epoch": int, "overlap": 0.5,
        "splits": {split: {"cases", "shape": {"median", "min", "max"} (D, H, W), "patches_per_volume" and
        "windows": {"median", "min", "max"}}}}``: per volume the non-overlapping patches that tile it
        (:func:`~raysweep.data.patches.patches_per_volume`) and the windows of a sliding-window inference at
        ``overlap`` (:func:`~raysweep.data.patches.sliding_window_positions`).
    """
    from .nnunet import NnUNetDataset
    from .nnunet_files import case_shape
    from .patches import (
        INFERENCE_OVERLAP,
        default_patch_size,
        default_patches_per_epoch,
        patches_per_volume,
        sliding_window_positions,
    )

    opts = NnUNetDataset.check_options(options)
    if opts.get("dims", 2) != 3 or desc.two_d:
        return None
    files = {**desc.training, **(desc.test or {})}
    shapes: dict[str, tuple[int, int, int]] = {}
    for case in sorted({c for cases in splits.values() for c in cases} - set(skip)):
        try:
            shapes[case] = case_shape(files[case])
        except (ValueError, OSError):
            continue  # a broken file: the data check names it
    train = [shapes[c] for c in splits["train"] if c in shapes]
    if not train:
        return None
    patch = opts.get("patch_size") or default_patch_size(train)

    def spread(values: list[int]) -> dict[str, float | int]:
        return {"median": float(np.median(values)), "min": int(min(values)), "max": int(max(values))}

    per_split = {}
    for split, cases in splits.items():
        found = [shapes[c] for c in cases if c in shapes]
        if found:
            per_split[split] = {
                "cases": len(found),
                "shape": {"median": np.median(found, axis=0).tolist(), "min": np.min(found, axis=0).tolist(),
                          "max": np.max(found, axis=0).tolist()},
                "patches_per_volume": spread([patches_per_volume(s, patch) for s in found]),
                "windows": spread([sliding_window_positions(s, patch, INFERENCE_OVERLAP) for s in found]),
            }
    return {"patch_size": list(patch), "default": opts.get("patch_size") is None,
            "patches_per_epoch": opts.get("patches_per_epoch") or default_patches_per_epoch(train, patch),
            "overlap": INFERENCE_OVERLAP, "splits": per_split}


def _warnings(report: Mapping[str, Any], read: int) -> list[str]:
    found: list[str] = []
    if not read:
        return found
    for c in report["per_class"][1:]:
        if c["fraction"] < RARE_FRACTION:
            found.append(f"class {c['name']!r} covers {c['fraction']:.4%} of the labelled pixels "
                         f"(< {RARE_FRACTION:.1%})"
                         f": losses without class weighting will largely ignore it; compare weighted and region losses")
        absent = read - c["cases_present"]
        if absent > ABSENT_SHARE * read:
            found.append(f"class {c['name']!r} is absent from {absent} of {read} inspected cases: Dice of an empty "
                         f"class depends on the empty convention (strict: NaN when both are empty, 0 and the worst "
                         f"HD95 for a false positive)")
    if report["spacing"]:
        median = report["spacing"]["median"]
        if max(median) / min(median) > 3:
            trained = ("3-D patches are rotated in-plane only" if report.get("patches") else
                       "slices are trained in-plane at image_size")
            found.append(f"anisotropic spacing (median {' x '.join(f'{v:g}' for v in median)} mm): {trained}, and "
                         f"HD95 (in mm) weighs an error across slices {max(median) / min(median):.1f}x an in-plane "
                         f"one")
    return found


def inspect_config(datasets: Mapping[str, Any] | list | None, max_cases: int = DEFAULT_MAX_CASES, *,
                   full_check: bool = True, progress: bool = False) -> list[dict[str, Any]]:
    """Inspect each ``nnunet``/``folder`` dataset of a sweep config's ``datasets`` section (with its ``options`` and
    per-split options, as the sweep reads it; ``full_check``, ``progress``: see :func:`inspect_dataset`); other
    datasets are listed as skipped. A relative ``root`` is taken from the working folder, as ``raysweep run`` and the
    trials take it."""
    datasets = datasets or {"synthetic": {}}
    if isinstance(datasets, list):
        datasets = {n: {} for n in datasets}
    out = []
    for name, section in datasets.items():
        section = section or {}
        if name not in INSPECTED:
            out.append({"dataset": name, "skipped": f"inspect reads the {', '.join(INSPECTED)} datasets"})
            continue
        if name == "synthetic":
            out.append(inspect_dataset(name, None, section.get("options") or {}, max_cases,
                                       split_options=sweep_split_options({**section, "name": name})))
            continue
        if not section.get("root"):
            raise ValueError(f"datasets.{name}.root is required: the folder holding the data")
        root = Path(section["root"]).expanduser()
        if not root.is_absolute() and not root.exists():
            error = (f"{root} does not exist from the working folder {Path.cwd()}: a relative root is taken from "
                     "where raysweep runs, as raysweep run takes it; run from that folder or give an absolute path")
            out.append({"dataset": name, "root": str(root), "warnings": [],
                        "errors": [{"file": str(root), "case": None, "splits": [], "error": error}]})
            continue
        out.append(inspect_dataset(name, root, section.get("options") or {}, max_cases,
                                   split_options=sweep_split_options({**section, "name": name}),
                                   full_check=full_check, progress=progress))
    return out


def sweep_split_options(section: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per-split options of a sweep config's dataset section: train, selection (``select_options``) and ranking
    (``eval_options``) splits, keyed by split name."""
    from .check import split_options_of

    return split_options_of(section.get("name") or "synthetic", section)


def _fmt(x: float | None, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    return f"{x:.{digits}g}"


def as_text(reports: list[dict[str, Any]]) -> str:
    """The human-readable report of :func:`inspect_dataset` or :func:`inspect_config`."""
    lines: list[str] = []
    for r in reports:
        if "skipped" in r:
            lines += [f"{r['dataset']}: skipped ({r['skipped']})", ""]
            continue
        lines.append(f"{r['dataset']}  {r['root'] or '(embedded, generated)'}")
        if "per_class" not in r:  # the listing failed: errors only
            lines += _error_lines(r) + [""]
            continue
        splits = ", ".join(f"{s} {n}" for s, n in r["splits"].items())
        lines.append(f"  cases: {splits} (ranking split: {r['ranking_from'] if r['dataset'] == 'nnunet' else 'test'})"
                     f"; inspected {r['inspected']} of {r['total_cases']}")
        if r["shapes"]:
            axes = "(D, H, W)" if r["volumes"] else "(H, W)"
            lines.append(f"  shape {axes}: {' x '.join(map(str, r['shapes']['min']))} .. "
                         f"{' x '.join(map(str, r['shapes']['max']))}")
        if r["spacing"]:
            sp = r["spacing"]
            lines.append(f"  spacing (z, y, x) mm: median {' x '.join(_fmt(v) for v in sp['median'])}, range "
                         f"{' x '.join(_fmt(v) for v in sp['min'])} .. {' x '.join(_fmt(v) for v in sp['max'])}")
        if r.get("patches"):
            lines += _patch_lines(r["patches"])
        if r["channels"]:
            lines.append(f"  {'channel':<10}{'min':>10}{'p0.5':>10}{'p99.5':>10}{'max':>10}")
            for ch in r["channels"]:
                lines.append(f"  {ch['name']:<10}{_fmt(ch['min']):>10}{_fmt(ch['p0_5']):>10}{_fmt(ch['p99_5']):>10}"
                             f"{_fmt(ch['max']):>10}")
        unit = "voxels" if r["volumes"] else "pixels"
        lines.append(f"  {'id':>3} {'class':<16}{unit + ' %':>10}{'in cases':>10}{'objects/case':>14}"
                     f"{'median size':>13}")
        for c in r["per_class"]:
            lines.append(f"  {c['id']:>3} {c['name']:<16}{_fmt(100 * c['fraction'], 3):>10}"
                         f"{c['cases_present']:>6}/{r['inspected']:<3}{_fmt(c['objects_per_case'], 3):>14}"
                         f"{_fmt(c['median_object_size'], 4):>13}")
        lines += _error_lines(r)
        if r["warnings"]:
            lines.append("  warnings:")
            lines += [f"    - {w}" for w in r["warnings"]]
        else:
            lines.append("  warnings: none")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _patch_lines(p: Mapping[str, Any]) -> list[str]:
    """The text of :func:`patch_report`."""
    from .patches import PATCH_CAP, PATCH_MULTIPLE

    size = " x ".join(map(str, p["patch_size"]))
    how = (f"default: the training volumes' median shape, sides rounded up to {PATCH_MULTIPLE}, capped at "
           f"{' x '.join(map(str, PATCH_CAP))}" if p["default"] else "patch_size")
    lines = [f"  3-D patches (dims: 3): {size} ({how}); {p['patches_per_epoch']} patches an epoch",
             f"    per volume: patches tiling it (non-overlapping), sliding windows at {p['overlap']:.0%} overlap"]
    for split, s in p["splits"].items():
        tiles, windows = s["patches_per_volume"], s["windows"]
        shape = " x ".join(_fmt(v) for v in s["shape"]["median"])
        lines.append(f"    {split:<6}{s['cases']:>5} cases, median shape {shape}: patches {_fmt(tiles['median'])} "
                     f"({tiles['min']} .. {tiles['max']}), windows "
                     f"{_fmt(windows['median'])} ({windows['min']} .. {windows['max']})")
    return lines


def _error_lines(report: Mapping[str, Any], limit: int = 20) -> list[str]:
    errors = report.get("errors") or []
    if not errors:
        checked = report.get("checked")
        return [f"  errors: none ({checked} cases checked)"] if checked is not None else []
    lines = [f"  errors ({len(errors)}: each fails a sweep; fix the file as the line says):"]
    lines += [f"    - {e['error']}" for e in errors[:limit]]
    if len(errors) > limit:
        lines.append(f"    ... and {len(errors) - limit} more (--json lists every one)")
    return lines


def as_json(reports: list[dict[str, Any]]) -> str:
    return json.dumps(reports, indent=1, default=float)
