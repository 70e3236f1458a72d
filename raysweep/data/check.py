"""The full data check: every case of every split of a dataset read from files (``nnunet``, ``folder``) opened and
decoded once, before a sweep starts (``raysweep run``) and by ``raysweep data inspect``.

Broken data found by a trial costs GPU-hours and shows up late (an ``error`` trial, a cell without results); found
here it stops ``raysweep run`` with exit status 2 before Ray starts or the output folder is written, with one line
per broken file saying what is wrong and the fix.

What is refused (each an error whose message starts with the file and ends with the fix):

* the listing, as :func:`raysweep.data.list_cases` reads it, for each split with that split's options:
  ``dataset.json`` (unreadable, missing keys, region labels, label ids with gaps, a ``file_ending`` no file has,
  ``numTraining``), missing images, channels or labels, ``splits_final.json`` / ``splits.json`` of the wrong shape
  or naming unknown cases, ``classes.json`` (unreadable, one class, ids with gaps), empty folders;
* the content of every case, decoded in full with the checks of :func:`raysweep.data.nnunet_files.read_case`
  (NIfTI and 2-D images) and :func:`raysweep.data.folder.read_pair` (images and masks): unreadable, truncated,
  zero-byte or random-bytes files, directories, broken links and symbolic link loops where a file should be, image
  and label shapes or affines that differ, channel counts other than ``dataset.json`` declares, NaN or infinite
  intensities (naming the channel file that holds them), non-positive voxel spacing, labels that are not 3-D, not
  integers or outside the declared classes (16-bit masks included), mask colours not in the palette, masks whose
  size differs from the image;
* a folder whose masks are all colour images while the option ``palette`` is not given: one error naming the
  missing option, not one per mask.

Cost: the cases are read in parallel by a thread pool (gzip decompression and numpy release the GIL, and the
process already holds the listing), with a progress bar on stderr when the check takes more than 2 seconds. A case
that passes is cached in ``<cache>/check/<dataset>-<key>.json`` (cache folder ``$RAYSWEEP_CACHE`` or
``~/.cache/raysweep``) under the fingerprint of its files (:func:`~raysweep.data.base.files_fingerprint`: names,
sizes, modification times; the fingerprint of the CT statistics) and of what it was checked against (classes,
channels, palette); the next check re-reads only cases whose fingerprint changed. Failures are never cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .base import cache_dir, files_fingerprint

#: Datasets the check reads; the others (``synthetic`` generated, ``synapse``/``cityscapes`` checked by their loaders
#: on their fixed public layouts) are skipped.
CHECKED = ("nnunet", "folder")
#: Part of every cached pass's fingerprint: bump it when the checks change, so earlier passes are read again.
CHECK_VERSION = 1
#: Broken files listed in the error of ``raysweep run`` (the rest are counted; ``inspect --json`` lists all).
MAX_LISTED = 20
_SPLITS = ("train", "val", "test")

__all__ = ["CHECKED", "DataCheckError", "check_dataset", "check_sections", "format_errors", "raise_for_errors",
           "split_options_of", "summary"]


class DataCheckError(ValueError):
    """The data check found broken files; ``reports`` holds every dataset's report (:func:`check_dataset`)."""

    def __init__(self, message: str, reports: list[dict[str, Any]]) -> None:
        super().__init__(message)
        self.reports = reports


@dataclass(frozen=True)
class _Unit:
    """One case to decode: its files, what they are checked against (``salt``) and the reader that checks them."""

    key: str
    case: str
    paths: tuple[Path, ...]
    salt: Any
    read: Callable[[], Any]


def _one_line(message: str) -> str:
    return " ".join(part.strip() for part in str(message).splitlines() if part.strip())


def _error(message: Any, root: Path, case: str | None = None, splits: list[str] | None = None) -> dict[str, Any]:
    """An error record ``{"file", "case", "splits", "error"}``; the file is the path the message starts with (every
    message of the readers does), else the dataset root."""
    text = _one_line(str(message))
    head = text.split(": ", 1)[0]
    file = head if (os.sep in head or "/" in head) and not head.startswith("folder") else str(root)
    return {"file": file, "case": case, "splits": splits or [], "error": text}


def _options(cls: Any, options: Mapping[str, Any], extra: Mapping[str, Any] | None) -> dict[str, Any]:
    return cls.check_options({**options, **(extra or {})})


def _nnunet_units(root: Path, options: Mapping[str, Any], split_options: Mapping[str, Mapping[str, Any]]
                  ) -> tuple[dict[str, list[str]], list[_Unit]]:
    from .nnunet import NnUNetDataset, compute_splits
    from .nnunet_files import describe, read_case

    desc = describe(root)
    salt = ["nnunet", CHECK_VERSION, list(desc.class_names), desc.ignore_id, list(desc.channels), desc.two_d]
    splits, units, seen = {}, [], {}
    for split in _SPLITS:
        opts = _options(NnUNetDataset, options, split_options.get(split))
        cases = compute_splits(desc, opts.get("fold", 0), opts.get("split_seed", 0), opts.get("val_cases"),
                               opts.get("test_cases"))[split]
        splits[split] = cases
        files = desc.test if split == "test" and desc.test is not None else desc.training
        for case in cases:
            images, label = files[case]
            key = str(label)
            if key in seen:
                continue
            seen[key] = True
            units.append(_Unit(key, case, (*images, label), salt,
                               lambda case=case, f=files[case]: read_case(desc, case, f)))
    return splits, units


def _colour_masks(root: Path, masks: list[Path]) -> None:
    """Without a palette, masks hold class ids; if every mask is a colour image the option is missing, and one error
    saying so replaces one error per mask."""
    from PIL import Image

    modes = []
    for path in masks:
        try:
            with Image.open(path) as im:  # the header only
                modes.append(im.mode)
        except Exception:  # noqa: BLE001 - a broken mask is reported by its own read below
            return
    colour = [m for m in modes if m in ("RGB", "RGBA")]
    if masks and len(colour) == len(masks):
        raise ValueError(f"{root / 'masks'}: all {len(masks)} masks are colour images (mode {colour[0]}), and the "
                         f"option palette is not set; colour masks need it to map colours to classes: give "
                         f"palette: {{background: [0, 0, 0], <class>: [r, g, b], ...}} in the sweep config's "
                         f"datasets.folder.options (and inspect the config: raysweep data inspect CONFIG.yaml), or "
                         f"save the masks as grey class ids")


def _folder_units(root: Path, options: Mapping[str, Any], split_options: Mapping[str, Mapping[str, Any]]
                  ) -> tuple[dict[str, list[str]], list[_Unit]]:
    from .base import require_dir
    from .folder import DEFAULT_FRACTIONS, LAYOUT, FolderDataset, class_names, compute_splits, list_pairs, read_pair

    require_dir(root, "folder dataset root", LAYOUT)
    pairs = list_pairs(root)
    splits, units, seen, peeked = {}, [], set(), False
    for split in _SPLITS:
        opts = _options(FolderDataset, options, split_options.get(split))
        names = class_names(root, opts.get("classes"), opts.get("palette"))
        palette = opts.get("palette")
        if palette is None and not peeked:
            _colour_masks(root, [m for _, m in pairs.values()])
            peeked = True
        cases = compute_splits(root, list(pairs), opts.get("split_seed", 0),
                               opts.get("val_fraction", DEFAULT_FRACTIONS["val"]),
                               opts.get("test_fraction", DEFAULT_FRACTIONS["test"]))[split]
        splits[split] = cases
        salt = ["folder", CHECK_VERSION, list(names), {k: list(v) for k, v in (palette or {}).items()}]
        tag = hashlib.sha256(json.dumps(salt).encode()).hexdigest()[:12]
        for case in cases:
            image, mask = pairs[case]
            key = f"{mask}|{tag}"
            if key in seen:
                continue
            seen.add(key)
            units.append(_Unit(key, case, (image, mask), salt,
                               lambda i=image, m=mask, n=names, p=palette: read_pair(i, m, n, p)))
    return splits, units


def _read(unit: _Unit) -> str | None:
    """None when the case decodes and passes every check; otherwise the error message (naming the file)."""
    try:
        unit.read()
    except (ValueError, OSError) as err:
        return str(err)
    except Exception as err:  # noqa: BLE001 - a decoder's own bug on odd bytes must name the files, not crash
        return (f"{unit.paths[0]}: cannot be decoded ({type(err).__name__}: {err}; case {unit.case}, files "
                f"{', '.join(p.name for p in unit.paths)}); the file is probably corrupt -- re-export it")
    return None


def _cache_path(name: str, root: Path, folder: Path | None) -> Path:
    key = hashlib.sha256(json.dumps([name, str(root.resolve())]).encode()).hexdigest()[:24]
    return (folder if folder is not None else cache_dir("check")) / f"{name}-{key}.json"


def _load_passed(path: Path) -> dict[str, str]:
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        passed = stored["passed"]
        return {str(k): str(v) for k, v in passed.items()} if stored.get("version") == CHECK_VERSION else {}
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return {}  # no cache, or an unreadable one: everything is read


def _save_passed(path: Path, root: Path, passed: dict[str, str]) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps({"version": CHECK_VERSION, "root": str(root.resolve()), "passed": passed}),
                       encoding="utf-8")
        tmp.replace(path)  # atomic: a concurrent check never reads half a file
    except OSError:
        pass  # an unwritable cache costs the next check a full read, nothing else


def check_dataset(name: str, root: str | Path, options: Mapping[str, Any] | None = None,
                  split_options: Mapping[str, Mapping[str, Any]] | None = None, *, label: str | None = None,
                  workers: int | None = None, cache: Path | None = None, progress: bool = False,
                  use_cache: bool = True) -> dict[str, Any]:
    """Check every case of the ``train``, ``val`` and ``test`` splits of dataset ``name`` (``"nnunet"`` or
    ``"folder"``) under ``root``: the listing, then each case decoded in full (see the module docstring).

    Args:
        options: the dataset's options; ``split_options`` adds per-split options (a sweep's ``train_options``,
            ``select_options`` for ``val``, ``eval_options`` for ``test``), keyed by split.
        label: the name the report uses (a sweep's cell label, e.g. ``nnunet:noisy``); default ``name``.
        workers: threads reading cases (default: the CPUs, at most 8).
        cache: the folder of the cached passes (default ``$RAYSWEEP_CACHE/check``); ``use_cache`` False reads all.
        progress: a progress bar on stderr when the check takes more than 2 seconds.

    Returns:
        a JSON-able dict: ``dataset`` (the label), ``name``, ``root``, ``splits`` (split -> case ids, empty when the
        listing failed), ``cases`` (cases checked), ``cached`` (of those, passed on an earlier check with unchanged
        files), ``errors`` (``{"file", "case", "splits", "error"}``, one per broken case or listing, sorted by file;
        ``case`` None for the listing) and ``seconds``. Nothing raises for bad data: every problem is an error.
    """
    if name not in CHECKED:
        raise ValueError(f"the data check reads the {', '.join(CHECKED)} datasets, not {name!r}")
    start = time.perf_counter()
    root = Path(root).expanduser()
    report: dict[str, Any] = {"dataset": label or name, "name": name, "root": str(root), "splits": {}, "cases": 0,
                              "cached": 0, "errors": [], "seconds": 0.0}
    try:
        build = _nnunet_units if name == "nnunet" else _folder_units
        splits, units = build(root, dict(options or {}), split_options or {})
    except (ValueError, OSError) as err:
        report["errors"].append(_error(err, root))
        report["seconds"] = time.perf_counter() - start
        return report
    report["splits"] = splits
    in_splits: dict[str, list[str]] = {}
    for split, cases in splits.items():
        for case in cases:
            in_splits.setdefault(case, []).append(split)
    cache_file = _cache_path(name, root, cache)
    passed = _load_passed(cache_file) if use_cache else {}
    todo: list[tuple[_Unit, str | None]] = []
    for unit in units:
        try:
            fingerprint: str | None = files_fingerprint(unit.paths, root, unit.salt)
        except (ValueError, OSError):
            fingerprint = None  # the read below names the cause
        if fingerprint is not None and passed.get(unit.key) == fingerprint:
            report["cached"] += 1
        else:
            todo.append((unit, fingerprint))
    report["cases"] = len(units)
    errors = []
    if todo:
        from tqdm import tqdm

        n_workers = max(1, min(workers or min(8, os.cpu_count() or 1), len(todo)))
        with ThreadPoolExecutor(n_workers) as pool, \
                tqdm(total=len(todo), desc=f"checking {report['dataset']}", unit="case", file=sys.stderr,
                     delay=2.0, disable=not progress, leave=False) as bar:
            futures = {pool.submit(_read, unit): (unit, fp) for unit, fp in todo}
            for future in as_completed(futures):
                unit, fp = futures[future]
                message = future.result()
                if message is None and fp is not None:
                    passed[unit.key] = fp
                elif message is not None:
                    passed.pop(unit.key, None)
                    errors.append(_error(message, root, unit.case, in_splits.get(unit.case, [])))
                bar.update()
        if use_cache:
            _save_passed(cache_file, root, passed)
    report["errors"] = sorted(errors, key=lambda e: (e["file"], e["error"]))
    report["seconds"] = time.perf_counter() - start
    return report


def split_options_of(name: str, section: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """A sweep config dataset section's per-split options: ``train_options`` (train), ``select_options`` (the
    selection split) and ``eval_options`` (the ranking split), keyed by split name."""
    from . import DATASETS

    info = DATASETS[name]
    return {"train": dict(section.get("train_options") or {}),
            info.select_split: dict(section.get("select_options") or {}),
            info.eval_split: dict(section.get("eval_options") or {})}


def check_sections(sections: Mapping[str, tuple[str, Mapping[str, Any]]], *, workers: int | None = None,
                   progress: bool = False) -> list[dict[str, Any]]:
    """Check each ``nnunet``/``folder`` dataset of a sweep: ``sections`` maps a label (the cell, ``nnunet`` or
    ``nnunet:variant``) to ``(dataset name, dataset section)`` with ``root``, ``options`` and the per-split option
    sections. Sections that read the same files with the same options are checked once. A relative ``root`` is
    taken from the working folder, as the trials take it.

    Returns the reports of :func:`check_dataset`, one per distinct dataset checked (others skipped)."""
    reports, done = [], set()
    for label, (name, section) in sections.items():
        if name not in CHECKED:
            continue
        if not section.get("root"):
            raise ValueError(f"datasets.{name}.root is required: the folder holding the data")
        root = Path(section["root"]).expanduser()
        options, per_split = dict(section.get("options") or {}), split_options_of(name, section)
        key = json.dumps([name, str(root), options, per_split], sort_keys=True, default=str)
        if key in done:
            continue
        done.add(key)
        reports.append(check_dataset(name, root, options, per_split, label=label, workers=workers,
                                     progress=progress))
    return reports


def format_errors(reports: list[dict[str, Any]], limit: int = MAX_LISTED) -> str:
    """Every broken file of ``reports``, one line each (the message: the file, what is wrong, the fix), the first
    ``limit`` and a count of the rest; empty when there is none."""
    errors = [e for r in reports for e in r["errors"]]
    lines = [f"  {e['error']}" for e in errors[:limit]]
    if len(errors) > limit:
        lines.append(f"  ... and {len(errors) - limit} more (raysweep data inspect --json lists every one)")
    return "\n".join(lines)


def summary(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """What sweep.json records of a check that passed: ``status``, per dataset the cases checked and cached, and
    the seconds it took."""
    return {"status": "passed" if not any(r["errors"] for r in reports) else "failed",
            "datasets": {r["dataset"]: {"root": r["root"], "cases": r["cases"], "cached": r["cached"],
                                        "errors": len(r["errors"])} for r in reports},
            "seconds": round(sum(r["seconds"] for r in reports), 3)}


def raise_for_errors(reports: list[dict[str, Any]], what: str = "the sweep") -> None:
    """Raise :class:`DataCheckError` listing every broken file (:func:`format_errors`) when any report has one."""
    errors = [e for r in reports for e in r["errors"]]
    if not errors:
        return
    files = len({e["file"] for e in errors})
    datasets = ", ".join(r["dataset"] for r in reports if r["errors"])
    raise DataCheckError(
        f"the data check found {len(errors)} problem(s) in {files} file(s) of {datasets}; {what} was not started "
        f"and nothing was written. Each line names the file, what is wrong and the fix:\n{format_errors(reports)}\n"
        f"Fix them and run again (checked cases are cached, so that costs seconds), or pass --skip-data-check to "
        f"start anyway (trials that read a broken case end as error).", reports)
