"""The sweep: for every (dataset, architecture, loss) group, tune the loss on Ray Tune with Optuna, then confirm
each group's best configuration with new seeds on cases that never selected it.

Modules, one job each:

* :mod:`.runner`: :class:`SweepRunner` (the two stages, resume, sweep.json), the trainable, resources;
* :mod:`.searcher`: per-group Optuna studies with equal quotas (tune), a fixed list of runs (confirm);
* :mod:`.scheduler`: early stopping inside a group (one ASHA bracket per group);
* :mod:`.callback`: every ended trial to Parquet and its overlays to ``<out>/overlays/``, progress lines;
* :mod:`.outdir`: the output folder's lock and write probe.

Trial configs and their tags are composed by :func:`raysweep.config.compose_trial`; rows are mapped from reports by
:func:`raysweep.results.trial_rows`.
"""

from .callback import ResultsCallback
from .outdir import MIN_FREE_BYTES, OutputInUse, OutputLock, ResultsWriteError, check_writable
from ..config import confirmation_seeds
from .runner import SweepInterrupted, SweepRunner, best_points, environment, run_sweep
from .trainable import sweep_trainable, trial_resources
from .scheduler import METRIC, GroupScheduler, asha_rungs
from .searcher import FixedSearcher, GroupSearcher

__all__ = ["METRIC", "MIN_FREE_BYTES", "FixedSearcher", "GroupScheduler", "GroupSearcher", "OutputInUse",
           "OutputLock", "ResultsCallback", "ResultsWriteError", "SweepInterrupted", "SweepRunner", "asha_rungs",
           "best_points", "check_writable", "confirmation_seeds", "environment", "run_sweep", "sweep_trainable",
           "trial_resources"]
