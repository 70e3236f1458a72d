"""The verdict, exported where people train: a sweep's confirmed loss as a ``build_loss`` snippet or an nnU-Net v2
trainer (``raysweep export``).

Why a top-level module: an exporter reads results and the report's ranking (``results``, ``report.stats``) *and*
the loss registry (``losses``, ``search``), to check the configuration it emits and to know each loss's needs. The
report layer must stay free of torch and of the losses (docs/layout.md), and the losses know nothing of results,
so the module that joins them sits beside ``cli.py`` at the top, and nothing in the package imports it.

Conventions:

* A loss's *confirmed configuration* in a cell is the ``params`` of its ranked confirmation runs
  (:func:`raysweep.report.stats.ranked_runs`: stage ``confirm``, completed or diverged, the tuned rows where the
  survey defaults were confirmed beside them), the same runs the report ranks. Each replicate (``tuning.replicates``)
  confirmed its own configuration; the exported one is the replicate with the best mean ``final_metric`` unless one
  is asked for.
* The default loss is the cell's winner as the report decides it (:func:`raysweep.report.stats.cell_stats`); the
  default cell is the sweep's only cell.
* The companion term (the sweep's ``pairing``, sweep.json's ``config.pairing``) is exported with its tuned
  ``companion_weight``: the objective is ``loss + companion_weight * companion``, as the trial trained it
  (:class:`raysweep.trial.objective.CombinedObjective`, both weights constant).
* The nnU-Net trainer is self-contained (it imports only torch, nnunetv2 and ``raysweep.losses``). It trains
  nnU-Net's ``2d`` configuration with every loss, and its 3-D ones (``3d_fullres``, ``3d_lowres``,
  ``3d_cascade_fullres``: logits ``(B, C, D, H, W)``) when every term of the objective takes 3-D input
  (``3 in LOSSES[name].dims``); a 3-D configuration of a 2-D-only loss stops when the loss is built, with the loss's
  ``dims_note`` and the fix (train ``2d``). Distance maps are computed from each deep-supervision scale's target on the
  fly, in voxels of that scale (no spacing, as the sweep's own maps), as :func:`python_code`'s losses do.
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checks import did_you_mean
from .losses import EXTRA_INPUTS, LOSSES, SegLoss, build_loss
from .report import stats
from .results import read_results, read_sweep_meta, resolve_results_dir
from .search import COMPANION_DEFAULT, COMPANION_KEY, companion_for

#: Extra inputs only the network can give (decoder features, an auxiliary head): nnU-Net's plain trainer has none.
NETWORK_INPUTS = ("features", "aux_logits")
TARGETS = ("nnunet", "python")
#: The shell expression for nnU-Net's trainer folder inside the installed package.
NNUNET_TRAINERS = ('"$(python -c "import nnunetv2, os; print(os.path.dirname(nnunetv2.__file__))")'
                   '/training/nnUNetTrainer/"')


@dataclass(frozen=True)
class Confirmed:
    """A loss's confirmed configuration in one cell of a sweep (see the module docstring).

    Attributes:
        results_dir: the sweep's results folder.
        cell: ``"DATASET/ARCH"``; DATASET is the report's cell label (``synthetic`` or ``synthetic:noise1``).
        loss: registry name of the loss.
        params: its hyperparameters by their own names (``companion_weight`` removed), JSON values.
        companion: the companion loss's registry name, or None.
        companion_weight: the companion's weight in the objective (None without a companion).
        replicate: the replicate whose configuration this is.
        replicate_means: every replicate of the loss -> its mean primary metric over its ranked runs.
        runs: ranked confirmation runs of the chosen replicate.
        primary: the primary metric's name (``dice`` or ``miou``).
        winner: the cell's winner (best mean over all replicates, as the report ranks).
        chosen_by: ``"best"`` (the best replicate) or ``"--replicate"`` (asked for).
    """

    results_dir: Path
    cell: str
    loss: str
    params: dict[str, Any]
    companion: str | None
    companion_weight: float | None
    replicate: int
    replicate_means: dict[int, float] = field(default_factory=dict)
    runs: int = 0
    primary: str = "dice"
    winner: str | None = None
    chosen_by: str = "best"

    @property
    def terms(self) -> list[tuple[str, dict[str, Any], float]]:
        """``(loss name, hyperparameters, weight)`` per term of the objective: the loss, then its companion."""
        out = [(self.loss, dict(self.params), 1.0)]
        if self.companion:
            out.append((self.companion, {}, float(self.companion_weight)))
        return out

    def summary(self) -> str:
        """One line: the objective, the cell, the replicate and its score, whether it is the winner."""
        objective = " + ".join((f"{w:g} x " if w != 1.0 else "") + f"{n}({_kwargs(p)})" for n, p, w in self.terms)
        mean = self.replicate_means[self.replicate]
        reps = len(self.replicate_means)
        which = (f"replicate {self.replicate} of {reps}, "
                 f"{'chosen with --replicate' if self.chosen_by == '--replicate' else 'the best by mean'}; "
                 if reps > 1 else "")
        rank = "the cell's winner" if self.loss == self.winner else f"the cell's winner is {self.winner}"
        return (f"{objective}: the confirmed configuration of {self.loss} in {self.cell} ({which}mean "
                f"{self.primary} {mean:.4f} over {self.runs} confirmation run{'s' if self.runs != 1 else ''}; "
                f"{rank})")


def _kwargs(params: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in sorted(params.items()))


def _params(text: Any) -> dict[str, Any]:
    value = json.loads(text) if isinstance(text, str) and text else {}
    return value if isinstance(value, dict) else {}


def confirmed(results: str | Path, cell: str | None = None, loss: str | None = None,
              replicate: int | None = None) -> Confirmed:
    """The confirmed configuration of ``loss`` (default: the cell's winner) in ``cell`` (default: the only cell).

    Args:
        results: a sweep's ``--out`` folder or its ``results/`` folder.
        cell: ``"DATASET/ARCH"`` as the report names cells.
        loss: a registry name of a loss the sweep confirmed in the cell.
        replicate: which replicate's configuration (default: the one with the best mean primary metric).

    Raises:
        FileNotFoundError: no sweep results under ``results``.
        ValueError: several cells and no ``cell``; an unknown cell, loss or replicate; no confirmation runs (of the
            cell, or of the loss); a replicate whose runs confirmed different configurations; params the loss does
            not take; a companion weight without a pairing to name the companion.
    """
    rdir = resolve_results_dir(results)
    frames = stats.cell_view(read_results(rdir))
    trials = frames["trials"]
    labels = [f"{d}/{a}" for d, a in stats.cells(trials)]
    if not labels:
        raise ValueError(f"{rdir} holds no trials yet: export after the sweep's confirmation stage has run")
    if cell is None:
        if len(labels) > 1:
            raise ValueError(f"{rdir} has {len(labels)} cells ({', '.join(labels)}): choose one with --cell "
                             "DATASET/ARCH")
        cell = labels[0]
    if cell not in labels:
        raise ValueError(f"unknown cell {cell!r}{did_you_mean(cell, labels)}; the cells of {rdir}: "
                         f"{', '.join(labels)} (--cell DATASET/ARCH)")
    dataset, _, arch = cell.rpartition("/")
    in_cell = trials[(trials["dataset"] == dataset) & (trials["arch"] == arch)]
    runs = stats.ranked_runs(in_cell)
    if runs.empty:
        raise ValueError(f"cell {cell} of {rdir} has no confirmation runs (stage 'confirm', completed or diverged): "
                         "its configurations are not confirmed yet; finish the sweep (`raysweep run` with the same "
                         "--out resumes it), then export")
    winner = stats.cell_stats(trials, frames["cases"], dataset, arch).winner
    loss = loss or winner
    if loss not in set(in_cell["loss"]):
        raise ValueError(f"unknown loss {loss!r} in cell {cell}{did_you_mean(loss, set(in_cell['loss']))}; its "
                         f"confirmed losses: {', '.join(sorted(set(runs['loss'])))}")
    mine = runs[runs["loss"] == loss]
    if mine.empty:
        raise ValueError(f"loss {loss!r} has no confirmation runs in cell {cell} (its tuning trials only): choose a "
                         f"confirmed one with --loss: {', '.join(sorted(set(runs['loss'])))}")
    means = {int(r): float(g["final_metric"].mean()) for r, g in mine.groupby("replicate")}
    if replicate is None:
        chosen = max(sorted(means), key=lambda r: means[r])  # ties: the lowest replicate
    elif replicate in means:
        chosen = int(replicate)
    else:
        raise ValueError(f"loss {loss!r} has no confirmed replicate {replicate} in cell {cell}; its replicates: "
                         f"{', '.join(map(str, sorted(means)))}")
    rows = mine[mine["replicate"] == chosen]
    configs = {json.dumps(_params(p), sort_keys=True) for p in rows["params"]}
    if len(configs) != 1:
        raise ValueError(f"replicate {chosen} of {loss!r} in cell {cell} confirmed {len(configs)} different "
                         f"configurations ({'; '.join(sorted(configs))}): its results are inconsistent")
    params = json.loads(configs.pop())
    companion, weight = _companion(rdir, loss, params)
    return Confirmed(rdir, cell, loss, params, companion, weight, chosen, means, len(rows),
                     str(rows["primary_metric"].iloc[0]), winner, "best" if replicate is None else "--replicate")


def _companion(rdir: Path, loss: str, params: dict[str, Any]) -> tuple[str | None, float | None]:
    """The companion the sweep's pairing gave ``loss`` and its weight (popped from ``params``)."""
    config = read_sweep_meta(rdir).get("config")
    pairing = config.get("pairing") if isinstance(config, dict) else None
    if pairing is None:
        if COMPANION_KEY in params:
            raise ValueError(f"{rdir}/sweep.json records no pairing (config.pairing), but {loss!r}'s params have a "
                             f"{COMPANION_KEY}: the companion loss cannot be named; restore the sweep's sweep.json")
        return None, None
    companion = companion_for(str(pairing), loss) if loss in LOSSES else None
    weight = params.pop(COMPANION_KEY, None)
    if companion is None:
        if weight is not None:
            raise ValueError(f"{loss!r}'s params have a {COMPANION_KEY} but pairing {pairing!r} adds no companion "
                             "to it: the results and sweep.json disagree")
        return None, None
    return companion, float(COMPANION_DEFAULT if weight is None else weight)


def build_terms(conf: Confirmed) -> list[SegLoss]:
    """The objective's terms as built modules (checks that this raysweep can build what the results describe).

    Raises:
        ValueError: an unknown loss or hyperparameter, or a value out of the loss's domain (named with the cell).
    """
    out = []
    for name, params, _ in conf.terms:
        try:
            out.append(build_loss(name, **params))
        except ValueError as exc:
            raise ValueError(f"{conf.results_dir}, cell {conf.cell}: the confirmed configuration of {conf.loss!r} "
                             f"cannot be built by this raysweep ({exc})") from None
    return out


# -- --to python -------------------------------------------------------------------------------------------------

def python_code(conf: Confirmed) -> str:
    """Runnable Python that builds the confirmed objective: ``loss`` is a ``build_loss`` module without a companion,
    else a function ``loss(logits, target, **extra) -> 0-dim tensor`` (logits ``(B, C, H, W)`` float, target
    ``(B, H, W)`` int64 with 255 ignored; in 3-D ``(B, C, D, H, W)`` and ``(B, D, H, W)`` when every term takes 3-D
    input) returning ``term + companion_weight * companion``."""
    modules = build_terms(conf)
    spec = LOSSES[conf.loss]
    lines = [f"# raysweep export of {conf.results_dir}"] + [f"# {line}" for line in _wrap(conf.summary()).splitlines()]
    lines += ["from raysweep.losses import build_loss", ""]
    call = f"build_loss({conf.loss!r}{', ' if conf.params else ''}{_kwargs(conf.params)})"
    if conf.companion:
        lines += [f"term = {call}", f"companion = build_loss({conf.companion!r})",
                  f"companion_weight = {conf.companion_weight!r}", "", "",
                  "def loss(logits, target, **extra):",
                  '    """logits (B, C, H, W) float (raw scores); target (B, H, W) int64, 255 = ignored -> 0-dim."""',
                  "    return term(logits, target, **extra) + companion_weight * companion(logits, target, **extra)"]
        handle = "term"
    else:
        lines += ["# loss(logits (B, C, H, W) float (raw scores), target (B, H, W) int64, 255 = ignored) -> 0-dim",
                  f"loss = {call}"]
        handle = "loss"
    notes = []
    for need in sorted(spec.needs):
        notes.append(f"pass {need}=... in each call ({EXTRA_INPUTS[need]})" if need in NETWORK_INPUTS else
                     f"{need} is computed from the target when not passed")
    if any(True for _ in modules[0].parameters()):
        notes.append(f"{conf.loss} learns parameters: put {handle}.parameters() in the optimiser too")
    if type(modules[0]).set_epoch is not SegLoss.set_epoch:
        notes.append(f"its weights follow epochs: call {handle}.set_epoch(epoch) at the start of each epoch")
    flat = two_d_only(conf)
    if flat:
        who = "it" if flat[0] == conf.loss else f"its companion {flat[0]}"
        notes.append(f"{who} takes 2-D input only: {LOSSES[flat[0]].dims_note}")
    else:
        notes.append("loss(...) also takes 3-D input: logits (B, C, D, H, W), target (B, D, H, W)")
    notes = [f"# {line}" for n in notes for line in _wrap(f"{conf.loss}: {n}").splitlines()]
    return "\n".join(lines + notes) + "\n"



# -- --to nnunet -------------------------------------------------------------------------------------------------

def trainer_name(loss: str) -> str:
    """The nnU-Net trainer class (and file stem) for ``loss``: ``nnUNetTrainer_raysweep_<loss>``."""
    return f"nnUNetTrainer_raysweep_{loss}"


def install_command(path: str | Path) -> str:
    """The one shell command that copies the trainer file ``path`` into nnU-Net's trainer folder of the installed
    ``nnunetv2`` (run it with the Python environment nnU-Net trains in)."""
    return f"cp {shlex.quote(str(path))} {NNUNET_TRAINERS}"


def train_command(loss: str, configuration: str = "2d") -> str:
    """nnU-Net's training command of ``configuration`` with the exported trainer (DATASET and FOLD left to the
    user)."""
    return f"nnUNetv2_train DATASET {configuration} FOLD -tr {trainer_name(loss)}"


def two_d_only(conf: Confirmed) -> list[str]:
    """The terms of the objective that take 2-D input only (``3 not in LOSSES[name].dims``): with any, the trainer
    trains nnU-Net's ``2d`` configuration only."""
    return [name for name, _, _ in conf.terms if 3 not in LOSSES[name].dims]


def train_commands(conf: Confirmed) -> list[str]:
    """nnU-Net's training commands with the exported trainer: ``2d``, and ``3d_fullres`` when every term takes 3-D
    input."""
    return [train_command(conf.loss)] + ([] if two_d_only(conf) else [train_command(conf.loss, "3d_fullres")])


def configurations_text(conf: Confirmed) -> str:
    """One sentence: which of nnU-Net's configurations the exported trainer trains, and why (for the trainer's
    docstring and the command line)."""
    flat = two_d_only(conf)
    if not flat:
        return ("Every term of the objective takes 3-D input (B, C, D, H, W), so it trains nnU-Net's 2d configuration "
                "and its 3-D ones (3d_fullres; 3d_lowres and 3d_cascade_fullres too).")
    return (f"The 2d configuration only: {flat[0]!r} takes 2-D input only ({LOSSES[flat[0]].dims_note.rstrip('.')}), "
            "so a 3-D configuration stops with an error when the loss is built.")


def nnunet_module(conf: Confirmed, file_name: str | None = None) -> str:
    """The text of an nnU-Net v2 trainer module for ``conf`` (see :data:`_TRAINER`).

    Raises:
        ValueError: a term needs an input only the network can give (decoder features, auxiliary logits), which
            nnU-Net's plain trainer does not provide; or its configuration cannot be built.
    """
    for name, _, _ in conf.terms:
        network = sorted(set(LOSSES[name].needs) & set(NETWORK_INPUTS))
        if network:
            raise ValueError(f"{name!r} needs {' and '.join(f'{n} ({EXTRA_INPUTS[n]})' for n in network)} from the "
                             "network, which nnU-Net's plain trainer does not give its loss: export it with --to "
                             "python and wire the network's outputs in your own trainer, or export another loss "
                             "with --loss")
    build_terms(conf)
    cls = trainer_name(conf.loss)
    maps = (" The distance maps are computed from the target of each deep-supervision scale, in its voxels."
            if any("dist_map" in LOSSES[name].needs for name, _, _ in conf.terms) else "")
    terms = "[\n" + "".join(f"    ({n!r}, {p!r}, {w!r}),\n" for n, p, w in conf.terms) + "]"
    text = _TRAINER
    for key, value in (("@SUMMARY@", _wrap(conf.summary())), ("@FROM@", str(conf.results_dir)),
                       ("@CONFIGURATIONS@", _wrap(configurations_text(conf) + maps)),
                       ("@INSTALL@", install_command(file_name or f"{cls}.py")),
                       ("@TRAIN@", "\n    ".join(train_commands(conf))), ("@TERMS@", terms), ("@CLASS@", cls)):
        text = text.replace(key, value)
    return text


def write_nnunet(conf: Confirmed, out: str | Path | None = None) -> Path:
    """Write the trainer module to ``out`` (a folder, or a ``.py`` path; default the current folder) and return its
    path. The file is named ``nnUNetTrainer_raysweep_<loss>.py`` unless ``out`` names a file."""
    cls = trainer_name(conf.loss)
    path = Path(out) if out else Path(f"{cls}.py")
    if path.is_dir() or (out and str(out).endswith(("/", "\\"))):
        path = path / f"{cls}.py"
    elif path.suffix != ".py":
        raise ValueError(f"-o {out}: give a folder or a .py file (nnU-Net imports trainers from .py modules)")
    text = nnunet_module(conf, str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _wrap(text: str, width: int = 116) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False))


_TRAINER = '''r"""nnU-Net v2 trainer with raysweep's confirmed loss, written by `raysweep export --to nnunet` from
@FROM@:

@SUMMARY@

The loss replaces nnU-Net's Dice + CE, behind nnU-Net's deep-supervision wrapper with nnU-Net's own weights; the
network, augmentation and schedule stay nnU-Net's.
@CONFIGURATIONS@

Put this file where nnU-Net finds trainers, then train with it:

    @INSTALL@
    @TRAIN@
"""

import torch
from torch import nn

from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
from raysweep.losses import IGNORE_INDEX, LOSSES, build_loss

#: (loss name, hyperparameters, weight) of each term of the objective: the confirmed loss, then its companion.
TERMS = @TERMS@


class RaysweepLoss(nn.Module):
    """The weighted sum of the terms' losses, on nnU-Net's target layout.

    ``forward(logits, target)``: logits (B, C, H, W), or (B, C, D, H, W) in 3-D, float; target (B, 1, *spatial) or
    (B, *spatial), float or integer class ids, where ``ignore_label`` (nnU-Net's ``label_manager.ignore_label``; None:
    no ignore label) marks unlabelled pixels. The target becomes raysweep's convention, (B, *spatial) int64 with
    ignored pixels at IGNORE_INDEX (255), before the terms see it; the terms that need distance maps compute them from
    it (in voxels). Returns a 0-dim float32 tensor.
    """

    def __init__(self, terms, ignore_label=None):
        super().__init__()
        self.terms = nn.ModuleList(build_loss(name, **params) for name, params, _ in terms)
        self.weights = [float(weight) for _, _, weight in terms]
        self.ignore_label = ignore_label

    def set_epoch(self, epoch):
        for term in self.terms:  # losses whose weights follow epochs (boundary); a no-op for the others
            term.set_epoch(epoch)

    def forward(self, logits, target):
        if target.ndim == logits.ndim:
            target = target[:, 0]
        target = target.long()
        if self.ignore_label is not None:
            target = torch.where(target == self.ignore_label, torch.full_like(target, IGNORE_INDEX), target)
        return sum(weight * term(logits, target) for weight, term in zip(self.weights, self.terms))


class @CLASS@(nnUNetTrainer):
    """nnU-Net's trainer with RaysweepLoss(TERMS) as its loss."""

    def _build_loss(self):
        name, dims = type(self).__name__, len(self.configuration_manager.patch_size)
        for term, _, _ in TERMS:
            spec = LOSSES[term]
            if dims not in getattr(spec, "dims", (2,)):
                raise RuntimeError(
                    f"{name}: configuration {self.configuration_name!r} is {dims}-D, and loss {term!r} takes 2-D input "
                    f"only: {getattr(spec, 'dims_note', '')} Train the 2d configuration with it: "
                    f"nnUNetv2_train DATASET 2d FOLD -tr {name}")
        if self.label_manager.has_regions:
            raise RuntimeError(f"{name}: region-based training (regions in dataset.json) is not supported: "
                               "raysweep's losses take softmax logits over exclusive classes")
        ignore = self.label_manager.ignore_label if self.label_manager.has_ignore_label else None
        loss = RaysweepLoss(TERMS, ignore).to(self.device)
        learned = [p for p in loss.parameters() if p.requires_grad]
        if learned:  # a loss with parameters of its own (t_loss's nu) learns them with the network
            self.optimizer.add_param_group({"params": learned})
        if not self.enable_deep_supervision:
            return loss
        # nnU-Net's own deep-supervision weights, taken from its _build_loss so that they stay this version's
        return DeepSupervisionWrapper(loss, super()._build_loss().weight_factors)

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        loss = self.loss.loss if isinstance(self.loss, DeepSupervisionWrapper) else self.loss
        loss.set_epoch(self.current_epoch)
'''
