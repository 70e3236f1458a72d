"""Safety: no pickle from a results folder, a checkpoint or a dataset is trusted, and Ray's ports stay private.

Every loader is fed a *live* malicious pickle: an object whose ``__reduce__`` opens (creates) a marker file when it is
unpickled. A control shows that a plain unpickler does create the marker; raysweep's loaders must refuse the file
with a ValueError that names it, and the marker must not exist afterwards. The report is built from a results folder
planted with such pickles while every unpickling entry point raises. The cluster configs are checked statically:
the dashboard on loopback, token authentication alike on every node, no Ray port opened to the internet.
"""

from __future__ import annotations

import ast
import builtins
import pickle
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from test_train import TINY  # the tiny trial config of the training tests

REPO = Path(__file__).resolve().parents[1]
RAY_PORTS = {6379, 8265, 10001}


class Evil:
    """Unpickling this calls ``open(marker, "w")``: the marker file appears iff the pickle was trusted."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (builtins.open, (self.marker, "w"))


@pytest.fixture
def marker(tmp_path):
    m = tmp_path / "PWNED"
    yield m
    assert not m.exists(), f"a pickle planted by the test ran code: {m} was created"


def evil_torch_file(path: Path, marker: Path, wrap=lambda e: {"model": e}) -> Path:
    """A torch.save file whose payload runs code on load; the control proves that it does with weights_only=False."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(wrap(Evil(marker)), path)
    control = torch.load(path, weights_only=False)  # the unsafe load that raysweep never does
    del control
    assert marker.exists(), "control: the planted pickle should run code when trusted"
    marker.unlink()
    return path


# -- checkpoints and weights -------------------------------------------------------------------------------------

def test_trial_checkpoint_with_pickled_code_is_refused(tmp_path, marker):
    from raysweep.trial import train_trial

    ckpt = tmp_path / "checkpoint_000002"
    evil_torch_file(ckpt / "state.pt", marker)
    with pytest.raises(ValueError, match=r"checkpoint_000002/state\.pt: refused to load this checkpoint.*"
                                         r"pickled Python objects") as exc:
        train_trial({**TINY, "checkpoint.resume": str(ckpt)})
    assert "weights_only=True" in str(exc.value)
    assert not marker.exists()


def test_a_genuine_checkpoint_still_loads(tmp_path):
    """The refusal is not a blanket one: train_trial's own state.pt (tensors, numbers, RNG states) resumes."""
    from raysweep.trial import train_trial

    first = train_trial({**TINY, "output_dir": str(tmp_path)})
    again = train_trial({**TINY, "checkpoint.resume": str(tmp_path / "checkpoint_000002")})
    assert again["step"] == first["step"] == 2 and again["dice"] == first["dice"]


def test_encoder_weights_file_with_pickled_code_is_refused(tmp_path, marker):
    from raysweep.models import build_model

    path = evil_torch_file(tmp_path / "encoder.pth", marker, wrap=lambda e: {"state_dict": {"conv1.weight": e}})
    with pytest.raises(ValueError, match=r"encoder\.pth: refused to load this encoder weights file"):
        build_model("Unet", "resnet18", num_classes=2, in_channels=1, encoder_weights=str(path))
    assert not marker.exists()


def test_inversenet_checkpoint_with_pickled_code_is_refused(tmp_path, marker):
    from raysweep.losses import build_loss
    from raysweep.losses.boundary.inverseform import load_inversenet

    path = evil_torch_file(tmp_path / "distance_measures_regressor.pth", marker,
                           wrap=lambda e: {"module.fc.0.weight": e})
    with pytest.raises(ValueError, match=r"distance_measures_regressor\.pth: refused to load this InverseNet"):
        load_inversenet(path)
    with pytest.raises(ValueError, match="refused to load"):
        build_loss("inverseform", inversenet=str(path))
    assert not marker.exists()


def test_plain_pickle_and_junk_named_as_weights_are_refused(tmp_path, marker):
    """Not only torch's zip format: a bare pickle (protocol 4) and random bytes are refused, naming the file."""
    from raysweep.safe_load import load_tensors

    bare = tmp_path / "bare.pt"
    bare.write_bytes(pickle.dumps({"weight": Evil(marker)}, protocol=4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about the protocol before refusing
        with pytest.raises(ValueError, match=r"bare\.pt: refused to load"):
            load_tensors(bare)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"PK\x03\x04 not really a zip" * 8)
    with pytest.raises(ValueError, match=r"junk\.pt: .*(corrupt|not a torch)"):
        load_tensors(junk)
    assert not marker.exists()


# -- datasets ----------------------------------------------------------------------------------------------------

def test_npz_slice_with_an_object_array_is_refused(tmp_path, marker):
    from raysweep.data import build_dataset

    root = tmp_path / "Synapse"
    (root / "train_npz").mkdir(parents=True)
    evil = root / "train_npz" / "case0005_slice000.npz"
    obj = np.empty((1,), dtype=object)
    obj[0] = Evil(marker)
    np.savez(evil, image=obj, label=np.zeros((8, 8), np.float32))  # np.save pickles object arrays
    with np.load(evil, allow_pickle=True) as d:  # control: trusting the file runs the payload
        d["image"]
    assert marker.exists()
    marker.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match=r"case0005_slice000\.npz") as exc:
            ds = build_dataset("synapse", root=root, split="train", image_size=32, val_cases=0)
            for i in range(len(ds)):
                ds[i]
    text = str(exc.value) + str(exc.value.__cause__ or "")
    assert "pickle" in text, text
    assert not marker.exists()


# -- the results folder and the report ---------------------------------------------------------------------------

def test_report_never_unpickles_anything_from_a_results_folder(tmp_path, marker, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from report_fixture import make_fixture

    from raysweep import results
    from raysweep.report import build_report

    out = tmp_path / "sweep"
    make_fixture(out / "results", overlays=False)
    payload = pickle.dumps(Evil(marker))
    pickle.loads(payload)  # control
    assert marker.exists()
    marker.unlink()
    # Pickles where Ray Tune keeps its own state, and where a careless reader might look.
    for rel in ("ray/fixture/tuner.pkl", "ray/fixture/searcher-state-2026.pkl", "ray/fixture/trainable.pkl",
                "results/trials/part-evil.pkl", "results/sweep.pkl", "results/report.pkl", "state.pkl",
                "ray/fixture/trial_0/checkpoint_000001/state.pt"):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(payload)
    # A Parquet part whose column claims the pickle-based extension type of old pyarrow (CVE-2023-47248).
    row = results.read_results(out / "results")["trials"].iloc[:1]
    table = pa.Table.from_pandas(row, preserve_index=False)
    field = table.schema.field("trial_id").with_metadata({b"ARROW:extension:name": b"arrow.py_extension_type",
                                                         b"ARROW:extension:metadata": payload})
    table = table.set_column(table.schema.get_field_index("trial_id"), field,
                             pa.array(["planted-ext"], field.type))
    pq.write_table(table, out / "results" / "trials" / "part-planted-ext.parquet")

    def refuse(*args, **kwargs):
        raise AssertionError("the report tried to unpickle something")

    class RefusingUnpickler(pickle.Unpickler):  # a class: libraries subclass pickle.Unpickler at import time
        load = refuse

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", RefusingUnpickler)
    monkeypatch.setattr(torch, "load", refuse)
    import pandas as pd

    monkeypatch.setattr(pd, "read_pickle", refuse)
    path = build_report(out)
    html = path.read_text()
    assert "raysweep ranking" in html and "Boundary" in html
    # The planted Parquet part was read, as plain text (the extension type is not deserialised).
    assert "planted-ext" in set(results.read_results(out / "results")["trials"]["trial_id"])
    assert not marker.exists()


# -- no unsafe loader anywhere in the package -------------------------------------------------------------------

#: (module, function) allowed to unpickle: the searcher's own state, which Ray Tune writes and restores in
#: <out>/ray/ (Ray's trust model: whoever can write <out>/ray/ can run code as the sweep).
PICKLE_ALLOWED = {("raysweep/sweep/searcher.py", "restore")}


def _calls(tree: ast.AST):
    parents: dict[ast.AST, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = (f"{f.value.id}.{f.attr}" if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name)
                    else f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else "")
            func, p = None, parents.get(node)
            while p is not None and func is None:
                func = p.name if isinstance(p, (ast.FunctionDef, ast.AsyncFunctionDef)) else None
                p = parents.get(p)
            yield name, node, func


def unsafe_loads(rel: str, source: str) -> list[str]:
    """Calls in ``source`` that could unpickle data: torch.load without weights_only=True, np.load without
    allow_pickle=False, and pickle/cloudpickle/joblib/dill/pandas loaders outside :data:`PICKLE_ALLOWED`."""
    unsafe = []
    for name, call, func in _calls(ast.parse(source)):
        const = {k.arg: k.value.value for k in call.keywords if isinstance(k.value, ast.Constant)}
        if name in ("torch.load", "load_state_dict_from_url", "torch.hub.load") \
                and const.get("weights_only") is not True:
            unsafe.append(f"{rel}:{call.lineno} {name} without weights_only=True")
        elif name == "np.load" and const.get("allow_pickle") is not False:
            unsafe.append(f"{rel}:{call.lineno} np.load without allow_pickle=False")
        elif name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "cloudpickle.load", "cloudpickle.loads",
                      "joblib.load", "pd.read_pickle", "dill.load", "dill.loads") and (rel, func) not in PICKLE_ALLOWED:
            unsafe.append(f"{rel}:{call.lineno} {name} in {func}")
    return unsafe


def test_every_loader_in_the_package_is_safe():
    # The scanner itself finds what it looks for.
    planted = ("import pickle, torch, numpy as np\n"
               "def f(p):\n    torch.load(p)\n    torch.load(p, weights_only=False)\n    np.load(p)\n"
               "    pickle.loads(p)\n    torch.load(p, weights_only=True)\n    np.load(p, allow_pickle=False)\n")
    assert len(unsafe_loads("planted.py", planted)) == 4
    unsafe = []
    for path in sorted((REPO / "raysweep").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        unsafe += unsafe_loads(rel, path.read_text())
    assert not unsafe, unsafe


# -- Ray's ports -------------------------------------------------------------------------------------------------

def _strings(x):
    if isinstance(x, dict):
        for k, v in x.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(x, list):
        for v in x:
            yield from _strings(v)
    elif x is not None:
        yield str(x)


def _ports(rule: dict) -> set[int]:
    lo, hi = rule.get("FromPort", -1), rule.get("ToPort", -1)
    if lo in (-1, None) or rule.get("IpProtocol") == "-1":
        return set(RAY_PORTS)
    return {p for p in RAY_PORTS if lo <= p <= (hi if hi not in (-1, None) else lo)}


@pytest.mark.parametrize("path", ["cluster/cluster.yaml", "cluster/local.yaml"])
def test_cluster_configs_keep_rays_ports_private(path):
    config = yaml.safe_load((REPO / path).read_text())
    values = list(_strings(config))
    assert not [v for v in values if "0.0.0.0" in v or "::/0" in v], "a Ray address bound or opened to everyone"
    heads = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    workers = [c for c in config["worker_start_ray_commands"] if "ray start" in c]
    assert heads and workers
    for c in heads:
        # The dashboard (and its Jobs API, which runs arbitrary code) on loopback only, or not at all.
        assert re.search(r"--dashboard-host[= ]127\.0\.0\.1\b", c) or "--include-dashboard=false" in c, c
        assert "--ray-client-server-port" not in c or "127.0.0.1" in c, c
    # Token authentication, alike on every node, with the token copied to every node.
    modes = {re.search(r"RAY_AUTH_MODE=(\w+)", c).group(1) for c in heads + workers if "RAY_AUTH_MODE=" in c}
    assert modes == {"token"}, modes
    assert all("RAY_AUTH_MODE=" in c for c in heads + workers)
    assert any(r.endswith(".ray/auth_token") for r in config.get("file_mounts", {})), config.get("file_mounts")
    # No security-group rule opens a Ray port to the internet (Ray's default group allows the cluster's own members
    # and SSH only).
    rules = list(config.get("provider", {}).get("security_group", {}).get("IpPermissions", []))
    for node_type in config.get("available_node_types", {}).values():
        rules += node_type.get("node_config", {}).get("SecurityGroupRules", [])
    for rule in rules:
        public = [r for r in rule.get("IpRanges", []) + rule.get("Ipv6Ranges", [])
                  if r.get("CidrIp", r.get("CidrIpv6")) in ("0.0.0.0/0", "::/0")]
        assert not (public and _ports(rule)), rule
    if config["provider"]["type"] == "gcp":
        for fw in config["provider"].get("firewall_rules", []):
            assert "0.0.0.0/0" not in fw.get("sourceRanges", []), fw
