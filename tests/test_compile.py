"""``train.compile``: the config key, the in-place compile (state dict and checkpoints unchanged), and a tiny trial
that trains to the same numbers compiled and eager on the CPU; the offline bundle's wheel slimming."""

import importlib.util
import io
import shutil
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from raysweep.trial import resolve_config, train_trial
from raysweep.trial.build import COMPILE_MODES, compile_model

ROOT = Path(__file__).resolve().parents[1]

# The smallest model the tests train (U-Net, ResNet-18 cut to 3 stages, thin decoder) on 32 x 32 slices; SGD, so a
# float-rounding difference in a gradient stays small after a step (Adam's first step is about sign(gradient)).
TINY = {
    "dataset": {"options": {"image_size": 32, "depth": 4}, "train_options": {"num_volumes": 1},
                "eval_options": {"num_volumes": 1}},
    "model": {"name": "cnn", "encoder": "resnet18", "options": {"encoder_depth": 3, "decoder_channels": [16, 8, 4]}},
    "optimizer": {"name": "sgd"},
    "train": {"steps": 2, "batch_size": 2, "progress": False, "threads": 1},
    "eval": {"every": None, "overlays": 0},
}


def _compile_unavailable() -> str | None:
    """Why torch.compile cannot run here, or None."""
    if not hasattr(torch, "compile"):
        return f"torch {torch.__version__} has no torch.compile"
    try:
        import torch._dynamo as dynamo

        if not dynamo.is_dynamo_supported():
            return f"torch.compile is not supported on Python {sys.version.split()[0]} with torch {torch.__version__}"
    except Exception as exc:  # noqa: BLE001 - any import failure means: not available
        return f"torch._dynamo does not import: {exc}"
    if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        return "no C++ compiler (g++, c++ or clang++): inductor compiles CPU kernels with one"
    return None


def test_the_key_takes_the_four_settings_and_nothing_else():
    assert resolve_config({})["train"]["compile"] is False  # eager by default
    for value in (False, True, "reduce-overhead", "max-autotune"):
        assert resolve_config({"train.compile": value})["train"]["compile"] == value
    for bad in ("yes", 1, "default", None):
        with pytest.raises(ValueError, match="train.compile"):
            resolve_config({"train.compile": bad})
    assert set(COMPILE_MODES) == {True, "reduce-overhead", "max-autotune"}


def test_compiling_in_place_keeps_the_module_and_its_state_dict():
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2))
    keys = list(model.state_dict())
    assert compile_model(model, False) is model and getattr(model, "_compiled_call_impl", None) is None
    assert compile_model(model, "reduce-overhead") is model  # nothing compiles before the first call
    assert isinstance(model, torch.nn.Sequential) and model._compiled_call_impl is not None
    assert list(model.state_dict()) == keys  # no _orig_mod. prefix: checkpoints load either way
    with pytest.raises(ValueError, match="train.compile"):
        compile_model(model, "fast")


@pytest.mark.skipif(_compile_unavailable() is not None, reason=str(_compile_unavailable()))
def test_a_compiled_trial_trains_to_the_eager_numbers(tmp_path):
    """One compile of a small U-Net on the CPU takes minutes on a busy 2-core machine (about 2.5 min measured,
    less with inductor's cache warm), so one trial only: forward, backward and evaluation all compiled."""
    eager = train_trial(TINY)
    compiled = train_trial({**TINY, "train.compile": True, "output_dir": str(tmp_path)})
    assert compiled["status"] == eager["status"] == "completed"
    assert compiled["loss"] == pytest.approx(eager["loss"], rel=1e-4)
    for key in ("dice", "iou", "miou"):
        assert compiled[key] == pytest.approx(eager[key], abs=1e-3), key
    # the checkpoint of the compiled trial has the eager model's keys: it resumes with train.compile false
    state = torch.load(next(tmp_path.glob("checkpoint_*")) / "state.pt", weights_only=True)
    assert not any(k.startswith("_orig_mod.") for k in state["model"])


# -- the offline bundle: slimming a wheel ---------------------------------------------------------------------------


def _bundle_module():
    spec = importlib.util.spec_from_file_location("raysweep_bundle_script", ROOT / "scripts" / "bundle.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _fake_ray_wheel(path: Path, bundle) -> None:
    files = {"ray/__init__.py": b"VERSION = '0'\n", "ray/tune/__init__.py": b"",
             "ray/jars/ray_dist.jar": b"J" * 5000, "ray/rllib/algo.py": b"x = 1\n" * 100,
             "ray/dashboard/client/build/static/js/main.js": b"console.log(1)\n",
             "ray/dashboard/client/build/static/js/main.js.map": b"{}" * 3000,
             "ray-0.0.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: ray\nVersion: 0.0.0\n",
             "ray-0.0.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nRoot-Is-Purelib: false\nTag: py3-none-any\n"}
    rows = [f"{n},{bundle._record_hash(d)},{len(d)}" for n, d in files.items()]
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in files.items():
            z.writestr(name, data)
        z.writestr("ray-0.0.0.dist-info/RECORD", "\n".join(rows + ["ray-0.0.0.dist-info/RECORD,,"]) + "\n")


@pytest.mark.parametrize("stored", [False, True])
def test_slimming_a_wheel_drops_jars_rllib_and_source_maps_and_rewrites_record(tmp_path, stored):
    bundle = _bundle_module()
    src, dst = tmp_path / "ray-0.0.0-py3-none-any.whl", tmp_path / "slim.whl"
    _fake_ray_wheel(src, bundle)
    s = bundle.slim_wheel(src, dst, stored=stored)
    assert s["removed"] == 3 and s["removed_bytes"] == 5000 + 600 + 6000
    with zipfile.ZipFile(dst) as z:
        assert z.testzip() is None
        names = set(z.namelist())
        assert "ray/dashboard/client/build/static/js/main.js" in names and "ray/tune/__init__.py" in names
        assert not any(n.startswith(("ray/jars/", "ray/rllib/")) or n.endswith(".js.map") for n in names)
        record = [line.split(",") for line in z.read("ray-0.0.0.dist-info/RECORD").decode().splitlines()]
        listed = {row[0] for row in record}
        assert listed == names  # every file kept is listed, nothing removed is
        for name, digest, size in record:
            if name.endswith("RECORD"):
                assert digest == size == ""
                continue
            data = z.read(name)
            assert digest == bundle._record_hash(data) and int(size) == len(data)
        assert {i.compress_type for i in z.infolist()} == {zipfile.ZIP_STORED if stored else zipfile.ZIP_DEFLATED}


def test_what_the_target_lacks_and_its_platform_tags(tmp_path):
    bundle = _bundle_module()
    freeze = tmp_path / "freeze.txt"
    freeze.write_text("# a CUDA image\ntorch==2.5.1\nNumPy==2.1.0\nnvidia-cudnn-cu12\n-e git+https://x#egg=y\n"
                      "typing_extensions==4.12.2\n")
    target = bundle.read_target(freeze)
    assert target == {"torch": "2.5.1", "numpy": "2.1.0", "nvidia-cudnn-cu12": None, "typing-extensions": "4.12.2"}
    resolved = [("torch", "2.5.1"), ("numpy", "2.2.0"), ("nvidia-cudnn-cu12", "9.1"), ("typing_extensions", "4.12.2"),
                ("ray", "2.60.0")]
    assert bundle.missing(resolved, target) == [("numpy", "2.2.0"), ("ray", "2.60.0")]
    tags = bundle.expand_platforms(["manylinux_2_28_x86_64"])
    assert tags[0] == "manylinux_2_28_x86_64" and "manylinux2014_x86_64" in tags and "manylinux_2_29_x86_64" not in tags
    assert "manylinux_2_28_x86_64" not in bundle.expand_platforms(["manylinux2014_x86_64"])
    assert bundle.expand_platforms(["win_amd64"]) == ["win_amd64"]
    assert any(d.startswith("ray[tune]") for d in bundle.dependencies())
