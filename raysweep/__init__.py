"""raysweep: segmentation losses, measured.

The calls a notebook needs::

    import raysweep
    cfg = raysweep.load_config("configs/default.yaml")      # validated before anything starts
    results = raysweep.run_sweep(cfg, "results/default")     # Ray Tune + Optuna; resumes when run again
    tables = raysweep.read_results(results)                  # {"trials", "curves", "cases"}: pandas frames
    raysweep.build_report(results, "reports/default.html")   # the self-contained HTML ranking

    loss = raysweep.build_loss("tversky", alpha=0.3)          # any of the 25 losses, a torch.nn.Module
    raysweep.LOSSES["tversky"].space                          # its family, defaults, search space, extra inputs
    ds = raysweep.build_dataset("synthetic", "train")         # raysweep.DATASETS: the datasets and their facts

The package is layered (see docs/layout.md): ``losses``, ``data`` and ``metrics`` know nothing of Ray, Optuna,
Parquet or HTML; ``trial`` trains one configuration; ``sweep`` runs many on Ray Tune; ``results`` and ``report``
read what they wrote (without Ray or torch). Names are imported on first use, so ``import raysweep`` is instant.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_API = {
    "load_config": "raysweep.config",
    "run_sweep": "raysweep.sweep",
    "build_report": "raysweep.report",
    "build_loss": "raysweep.losses",
    "LOSSES": "raysweep.losses",
    "build_dataset": "raysweep.data",
    "DATASETS": "raysweep.data",
    "train_trial": "raysweep.trial",
}


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'raysweep' has no attribute {name!r}")


def read_results(path) -> dict:
    """The three results tables of a sweep as pandas frames: ``{"trials", "curves", "cases"}``.

    ``path``: the sweep's ``--out`` folder or its ``results/`` folder (what ``run_sweep`` returns). The schema is
    in docs/results.md ("Results schema") and :mod:`raysweep.results.schema`.
    """
    from .results import read_results, resolve_results_dir

    return read_results(resolve_results_dir(path))


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])


__all__ = ["DATASETS", "LOSSES", "build_dataset", "build_loss", "build_report", "load_config", "read_results",
           "run_sweep", "train_trial"]
