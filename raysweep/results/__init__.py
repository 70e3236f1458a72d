"""Sweep results on disk: the versioned Parquet schema, its atomic writer and its readers.

Layout (``results_dir`` is ``<out>/results`` of a sweep)::

    <results_dir>/sweep.json                          run metadata (see SWEEP_KEYS), rewritten atomically
    <results_dir>/trials/part-<trial_id>.parquet      one row: the trial
    <results_dir>/curves/part-<trial_id>.parquet      one row per report (evaluation) of the trial
    <results_dir>/cases/part-<trial_id>.parquet       per case and class scores (confirmation runs)
    <out>/overlays/<trial_id>/*.png                   the trial's last prediction overlays (copied by the sweep)

One file per trial and table makes a write idempotent: writing a trial again replaces its files, so a resumed sweep
never duplicates or loses rows. Each file is written to a temporary name in the same folder and moved into place with
``os.replace`` (atomic on POSIX and Windows), and the ``trials`` file is written last: a trial's ``trials`` row
exists only once its curves and cases are complete, and the readers drop curve and case rows of trials without one
(leftovers of a writer killed half-way, replaced when the trial is written again).

Conventions: metrics are "higher is better" except ``hd95`` (lower is better, in the dataset's spacing units: mm
for Synapse, pixels otherwise); a missing value is null (NaN is stored as null); JSON columns hold JSON text with
sorted keys (a dict passed to the writer is serialised); timestamps are UTC. The schema version is stored in each
file's metadata (``raysweep.schema_version``); readers refuse files of a newer version.

Modules: :mod:`.schema` (columns, enums, sweep.json keys, validation), :mod:`.store` (writer, readers),
:mod:`.rows` (a trial's report -> rows), :mod:`.merge` (one sweep from parts run apart). The docs' schema table
(docs/results.md) is :func:`schema_markdown`.
"""

from .rows import ID_COLUMNS, curve_row, trial_rows
from .schema import (CASES, CURVES, ENUMS, FAMILIES, PRIMARY_METRICS, PROPOSALS, SCHEMA_VERSION, SCHEMAS, STAGES,
                     STATUSES, SWEEP_KEYS, TABLES, TRIALS, schema_markdown, upgrade_params, validate_rows)
from .store import (overlay_dirs, part_path, read_results, read_sweep_meta, read_table, remove_incomplete,
                    remove_trial_rows, resolve_results_dir, stage_trial_ids, sweep_json_path, table_version,
                    update_sweep_meta, with_version, write_compact_copy, write_compact_table, write_sweep_meta,
                    write_trial_rows)
from .merge import merge_results, merge_sweep_meta

__all__ = [
    "CASES", "CURVES", "ENUMS", "FAMILIES", "ID_COLUMNS", "PRIMARY_METRICS", "PROPOSALS", "SCHEMAS", "SCHEMA_VERSION",
    "STAGES", "STATUSES", "SWEEP_KEYS", "TABLES", "TRIALS", "curve_row", "merge_results", "merge_sweep_meta",
    "overlay_dirs", "part_path", "read_results", "read_sweep_meta", "read_table", "remove_incomplete",
    "remove_trial_rows", "resolve_results_dir", "schema_markdown", "stage_trial_ids", "sweep_json_path",
    "table_version", "trial_rows", "update_sweep_meta", "upgrade_params", "validate_rows", "with_version",
    "write_compact_copy", "write_compact_table", "write_sweep_meta", "write_trial_rows",
]
