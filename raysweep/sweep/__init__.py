"""The sweep: for every (dataset, architecture, loss) group, tune the loss on Ray Tune with Optuna, then confirm
each group's best configuration with new seeds on cases that never selected it.

Modules, one job each:

* :mod:`.runner`: :class:`SweepRunner`, a run of the sweep: the output folder, Ray's start-up, the losses'
  preparation steps, then the stages; :func:`run_sweep`;
* :mod:`.stages`: the tuning and confirmation stages, one Tune experiment each (restored when it exists);
* :mod:`.records`: ``state.json``, ``sweep.json`` (the protocol, the data, the environment);
* :mod:`.searcher`: per-group Optuna studies with equal quotas (tune), a fixed list of runs (confirm); their storage
  is :mod:`.studies`;
* :mod:`.scheduler`: early stopping inside a group (one ASHA bracket per group);
* :mod:`.packing`: ``resources.pack``: K runs of one cell in one Ray trial (envelope, members, report, stop channel);
* :mod:`.trainable`: what Ray runs per trial and with which resources;
* :mod:`.callback`: every ended trial to Parquet and its overlays to ``<out>/overlays/``, progress lines;
  :mod:`.tracking`: the same trials to MLflow;
* :mod:`.outdir`: the output folder's lock and write probe; :mod:`.plan`: ``raysweep plan``, a sweep's cost.

Trial configs and their tags are composed by :func:`raysweep.config.compose_trial`; rows are mapped from reports by
:func:`raysweep.results.trial_rows`.
"""

from .callback import ResultsCallback
from .outdir import MIN_FREE_BYTES, OutputInUse, OutputLock, ResultsWriteError, check_writable
from ..config import confirmation_seeds
from .records import environment
from .runner import SweepRunner, run_sweep
from .stages import SweepInterrupted, best_points
from .trainable import sweep_trainable, trial_resources
from .scheduler import METRIC, GroupScheduler, asha_rungs
from .searcher import FixedSearcher, GroupSearcher

__all__ = ["METRIC", "MIN_FREE_BYTES", "FixedSearcher", "GroupScheduler", "GroupSearcher", "OutputInUse",
           "OutputLock", "ResultsCallback", "ResultsWriteError", "SweepInterrupted", "SweepRunner", "asha_rungs",
           "best_points", "check_writable", "confirmation_seeds", "environment", "run_sweep", "sweep_trainable",
           "trial_resources"]
