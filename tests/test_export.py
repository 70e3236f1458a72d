"""``raysweep export``: a sweep's confirmed loss as ``build_loss`` code and as an nnU-Net v2 trainer.

Planted results (written through the sweep's own writer) say which configuration each loss confirmed; the exports
must carry exactly that configuration. The nnU-Net tests plan and preprocess a tiny 2-D configuration of the
example dataset with nnU-Net's own command, train the exported trainer for two iterations on the CPU, in nnU-Net's
2d configuration and (a loss that takes 3-D input, on the same preprocessed data) its 3d_fullres one, and check
that the loss nnU-Net computed on a batch equals raysweep's loss, built directly, on the same batch.
"""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from raysweep import export
from raysweep.cli import main
from raysweep.losses import LOSSES, build_loss
from raysweep.results import write_sweep_meta, write_trial_rows

FOCAL = {"gamma": 1.37}  # the configuration focal confirms in replicate 1 (its best)
FOCAL_R0 = {"gamma": 3.1}  # ... and in replicate 0
WEIGHT = 0.42  # focal's tuned companion weight (pairing: dice) in replicate 1
DMCE = {"decay": 2.0, "weight": 1.5}  # the 3-D run's loss: it needs distance maps, computed from nnU-Net's target
WEIGHT_3D = 0.3  # ... and its companion (dice) weight


def _trial(rdir: Path, tid: str, stage: str, loss: str, params: dict, score: float | None, *, replicate: int = 0,
           seed: int = 0, is_default: bool = False, dataset: str = "synthetic", arch: str = "cnn",
           status: str = "completed") -> None:
    row = dict(sweep_id="planted", trial_id=tid, stage=stage, dataset=dataset, arch=arch, loss=loss,
               loss_title=loss, family="pixel", in_survey=True, params=params, is_default=is_default, seed=seed,
               replicate=replicate, status=status, budget_steps=100, steps_done=100, primary_metric="dice",
               final_metric=score, proposal="model" if stage == "tune" else None)
    write_trial_rows(rdir, tid, row)


def planted(rdir: Path, *, pairing: str | None = "dice", cells: tuple[str, ...] = ("cnn",)) -> Path:
    """Confirmed: focal (replicates 0 and 1, with different configurations; 1 is better), dice (scores below
    focal's); tuning trials only: tversky. Focal's defaults are confirmed beside its tuned best in replicate 1 and
    score higher there: the report ranks the tuned rows, and so must the export."""
    for arch in cells:
        for seed, score in enumerate((0.70, 0.72)):
            _trial(rdir, f"c-{arch}-focal-r1-s{seed}", "confirm", "focal", {**FOCAL, "companion_weight": WEIGHT},
                   score, replicate=1, seed=seed, arch=arch)
            _trial(rdir, f"c-{arch}-focal-r1-default-s{seed}", "confirm", "focal",
                   {"gamma": 2.0, "companion_weight": 1.0}, 0.9, replicate=1, seed=seed, is_default=True, arch=arch)
            _trial(rdir, f"c-{arch}-focal-r0-s{seed}", "confirm", "focal", {**FOCAL_R0, "companion_weight": 2.5},
                   score - 0.1, replicate=0, seed=seed + 10, arch=arch)
            _trial(rdir, f"c-{arch}-dice-s{seed}", "confirm", "dice", {"smooth": 1e-3}, score - 0.2, seed=seed,
                   arch=arch)
        _trial(rdir, f"t-{arch}-tversky-0", "tune", "tversky", {"alpha": 0.4, "beta": 0.6}, 0.5, arch=arch)
    meta: dict = {"sweep_id": "planted"}
    if pairing is not None:
        meta["config"] = {"pairing": pairing}
    write_sweep_meta(rdir, meta)
    return rdir


@pytest.fixture
def results(tmp_path) -> Path:
    return planted(tmp_path / "out" / "results")


def _batch(seed: int = 0, classes: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, classes, 24, 24, generator=g)
    target = torch.randint(0, classes, (2, 24, 24), generator=g)
    target[:, :3] = 255  # ignored rows
    return logits, target


# -- choosing what to export -------------------------------------------------------------------------------------

def test_defaults_choose_the_winner_its_best_replicate_and_its_tuned_rows(results):
    conf = export.confirmed(results.parent)  # the --out folder resolves to its results/
    assert (conf.cell, conf.loss, conf.winner) == ("synthetic/cnn", "focal", "focal")
    assert conf.replicate == 1 and conf.replicate_means == pytest.approx({0: 0.61, 1: 0.71})
    assert conf.params == FOCAL and (conf.companion, conf.companion_weight) == ("dice", WEIGHT)
    assert conf.runs == 2  # the two tuned rows; the higher-scoring defaults are not ranked, so not exported
    assert "replicate 1 of 2" in conf.summary() and "the cell's winner" in conf.summary()


def test_replicate_and_loss_can_be_chosen(results):
    conf = export.confirmed(results, loss="focal", replicate=0)
    assert conf.params == FOCAL_R0 and conf.companion_weight == 2.5 and "chosen with --replicate" in conf.summary()
    conf = export.confirmed(results, "synthetic/cnn", "dice")
    # dice contains the dice companion: the pairing adds nothing to it
    assert (conf.params, conf.companion, conf.companion_weight) == ({"smooth": 1e-3}, None, None)
    assert "the cell's winner is focal" in conf.summary()


@pytest.mark.parametrize("kwargs, words", [
    (dict(cell="synthetic/cn"), ["unknown cell 'synthetic/cn'", "did you mean 'synthetic/cnn'", "--cell"]),
    (dict(loss="focl"), ["unknown loss 'focl'", "did you mean 'focal'", "dice, focal"]),
    (dict(loss="tversky"), ["'tversky' has no confirmation runs", "--loss", "dice, focal"]),
    (dict(loss="focal", replicate=5), ["no confirmed replicate 5", "replicates: 0, 1"]),
])
def test_bad_choices_are_named_with_the_fix(results, kwargs, words):
    with pytest.raises(ValueError) as info:
        export.confirmed(results, **kwargs)
    for word in words:
        assert word in str(info.value)


def test_several_cells_need_cell_and_a_sweep_without_confirmation_is_refused(tmp_path):
    rdir = planted(tmp_path / "two", cells=("cnn", "transformer"))
    with pytest.raises(ValueError, match=r"2 cells \(synthetic/cnn, synthetic/transformer\).*--cell"):
        export.confirmed(rdir)
    assert export.confirmed(rdir, "synthetic/transformer").cell == "synthetic/transformer"
    tune_only = tmp_path / "tune-only"
    _trial(tune_only, "t-0", "tune", "focal", FOCAL, 0.5)
    with pytest.raises(ValueError, match="no confirmation runs.*finish the sweep"):
        export.confirmed(tune_only)
    with pytest.raises(FileNotFoundError, match="no sweep results"):
        export.confirmed(tmp_path / "nothing")


def test_a_companion_weight_without_a_pairing_is_refused(tmp_path):
    rdir = planted(tmp_path / "r", pairing=None)
    with pytest.raises(ValueError, match="records no pairing.*companion loss cannot be named"):
        export.confirmed(rdir)
    # without a companion weight the pairing is not needed
    assert export.confirmed(rdir, loss="dice").params == {"smooth": 1e-3}


# -- --to python -------------------------------------------------------------------------------------------------

def _run_code(code: str) -> dict:
    scope: dict = {}
    exec(compile(code, "<export>", "exec"), scope)  # noqa: S102 (the exported code is what this test checks)
    return scope


def test_python_code_builds_the_confirmed_objective(results):
    code = export.python_code(export.confirmed(results))
    loss = _run_code(code)["loss"]
    logits, target = _batch()
    want = build_loss("focal", **FOCAL)(logits, target) + WEIGHT * build_loss("dice")(logits, target)
    assert torch.allclose(loss(logits, target), want, rtol=0, atol=1e-6)
    # a different configuration gives a different value: the comparison can fail
    other = build_loss("focal", **FOCAL_R0)(logits, target) + WEIGHT * build_loss("dice")(logits, target)
    assert not torch.allclose(loss(logits, target), other, atol=1e-4)
    assert "replicate 1 of 2" in " ".join(code.replace("#", " ").split())


def test_python_code_without_companion_is_one_build_loss_call(results):
    code = export.python_code(export.confirmed(results, loss="dice"))
    assert "loss = build_loss('dice', smooth=0.001)" in code.splitlines()
    logits, target = _batch(1)
    assert torch.equal(_run_code(code)["loss"](logits, target), build_loss("dice", smooth=1e-3)(logits, target))


def test_cli_python_prints_runnable_code_and_fails_with_exit_2(results, capsys, tmp_path):
    assert main(["export", str(results), "--to", "python"]) == 0
    out = capsys.readouterr().out
    logits, target = _batch(2)
    want = build_loss("focal", **FOCAL)(logits, target) + WEIGHT * build_loss("dice")(logits, target)
    assert torch.allclose(_run_code(out)["loss"](logits, target), want, rtol=0, atol=1e-6)
    assert main(["export", str(results), "--loss", "nope", "--to", "python"]) == 2
    assert "raysweep export: error: unknown loss 'nope'" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "empty"), "--to", "nnunet"]) == 2
    assert "no sweep results" in capsys.readouterr().err


def test_help_names_what_is_exported_the_defaults_and_the_nnunet_command(capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for words in ("confirmed configuration", "companion_weight", "the sweep's only cell", "the cell's winner",
                  "best mean primary metric", "nnUNetTrainer_raysweep_<loss>.py", "deep-supervision",
                  "os.path.dirname(nnunetv2.__file__)", "/training/nnUNetTrainer/",
                  "nnUNetv2_train DATASET 2d FOLD -tr nnUNetTrainer_raysweep_<loss>",
                  "nnUNetv2_train DATASET 3d_fullres FOLD -tr nnUNetTrainer_raysweep_<loss>", "2-D-only loss"):
        assert words in text, words


# -- --to nnunet -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("loss, need", [("conditional_boundary", "features"), ("boundary_aware", "aux_logits")])
def test_nnunet_refuses_losses_that_need_the_network(loss, need, tmp_path):
    conf = export.Confirmed(tmp_path, "d/a", loss, {}, None, None, 0, {0: 0.5}, 1, "dice", loss)
    with pytest.raises(ValueError, match=f"'{loss}' needs {need}.*--to python"):
        export.write_nnunet(conf, tmp_path)
    assert not list(tmp_path.iterdir())


def test_cli_nnunet_writes_the_trainer_and_prints_the_install_command(results, capsys, tmp_path):
    assert main(["export", str(results), "--to", "nnunet", "-o", str(tmp_path / "trainers") + "/"]) == 0
    out = capsys.readouterr().out
    path = tmp_path / "trainers" / "nnUNetTrainer_raysweep_focal.py"
    assert path.is_file()
    assert (f"cp {path} \"$(python -c \"import nnunetv2, os; print(os.path.dirname(nnunetv2.__file__))\")"
            "/training/nnUNetTrainer/\"") in out
    assert "nnUNetv2_train DATASET 2d FOLD -tr nnUNetTrainer_raysweep_focal" in out
    assert "nnUNetv2_train DATASET 3d_fullres FOLD -tr nnUNetTrainer_raysweep_focal" in out  # focal and dice: 3-D
    text = path.read_text()
    assert "class nnUNetTrainer_raysweep_focal(nnUNetTrainer):" in text
    assert f"('focal', {FOCAL!r}, 1.0)" in text and f"('dice', {{}}, {WEIGHT!r})" in text
    assert max(len(line) for line in text.splitlines() if not line.lstrip().startswith("cp ")) <= 120
    compile(text, str(path), "exec")


def _conf(loss: str, params: dict | None = None, companion: str | None = None,
          weight: float | None = None, root: Path = Path("sweep")) -> export.Confirmed:
    """A confirmed configuration given directly (the results' reading is tested above)."""
    return export.Confirmed(root, "synthetic/cnn", loss, dict(params or {}), companion, weight, 0, {0: 0.5}, 1,
                            "dice", loss)


@pytest.mark.parametrize("conf, flat", [(_conf("dmce", DMCE, "dice", WEIGHT_3D), None),
                                        (_conf("active_boundary"), "active_boundary"),
                                        (_conf("focal", FOCAL, "active_boundary", 0.5), "active_boundary")])
def test_the_export_offers_3d_configurations_only_when_every_term_takes_3d_input(conf, flat):
    commands = export.train_commands(conf)
    text, code = export.nnunet_module(conf), export.python_code(conf)
    two_d = f"nnUNetv2_train DATASET 2d FOLD -tr nnUNetTrainer_raysweep_{conf.loss}"
    three_d = f"nnUNetv2_train DATASET 3d_fullres FOLD -tr nnUNetTrainer_raysweep_{conf.loss}"
    assert commands == ([two_d] if flat else [two_d, three_d])
    assert two_d in text and (three_d in text) is not flat
    docstring = " ".join(text.split('"""')[1].split())
    code = " ".join(code.replace("#", " ").split())
    if flat:
        note = LOSSES[flat].dims_note.rstrip(".")
        assert export.two_d_only(conf) == [flat]
        assert f"The 2d configuration only: '{flat}' takes 2-D input only ({note})" in docstring
        assert f"takes 2-D input only: {note}" in code
    else:
        assert "3d_fullres; 3d_lowres and 3d_cascade_fullres too" in docstring
        assert "computed from the target of each deep-supervision scale, in its voxels" in docstring
        assert "also takes 3-D input: logits (B, C, D, H, W), target (B, D, H, W)" in code
    assert max(len(line) for line in text.splitlines() if not line.lstrip().startswith("cp ")) <= 120


NNUNET_ID = 917
IGNORE = 9  # the toy dataset's classes are 0..8; nnU-Net's ignore label is the highest label


def _toy_2d_dataset(raw: Path) -> Path:
    """The example nnU-Net dataset, tiny, with an ``ignore`` label painted on the first rows of every slice."""
    import nibabel as nib

    from raysweep.data.examples import write_nnunet_example

    root = write_nnunet_example(raw / f"Dataset{NNUNET_ID}_Toy", num_training=5, num_test=0, size=32, depth=4,
                                channels=("MR",))
    for path in sorted((root / "labelsTr").glob("*.nii.gz")):
        image = nib.load(path)
        labels = np.asarray(image.dataobj).copy()  # nibabel's (x, y, z)
        labels[:, :4, :] = IGNORE
        nib.save(nib.Nifti1Image(labels, image.affine), path)
    meta = json.loads((root / "dataset.json").read_text())
    meta["labels"]["ignore"] = IGNORE
    (root / "dataset.json").write_text(json.dumps(meta))
    return root


class _Trained:
    """What the exported trainer did: filled by the module-scoped fixture below."""


@pytest.fixture(scope="module")
def nnunet_run(tmp_path_factory):
    """Plan and preprocess the toy dataset with nnU-Net's command (2d), export focal + 0.42 x dice from the
    planted results, find the trainer by name as nnU-Net does, and train it for two iterations on the CPU with a
    recorder around its loss."""
    try:
        importlib.import_module("nnunetv2")
    except ImportError as exc:
        pytest.skip(f"nnunetv2 cannot be imported ({exc}); `pip install -e '.[test]'` installs it")
    from batchgenerators.utilities.file_and_folder_operations import load_json

    base = tmp_path_factory.mktemp("nnunet")
    env = {"nnUNet_raw": base / "raw", "nnUNet_preprocessed": base / "preprocessed",
           "nnUNet_results": base / "nnunet_results", "nnUNet_extTrainer": base / "trainers"}
    for path in env.values():
        path.mkdir()
    _toy_2d_dataset(env["nnUNet_raw"])
    mp = pytest.MonkeyPatch()
    for key, value in env.items():
        mp.setenv(key, str(value))
    mp.setenv("nnUNet_n_proc_DA", "1")  # planning sets torch's threads from it (0 is refused there)
    try:
        cli = Path(sys.executable).parent / "nnUNetv2_plan_and_preprocess"
        done = subprocess.run([str(cli), "-d", str(NNUNET_ID), "-c", "2d", "-np", "1", "-npfp", "1",
                               "--verify_dataset_integrity"], capture_output=True, text=True, timeout=600,
                              env=dict(os.environ))
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        mp.setenv("nnUNet_n_proc_DA", "0")  # the data augmentation in this process: no worker processes

        rdir = planted(base / "sweep" / "results")
        path = export.write_nnunet(export.confirmed(rdir), env["nnUNet_extTrainer"])
        cls = _find_trainer(path)
        pre = env["nnUNet_preprocessed"] / f"Dataset{NNUNET_ID}_Toy"
        plans, dataset_json = load_json(pre / "nnUNetPlans.json"), load_json(pre / "dataset.json")

        def trainer(configuration: str, cls=cls, plans=plans):
            return cls(plans={**plans, "continue_training": False}, configuration=configuration, fold="all",
                       dataset_json=dataset_json, device=torch.device("cpu"))

        run = _train(trainer("2d"))
        run.make_trainer, run.path, run.plans, run.pre = trainer, path, plans, pre
        run.trainers = env["nnUNet_extTrainer"]
        yield run
    finally:
        mp.undo()


def _train(trainer) -> _Trained:
    """Train ``trainer`` (not initialised yet) for two iterations and one validation iteration, with a recorder
    around its loss."""
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper

    run = _Trained()
    run.trainer = trainer
    run.trainer.num_epochs, run.trainer.num_iterations_per_epoch = 1, 2
    run.trainer.num_val_iterations_per_epoch = 1
    run.trainer.initialize()
    run.built = run.trainer.loss
    run.calls = []

    class Recorder(DeepSupervisionWrapper):  # nnU-Net's own wrapper: what it computes is what nnU-Net computes
        def forward(self, output, target):
            value = super().forward(output, target)
            run.calls.append(([o.detach().clone() for o in output], [t.clone() for t in target],
                              value.detach().clone(), torch.is_grad_enabled()))
            return value

    run.trainer.loss = Recorder(run.built.loss, run.built.weight_factors)
    run.trainer.run_training()
    return run


@pytest.fixture(scope="module")
def nnunet_run_3d(nnunet_run):
    """Export dmce + 0.3 x dice (both take 3-D input; dmce needs distance maps) and train it for two iterations in
    nnU-Net's 3d_fullres configuration, on the 2d configuration's preprocessed data: the toy volumes need no
    resampling at either configuration's spacing, so both preprocess them to the same arrays (the fixture spares a
    second preprocessing run)."""
    conf = _conf("dmce", DMCE, "dice", WEIGHT_3D, nnunet_run.path.parent)
    cls = _find_trainer(export.write_nnunet(conf, nnunet_run.trainers))
    plans = json.loads(json.dumps(nnunet_run.plans))
    two_d, three_d = plans["configurations"]["2d"], plans["configurations"]["3d_fullres"]
    fingerprint = json.loads((nnunet_run.pre / "dataset_fingerprint.json").read_text())
    assert all(np.allclose(s, three_d["spacing"]) for s in fingerprint["spacings"])  # no resampling in 3-D...
    assert np.allclose(two_d["spacing"], three_d["spacing"][1:])  # ... nor in 2-D
    assert two_d["normalization_schemes"] == three_d["normalization_schemes"]
    three_d["data_identifier"] = two_d["data_identifier"]
    return _train(nnunet_run.make_trainer("3d_fullres", cls, plans))


def _find_trainer(path: Path):
    """The exported class as ``nnUNetv2_train -tr`` finds it (nnU-Net's lookup by name, in the folders of
    ``nnUNet_extTrainer``), or imported from the file where this nnU-Net has no such lookup."""
    import importlib.util

    from nnunetv2 import paths

    name = path.stem
    if hasattr(paths, "nnUNet_extTrainer"):
        from nnunetv2.utilities.find_objects import recursive_find_trainer_class_by_name

        return recursive_find_trainer_class_by_name(name)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, name)


def test_nnunet_trains_two_iterations_with_the_exported_loss(nnunet_run):
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper

    run = nnunet_run
    assert type(run.trainer).__name__ == "nnUNetTrainer_raysweep_focal"
    assert isinstance(run.built, DeepSupervisionWrapper)
    # nnU-Net's weights, computed as its own _build_loss does: 1/2^i per scale, the lowest 0, normalised
    scales = len(run.trainer.configuration_manager.pool_op_kernel_sizes) - 1
    weights = np.array([1 / 2 ** i for i in range(scales)])
    weights[-1] = 0
    assert np.allclose(run.built.weight_factors, weights / weights.sum())
    train = [c for c in run.calls if c[3]]
    assert len(train) == 2, f"expected 2 training iterations, got {len(train)}"
    assert all(np.isfinite(float(c[2])) for c in run.calls)


def _check_loss_equals_raysweeps(run, loss, companion, weight: float, ndim: int) -> None:
    """Every recorded call's value equals ``loss + weight * companion`` of raysweep, built directly, summed over the
    scales with nnU-Net's deep-supervision weights, on the same outputs and targets (ignore label mapped to 255)."""
    for outputs, targets, value, _ in run.calls:
        assert len(outputs) == len(targets) == len(run.built.weight_factors) >= 2
        expected = torch.zeros(())
        for w, logits, target in zip(run.built.weight_factors, outputs, targets):
            assert logits.ndim == ndim and target.shape == (logits.shape[0], 1, *logits.shape[2:])  # nnU-Net's layout
            t = target[:, 0].long()
            t[t == IGNORE] = 255  # raysweep's convention
            if w:
                expected = expected + w * (loss(logits, t) + weight * companion(logits, t))
        assert abs(float(value) - float(expected)) <= 1e-5 * max(1.0, abs(float(expected)))
    # nnU-Net's augmentation (zoom, rotation) can crop the ignored rows out of a training patch, not out of all (the
    # validation patch is the whole, unaugmented image)
    ignoring = [c for c in run.calls if (c[1][0] == IGNORE).any()]
    assert ignoring, "the batches must hold ignored pixels for their mapping to be tested"
    # the ignore label matters: read as a class it would be out of range for 9 output channels
    logits, target = ignoring[0][0][0], ignoring[0][1][0][:, 0].long()
    with pytest.raises(ValueError):
        loss(logits, target)


def test_nnunet_loss_equals_raysweeps_on_the_same_batch(nnunet_run):
    _check_loss_equals_raysweeps(nnunet_run, build_loss("focal", **FOCAL), build_loss("dice"), WEIGHT, 4)


def test_nnunet_3d_fullres_trains_with_a_loss_that_takes_3d_input(nnunet_run_3d):
    run = nnunet_run_3d
    assert type(run.trainer).__name__ == "nnUNetTrainer_raysweep_dmce"
    assert run.trainer.configuration_name == "3d_fullres" and len(run.trainer.configuration_manager.patch_size) == 3
    assert len([c for c in run.calls if c[3]]) == 2 and all(np.isfinite(float(c[2])) for c in run.calls)
    # dmce's distance maps come from each scale's (B, D, H, W) target: the value is raysweep's on the same batch
    _check_loss_equals_raysweeps(run, build_loss("dmce", **DMCE), build_loss("dice"), WEIGHT_3D, 5)
    # ... and a different decay gives a different value: the comparison can fail
    outputs, targets, _, _ = run.calls[0]
    t = targets[0][:, 0].long()
    t[t == IGNORE] = 255
    other = build_loss("dmce", decay=9.0, weight=1.5)(outputs[0], t)
    assert abs(float(other) - float(build_loss("dmce", **DMCE)(outputs[0], t))) > 1e-4


def test_nnunet_3d_configuration_of_a_2d_only_loss_stops_at_loss_build(nnunet_run):
    from nnunetv2.training.loss.deep_supervision import DeepSupervisionWrapper

    path = export.write_nnunet(_conf("active_boundary", root=nnunet_run.path.parent), nnunet_run.trainers)
    cls = _find_trainer(path)
    with pytest.raises(RuntimeError) as info:
        nnunet_run.make_trainer("3d_fullres", cls).initialize()
    message = str(info.value)
    for words in ("nnUNetTrainer_raysweep_active_boundary: configuration '3d_fullres' is 3-D",
                  "loss 'active_boundary' takes 2-D input only", LOSSES["active_boundary"].dims_note,
                  "Train the 2d configuration with it: nnUNetv2_train DATASET 2d FOLD -tr "
                  "nnUNetTrainer_raysweep_active_boundary"):
        assert words in message, words
    trainer = nnunet_run.make_trainer("2d", cls)  # its 2d configuration builds
    trainer.initialize()
    assert isinstance(trainer.loss, DeepSupervisionWrapper)
