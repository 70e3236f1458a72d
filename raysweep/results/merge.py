"""One sweep from its parts: a sweep run one cell at a time (``raysweep run --arch`` / ``--dataset`` into separate
``--out`` folders, on one machine or several, on different days) merged into the results one whole run would have
written, so that one report, ``raysweep compare`` and ``raysweep export`` read it as one sweep.

A sweep can also grow by replicates: a part run with ``tuning.first_replicate: K`` (``raysweep run --replicates
K:N``) holds replicates K to N - 1 of the same design and joins a part that holds 0 to K - 1. Each replicate's seeds
and proposals depend only on its index, so the joined sweep is the one a single run of N replicates would have made.

Parts are merged only when they are parts of one sweep: their configs are equal except in the cells and replicates
they hold (``datasets``, ``architectures``, ``tuning.replicates`` and ``tuning.first_replicate``; each name defined
alike wherever it appears), no (cell, replicate) is in two parts, every cell ends with the same unbroken run of
replicates, and every trial id is unique. The tables are concatenated (one zstd Parquet file per table, as
:func:`~raysweep.results.store.write_compact_copy` writes); ``sweep.json`` is merged key by key:

* ``config``: the shared keys, with the union of the parts' datasets and architectures (``config_text`` is that
  config as JSON, which YAML reads);
* ``protocol``, ``spaces``, ``datasets``, ``variants``: the union, equal wherever two parts hold the same key (the
  data check's ``seconds`` are summed; the replicate count and each cell's power limit are those of the merged
  replicates);
* ``planned`` summed, ``groups`` concatenated, ``wall_s`` summed (the time the parts ran, not the calendar time
  between them), ``started_at`` the earliest, ``ended_at`` the latest (null while a part is unfinished);
* ``sweep_id`` the parts' ids joined with ``+`` (the tables keep each part's own), ``git_commit`` the distinct
  commits, ``versions`` and ``hardware`` as they are where the parts agree, else one entry per part;
* ``parts``: each part's ``sweep_id``, cells, replicates (``[first, last]``), ``started_at``, ``ended_at`` and
  ``wall_s``, so the merge is on record.

Any other difference refuses the merge with a ValueError naming the key and the parts: a comparison of losses
trained under different protocols is not one study. Only pyarrow is needed.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa

from .schema import TABLES
from .store import (read_sweep_meta, read_table, resolve_results_dir, table_version, with_version,
                    write_compact_table, write_sweep_meta)

#: The config sections that say which cells a part holds.
CELL_SECTIONS = ("datasets", "architectures")
#: The ``tuning`` keys that say which replicates a part holds.
REPLICATE_KEYS = ("replicates", "first_replicate")
#: sweep.json keys merged as a union (equal where parts overlap).
UNION_KEYS = ("protocol", "spaces", "datasets", "variants")
#: Leaves of the union keys that are added up rather than required equal.
SUMMED = {("protocol", "data_check", "seconds")}


def part_cells(config: dict[str, Any]) -> list[str]:
    """The cells (``dataset/arch``) a sweep config holds."""
    return [f"{d}/{a}" for d in config.get("datasets", {}) for a in config.get("architectures", {})]


def part_replicates(config: dict[str, Any]) -> range:
    """The replicates a sweep config holds: ``tuning.first_replicate`` (0 when absent) onwards, ``tuning.replicates``
    of them (1 when absent: a sweep from before replicates)."""
    tuning = config.get("tuning") or {}
    first = int(tuning.get("first_replicate", 0))
    return range(first, first + int(tuning.get("replicates", 1)))


def _replicate_entries(span: range) -> dict[str, int]:
    """The ``tuning`` keys of a sweep of the replicates ``span``, as a single run writes them (``first_replicate``
    only when not 0)."""
    return {"replicates": len(span), **({"first_replicate": span.start} if span.start else {})}


def _without_replicate_keys(section: dict[str, Any]) -> dict[str, Any]:
    """A config's or protocol's ``tuning`` section without the keys that say which replicates it holds, or the
    section as it is when it is not a dict."""
    if not isinstance(section.get("tuning"), dict):
        return section
    return {**section, "tuning": {k: v for k, v in section["tuning"].items() if k not in REPLICATE_KEYS}}


def _shared_config(config: dict[str, Any]) -> dict[str, Any]:
    """A part's config without what says which cells and replicates it holds: what every part must share."""
    return _without_replicate_keys({k: v for k, v in config.items() if k not in CELL_SECTIONS})


def _merged_replicates(metas: Sequence[dict[str, Any]], names: Sequence[str]) -> range:
    """The replicates of the merged sweep. ValueError when a (cell, replicate) is in two parts, or when the cells do
    not end with the same unbroken run of replicates (no single config could describe the merged sweep)."""
    owner: dict[tuple[str, int], str] = {}
    for meta, name in zip(metas, names):
        for cell in part_cells(meta["config"]):
            for r in part_replicates(meta["config"]):
                if (cell, r) in owner:
                    raise ValueError(f"cell {cell}, replicate {r} is in two parts ({owner[cell, r]} and {name}): merge "
                                     "parts that hold different cells (raysweep run --arch / --dataset) or different "
                                     "replicates (raysweep run --replicates K:N)")
                owner[cell, r] = name
    held: dict[str, set[int]] = {}
    for cell, r in owner:
        held.setdefault(cell, set()).add(r)
    span = range(min(min(v) for v in held.values()), max(max(v) for v in held.values()) + 1)
    for cell, reps in held.items():
        if reps != set(span):
            missing = sorted(set(span) - reps)
            raise ValueError(f"cell {cell} lacks replicate(s) {', '.join(map(str, missing[:5]))} of the "
                             f"{span.start} to {span.stop - 1} the parts hold: every cell of a merged sweep needs "
                             "the same replicates (run the missing ones with raysweep run --replicates K:N, or leave "
                             "out the parts that hold the extra ones)")
    return span


def _with_replicates(protocol: dict[str, Any], span: range) -> dict[str, Any]:
    """The merged ``protocol`` with the merged sweep's replicate count and, per cell, the power limit of that many
    replicates (:func:`raysweep.power.power_limit`)."""
    from ..power import power_limit

    if isinstance(protocol.get("tuning"), dict):  # its replicate keys were left out of the union
        protocol["tuning"] = {**protocol["tuning"], **_replicate_entries(span)}
    for cell, limit in (protocol.get("power") or {}).items():
        if isinstance(limit, dict) and {"n_cases", "n_losses", "alpha"} <= set(limit):
            protocol["power"][cell] = power_limit(limit["n_cases"], limit["n_losses"], limit["alpha"],
                                                  span.stop).to_dict()
    return protocol


def _without_replicates(protocol: dict[str, Any]) -> dict[str, Any]:
    """A part's ``protocol`` without the entries that follow its number of replicates (set again after the union)."""
    out = _without_replicate_keys(dict(protocol))
    if isinstance(out.get("power"), dict):
        out["power"] = {cell: ({k: v for k, v in limit.items() if k not in ("replicates", "replicate_sd_multiple")}
                               if isinstance(limit, dict) else limit) for cell, limit in out["power"].items()}
    return out


def _union(values: list[tuple[str, Any]], path: tuple[str, ...]) -> Any:
    """The union of ``(part name, value)``; dicts merge key by key, other values must be equal (or are summed)."""
    if all(isinstance(v, dict) for _, v in values):
        keys = list(dict.fromkeys(k for _, v in values for k in v))
        return {k: _union([(n, v[k]) for n, v in values if k in v], path + (k,)) for k in keys}
    if path in SUMMED:
        return sum(v for _, v in values)
    first_name, first = values[0]
    for name, v in values[1:]:
        if v != first:
            raise ValueError(f"the parts are not one sweep: {'.'.join(path)} is {json.dumps(first)[:80]} in "
                             f"{first_name} but {json.dumps(v)[:80]} in {name}")
    return first


def merge_sweep_meta(metas: Sequence[dict[str, Any]], names: Sequence[str]) -> dict[str, Any]:
    """Merge the parts' ``sweep.json`` dicts (module docstring); ``names`` name the parts in errors."""
    for meta, name in zip(metas, names):
        if not isinstance(meta.get("config"), dict):
            raise ValueError(f"{name}: its sweep.json has no config (not the results of `raysweep run`?)")
    shared = [(n, _shared_config(m["config"])) for m, n in zip(metas, names)]
    for name, c in shared[1:]:
        if set(c) != set(shared[0][1]):
            raise ValueError(f"the parts are not one sweep: config keys {sorted(set(c) ^ set(shared[0][1]))} are in "
                             f"one of {shared[0][0]} and {name} only")
    _union(shared, ("config",))  # raises naming the first key that differs
    span = _merged_replicates(metas, names)
    config = dict(shared[0][1])
    for section in CELL_SECTIONS:
        config[section] = _union([(n, m["config"].get(section, {})) for m, n in zip(metas, names)], ("config",
                                                                                                      section))
    if isinstance(config.get("tuning"), dict):  # as a single run of the merged replicates writes it
        config["tuning"] = {**config["tuning"], **_replicate_entries(span)}
    merged: dict[str, Any] = {
        "sweep_id": "+".join(dict.fromkeys(str(m.get("sweep_id", "")) for m in metas)),
        "config": config, "config_text": json.dumps(config, indent=1),
        "started_at": min((m["started_at"] for m in metas if m.get("started_at")), default=None),
        "ended_at": None if any(not m.get("ended_at") for m in metas) else max(m["ended_at"] for m in metas),
        "wall_s": None if any(m.get("wall_s") is None for m in metas) else sum(m["wall_s"] for m in metas),
        "git_commit": ", ".join(dict.fromkeys(m["git_commit"] for m in metas if m.get("git_commit"))) or None,
        "planned": {stage: sum(m.get("planned", {}).get(stage, 0) for m in metas)
                    for stage in dict.fromkeys(s for m in metas for s in m.get("planned", {}))},
        "groups": [g for m in metas for g in m.get("groups", [])],
        "parts": [{"sweep_id": m.get("sweep_id"), "cells": part_cells(m["config"]),
                   "replicates": [min(part_replicates(m["config"])), max(part_replicates(m["config"]))],
                   "started_at": m.get("started_at"), "ended_at": m.get("ended_at"), "wall_s": m.get("wall_s")}
                  for m in metas],
    }
    for key in ("versions", "hardware"):
        values = [m.get(key, {}) for m in metas]
        merged[key] = values[0] if all(v == values[0] for v in values) else {
            f"part {i + 1} ({m.get('sweep_id')})": v for i, (m, v) in enumerate(zip(metas, values))}
    for key in UNION_KEYS:
        have = [(n, _without_replicates(m[key]) if key == "protocol" else m[key])
                for m, n in zip(metas, names) if isinstance(m.get(key), dict)]
        if have:
            merged[key] = _union(have, (key,))
    if isinstance(merged.get("protocol"), dict):
        merged["protocol"] = _with_replicates(merged["protocol"], span)
    return {k: v for k, v in merged.items() if v is not None or k in ("ended_at", "wall_s", "git_commit")}


def merge_results(parts: Sequence[str | Path], dest: str | Path) -> Path:
    """Merge the results of a sweep's parts (each a ``--out`` folder or its ``results/`` folder) into
    ``dest/results`` (module docstring); return that folder.

    Raises:
        ValueError: fewer than two parts, parts that are not one sweep, a trial id in two parts, or ``dest/results``
            already holding results (nothing is overwritten).
        FileNotFoundError: a part without results.
    """
    if len(parts) < 2:
        raise ValueError(f"merge needs at least two parts, got {len(parts)}")
    dirs = [resolve_results_dir(p) for p in parts]
    out = Path(dest) / "results"
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} is not empty; merge into a new folder, or delete it first (nothing is overwritten)")
    meta = merge_sweep_meta([read_sweep_meta(d) for d in dirs], [str(p) for p in parts])
    tables = {t: [read_table(d, t) for d in dirs] for t in TABLES}
    ids = [i for part in tables["trials"] for i in part.column("trial_id").to_pylist()]
    if len(ids) != len(set(ids)):
        twice = sorted({i for i in ids if ids.count(i) > 1})
        raise ValueError(f"trial ids in more than one part ({', '.join(twice[:3])}): these are not parts of one sweep")
    out.mkdir(parents=True, exist_ok=True)
    for table, data in tables.items():
        # as old as its oldest part (readers upgrade by the version a file states)
        write_compact_table(out, table, with_version(pa.concat_tables(data), min(map(table_version, data))))
    write_sweep_meta(out, meta)  # last: readers that find sweep.json find every table
    return out
