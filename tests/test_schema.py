"""The config schemas: the committed JSON Schemas are what the models generate, the shipped configs pass them, every
key is described, and the trial config's documentation is generated from its model."""

import json
import typing
from pathlib import Path

import pytest

from raysweep.checks import Bad, config_error
from raysweep.cli import main
from raysweep.config import read_yaml_mapping
from raysweep.config.model import SweepModel, json_schema
from raysweep.trial import DEFAULTS, resolve_config
from raysweep.trial.schema import TrialConfig

REPO = Path(__file__).resolve().parent.parent
SCHEMAS = {False: REPO / "docs" / "schema" / "sweep-config.schema.json",
           True: REPO / "docs" / "schema" / "trial-config.schema.json"}
MODELINE = "# yaml-language-server: $schema=../docs/schema/sweep-config.schema.json"
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))


@pytest.mark.parametrize("trial", [False, True], ids=["sweep", "trial"])
def test_committed_schemas_are_what_the_models_generate(trial):
    assert SCHEMAS[trial].read_text(encoding="utf-8") == json_schema(trial), "run `make schema`"


def test_cli_prints_and_writes_the_schema(tmp_path, capsys):
    assert main(["schema", "--trial"]) == 0
    assert capsys.readouterr().out == json_schema(trial=True)
    assert main(["schema", "-o", str(tmp_path / "s.json")]) == 0
    assert json.loads((tmp_path / "s.json").read_text()) == json.loads(json_schema())


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_configs_point_at_and_pass_the_schema(path):
    assert path.read_text(encoding="utf-8").splitlines()[0] == MODELINE
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMAS[False].read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    errors = [f"{list(e.absolute_path)}: {e.message}"
              for e in jsonschema.Draft202012Validator(schema).iter_errors(read_yaml_mapping(path))]
    assert not errors


def test_the_schemas_catch_what_an_editor_should_flag():
    jsonschema = pytest.importorskip("jsonschema")
    sweep = jsonschema.Draft202012Validator(json.loads(SCHEMAS[False].read_text(encoding="utf-8")))
    trial = jsonschema.Draft202012Validator(json.loads(SCHEMAS[True].read_text(encoding="utf-8")))
    assert not list(trial.iter_errors({"train.steps": 3, "loss": {"name": "dice", "schedule": {"kind": "linear",
                                                                                               "to": 0.0}}}))
    for bad in ({"trian": {}}, {"loss": {"name": "dicee"}}, {"train": {"steps": 0}}, {"train": {"amp": "maybe"}}):
        assert list(trial.iter_errors(bad)), bad
    for bad in ({"tunning": {}}, {"losses": ["dicee"]}, {"datasets": ["mnist"]}, {"pairing": "focal"},
                {"tuning": {"seed": -1}}, {"trial": {"optimizer": {"lr": 0}}}):
        assert list(sweep.iter_errors(bad)), bad


def _models(model, seen=None):
    """A model and every model its fields hold."""
    seen = seen if seen is not None else {}
    seen[model.__name__ + model.__module__] = model
    for field in model.model_fields.values():
        todo = [field.annotation]
        while todo:
            tp = todo.pop()
            if isinstance(tp, type) and hasattr(tp, "model_fields"):
                if tp.__name__ + tp.__module__ not in seen:
                    _models(tp, seen)
            else:
                todo.extend(typing.get_args(tp))
    return seen.values()


@pytest.mark.parametrize("root", [SweepModel, TrialConfig], ids=["sweep", "trial"])
def test_every_key_is_described(root):
    models = list(_models(root))
    assert len(models) > 5
    for model in models:
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"


def test_trial_docs_are_generated_from_the_model():
    import raysweep.trial.schema as schema

    for section, field in TrialConfig.model_fields.items():
        if isinstance(DEFAULTS[section], dict):
            for key, sub in field.annotation.model_fields.items():
                assert f"\n      {key}: " in schema.__doc__ and sub.description.split()[0] in schema.__doc__, key
        else:
            assert f"\n    {section}: " in schema.__doc__, section
    assert DEFAULTS == TrialConfig.model_construct().model_dump()


def test_the_converter_names_the_path_and_the_fix():
    """One converter for both configs: unknown keys get a "did you mean" (dotted in the trial config), values the
    expected type and range, validators' errors their key path and their own exception type."""
    with pytest.raises(ValueError, match=r"^unknown config key 'optimizer\.lrr' \(did you mean 'optimizer\.lr'\?\); "
                                         r"valid keys here: name, lr, "):
        resolve_config({"optimizer": {"lrr": 0.1}})
    with pytest.raises(ValueError, match=r"^companions\[1\]\.weight must be a non-negative number, got -2"):
        resolve_config({"companions": [{"name": "ce"}, {"name": "dice", "weight": -2}]})
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as info:
        SweepModel.model_validate({"tuning": {"grace_period": 0}})
    error = config_error(info.value.errors(), SweepModel, "x.yaml")
    assert str(error) == "x.yaml.tuning.grace_period must be an integer >= 1 (at most 1000000), got 0"
    error = config_error([{"type": "value_error", "loc": ("datasets",), "input": None,
                           "ctx": {"error": Bad(": not a folder", "a.root", FileNotFoundError)}}], SweepModel, "c")
    assert isinstance(error, FileNotFoundError) and str(error) == "c.datasets.a.root: not a folder"
