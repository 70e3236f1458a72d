"""The sweep config: its keys, their defaults and checks, and the validated :class:`SweepConfig`.

The keys are the pydantic model :class:`SweepModel` and its sections (:class:`Tuning`, :class:`Confirmation`,
:class:`Resources`, :class:`Tracking`, one :class:`DatasetEntry` per dataset, one :class:`ArchitectureEntry` per
architecture); each field's description is its documentation, and their JSON Schema (``raysweep schema``,
``docs/schema/sweep-config.schema.json``) lets editors complete and check configs. Defaults live only in the models:
:class:`SweepConfig` keeps the ``tuning``, ``confirmation``, ``resources`` and ``tracking`` sections as those models
(``cfg.tuning.seed``), and ``cfg.to_dict()`` is the plain data stored with the results and compared on resume.

Validation reads no data and starts nothing; it checks names against the registries (datasets, losses, smp
architectures and encoders) and dataset options by value. :func:`raysweep.config.validate` adds what the config
composes: every trial config passes ``raysweep.trial.resolve_config``, and the design has power (:mod:`raysweep.power`).
Every error is a ``ValueError`` (``FileNotFoundError`` for a missing file or data folder) that names the key and the
fix; unknown keys get a "did you mean" (:func:`parse` turns the model's first error into that message).

Values must be plain data (strings, numbers, booleans, null, lists, mappings with string keys; no NaN or inf); the YAML
is read with YAML 1.2 scalars (:mod:`raysweep.config.yaml_io`).
"""

from __future__ import annotations

import copy
import importlib.util
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, Optional, Union

from pydantic import (AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError,
                      field_validator, model_validator)

from ..checks import Bad, Must, config_error, did_you_mean, show
from ..trial.schema import TrialConfig, choice, registry_names
from .group import Group
from .yaml_io import check_plain

PAIRINGS = ("none", "ce", "dice")
SCHEDULERS = ("asha", "none")
UNDERPOWERED = ("error", "warn")
_NAME_RE = r"^[\w][\w.-]{0,99}$"
#: Upper bound of counts (trials, seeds, ASHA's periods): past it a value is a typo, not a plan.
_MAX_COUNT = 10**6
#: Seeds stay below 2**31 so that seed + confirmation seeds fits every RNG (numpy takes < 2**32).
_MAX_SEED = 2**31 - 1
_SET_BY_SWEEP = ("dataset", "model", "loss", "companions", "seed", "output_dir")


@dataclass
class SweepConfig:
    """A validated sweep config (see the module docstring)."""

    name: str
    datasets: dict[str, dict]
    architectures: dict[str, dict]
    losses: list[str]
    pairing: str
    tuning: Tuning
    confirmation: Confirmation
    resources: Resources
    trial: dict
    tracking: Optional[Tracking] = None  # when the config asks for an experiment tracker
    source: dict = field(default_factory=dict)
    text: str = ""

    @property
    def resolved_trial(self) -> dict[str, Any]:
        """The base trial config with every default filled in (:func:`raysweep.trial.resolve_config`): what every
        trial starts from (its budget, evaluation interval, ...). Resolved once per value of ``trial`` (a copy of the
        config whose ``trial`` is then edited resolves its own). Read it; do not change it."""
        from ..trial.schema import resolve_config

        key = json.dumps(self.trial, sort_keys=True, default=str)
        cached = self.__dict__.get("_resolved")
        if cached is None or cached[0] != key:
            cached = self.__dict__["_resolved"] = (key, resolve_config(self.trial))
        return cached[1]

    def variants(self, dataset: str) -> list[str]:
        """The dataset's variants in config order, or ``[""]`` (the dataset as it is) when it lists none."""
        return list(self.datasets[dataset].get("variants") or {}) or [""]

    def cells(self) -> list[tuple[str, str]]:
        """Every (dataset, variant) the sweep tunes and ranks in, with each architecture."""
        return [(d, v) for d in self.datasets for v in self.variants(d)]

    def groups(self) -> list[Group]:
        """Every (dataset, variant, arch, loss, replicate), replicates innermost (with one replicate, the groups and
        their order are those of a sweep from before replicates)."""
        return [Group(d, a, loss, v, r) for d, v in self.cells() for a in self.architectures for loss in self.losses
                for r in self.replicate_ids()]

    def replicate_ids(self) -> range:
        """The replicates this sweep runs: ``tuning.replicates`` of them from ``tuning.first_replicate``."""
        return range(self.tuning.first_replicate, self.tuning.first_replicate + self.tuning.replicates)

    def to_dict(self) -> dict:
        """The config as plain data (JSON-serialisable); ``validate(cfg.to_dict())`` gives the same config back.
        ``tracking``, ``tuning.storage`` and ``tuning.first_replicate`` are left out when unset (0), so that a sweep
        from before them still resumes."""
        out = {k: copy.deepcopy(getattr(self, k)) for k in SweepModel.model_fields if k not in _SECTIONS}
        out["tuning"] = self.tuning.model_dump(exclude={k for k in ("storage", "first_replicate") if
                                                        getattr(self.tuning, k) in (None, 0)})
        out["confirmation"], out["resources"] = self.confirmation.model_dump(), self.resources.model_dump()
        if self.tracking is not None:
            out["tracking"] = self.tracking.model_dump(exclude_none=True)
        return {k: out[k] for k in SweepModel.model_fields if k in out}


def _count(low: int, high: int = _MAX_COUNT) -> Any:
    return Annotated[int, Field(ge=low, le=high)]


def _names(what: str, default: list[str]):
    """A list of names or a mapping name -> section, as a mapping (null: ``default``)."""
    def convert(value: Any) -> Any:
        value = default if value is None else value
        if isinstance(value, (list, tuple)):
            bad = [v for v in value if not isinstance(v, str) or not v]
            if bad:
                raise Bad(f": {show(bad[0])} is not a {what} name (a list holds names)")
            value = {v: {} for v in value}
        if not isinstance(value, Mapping) or not value:
            raise Bad(f" must name at least one {what} (a list or a mapping), got {show(value)}")
        return dict(value)
    return convert


def _whole(value: float) -> int:
    if value != int(value):
        raise ValueError
    return int(value)


def _losses(value: Any) -> list[str]:
    known = registry_names("losses")
    if value in ("survey", "all"):
        from ..losses import LOSSES

        value = [n for n, s in LOSSES.items() if s.in_survey or value == "all"]
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise Bad(f" must be 'survey', 'all' or a non-empty list of loss names, got {show(value)}")
    for loss in value:
        if not isinstance(loss, str) or loss not in known:
            raise Bad(f": unknown loss {show(loss)}{did_you_mean(loss, known)}; see `raysweep losses`")
    return list(dict.fromkeys(value))


def _storage_url(value: str | None) -> str | None:
    """A database URL SQLAlchemy can open (its driver installed), or None."""
    import sqlalchemy

    try:
        value is None or sqlalchemy.make_url(value).get_dialect().import_dbapi()  # the driver: fails here, not later
    except (sqlalchemy.exc.ArgumentError, sqlalchemy.exc.NoSuchModuleError, ValueError) as exc:
        raise Bad(f": {show(value)} is not a database URL ({exc}); use null for the journal file in the output "
                  "folder, or e.g. sqlite:///studies.db, postgresql://user@host/db") from None
    except ImportError as exc:
        raise Bad(f": the database driver for {show(value)} is not installed ({exc}); pip install the module it "
                  "names (e.g. 'psycopg[binary]' for postgresql://)") from None
    return value


def _loss_enum(schema: dict) -> None:
    names = registry_names("losses")
    schema.update(anyOf=[{"enum": ["survey", "all", *names]}, {"type": "array", "items": {"enum": names}}])


def _dataset_enum(schema: dict) -> None:
    names = {"enum": registry_names("datasets")}
    schema["anyOf"][0]["items"], schema["anyOf"][1]["propertyNames"] = names, names


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _null(cls, value: Any) -> Any:
        return {} if value is None else value  # an empty section (`tuning:` with nothing under it)


class VariantEntry(Section):
    """One variant of a dataset: option sections merged onto the dataset's, e.g. a label corruption of the training
    split or a shift of the ranking split. A variant is a cell of its own: every loss is tuned and confirmed in it."""

    axis: Optional[Annotated[str, Field(min_length=1)]] = Field(
        None, description="the robustness axis it lies on (e.g. 'label noise'); null for the clean reference")
    level: Optional[float] = Field(None, description="its position on the axis (the reference is level 0)")
    options: dict[str, Any] = Field({}, description="build_dataset options for every split, merged over the dataset's")
    train_options: dict[str, Any] = Field({}, description="... for the training split (label_corruption, ...)")
    eval_options: dict[str, Any] = Field({}, description="... for the ranking split (shift, ...)")
    select_options: dict[str, Any] = Field({}, description="... for the selection split")


class DatasetEntry(Section):
    """One dataset of the sweep: its trial-config section (the key names the dataset)."""

    name: Optional[str] = Field(None, description="the key (may be repeated; nothing else)")
    root: Annotated[Optional[str], Field(pattern=r"\S"), Must("a folder path")] = Field(
        None, description="folder of a file-based dataset (synapse, cityscapes, nnunet, folder)")
    options: dict[str, Any] = Field({}, description="build_dataset options for every split (image_size, depth, ...)")
    train_options: dict[str, Any] = Field({}, description="... for the training split only (label_noise, ...)")
    eval_options: dict[str, Any] = Field({}, description="... for the ranking split, seen only by confirmation runs")
    select_options: dict[str, Any] = Field({}, description="... for the selection split, seen by tuning trials")
    variants: dict[Annotated[str, Field(pattern=r"^[A-Za-z0-9_][\w.-]{0,39}$")], VariantEntry] = Field(
        {}, description="name -> a variant (label corruption, shift) that is a cell of its own; exactly one has no "
        "axis (the clean reference)")


class ArchitectureEntry(Section):
    """One architecture of the sweep: a raysweep.models.MODELS entry, or any smp architecture and encoder."""

    name: Optional[str] = Field(None, description="the MODELS entry it starts from (default: the key if it is one)",
                                json_schema_extra=lambda s: s.update(enum=registry_names("models")))
    arch: Annotated[Optional[str], Field(min_length=1), Must("a name")] = Field(
        None, description="any smp architecture (case-insensitive)")
    encoder: Annotated[Optional[str], Field(min_length=1), Must("a name")] = Field(
        None, description='any smp encoder or "tu-<timm name>"')
    encoder_weights: Annotated[Optional[str], Field(min_length=1), Must(
        "null, a weight name such as 'imagenet' or a file path")] = Field(
        None, description='null | a weight name such as "imagenet" | path to a local encoder state dict')
    options: dict[str, Any] = Field({}, description="smp architecture options (decoder_channels, ...)")


class Tuning(Section):
    """The tuning stage: per group, the same quota of trials and the same early stopping."""

    trials_per_group: _count(1) = Field(4, description="tuning trials per (dataset, architecture, loss) group")
    seed: _count(0, _MAX_SEED) = Field(0, description="the seed everything random derives from")
    scheduler: choice(*SCHEDULERS) = Field("asha", description="asha (early stopping within a group) | none")
    grace_period: _count(1) = Field(1, description="ASHA: evaluations before a trial can be stopped")
    reduction_factor: _count(2) = Field(2, description="ASHA: 1/reduction_factor of the trials go on at each rung")
    replicates: _count(1, 1000) = Field(
        1, description="independent replicates of each group's whole pipeline: its own Optuna study (own sampler "
        "seed), its own early-stopping bracket, the same quota, its best configuration confirmed with its own seeds. "
        "The ranking's tests then hold tuning and training variance, not only the cases' (1: they cannot)")
    first_replicate: _count(0, 1000) = Field(0, description="its first replicate's index: 0, or K to add replicates "
                                             "to a sweep of K (raysweep merge joins them: the sweep one run makes)")
    n_startup_trials: Annotated[Union[Literal["auto"], _count(0)], Must(
        f"'auto' or an integer >= 0 (at most {_MAX_COUNT})")] = Field(
        "auto", description="TPE's random start-up trials per group (auto: a third of the quota, >= 2)")
    storage: Annotated[Optional[str], AfterValidator(_storage_url), Must(
        "null or a database URL such as 'sqlite:///studies.db' or 'postgresql://user@host/db'")] = Field(
        None, description="where the per-group Optuna studies live: null (the journal file <out>/optuna.journal) or "
        "a database URL (sqlite:///..., postgresql://..., mysql://...) for nodes that share no disk")


class MlflowTracking(Section):
    """Where the sweep's MLflow runs go: one run per trial, nested under one run for the sweep."""

    tracking_uri: Annotated[Optional[str], Field(min_length=1), Must("a tracking URI such as http://host:5000")] = \
        Field(None, description="the MLflow tracking server (null: MLflow's default, MLFLOW_TRACKING_URI)")
    experiment: Annotated[Optional[str], Field(min_length=1), Must("a name")] = Field(
        None, description="the MLflow experiment (null: the sweep's name)")

    @model_validator(mode="after")
    def _installed(self) -> "MlflowTracking":
        if importlib.util.find_spec("mlflow") is None:
            raise Bad(" needs the mlflow package: pip install 'raysweep[mlflow]' (or remove the tracking section)")
        return self


class Tracking(Section):
    """Experiment trackers the sweep also writes to (the Parquet results stay the record)."""

    mlflow: Optional[MlflowTracking] = Field(None, description="MLflow: {tracking_uri, experiment}")


class Confirmation(Section):
    """The confirmation stage: the best config of each group retrained; the ranking comes from these runs only."""

    seeds: _count(0) = Field(3, description="seeds each best config is retrained with (0: skip the stage)")
    evaluations: Optional[_count(1)] = Field(None, description="evaluations on the ranking split, evenly spaced "
                                             "(null: as trial.eval.every)")
    alpha: Annotated[float, Field(gt=0, lt=1), Must("a significance level in (0, 1)")] = Field(
        0.05, description="significance level of the ranking (Wilcoxon-Holm)")
    underpowered: choice(*UNDERPOWERED) = Field("error", description="a design whose ranking cases can never "
                                                "separate two losses at alpha: error (refused) | warn (run anyway)")


class Resources(Section):
    """What each trial gets from Ray."""

    cpus_per_trial: Annotated[float, Field(ge=1, le=_MAX_COUNT), AfterValidator(_whole), Must(
        "a whole number of CPUs >= 1 (each trial runs torch with that many threads)")] = Field(
        1, description="whole CPUs per trial (torch threads)")
    gpus_per_trial: Annotated[float, Field(ge=0, le=1), Must(
        "a number in [0, 1] (a trial trains on one GPU; a fraction such as 0.5 lets trials share one)")] = Field(
        1.0, description="GPU share per trial, in [0, 1] (only where the cluster has GPUs)")
    max_concurrent: Optional[_count(1)] = Field(None, description="trials at once (null: as many as resources allow)")
    pack: _count(1) = Field(1, description="runs one Ray trial trains side by side on the same batches (trial "
                            "packing, raysweep.trial.pack): K tuning trials of one cell (early-stopped member by "
                            "member), K confirmation runs of one cell and seed; each member's results are those it "
                            "gets alone. The resources above are then per pack. 1: no packing")


class SweepModel(Section):
    """A raysweep sweep config (``raysweep run --config``): datasets x architectures x losses, tuned and ranked."""

    model_config = ConfigDict(title="raysweep sweep config")

    name: Annotated[str, Field(pattern=_NAME_RE), Must(
        "1 to 100 letters, digits, '_', '-' or '.' (it names folders; no slashes or spaces, not starting with '.' "
        "or '-')")] = Field("sweep", description="names the Ray experiment folders and the results")
    datasets: Annotated[dict[str, DatasetEntry], BeforeValidator(
        _names("dataset", ["synthetic"]), json_schema_input_type=Union[list[str], dict[str, Optional[DatasetEntry]]]),
    ] = Field(
        {"synthetic": {}}, validate_default=True, description="dataset names, or name -> its section of the trial "
        "config", json_schema_extra=_dataset_enum)
    architectures: Annotated[dict[str, ArchitectureEntry], BeforeValidator(
        _names("model", ["cnn", "transformer"]),
        json_schema_input_type=Union[list[str], dict[str, Optional[ArchitectureEntry]]])] = Field(
        {"cnn": {}, "transformer": {}}, validate_default=True,
        description="raysweep.models.MODELS keys, or name -> {name, arch, encoder, encoder_weights, options}")
    losses: Annotated[list[str], BeforeValidator(_losses, json_schema_input_type=Any)] = Field(
        "survey", validate_default=True, description="survey | all (survey + baselines) | [names]",
        json_schema_extra=_loss_enum)
    pairing: choice(*PAIRINGS) = Field("none", description="none | ce | dice: a companion term whose weight is tuned "
                                       "with the loss")
    tuning: Tuning = Field(Tuning(), description="the tuning stage")
    confirmation: Confirmation = Field(Confirmation(), description="the confirmation stage")
    resources: Resources = Field(Resources(), description="per-trial resources")
    tracking: Optional[Tracking] = Field(None, description="experiment trackers the runs also go to (MLflow)")
    trial: Annotated[dict[str, Any], BeforeValidator(lambda v: {} if v is None else v, json_schema_input_type=Optional[
        TrialConfig]), Must("a mapping (the base train_trial config)")] = Field(
        {}, description="the base train_trial config every trial starts from (raysweep.trial.schema); dataset, "
        "model, loss, companions, seed, output_dir and eval.split are set by the sweep")

    @field_validator("datasets")
    @classmethod
    def _datasets(cls, value: dict) -> dict:
        from ..data import DATASETS, check_dataset_options

        for ds, section in value.items():
            if ds not in DATASETS:
                raise Bad(f": unknown dataset {show(ds)}{did_you_mean(ds, DATASETS)}; choose from "
                          f"{', '.join(DATASETS)}")
            if section.name not in (None, ds):
                raise Bad(f" must be {ds!r} (the key names the dataset), got {show(section.name)}", f"{ds}.name")
            if DATASETS[ds].needs_root:
                if not section.root:
                    raise Bad(f" is required: the folder holding the {ds} data", f"{ds}.root")
                if not Path(section.root).expanduser().is_dir():
                    where = "" if Path(section.root).expanduser().is_absolute() else \
                        f" (relative roots are taken from the working folder, {Path.cwd()})"
                    raise Bad(f": {section.root} is not a folder{where}; download {ds} there or fix the path",
                              f"{ds}.root", FileNotFoundError)
            for key in ("options", "train_options", "eval_options", "select_options"):
                try:
                    check_dataset_options(ds, getattr(section, key), _split_of(ds, key))
                except ValueError as exc:
                    raise Bad(f": {str(exc).removeprefix(ds + ': ')}", f"{ds}.{key}") from None
            _check_variants(ds, section)
        return value

    @field_validator("architectures")
    @classmethod
    def _architectures(cls, value: dict) -> dict:
        models = registry_names("models")
        for arch, section in value.items():
            if arch not in models and "arch" not in section.model_fields_set:
                raise Bad(f": unknown model {show(arch)}; use one of {', '.join(models)}, or give {{arch: <smp "
                          "architecture>, encoder: <name>} or a 3-D {arch: monai.UNet|monai.DynUNet|monai.SwinUNETR}")
            base = section.name or (arch if arch in models else models[0])
            if base not in models:
                raise Bad(f" must be one of {', '.join(models)} (the defaults it starts from), got {show(base)}",
                          f"{arch}.name")
            _check_model(base, section, arch)
        return value

    @field_validator("trial")
    @classmethod
    def _trial(cls, trial: dict) -> dict:
        from ..trial.schema import resolve_config

        for key in _SET_BY_SWEEP:
            if key in trial or any(k.startswith(key + ".") for k in trial):
                raise Bad(" is set by the sweep; use datasets / architectures / losses / pairing instead", key)
        if "eval.split" in trial or "split" in (trial.get("eval") if isinstance(trial.get("eval"), Mapping) else {}):
            raise Bad(" is set by the sweep: tuning trials evaluate on each dataset's selection split and "
                      "confirmation runs on its ranking split (never the same cases); use "
                      "datasets.<name>.select_options / eval_options to size them", "eval.split")
        device = resolve_config(trial)["train"]["device"]
        if device not in ("auto", "cpu", "cuda"):
            raise Bad(f" must be auto, cpu or cuda in a sweep (Ray gives each trial its GPU, which the trial sees as "
                      f"cuda), got {show(device)}", "train.device")
        return trial


def _split_of(ds: str, key: str) -> str | None:
    """The split an option section is for: training, ranking (eval) or selection; None for every split."""
    from ..data import DATASETS

    info = DATASETS[ds]
    return {"train_options": "train", "eval_options": info.eval_split, "select_options": info.select_split}.get(key)


def _check_variants(ds: str, section: DatasetEntry) -> None:
    """A dataset's variants: one clean reference (no axis), a level on every axis variant, options that build."""
    from ..data import check_dataset_options

    if not section.variants:
        return
    references = [name for name, v in section.variants.items() if v.axis is None]
    if len(references) != 1:
        raise Bad(f" must have exactly one variant without an axis (the clean reference the others are measured "
                  f"against), got {len(references)}: {references}", f"{ds}.variants")
    for name, v in section.variants.items():
        if v.axis is not None and v.level is None:
            raise Bad(f" needs a level (its position on the {v.axis!r} axis; the reference is 0)",
                      f"{ds}.variants.{name}.level")
        for key in ("options", "train_options", "eval_options", "select_options"):
            merged = {**getattr(section, key), **getattr(v, key)}
            try:
                check_dataset_options(ds, merged, _split_of(ds, key))
            except ValueError as exc:
                raise Bad(f": {str(exc).removeprefix(ds + ': ')}", f"{ds}.variants.{name}.{key}") from None


def parse(raw: Mapping[str, Any], where: str = "config") -> SweepConfig:
    """Check every key and value of a sweep config mapping (:class:`SweepModel`); :func:`raysweep.config.validate`
    adds the checks of what the config composes (trial configs, power). Reads no data and starts nothing.

    Raises ``ValueError`` naming the key (``FileNotFoundError`` for a data folder that does not exist).
    """
    if not isinstance(raw, Mapping):
        raise ValueError(f"{where}: a sweep config is a mapping of keys, got {type(raw).__name__}")
    check_plain(raw, where)
    raw = json.loads(json.dumps(raw))  # a plain copy (tuples -> lists): what the sweep stores and compares on resume
    try:
        m = SweepModel.model_validate(raw)
    except ValidationError as exc:
        raise config_error(exc.errors(), SweepModel, where) from None
    models = registry_names("models")
    return SweepConfig(
        name=m.name, losses=m.losses, pairing=m.pairing, trial=dict(raw.get("trial") or {}), source=dict(raw),
        datasets={ds: {**s.model_dump(exclude_unset=True), "name": ds} for ds, s in m.datasets.items()},
        architectures={a: {**s.model_dump(exclude_unset=True), "name": s.name or (a if a in models else models[0])}
                       for a, s in m.architectures.items()},
        tuning=m.tuning, tracking=m.tracking, confirmation=m.confirmation, resources=m.resources)


#: The sections that stay typed models on :class:`SweepConfig` (their defaults live only in the models).
_SECTIONS = ("tuning", "confirmation", "resources", "tracking")


def json_schema(trial: bool = False) -> str:
    """The JSON Schema of the sweep config (``trial``: of the trial config), as the text ``docs/schema/`` holds:
    what editors use to complete and check the YAML (``raysweep schema``)."""
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
              **(TrialConfig if trial else SweepModel).model_json_schema()}
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def _check_model(base: str, section: ArchitectureEntry, arch: str) -> None:
    """The architecture, encoder, option names and a local weights path of one ``architectures`` entry, without
    building the model (smp's and MONAI's names are read; nothing is downloaded)."""
    from .. import models

    name = section.arch or models.MODELS[base]["arch"]
    volume = models.is_volume_arch(name)
    # A MONAI 3-D network has no encoder: only one written in the entry is wrong, the base entry's is not inherited.
    encoder = section.encoder if volume else section.encoder or models.MODELS[base]["encoder"]
    known, low = models.architectures(), name.lower()
    if low not in known:
        hint = did_you_mean("monai." + low if "monai." + low in known else low, known)  # "DynUNet": the MONAI one
        raise Bad(f": unknown architecture {name!r}{hint}; choose one of {', '.join(known)} (case-insensitive)",
                  f"{arch}.arch")
    weights = models.check_volume_weights if volume else (lambda _name, w: models.local_weights_path(w))
    for key, check in (("encoder", lambda: models.check_encoder(encoder, name)),
                       ("options", lambda: models.check_arch_options(name.lower(), encoder, section.options)),
                       ("encoder_weights", lambda: weights(name, section.encoder_weights))):
        try:
            check()
        except FileNotFoundError as exc:
            raise Bad(f": {exc}", f"{arch}.{key}", FileNotFoundError) from None
        except ValueError as exc:
            raise Bad(f": {exc}", f"{arch}.{key}") from None
