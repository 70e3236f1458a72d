"""The full data check (raysweep.data.check): each defect written into an otherwise valid example dataset is refused
by the check, by `raysweep run` (exit 2, before Ray starts, --out not written) and by `raysweep data inspect` (exit 2),
naming the file and the fix; the unbroken examples pass all three. Plus the cache, the flag and the trial side."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from raysweep.cli import main
from raysweep.data import build_dataset
from raysweep.data.base import files_fingerprint
from raysweep.data.check import DataCheckError, check_dataset, raise_for_errors
from raysweep.data.examples import PALETTE, write_folder_example, write_nnunet_example

# ---------------------------------------------------------------------------------------------------------- bases


def write_msd(root: Path) -> Path:
    """A Decathlon dataset (4-D CT+MR images, channels last) from the nnU-Net example's volumes: 6 training cases
    m0..m5 and 2 labelled test cases t0, t1."""
    src = write_nnunet_example(root.parent / f"{root.name}-src", num_training=6, num_test=2, size=32, depth=4)
    for sub in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (root / sub).mkdir(parents=True)
    entries = {"Tr": [], "Ts": []}
    for split, names in (("Tr", [f"toy_{i:03d}" for i in range(6)]), ("Ts", ["toy_1000", "toy_1001"])):
        for k, case in enumerate(names):
            new = f"{'m' if split == 'Tr' else 't'}{k}"
            chans = [nib.load(str(src / f"images{split}" / f"{case}_{c:04d}.nii.gz")) for c in range(2)]
            data = np.stack([np.asanyarray(c.dataobj) for c in chans], -1)
            nib.save(nib.Nifti1Image(data, chans[0].affine), str(root / f"images{split}" / f"{new}.nii.gz"))
            shutil.copy(src / f"labels{split}" / f"{case}.nii.gz", root / f"labels{split}" / f"{new}.nii.gz")
            entries[split].append({"image": f"./images{split}/{new}.nii.gz", "label": f"./labels{split}/{new}.nii.gz"})
    meta = json.loads((src / "dataset.json").read_text())
    (root / "dataset.json").write_text(json.dumps({
        "modality": {"0": "CT", "1": "MR"}, "labels": {str(v): k for k, v in meta["labels"].items()},
        "training": entries["Tr"], "test": [e["image"] for e in entries["Ts"]], "numTraining": 6}))
    shutil.rmtree(src)
    return root


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """The unbroken example datasets, written once; each test copies the one it breaks."""
    top = tmp_path_factory.mktemp("bases")
    return {"nnunet": write_nnunet_example(top / "nnunet", num_training=6, num_test=2, size=32, depth=4),
            "msd": write_msd(top / "msd"),
            "folder": write_folder_example(top / "folder", num_images=10, size=32, palette=False),
            "palette": write_folder_example(top / "palette", num_images=10, size=32, palette=True)}


#: layout -> (dataset name, options)
LAYOUTS = {"nnunet": ("nnunet", {}), "msd": ("nnunet", {}), "folder": ("folder", {}),
           "palette": ("folder", {"palette": PALETTE})}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RAYSWEEP_CACHE", str(tmp_path / "cache"))


# ---------------------------------------------------------------------------------------------------------- defects


def _nii_edit(path: Path, fn: Callable[[np.ndarray], np.ndarray], affine: np.ndarray | None = None) -> None:
    img = nib.load(str(path))
    data = fn(np.asanyarray(img.dataobj).copy())
    nib.save(nib.Nifti1Image(data, img.affine if affine is None else affine), str(path))


def _set(index, value, dtype=None):
    def fn(a):
        a = a.astype(dtype) if dtype else a
        a[index] = value
        return a
    return fn


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 3000, dtype=np.uint8).tobytes())


def _directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _loop(path: Path) -> None:
    path.unlink()
    os.symlink(path.name, path)  # a link to itself


def _zero_spacing(path: Path) -> None:
    """pixdim[3] (the z spacing) of a .nii.gz set to 0 in the header bytes; the affine (sform) keeps its values."""
    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[88:92] = np.float32(0).tobytes()  # NIfTI-1: pixdim float32[8] at byte 76; pixdim[3] at 88
    path.write_bytes(gzip.compress(bytes(raw)))


def _json(path: Path, data) -> None:
    path.write_text(json.dumps(data))


def _meta(root: Path, **change) -> None:
    meta = json.loads((root / "dataset.json").read_text())
    for k, v in change.items():
        if v is None:
            meta.pop(k, None)
        else:
            meta[k] = v
    _json(root / "dataset.json", meta)


def _mask16(path: Path) -> None:
    mask = np.asarray(Image.open(path)).astype(np.uint16)
    mask[0, :4] = 2400
    Image.fromarray(mask).save(path)


def _to_jpeg_text(root: Path) -> None:
    (root / "images" / "img_003.png").unlink()
    (root / "images" / "img_003.jpg").write_text("this is not a JPEG, only text named like one\n")


def _truncated_jpeg(root: Path) -> None:
    png = root / "images" / "img_003.png"
    jpg = root / "images" / "img_003.jpg"
    Image.open(png).convert("RGB").save(jpg, quality=95)
    png.unlink()
    _truncate(jpg)


def _empty_dir(folder: Path) -> None:
    for p in folder.iterdir():
        p.unlink()


@dataclass(frozen=True)
class Defect:
    id: str
    layout: str
    write: Callable[[Path], None]
    file: str | None  # relative to the root: the file the error must name (None: a listing problem named in text)
    expect: str  # regex the error must match: the cause and the fix


D = Defect
DEFECTS = [
    # ---- nnU-Net v2: content
    D("nn-shape-mismatch", "nnunet", lambda r: _nii_edit(r / "labelsTr/toy_002.nii.gz", lambda a: a[:, :-2]),
      "imagesTr/toy_002_0000.nii.gz", r"image shape .* differs from its label .*resample"),
    D("nn-affine-mismatch", "nnunet",
      lambda r: _nii_edit(r / "labelsTr/toy_002.nii.gz", lambda a: a, np.diag([0.8, 0.8, 2.0, 1.0])),
      "imagesTr/toy_002_0000.nii.gz", r"affine .* differs from its label .*resample it"),
    D("nn-label-outside-classes", "nnunet", lambda r: _nii_edit(r / "labelsTr/toy_002.nii.gz", _set((0, 0, 0), 42)),
      "labelsTr/toy_002.nii.gz", r"label values \[42\] are outside the class range 0\.\.8"),
    D("nn-negative-label", "nnunet",
      lambda r: _nii_edit(r / "labelsTr/toy_001.nii.gz", _set((0, 0, 0), -1, np.int16)),
      "labelsTr/toy_001.nii.gz", r"label values \[-1\] are outside"),
    D("nn-float-label", "nnunet", lambda r: _nii_edit(r / "labelsTr/toy_002.nii.gz", _set((0, 0, 0), 1.5, np.float32)),
      "labelsTr/toy_002.nii.gz", r"non-integer values \[1\.5\]; labels must be class ids"),
    D("nn-truncated-image", "nnunet", lambda r: _truncate(r / "imagesTr/toy_002_0000.nii.gz"),
      "imagesTr/toy_002_0000.nii.gz", r"corrupt or truncated -- re-export or re-copy it"),
    D("nn-zero-byte-label", "nnunet", lambda r: (r / "labelsTr/toy_002.nii.gz").write_bytes(b""),
      "labelsTr/toy_002.nii.gz", r"is empty \(0 bytes\).*re-export or re-copy it"),
    D("nn-random-bytes", "nnunet", lambda r: _random_bytes(r / "imagesTr/toy_002_0001.nii.gz"),
      "imagesTr/toy_002_0001.nii.gz", r"cannot read the file .*re-export"),
    D("nn-nan-in-channel-1", "nnunet",
      lambda r: _nii_edit(r / "imagesTr/toy_003_0001.nii.gz", _set((1, 1, 1), np.nan)),
      "imagesTr/toy_003_0001.nii.gz", r"1 NaN and 0 infinite value\(s\).*fix the file"),
    D("nn-inf-in-channel-0", "nnunet",
      lambda r: _nii_edit(r / "imagesTr/toy_003_0000.nii.gz", _set((1, 1, 1), np.inf)),
      "imagesTr/toy_003_0000.nii.gz", r"0 NaN and 1 infinite value\(s\)"),
    D("nn-zero-spacing", "nnunet", lambda r: _zero_spacing(r / "labelsTr/toy_002.nii.gz"),
      "labelsTr/toy_002.nii.gz", r"voxel spacing .* is not positive; fix the header"),
    D("nn-4d-label", "nnunet", lambda r: _nii_edit(r / "labelsTr/toy_002.nii.gz", lambda a: np.stack([a, a], -1)),
      "labelsTr/toy_002.nii.gz", r"expected a 3-D label volume, got shape"),
    D("nn-directory-for-image", "nnunet", lambda r: _directory(r / "imagesTr/toy_004_0000.nii.gz"),
      "imagesTr/toy_004_0000.nii.gz", r"is a directory, not a file; replace it"),
    D("nn-symlink-loop-label", "nnunet", lambda r: _loop(r / "labelsTr/toy_005.nii.gz"),
      "labelsTr/toy_005.nii.gz", r"is a symbolic link loop .*point the link at the real file"),
    D("nn-broken-symlink", "nnunet",
      lambda r: ((r / "imagesTr/toy_001_0001.nii.gz").unlink(),
                 os.symlink("/nonexistent/x.nii.gz", r / "imagesTr/toy_001_0001.nii.gz")),
      "imagesTr/toy_001_0001.nii.gz", r"is a broken symbolic link .*restore its target"),
    D("nn-corrupt-test-label", "nnunet", lambda r: _random_bytes(r / "labelsTs/toy_1001.nii.gz"),
      "labelsTs/toy_1001.nii.gz", r"cannot read the file"),
    # ---- nnU-Net v2: listing
    D("nn-missing-labels-key", "nnunet", lambda r: _meta(r, labels=None), "dataset.json",
      r"missing key\(s\) 'labels'"),
    D("nn-label-id-gap", "nnunet", lambda r: _meta(r, labels={"background": 0, "liver": 2}), "dataset.json",
      r"without gaps"),
    D("nn-region-labels", "nnunet", lambda r: _meta(r, labels={"background": 0, "whole": [1, 2], "core": 2}),
      "dataset.json", r"region-based labels are not supported"),
    D("nn-garbage-dataset-json", "nnunet", lambda r: _random_bytes(r / "dataset.json"), "dataset.json",
      r"not valid JSON .*fix the file"),
    D("nn-dataset-json-a-list", "nnunet", lambda r: _json(r / "dataset.json", [1, 2]), "dataset.json",
      r"must hold a JSON object"),
    D("nn-missing-dataset-json", "nnunet", lambda r: (r / "dataset.json").unlink(), None,
      r"not a dataset folder|dataset.json not found"),
    D("nn-missing-channel-file", "nnunet", lambda r: (r / "imagesTr/toy_002_0001.nii.gz").unlink(),
      "imagesTr/toy_002_0001.nii.gz", r"image not found for the label"),
    D("nn-image-without-label", "nnunet", lambda r: (r / "labelsTr/toy_002.nii.gz").unlink(),
      "labelsTr/toy_002.nii.gz", r"have no label .*add the labels or remove the images"),
    D("nn-extra-channel-file", "nnunet",
      lambda r: shutil.copy(r / "imagesTr/toy_002_0000.nii.gz", r / "imagesTr/toy_002_0002.nii.gz"),
      "imagesTr/toy_002_0002.nii.gz", r"channel 2 but dataset.json declares 2"),
    D("nn-numtraining", "nnunet", lambda r: _meta(r, numTraining=9), "dataset.json", r"numTraining is 9"),
    D("nn-wrong-file-ending", "nnunet", lambda r: _meta(r, file_ending=".nii"), "dataset.json",
      r"file_ending is '\.nii', but no file .* set file_ending to '\.nii\.gz'"),
    D("nn-empty-labelsTr", "nnunet", lambda r: _empty_dir(r / "labelsTr"), "imagesTr",
      r"have no label"),
    D("nn-empty-imagesTr", "nnunet", lambda r: _empty_dir(r / "imagesTr"), "imagesTr/toy_000_0000.nii.gz",
      r"image not found for the label"),
    D("nn-splits-final-shape", "nnunet", lambda r: _json(r / "splits_final.json", {"train": ["toy_000"]}),
      "splits_final.json", r"expected a list of folds .*fix or delete the file"),
    D("nn-splits-final-unknown-case", "nnunet",
      lambda r: _json(r / "splits_final.json", [{"train": ["toy_000", "toy_001"], "val": ["nope"]}]),
      "splits_final.json", r"names case\(s\) nope"),
    D("nn-missing-imagesTs-file", "nnunet", lambda r: (r / "imagesTs/toy_1000_0001.nii.gz").unlink(),
      "imagesTs/toy_1000_0001.nii.gz", r"image not found for the label"),
    # ---- Decathlon
    D("msd-3-channels-declared-2", "msd",
      lambda r: _nii_edit(r / "imagesTr/m2.nii.gz", lambda a: np.concatenate([a, a[..., :1]], -1)),
      "imagesTr/m2.nii.gz", r"3 channel\(s\) for case 'm2', but dataset.json declares 2"),
    D("msd-truncated-4d-image", "msd", lambda r: _truncate(r / "imagesTr/m3.nii.gz"), "imagesTr/m3.nii.gz",
      r"corrupt or truncated"),
    D("msd-missing-image", "msd", lambda r: (r / "imagesTr/m1.nii.gz").unlink(), "imagesTr/m1.nii.gz",
      r"listed in .*dataset.json \(training\) but missing on disk; restore it"),
    D("msd-missing-label", "msd", lambda r: (r / "labelsTr/m1.nii.gz").unlink(), "labelsTr/m1.nii.gz",
      r"listed in .* but missing on disk"),
    D("msd-one-test-label-missing", "msd", lambda r: (r / "labelsTs/t0.nii.gz").unlink(), "labelsTs/t0.nii.gz",
      r"the label of a test image .* is missing, while 1 other"),
    # ---- folder (grey class ids, classes.json): content
    D("folder-zero-byte-image", "folder", lambda r: (r / "images/img_002.png").write_bytes(b""),
      "images/img_002.png", r"is empty \(0 bytes\), not an image"),
    D("folder-truncated-png", "folder", lambda r: _truncate(r / "images/img_002.png"), "images/img_002.png",
      r"cannot decode the image .*re-export it"),
    D("folder-text-as-jpeg", "folder", _to_jpeg_text, "images/img_003.jpg", r"cannot decode the image"),
    D("folder-truncated-jpeg", "folder", _truncated_jpeg, "images/img_003.jpg", r"cannot decode the image"),
    D("folder-rgb-mask-without-palette", "folder",
      lambda r: Image.open(r / "masks/img_004.png").convert("RGB").save(r / "masks/img_004.png"),
      "masks/img_004.png", r"mode 'RGB' .*set the option palette"),
    D("folder-mask-of-another-size", "folder",
      lambda r: Image.fromarray(np.zeros((20, 20), np.uint8)).save(r / "masks/img_004.png"),
      "masks/img_004.png", r"mask size \(20, 20\) differs from its image img_004.png"),
    D("folder-16-bit-mask-2400", "folder", lambda r: _mask16(r / "masks/img_004.png"), "masks/img_004.png",
      r"label values \[2400\] are outside"),
    D("folder-mask-value-outside", "folder",
      lambda r: Image.fromarray(np.full((32, 32), 200, np.uint8)).save(r / "masks/img_004.png"),
      "masks/img_004.png", r"label values \[200\] are outside"),
    D("folder-directory-for-mask", "folder", lambda r: _directory(r / "masks/img_004.png"), "masks/img_004.png",
      r"is a directory"),
    D("folder-symlink-loop-image", "folder", lambda r: _loop(r / "images/img_005.png"), "images/img_005.png",
      r"symbolic link loop"),
    # ---- folder: listing
    D("folder-garbage-classes-json", "folder", lambda r: _random_bytes(r / "classes.json"), "classes.json",
      r"not valid JSON"),
    D("folder-one-class-classes-json", "folder", lambda r: _json(r / "classes.json", ["background"]), "classes.json",
      r"1 class .*needs at least two classes"),
    D("folder-classes-json-id-gap", "folder", lambda r: _json(r / "classes.json", {"background": 0, "x": 2}),
      "classes.json", r"without gaps"),
    D("folder-no-classes", "folder", lambda r: (r / "classes.json").unlink(), None,
      r"classes of .* are not named; set the option classes"),
    D("folder-image-without-mask", "folder", lambda r: (r / "masks/img_001.png").unlink(), "masks/img_001.png",
      r"have no mask"),
    D("folder-mask-without-image", "folder", lambda r: (r / "images/img_001.png").unlink(), "images",
      r"have no image"),
    D("folder-splits-json-a-list", "folder", lambda r: _json(r / "splits.json", [f"img_{i:03d}" for i in range(10)]),
      "splits.json", r"got a list of 10 strings; fix the file or delete it"),
    D("folder-splits-json-unknown", "folder",
      lambda r: _json(r / "splits.json", {"train": ["img_000"], "val": ["nope"], "test": ["img_001"]}),
      "splits.json", r"lists nope, which is not in"),
    D("folder-splits-json-overlap", "folder",
      lambda r: _json(r / "splits.json", {"train": ["img_000"], "val": ["img_000"], "test": ["img_001"]}),
      "splits.json", r"in both train and val"),
    D("folder-empty-images", "folder", lambda r: _empty_dir(r / "images"), "images", r"no images"),
    # ---- folder with a palette
    D("palette-unknown-colour", "palette",
      lambda r: Image.fromarray(np.full((32, 32, 3), 7, np.uint8)).save(r / "masks/img_006.png"),
      "masks/img_006.png", r"colour\(s\) \[\[7, 7, 7\]\] are not in the palette .*add them to the option palette"),
]
#: The palette folder without its option: one error naming the option, not one per mask.
NO_PALETTE = D("palette-folder-without-option", "palette", lambda r: None, "masks",
               r"all 10 masks are colour images .*option palette is not set")


def _broken(bases, tmp_path, defect: Defect) -> Path:
    root = tmp_path / f"data-{defect.layout}"
    shutil.copytree(bases[defect.layout], root, symlinks=True)
    defect.write(root)
    return root


def _config(tmp_path: Path, name: str, root: Path, options: dict, design: str = "minimal") -> Path:
    """A tiny sweep config on one dataset. ``minimal``: one loss and confirmation.seeds 0, the design whose
    validation reads no case listing (the check must still run); ``ranked``: two losses and a confirmation seed."""
    losses, seeds = (["dice"], 0) if design == "minimal" else (["dice", "ce"], 1)
    text = json.dumps({
        "name": "check", "datasets": {name: {"root": str(root), "options": {"image_size": 32, **options}}},
        "architectures": {"cnn": {"arch": "Unet", "encoder": "resnet18"}}, "losses": losses,
        "tuning": {"trials_per_group": 1}, "confirmation": {"seeds": seeds, "underpowered": "warn"},
        "trial": {"train": {"steps": 2, "batch_size": 2}}})
    path = tmp_path / "sweep.yaml"
    path.write_text(text)  # JSON is YAML
    return path


def _assert_named(text: str, root: Path, defect: Defect) -> None:
    import re

    if defect.file is not None:
        assert str(root / defect.file) in text, text
    assert re.search(defect.expect, text, re.S), (defect.expect, text)


@pytest.mark.parametrize("defect", [*DEFECTS, NO_PALETTE], ids=lambda d: d.id)
def test_each_defect_is_refused_by_the_check_the_sweep_and_inspect(defect, bases, tmp_path, capsys):
    root = _broken(bases, tmp_path, defect)
    name, options = LAYOUTS[defect.layout]
    if defect is NO_PALETTE:
        options = {}
    # the check itself: an error naming the file and the fix
    if (root / "dataset.json").exists() or name == "folder":
        report = check_dataset(name, root, options)
        assert report["errors"], f"{defect.id}: not refused"
        _assert_named("\n".join(e["error"] for e in report["errors"]), root, defect)
        if defect.file is not None and report["splits"]:  # a case's content: the error's file is that file
            assert str(root / defect.file) in {e["file"] for e in report["errors"]}
        if defect is NO_PALETTE:
            assert len(report["errors"]) == 1
    # the sweep: exit 2 before Ray starts, --out not written, every broken file on stderr
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["run", "--config", str(_config(tmp_path, name, root, options)), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("raysweep run: error:") and "Traceback" not in err
    _assert_named(err, root, defect)
    assert not out.exists()
    # inspect: exit 2, the error in the text (the dataset folder, or its config when it needs options)
    target = root if not options else _config(tmp_path, name, root, options)
    assert main(["data", "inspect", str(target)]) == 2
    captured = capsys.readouterr()
    _assert_named(captured.out + captured.err, root, defect)


def test_defect_kinds_are_many_and_distinct():
    ids = [d.id for d in DEFECTS] + [NO_PALETTE.id]
    assert len(ids) == len(set(ids)) and len(ids) >= 48


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_unbroken_examples_pass_the_check_inspect_and_the_sweeps_check(layout, bases, tmp_path, capsys, monkeypatch):
    name, options = LAYOUTS[layout]
    root = bases[layout]
    report = check_dataset(name, root, options)
    assert report["errors"] == [] and report["cases"] == sum(len(c) for c in report["splits"].values())
    target = root if not options else _config(tmp_path, name, root, options)
    assert main(["data", "inspect", str(target), "--json"]) == 0
    (r,) = json.loads(capsys.readouterr().out)
    assert r["errors"] == [] and isinstance(r["warnings"], list) and r["checked"] == report["cases"]
    started = _fake_runner(monkeypatch)
    out = tmp_path / "out"
    assert main(["run", "--config", str(_config(tmp_path, name, root, options)), "--out", str(out)]) == 130
    assert started["data_check"]["status"] == "passed"
    assert started["data_check"]["datasets"][name]["cases"] == report["cases"]


def _fake_runner(monkeypatch) -> dict:
    """Replace the SweepRunner `raysweep run` constructs: it records its arguments and stops (no Ray)."""
    import raysweep.sweep

    started: dict = {}

    class Runner:
        def __init__(self, cfg, out, **kwargs):
            started.update(kwargs, cfg=cfg, out=out)

        def run(self):
            raise KeyboardInterrupt("stopped by the test before Ray")

    monkeypatch.setattr(raysweep.sweep, "SweepRunner", Runner)
    return started


@pytest.mark.filterwarnings("ignore:.*cannot separate any two losses")  # the ranked design on 2 test cases
def test_the_check_runs_for_every_design_and_skip_is_recorded(bases, tmp_path, capsys, monkeypatch):
    root = _broken(bases, tmp_path, DEFECTS[0])
    for design in ("minimal", "ranked"):
        assert main(["run", "--config", str(_config(tmp_path, "nnunet", root, {}, design)), "--out",
                     str(tmp_path / "out")]) == 2
        assert "toy_002_0000.nii.gz: image shape" in capsys.readouterr().err
    started = _fake_runner(monkeypatch)
    config = _config(tmp_path, "nnunet", root, {})
    assert main(["run", "--config", str(config), "--out", str(tmp_path / "out"), "--skip-data-check"]) == 130
    assert started["data_check"] == {"status": "skipped", "by": "--skip-data-check"}
    assert "--skip-data-check" in capsys.readouterr().err
    # ... and sweep.json's protocol carries it
    from raysweep.config import load_config
    from raysweep.sweep.runner import SweepRunner

    protocol = SweepRunner(load_config(config), tmp_path / "out2", data_check=started["data_check"]).protocol()
    assert protocol["data_check"] == {"status": "skipped", "by": "--skip-data-check"}


def test_nothing_in_an_existing_output_folder_is_touched(bases, tmp_path, capsys):
    root = _broken(bases, tmp_path, DEFECTS[0])
    out = tmp_path / "out"
    (out / "results").mkdir(parents=True)
    (out / "results" / "trials.parquet").write_bytes(b"earlier results")
    before = sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*"))
    assert main(["run", "--config", str(_config(tmp_path, "nnunet", root, {})), "--out", str(out), "--fresh"]) == 2
    assert sorted((p.relative_to(out), p.stat().st_mtime_ns) for p in out.rglob("*")) == before


def test_cli_refuses_before_ray_is_imported(bases, tmp_path):
    """A subprocess, as a user runs it: exit 2, the file named, Ray never imported, no --out."""
    root = _broken(bases, tmp_path, DEFECTS[8])  # NaN in channel 1
    out = tmp_path / "out"
    env = {**os.environ, "RAYSWEEP_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "raysweep.cli", "run", "--config",
                           str(_config(tmp_path, "nnunet", root, {})), "--out", str(out)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert f"{root / 'imagesTr/toy_003_0001.nii.gz'}: image holds 1 NaN" in proc.stderr
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time")}
    assert not {m for m in imported if m == "ray" or m.startswith("ray.")}
    assert not out.exists()


def test_many_broken_files_are_listed_twenty_and_counted(tmp_path):
    root = write_folder_example(tmp_path / "f", num_images=26, size=32, palette=False)
    for p in (root / "images").iterdir():
        p.write_bytes(b"")
    report = check_dataset("folder", root)
    assert len(report["errors"]) == 26
    with pytest.raises(DataCheckError) as info:
        raise_for_errors([report])
    lines = str(info.value).splitlines()
    listed = [line for line in lines if line.startswith("  /") or line.startswith(f"  {root}")]
    assert len(listed) == 20 and "  ... and 6 more" in str(info.value)
    assert all("is empty (0 bytes)" in line for line in listed) and "--skip-data-check" in str(info.value)


def test_second_check_reads_only_changed_cases(bases, tmp_path):
    root = tmp_path / "nn"
    shutil.copytree(bases["nnunet"], root)
    first = check_dataset("nnunet", root)
    assert first["cached"] == 0 and first["cases"] == 8 and not first["errors"]
    second = check_dataset("nnunet", root)
    assert second["cached"] == 8 and not second["errors"]
    _nii_edit(root / "labelsTr/toy_003.nii.gz", _set((0, 0, 0), 42))  # changed: read again, and refused
    third = check_dataset("nnunet", root)
    assert third["cached"] == 7 and len(third["errors"]) == 1
    assert check_dataset("nnunet", root)["cached"] == 7  # failures are never cached
    _nii_edit(root / "labelsTr/toy_003.nii.gz", _set((0, 0, 0), 0))
    assert check_dataset("nnunet", root)["errors"] == []
    # the classes a case is checked against are part of its fingerprint: fewer classes, everything read again
    meta = json.loads((root / "dataset.json").read_text())
    _meta(root, labels={k: v for k, v in meta["labels"].items() if v < 3})
    again = check_dataset("nnunet", root)
    assert again["cached"] == 0 and again["errors"]


def test_ct_statistics_and_the_check_share_one_fingerprint(bases):
    from raysweep.data import nnunet

    desc = nnunet.describe(bases["nnunet"])
    cases = sorted(desc.training)[:2]
    paths = [p for c in cases for p in (*desc.training[c][0], desc.training[c][1])]
    assert nnunet._fingerprint(desc, cases) == files_fingerprint(paths, desc.root, nnunet._STATS_VERSION)


def test_inspect_separates_errors_from_warnings_in_json(bases, tmp_path, capsys):
    root = _broken(bases, tmp_path, DEFECTS[8])
    assert main(["data", "inspect", str(root), "--json"]) == 2
    (r,) = json.loads(capsys.readouterr().out)
    assert [e["file"] for e in r["errors"]] == [str(root / "imagesTr/toy_003_0001.nii.gz")]
    assert any("anisotropic" in w for w in r["warnings"]) and not any("NaN" in w for w in r["warnings"])
    assert main(["data", "inspect", str(bases["nnunet"])]) == 0  # warnings alone never fail
    assert "warnings:" in capsys.readouterr().out


def test_a_case_broken_after_the_check_fails_the_trial_naming_the_file(bases, tmp_path):
    """The trial builds its dataset after the check: a file changed since then raises a one-line error naming it
    (a trial's error summary keeps the last line), never a bare OSError; no case is skipped."""
    root = tmp_path / "nn"
    shutil.copytree(bases["nnunet"], root)
    assert not check_dataset("nnunet", root)["errors"]
    ds = build_dataset("nnunet", "train", root=root, image_size=32)
    assert [v.case for v in ds.volumes()] == ds.cases  # every case of the split, none dropped
    _loop(root / "labelsTr" / f"{ds.cases[0]}.nii.gz")
    with pytest.raises(ValueError, match=rf"{ds.cases[0]}.nii.gz: is a symbolic link loop"):
        build_dataset("nnunet", "train", root=root, image_size=32)
    (root / "labelsTr" / f"{ds.cases[0]}.nii.gz").unlink()
    shutil.copy(bases["nnunet"] / "labelsTr" / f"{ds.cases[0]}.nii.gz", root / "labelsTr")
    _nii_edit(root / "labelsTr" / f"{ds.cases[1]}.nii.gz", lambda a: a, np.diag([0.8, 0.8, 2.0, 1.0]))
    with pytest.raises(ValueError) as info:
        build_dataset("nnunet", "train", root=root, image_size=32)
    assert "\n" not in str(info.value) and f"{ds.cases[1]}_0000.nii.gz: affine" in str(info.value)
    folder = tmp_path / "f"
    shutil.copytree(bases["folder"], folder)
    fds = build_dataset("folder", "train", root=folder, image_size=32)
    _truncate(folder / "images" / f"{fds.cases[0]}.png")  # images are read per item, in the loader
    with pytest.raises(ValueError, match=rf"{fds.cases[0]}.png: cannot decode the image"):
        fds[0]


@pytest.mark.parametrize("layout", ["nnunet", "folder"])
def test_a_case_removed_after_the_sweep_started_fails_the_trial_naming_the_split(layout, bases, tmp_path):
    """Every composed trial of a file-based dataset carries the listing the sweep started with (train and its
    evaluation split); a case pair removed mid-sweep (which would silently shrink a split, or redraw a seeded one)
    ends the trial with an error naming the split and both counts, instead of training or ranking on other cases."""
    from raysweep.config import load_config
    from raysweep.config.compose import compose_trial
    from raysweep.config.model import Group
    from raysweep.data import list_cases, listing_digest
    from raysweep.search import GroupSpace
    from raysweep.trial.build import build
    from raysweep.trial.schema import resolve_config

    name, options = LAYOUTS[layout]
    root = tmp_path / "data"
    shutil.copytree(bases[layout], root)
    cfg = load_config(_config(tmp_path, name, root, options, design="ranked"))
    envelope = compose_trial(cfg, Group(name, "cnn", "dice"), GroupSpace("dice", "none").defaults(), 0, "confirm")
    trial = resolve_config(envelope["trial"])
    split = trial["eval"]["split"]
    opts = {"image_size": 32, **options}
    assert trial["dataset"]["cases"] == {
        s: listing_digest(list_cases(name, s, root=root, **opts)) for s in ("train", split)}
    build(trial)  # the data as listed: builds
    # nnU-Net's numTraining guards labelsTr already; labelsTs has no count, and a folder's split is drawn anew
    victim = list_cases(name, split if layout == "nnunet" else "train", root=root, **opts)[0]
    for path in root.rglob(f"{victim}*"):
        path.unlink()
    with pytest.raises(ValueError, match=r"the (train|test) split lists \d+ case\(s\) now, \d+ \(or other names\) "
                                         r"when the sweep checked the data .* during the sweep") as info:
        build(trial)
    assert str(root) in str(info.value)
    synthetic = compose_trial(load_config("configs/default.yaml"), Group("synthetic", "cnn", "dice"),
                              GroupSpace("dice", "none").defaults(), 0, "confirm")
    assert "cases" not in synthetic["trial"]["dataset"]  # generated data cannot change under a sweep
