"""Property-based tests of sweep config validation: malformed configs get a clear error, never a traceback.

Valid configs (``configs/default.yaml`` and the tests' tiny sweep) are mutated -- keys deleted, values replaced with
wrong types and out-of-range numbers, unknown keys added at every level, unknown names -- and garbage YAML is read from
files. The property: :func:`raysweep.config.validate` either accepts the config, and then the config round-trips
(``to_dict()`` is plain JSON data that validates to the same config, ``groups()`` works, and every trial config the
sweep would compose passes :func:`raysweep.trial.resolve_config`), or it raises ``ValueError`` (``FileNotFoundError``
for a missing file or data folder) whose message names the offending key. Any other exception (TypeError, KeyError,
AttributeError, RecursionError, a yaml error ...) fails the test. No Ray, no training, no data read.
"""

import copy
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from sweep_helpers import TINY_SWEEP

from raysweep.config import load_config, parse_yaml, read_yaml_mapping, validate
from raysweep.config import compose_trial
from raysweep.search import GroupSpace
from raysweep.trial import resolve_config

REPO = Path(__file__).resolve().parent.parent
DEFAULT = read_yaml_mapping(REPO / "configs" / "default.yaml")
BASES = {"default": DEFAULT, "tiny": TINY_SWEEP}
WHERE = "cfg"
FUZZ = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


# ---------------------------------------------------------------------------------------------------- the property


def check_accepted(cfg) -> None:
    """What an accepted config must satisfy: plain data that round-trips, groups, and valid trial configs."""
    data = cfg.to_dict()
    assert json.loads(json.dumps(data)) == data, "to_dict() is not plain JSON data (resume compares it as JSON)"
    again = validate(data, where=WHERE)
    assert again.to_dict() == data, "validate(cfg.to_dict()) changed the config"
    groups = cfg.groups()
    assert len(groups) == len(cfg.datasets) * len(cfg.architectures) * len(cfg.losses) * cfg.tuning.replicates > 0
    resolve_config(cfg.trial)
    for g in groups[:: max(1, len(groups) // 8)]:  # a spread of groups: every dataset x architecture pair is checked
        resolve_config(compose_trial(cfg, g, GroupSpace(g.loss, cfg.pairing).defaults(), seed=cfg.tuning.seed,
                                     stage="tune")["trial"])


def _components(path) -> list[str]:
    """The keys of a path; of a dotted key ("train.steps", which the trial config expands) its first part."""
    return [str(p).split(".")[0] or str(p) for p in path if not isinstance(p, int)]


def names_the_key(message: str, paths) -> bool:
    """The message starts at the config and names, in order, the keys of at least one mutated path."""
    if not message.startswith(WHERE):
        return False
    for path in paths:
        pos = 0
        for part in _components(path):
            # as written, or escaped as repr() shows it; long values are shortened in messages
            found = max(message.find(form[:20], pos) for form in (part, repr(part)[1:-1]))
            if found < 0:
                break
            pos = found + 1
        else:
            return True
    return False


def check(raw, paths) -> None:
    """Validate ``raw`` (a mutation of a valid config at ``paths``) and check the property."""
    try:
        cfg = validate(raw, where=WHERE)
    except (ValueError, FileNotFoundError) as exc:
        event(f"rejected: {type(exc).__name__}")
        message = str(exc)
        assert "Traceback" not in message
        assert names_the_key(message, paths), f"error does not name any of {paths}: {message}"
        return
    event("accepted")
    check_accepted(cfg)


# ---------------------------------------------------------------------------------------------------- mutations

BAD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.sampled_from(["", "fast", "maybe", "survey", "all", "none", "auto", "off", "a b", "../up", "-x", "1e-3",
                     "synthetic", "cnn", "dice", "Unet", "resnet18", "\x00", "é" * 3]),
    st.text(max_size=8),
    st.sampled_from([0, -1, 1, 2, 3, 64, -(2**31), 2**31, 2**32, 2**63, 10**30, 0.5, 1.5, -0.5, 1e300, -1e-300]),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.one_of(st.integers(-3, 300), st.text(max_size=4), st.none()), max_size=4),
    st.dictionaries(st.text(max_size=6), st.one_of(st.integers(), st.text(max_size=4), st.none()), max_size=3),
)
UNKNOWN_KEYS = st.one_of(st.sampled_from(["tunning", "trails_per_group", "stepz", "lr", "gpu", "arhc", "optionz",
                                          "seeds ", "Name", "trial.train.steps", "dataset", "model", "loss"]),
                         st.text(min_size=1, max_size=8))
UNKNOWN_NAMES = st.sampled_from(["mnist", "dicee", "resnet", "Synthetic", "synthetic ", "unet", "", "ce_dice"])


def mapping_paths(value, path=()):
    """Paths of every mapping and list in ``value``, and of every key in them."""
    out = []
    if isinstance(value, dict):
        out.append(("map", path))
        for k, v in value.items():
            out.append(("key", path + (k,)))
            out.extend(mapping_paths(v, path + (k,)))
    elif isinstance(value, list):
        out.append(("list", path))
        for i, v in enumerate(value):
            out.append(("key", path + (i,)))
    return out


def get(value, path):
    for p in path:
        value = value[p]
    return value


@st.composite
def mutated_configs(draw):
    """A valid base config with 1 to 3 mutations; returns (config, paths the mutations touched)."""
    raw = copy.deepcopy(BASES[draw(st.sampled_from(sorted(BASES)))])
    if draw(st.booleans()):  # make every top-level key explicit, so that all of them can be mutated
        raw.setdefault("pairing", "none")
        raw.setdefault("resources", {"cpus_per_trial": 1, "gpus_per_trial": 0.5, "max_concurrent": None})
        raw.setdefault("tuning", {}).setdefault("scheduler", "asha")
    paths = []
    for _ in range(draw(st.integers(1, 3))):
        kind, path = draw(st.sampled_from(mapping_paths(raw)))
        op = draw(st.sampled_from(["delete", "replace", "replace", "add_key", "rename"]))
        if kind == "key" and op == "delete":
            parent = get(raw, path[:-1])
            del parent[path[-1]]
            paths.append(path[:-1] or ("",))
        elif kind == "key" and op in ("replace", "delete"):
            get(raw, path[:-1])[path[-1]] = draw(BAD_VALUES)
            paths.append(path)
        elif kind == "map" and op in ("add_key", "rename"):
            key = draw(UNKNOWN_KEYS if op == "add_key" else UNKNOWN_NAMES)
            if key in get(raw, path):
                continue
            get(raw, path)[key] = draw(st.one_of(BAD_VALUES, st.just({})))
            paths.append(path + (key,))
        elif kind == "list" and op in ("add_key", "rename"):
            get(raw, path).append(draw(st.one_of(UNKNOWN_NAMES, BAD_VALUES)))
            paths.append(path)
        elif kind == "key" and op in ("add_key", "rename") and isinstance(path[-1], str):
            parent = get(raw, path[:-1])
            new = draw(UNKNOWN_NAMES)
            if new in parent:
                continue
            parent[new] = parent.pop(path[-1])
            paths.append(path[:-1] + (new,))
    assume(paths)
    return raw, paths


@FUZZ
@given(mutated_configs())
def test_mutated_configs_fail_clearly_or_round_trip(case):
    raw, paths = case
    check(raw, paths)


_LEAVES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=6),
                   st.sampled_from(["synthetic", "synapse", "cnn", "Unet", "resnet18", "dice", "auto", "none", "asha",
                                    "adamw", "train", "steps", "options"]))
_KEYS = st.one_of(st.text(max_size=6), st.sampled_from(sorted(
    set(DEFAULT) | {"options", "root", "arch", "encoder", "name", "train", "optimizer", "lr", "steps", "image_size"})))
TREES = st.recursive(_LEAVES, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                      st.dictionaries(_KEYS, inner, max_size=3)), max_leaves=10)
SECTIONS = st.sampled_from([(k,) for k in DEFAULT] + [
    ("datasets", "synthetic"), ("datasets", "synthetic", "options"), ("datasets", "synthetic", "train_options"),
    ("architectures", "cnn"), ("architectures", "cnn", "options"), ("trial", "train"), ("trial", "optimizer"),
    ("trial", "eval"), ("tuning", "seed"), ("resources", "gpus_per_trial")])


@FUZZ
@given(st.sampled_from(sorted(BASES)), SECTIONS, TREES)
def test_random_sections_fail_clearly_or_round_trip(base, path, tree):
    """Whole sections replaced by random nested data (mappings, lists, scalars)."""
    raw = copy.deepcopy(BASES[base])
    parent = raw
    for p in path[:-1]:
        parent = parent.setdefault(p, {})
    parent[path[-1]] = tree
    check(raw, [path])


SECTION_VALUES = {
    ("resources", "cpus_per_trial"): [0, -1, 0.5, 1.5, float("nan"), float("inf"), True, "2", 10**9, None],
    ("resources", "gpus_per_trial"): [-0.5, 1.5, 2, 8, float("nan"), "0.5", True, None],
    ("resources", "max_concurrent"): [0, -1, 1.5, "4", True],
    ("tuning", "trials_per_group"): [0, -1, 2.0, "4", None, True, 10**7],
    ("tuning", "reduction_factor"): [1, 0, 2.5, "2", None],
    ("tuning", "grace_period"): [0, -3, 1.0],
    ("tuning", "seed"): ["0", "seed", -1, 2**40, 1.5, None, False, [0]],
    ("tuning", "scheduler"): ["pbt", None, 1, ["asha"], {"asha": 1}],
    ("confirmation", "seeds"): [-1, 2.5, "3", None, 10**9],
    ("trial", "train", "steps"): [0, -5, 2.5, "40", None, True],
    ("trial", "train", "batch_size"): [-1, 0, "8"],
    ("trial", "train", "amp"): ["maybe", True, 1, None],
    ("trial", "train", "device"): ["gpu", 0, None, "cuda:x"],
    ("trial", "train", "stepz"): [3],
    ("trial", "optimizer", "lr"): ["fast", 0, -0.1, float("inf"), float("nan"), None, [0.1]],
    ("trial", "optimizer", "name"): ["adam", None, 3],
    ("trial", "eval", "every"): [0, "10"],
    ("trial", "loss"): [{"name": "dice", "params": {"smooth": -1}}],  # loss hyperparameters belong to the search
    ("trial", "companions"): [[{"name": "ce"}]],
    ("trial", "seed"): [3],
    ("datasets", "synthetic", "options", "image_size"): ["big", 16, 48.5, None, [32, 32], True],
    ("datasets", "synthetic", "options", "depth"): [0, "8", 2.0],
    ("datasets", "synthetic", "options", "seed"): [-1, "zero"],
    ("datasets", "synthetic", "train_options", "label_noise"): [1.5, -0.1, "x", float("nan")],
    ("datasets", "synthetic", "eval_options", "num_volumes"): [0, 2.5, "6"],
    ("datasets", "synthetic", "options", "image_sise"): [32],
    ("datasets", "synthetic", "root"): [5, [], ""],
    ("datasets", "synthetic", "name"): ["synapse", 3],
    ("datasets", "synthetic", "options"): ["image_size=32", [("image_size", 32)], 3],
    ("architectures", "cnn", "arch"): ["Unett", "", 3, ["Unet"]],
    ("architectures", "cnn", "encoder"): ["resnet19", "", 18, "tu-not_a_timm_model_xyz"],
    ("architectures", "cnn", "encoder_weights"): [3, "/nonexistent/weights.pth", ""],
    ("architectures", "cnn", "options"): ["deep", [1, 2], {"decoder_chanels": [1]}],
    ("architectures", "cnn", "name"): ["resnet", 3, [], {"cnn": 1}],
    ("name",): ["", "a/b", "a b", "..", ".hidden", "-x", "x" * 101, 3, None, ["x"]],
    ("pairing",): ["focal", None, 1, ["ce"], "CE"],
    ("losses",): [[], ["dicee"], [["dice"]], [{"dice": 1}], [None], 3, {"tversky": {"alpha": 2}}, "surveys"],
    ("datasets",): [[], {}, ["mnist"], [3], [["synthetic"]], "synthetic ", 3],
    ("architectures",): [[], {}, ["resnet"], [None], 7],
}


@pytest.mark.parametrize("path", sorted(SECTION_VALUES, key=str), ids=".".join)
def test_named_bad_values_fail_clearly(path):
    """Hand-picked bad values at every section the issue names, each on both base configs."""
    for base in BASES.values():
        for value in SECTION_VALUES[path]:
            raw = copy.deepcopy(base)
            parent = raw
            for p in path[:-1]:
                parent = parent.setdefault(p, {})
                if not isinstance(parent, dict):
                    break
            parent[path[-1]] = value
            with pytest.raises((ValueError, FileNotFoundError)) as info:
                validate(raw, where=WHERE)
            assert names_the_key(str(info.value), [path]), (path, value, str(info.value))


def test_valid_edge_values_are_accepted():
    """The rules are not stricter than they need to be."""
    for change in [{"resources": {"cpus_per_trial": 2.0, "gpus_per_trial": 1, "max_concurrent": 3}},
                   {"resources": {"gpus_per_trial": 0}},
                   {"tuning": {"seed": 2**31 - 1, "reduction_factor": 3, "scheduler": "none"}},
                   {"confirmation": {"seeds": 0}},
                   {"losses": "all", "pairing": "dice", "confirmation": {"seeds": 1, "underpowered": "warn"}},
                   {"losses": "tversky"},
                   {"datasets": ["synthetic"], "architectures": ["cnn", "transformer"]},
                   {"architectures": {"mine": {"arch": "FPN", "encoder": "resnet18"}}},
                   {"name": "run-1.b_2"},
                   {"trial": {"train.steps": 3, "optimizer": {"lr": 1e-3}}}]:
        cfg = validate({**TINY_SWEEP, **change}, where=WHERE)
        check_accepted(cfg)


# ---------------------------------------------------------------------------------------------------- files

_TMP = tempfile.TemporaryDirectory(prefix="raysweep-fuzz-")


def _load_text(data: bytes | str, name="fuzz.yaml"):
    path = Path(_TMP.name) / name
    path.write_bytes(data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data)
    return path, load_config(path)


def check_file(data: bytes | str) -> None:
    try:
        path, cfg = _load_text(data)
    except (ValueError, FileNotFoundError) as exc:
        event(f"rejected: {type(exc).__name__}")
        assert "fuzz.yaml" in str(exc), f"error does not name the file: {exc}"
        return
    event("accepted")
    check_accepted(cfg)


YAML_PIECES = st.sampled_from([
    "name: x\n", "name: [unclosed\n", "tuning: {seed: 1e999}\n", "tuning: {seed: 99999999999999999999999}\n",
    "losses: [dice, ce]\n", "losses: [dice\n", "datasets: [synthetic]\n", "trial:\n\ttrain: {steps: 3}\n",
    "trial:\n  train: {steps: 3}\n", "- a\n- b\n", "42\n", "'just a string'\n", "~\n", "name: a\nname: b\n",
    "tuning: {seed: 1, seed: 2}\n", "a: &a [1, 2]\nb: *a\n", "*undefined\n", "!!python/object:os.system {}\n",
    "resources: {cpus_per_trial: .nan}\n", "confirmation: {seeds: 0x10}\n", "pairing: no\n", "pairing: off\n",
    "trial: {train: {amp: off}}\n", "trial: {optimizer: {lr: 1e-3}}\n", "name: 2024-01-01\n", "? [a, b]\n: c\n",
    "tuning: !!binary aGVsbG8=\n", "tuning: !!set {a, b}\n", "%YAML 1.1\n---\nname: x\n", "---\n---\n",
    "\ufeffname: bom\n", "name: x\r\nlosses: [dice]\r\n", "1: x\n", "null: x\n", "true: x\n", "[" * 3000 + "\n",
])


@FUZZ
@given(st.lists(YAML_PIECES, min_size=1, max_size=4))
def test_garbage_yaml_pieces_fail_clearly(pieces):
    check_file("".join(pieces))


@settings(max_examples=60, deadline=None, database=None)
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_random_text_and_bytes_fail_clearly(data):
    check_file(data)


def test_specific_yaml_mistakes_have_specific_messages(tmp_path):
    cases = {
        "name: a\nname: b\n": r"found duplicate key 'name' \(first at line 1\)",
        "- a\n- b\n": "a sweep config is a mapping of keys, got list",
        "42\n": "a sweep config is a mapping of keys, got int",
        "name: [unclosed\n": "is not valid YAML",
        "\tname: x\n": "(?s)is not valid YAML.*'\\\\t' that cannot start any token",
        "tuning: {seed: 1e999}\n": r"tuning\.seed: inf is not allowed",
        "tuning: {seed: 99999999999999999999999}\n": r"tuning\.seed must be an integer >= 0 \(at most 2147483647\)",
        "name: 2024-01-01\n": r"\.name: datetime\.date\(2024, 1, 1\) is a date",
        "trial: {train: {amp: maybe}}\n": r"\.trial: train\.amp must be one of",
        "[" * 3000 + "\n": "nested too deeply",
        "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
            f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 10)}]\n" for i in range(7)):
            "too large or nested too deeply",
    }
    for text, match in cases.items():
        path = tmp_path / "bad.yaml"
        path.write_text(text)
        with pytest.raises(ValueError, match=match) as info:
            load_config(path)
        assert "bad.yaml" in str(info.value)
    path.write_bytes(b"name: x\n\xff\xfe\x00binary")
    with pytest.raises(ValueError, match=r"bad\.yaml is not a UTF-8 text file"):
        load_config(path)
    with pytest.raises(FileNotFoundError, match=r"sweep config .*missing\.yaml not found"):
        load_config(tmp_path / "missing.yaml")
    with pytest.raises(ValueError, match="is not a file"):
        load_config(tmp_path)


def test_yaml_1_2_scalars():
    """`off` stays a string (train.amp: off works), `1e-3` is a float (PyYAML reads it as a string)."""
    assert parse_yaml("amp: off\nlr: 1e-3\nx: no\ny: true\nz: .5\nw: -2E+2\n") == {
        "amp": "off", "lr": 1e-3, "x": "no", "y": True, "z": 0.5, "w": -200.0}
    path = Path(_TMP.name) / "ok.yaml"
    path.write_text("name: ok\nlosses: [dice]\ntrial: {train: {amp: off, steps: 3}, optimizer: {lr: 1e-3}}\n")
    cfg = load_config(path)
    assert cfg.trial["train"]["amp"] == "off" and cfg.trial["optimizer"]["lr"] == 1e-3 and cfg.text.startswith("name")


# ---------------------------------------------------------------------------------------------------- the CLI


def _cli(tmp_path, text: bytes, *extra):
    config = tmp_path / "bad.yaml"
    config.write_bytes(text)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "RAY_ADDRESS": "ray://192.0.2.1:1"}  # no cluster to reach
    proc = subprocess.run([sys.executable, *extra, "-m", "raysweep.cli", "run", "--config", str(config), "--out",
                           str(out)], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    return proc, out


def test_cli_rejects_a_bad_config_before_ray_starts(tmp_path):
    """`raysweep run` with an invalid config: exit 2, the message, no traceback, Ray never imported, --out untouched."""
    text = "name: bad\nlosses: [dicee]\ntuning: {trials_per_group: 2}\n"
    proc, out = _cli(tmp_path, text.encode(), "-X", "importtime")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "raysweep run: error: bad.yaml.losses: unknown loss 'dicee' (did you mean 'dice'?)" in proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time")}
    assert "torch" in imported  # validation ran (it checks names against the registries) ...
    assert not {m for m in imported if m == "ray" or m.startswith("ray.")}, "Ray was imported before validation"
    assert not out.exists()


def test_cli_rejects_garbage_bytes(tmp_path):
    proc, out = _cli(tmp_path, b"\x89PNG\r\n\x1a\n\x00\x00binary")
    assert proc.returncode == 2
    assert "raysweep run: error:" in proc.stderr and "bad.yaml is not a UTF-8 text file" in proc.stderr
    assert "Traceback" not in proc.stderr and not out.exists()


def test_property_helpers_can_fail():
    """The checks above are not vacuous: a message without the key, or a mutated config that validates to something
    else, is caught."""
    assert names_the_key("cfg.tuning.seed must be an integer", [("tuning", "seed")])
    assert not names_the_key("cfg: something is wrong", [("tuning", "seed")])
    assert not names_the_key("seed must be an integer", [("tuning", "seed")])
    cfg = validate(TINY_SWEEP, where=WHERE)
    cfg.trial = {"train": {"steps": math.pi}}
    with pytest.raises(ValueError):
        check_accepted(cfg)


def test_the_resolved_base_trial_follows_edits_of_the_trial_section():
    """SweepConfig.resolved_trial is resolved once per value of ``trial``: a copy whose ``trial`` is edited (as
    benchmarks.convergence edits the budget) gets its own, and the original keeps its own."""
    import copy

    from raysweep.config import load_config

    cfg = load_config()
    steps = DEFAULT["trial"]["train"]["steps"]  # the shipped default's budget, as written in its YAML
    assert steps != 20 and cfg.resolved_trial["train"]["steps"] == steps and cfg.resolved_trial is cfg.resolved_trial
    short = copy.deepcopy(cfg)
    short.trial.setdefault("train", {})["steps"] = 20
    assert short.resolved_trial["train"]["steps"] == 20 and cfg.resolved_trial["train"]["steps"] == steps
